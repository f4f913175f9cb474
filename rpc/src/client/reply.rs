//! Decoding a reply's value, handing a byte string that was received in a buffer of its own
//! ([`Payload::Split`]) over as it is.
//!
//! The value is first deserialized from [`Tail`], which offers the string's buffer to a type
//! that takes bytes by value (`ByteBuf`, which the generated client returns a `Vec<u8>`
//! through, a `#[serde(with = "serde_bytes")]` vector, a `String`) and lends it to one that
//! reads them element by element (a plain `Vec<u8>`). Any other type refuses it before
//! anything is taken, and is decoded from the payload made whole: a split that was a wrong
//! guess costs a copy, never a wrong value.

use serde::de::{self, DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use serde::Deserializer;

use crate::protocol::decode_exact;
use crate::transport::Payload;

/// Decodes the body of `payload`, which starts `at` bytes in, as exactly one `R`.
pub(crate) fn decode_body<R: DeserializeOwned>(payload: Payload, at: usize) -> Result<R, postcard::Error> {
    let (head, bytes) = match payload {
        Payload::Whole(buf) => {
            let value = decode_exact(&buf[at..]);
            Payload::Whole(buf).give_back();
            return value;
        }
        Payload::Split { head, bytes } => (head, bytes),
    };
    // The receiver split before a length prefix counting the bytes; checked again here.
    let counts_bytes = crate::transport::counts_exactly(&head[at..], bytes.len());
    let mut slot = Some(bytes);
    if counts_bytes {
        match R::deserialize(Tail { bytes: &mut slot }) {
            Ok(value) => {
                if let Some(bytes) = slot {
                    Payload::Split { head, bytes }.give_back();
                }
                return Ok(value);
            }
            // Taken, then refused by the type itself: what postcard would say of it.
            Err(_) if slot.is_none() => return Err(postcard::Error::DeserializeBadEncoding),
            Err(_) => {}
        }
    }
    let bytes = slot.expect("the bytes are still there");
    let whole = Payload::Split { head, bytes }.into_whole();
    let value = decode_exact(&whole[at..]);
    Payload::Whole(whole).give_back();
    value
}

/// A byte string's bytes alone, as a deserializer: see the [module docs](self).
struct Tail<'a> {
    bytes: &'a mut Option<Vec<u8>>,
}

/// Why [`Tail`] did not give a value: the type wants something else, or refused the bytes.
#[derive(Debug)]
struct NotBytes;

impl std::fmt::Display for NotBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a byte string")
    }
}

impl std::error::Error for NotBytes {}

impl de::Error for NotBytes {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotBytes
    }
}

impl Tail<'_> {
    fn lend(&self) -> Result<&[u8], NotBytes> {
        self.bytes.as_deref().ok_or(NotBytes)
    }
}

impl<'de> Deserializer<'de> for Tail<'_> {
    type Error = NotBytes;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotBytes> {
        Err(NotBytes)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotBytes> {
        visitor.visit_byte_buf(self.bytes.take().ok_or(NotBytes)?)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotBytes> {
        visitor.visit_bytes(self.lend()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotBytes> {
        match String::from_utf8(self.bytes.take().ok_or(NotBytes)?) {
            Ok(text) => visitor.visit_string(text),
            // Given back: decoded whole, postcard says what is wrong with it.
            Err(e) => {
                *self.bytes = Some(e.into_bytes());
                Err(NotBytes)
            }
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotBytes> {
        self.deserialize_string(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, NotBytes> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotBytes> {
        let mut elements = Elements {
            bytes: self.lend()?,
            at: 0,
        };
        let value = visitor.visit_seq(&mut elements)?;
        match elements.at == elements.bytes.len() {
            true => Ok(value),
            false => Err(NotBytes),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        option unit unit_struct tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// A byte string's bytes as a sequence of `u8`.
struct Elements<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'de> SeqAccess<'de> for &mut Elements<'_> {
    type Error = NotBytes;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, NotBytes> {
        let Some(&byte) = self.bytes.get(self.at) else {
            return Ok(None);
        };
        self.at += 1;
        seed.deserialize(Byte(byte)).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.bytes.len() - self.at)
    }
}

/// One element of [`Elements`]: a `u8`, and nothing else.
struct Byte(u8);

impl<'de> Deserializer<'de> for Byte {
    type Error = NotBytes;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotBytes> {
        Err(NotBytes)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotBytes> {
        visitor.visit_u8(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_bytes::ByteBuf;

    use super::*;

    /// `value` encoded as a reply body, split as a receiver would split it.
    fn split(value: &impl serde::Serialize) -> Payload {
        let encoded = postcard::to_allocvec(value).unwrap();
        let (count, rest) = postcard::take_from_bytes::<u64>(&encoded).unwrap();
        assert_eq!(count as usize, rest.len(), "a byte string's encoding");
        let at = encoded.len() - rest.len();
        Payload::Split {
            head: encoded[..at].to_vec(),
            bytes: encoded[at..].to_vec(),
        }
    }

    #[test]
    fn a_byte_buffer_is_the_very_buffer_the_bytes_were_received_into() {
        let payload = split(&ByteBuf::from(vec![7u8; 100_000]));
        let Payload::Split { bytes, .. } = &payload else {
            unreachable!()
        };
        let received = bytes.as_ptr();
        let value: ByteBuf = decode_body(payload, 0).unwrap();
        assert_eq!(value.as_ptr(), received);
        assert_eq!(value.into_vec(), vec![7u8; 100_000]);
    }

    #[test]
    fn a_string_is_handed_over_too_and_bad_utf8_is_postcards_error() {
        let payload = split(&"é".repeat(40_000));
        let Payload::Split { bytes, .. } = &payload else {
            unreachable!()
        };
        let received = bytes.as_ptr();
        let value: String = decode_body(payload, 0).unwrap();
        assert_eq!(value.as_ptr(), received);
        let mut payload = split(&ByteBuf::from(vec![b'a'; 1000]));
        if let Payload::Split { bytes, .. } = &mut payload {
            bytes[500] = 0xff;
        }
        assert!(matches!(
            decode_body::<String>(payload, 0),
            Err(postcard::Error::DeserializeBadUtf8)
        ));
    }

    #[test]
    fn a_newtype_of_bytes_is_handed_over_too() {
        #[derive(Deserialize)]
        struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);
        let payload = split(&ByteBuf::from(vec![3u8; 70_000]));
        let Payload::Split { bytes, .. } = &payload else {
            unreachable!()
        };
        let received = bytes.as_ptr();
        let Blob(value) = decode_body(payload, 0).unwrap();
        assert_eq!(value.as_ptr(), received);
    }

    #[test]
    fn other_types_are_decoded_from_the_payload_made_whole() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 100) as u8).collect();
        // A plain Vec<u8> (element by element) and a Vec<u16> of one-byte varints are
        // encoded as a byte string is.
        assert_eq!(
            decode_body::<Vec<u8>>(split(&ByteBuf::from(data.clone())), 0).unwrap(),
            data
        );
        let wide: Vec<u16> = data.iter().map(|&b| u16::from(b)).collect();
        assert_eq!(
            decode_body::<Vec<u16>>(split(&ByteBuf::from(data.clone())), 0).unwrap(),
            wide
        );
        #[derive(Deserialize, Debug, PartialEq)]
        struct Pair(u8, u8);
        assert!(decode_body::<Pair>(split(&ByteBuf::from(vec![1u8; 2])), 0).is_err());
        // A fixed-size array wants its elements as a tuple: postcard's own error.
        assert!(decode_body::<[u8; 16]>(split(&ByteBuf::from(data)), 0).is_err());
    }

    #[test]
    fn a_head_whose_length_prefix_lies_is_decoded_whole_and_refused() {
        let payload = Payload::Split {
            head: postcard::to_allocvec(&2000u64).unwrap(),
            bytes: vec![1; 1000],
        };
        assert!(matches!(
            decode_body::<ByteBuf>(payload, 0),
            Err(postcard::Error::DeserializeUnexpectedEnd)
        ));
    }
}

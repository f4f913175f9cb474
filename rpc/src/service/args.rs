//! A call's arguments as the server received them, for [`Service::call_args`]: in one
//! buffer, or split before a large byte string whose bytes the transport read into a buffer
//! of their own (see `transport/payload.rs`).
//!
//! A handler taking `Vec<u8>` as its one argument is then given that buffer as it is: a
//! 1 MiB upload costs no copy between the socket (or the shared-memory ring) and the
//! handler. Any other method sees the arguments in one buffer, joined if they were split:
//! the split is a guess made from bytes the client chose, so a wrong one costs a copy, never
//! a wrong value.
//!
//! [`Service::call_args`]: super::Service::call_args

use crate::transport::Payload;

/// A call's encoded arguments, as [`Service::call_args`](super::Service::call_args) gets
/// them.
#[derive(Debug)]
pub struct Args {
    payload: Payload,
    /// Where the arguments start in the payload (after the envelope).
    at: usize,
    /// The split-off byte string was handed to the handler: nothing is left to decode.
    taken: bool,
}

impl Args {
    /// The arguments of `payload`, starting `at` bytes in (`at` lies within the head).
    pub(crate) fn new(payload: Payload, at: usize) -> Args {
        debug_assert!(at <= payload.head().len());
        Args {
            payload,
            at,
            taken: false,
        }
    }

    /// The encoded arguments in one buffer: as received, or joined (a copy) if the transport
    /// split them. Empty once the byte string was taken.
    pub fn bytes(&mut self) -> &[u8] {
        if let Payload::Split { .. } = self.payload {
            let split = std::mem::replace(&mut self.payload, Payload::Whole(Vec::new()));
            self.payload = Payload::Whole(split.into_whole());
        }
        match (&self.payload, self.taken) {
            (Payload::Whole(buf), false) => &buf[self.at..],
            _ => &[],
        }
    }

    /// The one byte string the arguments are, in the buffer the transport read it into, if
    /// it split them there; `None` otherwise (then [`bytes`](Self::bytes) has them). What a
    /// generated server hands a method whose one argument is a `Vec<u8>` (or `&[u8]`).
    #[doc(hidden)]
    pub fn __take_byte_string(&mut self) -> Option<Vec<u8>> {
        let Payload::Split { head, bytes } = &mut self.payload else {
            return None;
        };
        if self.taken {
            return None;
        }
        // The receiver split before a length prefix counting the bytes; checked again here,
        // as the arguments are nothing but that prefix and the bytes.
        if !crate::transport::counts_exactly(&head[self.at..], bytes.len()) {
            return None;
        }
        self.taken = true;
        Some(std::mem::take(bytes))
    }

    /// The payload's buffers, for the server to reuse.
    pub(crate) fn into_payload(self) -> Payload {
        self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split payload: a 3-byte "envelope", then `prefix`, then `bytes` in their own buffer.
    fn split(prefix: &[u8], bytes: Vec<u8>) -> Args {
        let mut head = vec![0xE0, 0xE1, 0xE2];
        head.extend_from_slice(prefix);
        Args::new(Payload::Split { head, bytes }, 3)
    }

    fn prefix(n: usize) -> Vec<u8> {
        postcard::to_allocvec(&(n as u64)).unwrap()
    }

    #[test]
    fn a_byte_string_split_off_is_handed_over_as_it_is_once() {
        let bytes = vec![9u8; 70_000];
        let at = bytes.as_ptr();
        let mut args = split(&prefix(bytes.len()), bytes);
        let taken = args.__take_byte_string().expect("the byte string");
        assert_eq!(taken.as_ptr(), at, "the very buffer, not a copy");
        assert_eq!(taken.len(), 70_000);
        assert_eq!(args.__take_byte_string(), None, "taken once");
        assert_eq!(args.bytes(), b"", "nothing left to decode");
    }

    #[test]
    fn a_split_whose_prefix_does_not_count_its_bytes_is_decoded_whole() {
        // The client chose these bytes: a prefix one too long, and one followed by more.
        let mut longer = prefix(70_001);
        let mut trailing = prefix(70_000);
        trailing.push(0);
        for (what, prefix) in [
            ("a prefix counting one more", &mut longer),
            ("bytes after the prefix", &mut trailing),
        ] {
            let mut args = split(prefix, vec![4u8; 70_000]);
            assert_eq!(args.__take_byte_string(), None, "{what}");
            let mut expected = prefix.clone();
            expected.extend_from_slice(&[4u8; 70_000]);
            assert_eq!(args.bytes(), &expected[..], "{what}: the arguments joined");
        }
    }

    #[test]
    fn arguments_received_whole_are_decoded_from_their_buffer() {
        let mut args = Args::new(Payload::Whole(vec![1, 2, 3, 4, 5]), 2);
        assert_eq!(args.__take_byte_string(), None);
        assert_eq!(args.bytes(), &[3, 4, 5]);
        assert!(matches!(args.into_payload(), Payload::Whole(buf) if buf == [1, 2, 3, 4, 5]));
    }
}

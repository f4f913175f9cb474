//! A received frame's payload, whole or split before a trailing byte string.
//!
//! A `Vec<u8>` cannot start inside its buffer, so a reply of bytes (envelope, the string's
//! length prefix, the bytes) read into one buffer must be copied to become the caller's
//! `Vec`, and so must a call's argument of bytes to become the `Vec<u8>` a handler takes. A
//! receiver asked for a [`Payload`] ([`FrameReceiver::recv_payload`]) looks at the first
//! bytes of a large frame instead ([`Incoming`]): if they are a reply or a call whose body
//! is a byte string's length prefix counting exactly the rest of the frame, the head goes
//! into a small buffer and the string's bytes are read straight into a buffer of their own,
//! which the client's decoder (a reply) or the generated server (a call's one argument,
//! [`Args`](crate::Args)) hands over as it is.
//!
//! The split is a guess made from bytes the peer chose, so nothing relies on it: the decoder
//! checks the head again, decodes a type that is not a byte string from the payload made
//! whole, and every length is the frame's, which the receiver has checked against its
//! maximum before it allocates anything.
//!
//! [`FrameReceiver::recv_payload`]: super::FrameReceiver::recv_payload

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::buffers;
use crate::protocol::{Envelope, Kind};

/// Payload bytes looked at before deciding: an envelope (at most 27 bytes) and a length
/// prefix (at most 10).
pub(crate) const HEAD_WINDOW: usize = 40;

/// The smallest payload worth splitting: below it the copy costs less than a second buffer.
pub(crate) const SPLIT_MIN: usize = buffers::POOLED_MIN;

thread_local! {
    /// Where this thread last received a byte string split off a frame, for the tests that
    /// check a reply's `Vec` is that buffer (see `__private::last_split_bytes`).
    static LAST_SPLIT: Cell<usize> = const { Cell::new(0) };
}

/// The same, for the whole process: a server's frame may be begun by one of its threads and
/// finished by another.
static LAST_SPLIT_IN_PROCESS: AtomicUsize = AtomicUsize::new(0);

/// The address of the buffer this thread last received a byte string split off a frame
/// into; 0 if it never did.
pub(crate) fn last_split_bytes() -> usize {
    LAST_SPLIT.get()
}

/// The address of the buffer any thread of this process last received a byte string split
/// off a frame into; 0 if none did.
pub(crate) fn last_split_bytes_in_process() -> usize {
    LAST_SPLIT_IN_PROCESS.load(Ordering::Relaxed)
}

/// One received frame's payload, as [`FrameReceiver::recv_payload`] returns it.
///
/// [`FrameReceiver::recv_payload`]: super::FrameReceiver::recv_payload
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// The payload in one buffer.
    Whole(Vec<u8>),
    /// A reply or a call whose body is a byte string: everything before the string's bytes
    /// (envelope, and the string's length prefix), and the bytes in a buffer of their own.
    Split {
        /// The payload up to the byte string's bytes.
        head: Vec<u8>,
        /// The byte string's bytes: the rest of the payload.
        bytes: Vec<u8>,
    },
}

impl Payload {
    /// The payload's first bytes: all of it when whole, the head when split. Either way
    /// they start with the envelope of a frame after the handshake.
    pub fn head(&self) -> &[u8] {
        match self {
            Payload::Whole(buf) => buf,
            Payload::Split { head, .. } => head,
        }
    }

    /// The payload's length.
    pub fn len(&self) -> usize {
        match self {
            Payload::Whole(buf) => buf.len(),
            Payload::Split { head, bytes } => head.len() + bytes.len(),
        }
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload in one buffer: as it is when whole, a copy of both parts when split.
    pub fn into_whole(self) -> Vec<u8> {
        match self {
            Payload::Whole(buf) => buf,
            Payload::Split { head, bytes } => {
                let mut buf = buffers::take(head.len() + bytes.len());
                buf.extend_from_slice(&head);
                buf.extend_from_slice(&bytes);
                buffers::give(bytes);
                buf
            }
        }
    }

    /// Gives the payload's buffers back to the pool.
    pub(crate) fn give_back(self) {
        match self {
            Payload::Whole(buf) => buffers::give(buf),
            Payload::Split { bytes, .. } => buffers::give(bytes),
        }
    }
}

/// True if `prefix` is nothing but a byte string's length prefix counting exactly `len`
/// bytes: what a split payload's head holds after the envelope, checked again by whoever
/// takes the split-off bytes (the receiver's split was a guess from the peer's bytes).
pub(crate) fn counts_exactly(prefix: &[u8], len: usize) -> bool {
    match postcard::take_from_bytes::<u64>(prefix) {
        Ok((count, [])) => usize::try_from(count).is_ok_and(|count| count == len),
        _ => false,
    }
}

/// Where a trailing byte string starts in a payload of `len` bytes whose first bytes are
/// `window`: the envelope says `Reply` (a client's), `Call` or `OneWay` (a server's), and
/// right after it a length prefix counts exactly the bytes after the prefix. `None` for
/// anything else, a small payload included.
pub(crate) fn split_point(window: &[u8], len: usize) -> Option<usize> {
    if len < SPLIT_MIN {
        return None;
    }
    let (envelope, body) = Envelope::decode(window).ok()?;
    if !matches!(envelope.kind, Kind::Reply | Kind::Call | Kind::OneWay) {
        return None;
    }
    let (count, rest) = postcard::take_from_bytes::<u64>(body).ok()?;
    let at = window.len() - rest.len();
    (usize::try_from(count).ok()? == len.checked_sub(at)?).then_some(at)
}

/// A frame's payload arriving, in buffers of its own (a large frame on a stream, every frame
/// on the shared-memory rings). Bytes go into [`dest`](Self::dest), then
/// [`advance`](Self::advance) is called.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The first bytes of a payload that may be split, until there are enough to tell.
    Window { window: Vec<u8>, len: usize },
    /// Into one buffer, `len` bytes in all.
    Whole { buf: Vec<u8>, len: usize },
    /// The head whole (`at` bytes), the byte string's `len` bytes arriving in `bytes`.
    Split { head: Vec<u8>, bytes: Vec<u8>, len: usize },
}

impl Incoming {
    /// A payload of `len` bytes, which may be split before a trailing byte string if
    /// `split` (see [`split_point`]).
    pub(crate) fn new(len: usize, split: bool) -> Incoming {
        if split && len >= SPLIT_MIN {
            Incoming::Window {
                window: Vec::with_capacity(HEAD_WINDOW),
                len,
            }
        } else {
            Incoming::whole(buffers::take(len), len)
        }
    }

    /// A payload of `len` bytes into `buf` (empty, with room for them), never split.
    pub(crate) fn whole(buf: Vec<u8>, len: usize) -> Incoming {
        Incoming::Whole { buf, len }
    }

    /// The buffer the next bytes go into, and how many of them go there.
    pub(crate) fn dest(&mut self) -> (&mut Vec<u8>, usize) {
        match self {
            Incoming::Window { window, .. } => {
                let left = HEAD_WINDOW - window.len();
                (window, left)
            }
            Incoming::Whole { buf, len } => {
                let left = *len - buf.len();
                (buf, left)
            }
            Incoming::Split { bytes, len, .. } => {
                let left = *len - bytes.len();
                (bytes, left)
            }
        }
    }

    /// After bytes went into [`dest`](Self::dest): once the window is full, splits or not.
    pub(crate) fn advance(&mut self) {
        let Incoming::Window { window, len } = self else {
            return;
        };
        if window.len() < HEAD_WINDOW {
            return;
        }
        let (mut window, len) = (std::mem::take(window), *len);
        *self = match split_point(&window, len) {
            Some(at) => {
                // Exactly its size, not from the pool: the caller keeps it (a pooled buffer
                // may be far larger, and would leave the pool for good).
                let mut bytes = Vec::with_capacity(len - at);
                LAST_SPLIT.set(bytes.as_ptr() as usize);
                LAST_SPLIT_IN_PROCESS.store(bytes.as_ptr() as usize, Ordering::Relaxed);
                bytes.extend_from_slice(&window[at..]);
                window.truncate(at);
                Incoming::Split {
                    head: window,
                    bytes,
                    len: len - at,
                }
            }
            None => {
                let mut buf = buffers::take(len);
                buf.extend_from_slice(&window);
                Incoming::Whole { buf, len }
            }
        };
    }

    /// Takes as many of `bytes` as the payload has left; returns how many.
    pub(crate) fn extend(&mut self, mut bytes: &[u8]) -> usize {
        let mut taken = 0;
        while !bytes.is_empty() {
            let (buf, left) = self.dest();
            let n = left.min(bytes.len());
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&bytes[..n]);
            self.advance();
            bytes = &bytes[n..];
            taken += n;
        }
        taken
    }

    /// True once every byte has arrived.
    pub(crate) fn is_complete(&self) -> bool {
        match self {
            // A window is smaller than any payload that has one.
            Incoming::Window { .. } => false,
            Incoming::Whole { buf, len } => buf.len() == *len,
            Incoming::Split { bytes, len, .. } => bytes.len() == *len,
        }
    }

    /// Bytes of the payload received so far, and its length.
    pub(crate) fn received(&self) -> (usize, usize) {
        match self {
            Incoming::Window { window, len } => (window.len(), *len),
            Incoming::Whole { buf, len } => (buf.len(), *len),
            Incoming::Split { head, bytes, len } => (head.len() + bytes.len(), head.len() + len),
        }
    }

    /// The payload, once [complete](Self::is_complete).
    pub(crate) fn into_payload(self) -> Payload {
        match self {
            Incoming::Window { window, .. } => Payload::Whole(window),
            Incoming::Whole { buf, .. } => Payload::Whole(buf),
            Incoming::Split { head, bytes, .. } => Payload::Split { head, bytes },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    fn reply_of(bytes: &[u8]) -> Vec<u8> {
        let envelope = Envelope {
            id: 7,
            kind: Kind::Reply,
            method: 3,
            timeout_us: None,
        };
        envelope
            .frame_with(serde_bytes::Bytes::new(bytes))
            .unwrap()
            .payload()
            .to_vec()
    }

    fn received(payload: &[u8], split: bool, chunk: usize) -> Payload {
        let mut incoming = Incoming::new(payload.len(), split);
        for part in payload.chunks(chunk) {
            assert_eq!(incoming.extend(part), part.len());
        }
        assert!(incoming.is_complete());
        incoming.into_payload()
    }

    #[test]
    fn a_large_reply_of_bytes_splits_before_them_however_it_arrives() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let payload = reply_of(&data);
        for chunk in [1, 3, 39, 40, 41, 4096, payload.len()] {
            match received(&payload, true, chunk) {
                Payload::Split { head, bytes } => {
                    assert_eq!(bytes, data, "chunks of {chunk}");
                    assert_eq!(head, payload[..payload.len() - data.len()]);
                }
                other => panic!("not split, chunks of {chunk}: {} bytes", other.len()),
            }
        }
    }

    #[test]
    fn a_large_call_or_one_way_call_of_bytes_splits_before_them() {
        let data = vec![7; 100_000];
        for (kind, byte) in [("a call", 0), ("a one-way call", 1)] {
            let mut payload = reply_of(&data);
            payload[1] = byte;
            match received(&payload, true, 4096) {
                Payload::Split { head, bytes } => {
                    assert_eq!(bytes, data, "{kind}");
                    assert_eq!(head, payload[..payload.len() - data.len()], "{kind}");
                }
                other => panic!("{kind} not split: {} bytes", other.len()),
            }
        }
    }

    #[test]
    fn a_payload_split_and_made_whole_again_is_the_payload() {
        let payload = reply_of(&[5; 100_000]);
        let split = received(&payload, true, 1000);
        assert!(matches!(split, Payload::Split { .. }));
        assert_eq!(split.len(), payload.len());
        assert_eq!(split.into_whole(), payload);
    }

    #[test]
    fn what_is_not_a_large_reply_ending_in_exactly_its_bytes_stays_whole() {
        let data = vec![1; 100_000];
        let mut lying = reply_of(&data);
        // The length prefix (3 bytes, after a 4-byte envelope) claims one byte more.
        let at = lying.len() - data.len() - 3;
        lying[at] = lying[at].wrapping_add(1);
        let mut error = reply_of(&data);
        error[1] = 3; // Kind::Error
        let mut cancel = reply_of(&data);
        cancel[1] = 4; // Kind::Cancel
        let mut frame = Frame::new();
        frame.encode(&vec![1u32; 30_000]).unwrap();
        for (what, payload) in [
            ("a lying length prefix", lying),
            ("an error", error),
            ("a cancel", cancel),
            ("a sequence", frame.payload().to_vec()),
            ("a small reply", reply_of(&[1; 1000])),
        ] {
            assert!(
                matches!(received(&payload, true, 512), Payload::Whole(ref p) if *p == payload),
                "{what}"
            );
        }
        let payload = reply_of(&data);
        assert!(matches!(received(&payload, false, 512), Payload::Whole(_)));
    }

    #[test]
    fn a_payload_cut_short_says_how_far_it_got() {
        let payload = reply_of(&[9; 100_000]);
        let mut incoming = Incoming::new(payload.len(), true);
        incoming.extend(&payload[..20]);
        assert_eq!(incoming.received(), (20, payload.len()));
        incoming.extend(&payload[20..5000]);
        assert!(matches!(incoming, Incoming::Split { .. }));
        assert_eq!(incoming.received(), (5000, payload.len()));
        assert!(!incoming.is_complete());
        assert_eq!(incoming.extend(&payload[5000..]), payload.len() - 5000);
        assert_eq!(incoming.extend(&[0; 10]), 0, "nothing past the payload's end");
    }
}

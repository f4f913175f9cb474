//! A large frame encoded straight onto a stream: its large byte strings are written from the
//! caller's own buffer, beside the bytes encoded before them, with one `writev`, instead of
//! being copied into a [`Frame`](crate::protocol::Frame) first (the 1 MiB echo's encode copy).

use std::io::{self, IoSlice};
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::PollFlags;

use super::{not_taken, wait_ready, StreamSender};
use crate::error::TransportError;
use crate::protocol::HEADROOM;
use crate::transport::sink::Gather;
use crate::transport::{Encode, Sink};
use crate::wait::Wait;

/// Frames smaller than this are encoded into a frame and written with one `send`: the copy
/// costs less than the extra system calls.
const STREAMED_MIN: usize = 64 * 1024;

/// Byte strings at least this long are written from where they lie.
const BORROWED_MIN: usize = 4096;

/// Why encoding onto the stream stopped early.
enum Stop {
    /// The wait ran out before any byte was written: nothing was sent.
    NotTaken,
    /// The stream failed.
    Failed(TransportError),
}

/// A frame being written as it is encoded.
struct Streamed<'s> {
    sender: &'s mut StreamSender,
    wait: Wait,
    /// The frame's length, prefix included.
    frame_len: usize,
    /// Bytes encoded and not yet written, from the length prefix on.
    head: Vec<u8>,
    /// Bytes written so far.
    written: usize,
    /// The wait ran out with part of the frame written: the rest, kept for `flush`.
    tail: Option<Vec<u8>>,
    stop: Option<Stop>,
}

impl Streamed<'_> {
    /// Writes `head`, then `bytes`; what the wait leaves unwritten starts the tail.
    fn write(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        let head = self.head.len();
        let total = head + bytes.len();
        let mut done = 0;
        while done < total {
            let iov = [
                IoSlice::new(&self.head[done.min(head)..]),
                IoSlice::new(&bytes[done.saturating_sub(head)..]),
            ];
            let iov = if done < head { &iov[..] } else { &iov[1..] };
            match self.sender.write_vectored(iov, self.wait != Wait::Block) {
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let sender = &*self.sender;
                    match wait_ready(sender.fd.as_fd(), PollFlags::POLLOUT, self.wait, None, &sender.peer) {
                        Ok(()) => {}
                        Err(e) if e.is_retryable() => break,
                        Err(e) => return self.stop(Stop::Failed(e)),
                    }
                }
                Err(e) => {
                    let e = self.sender.write_error(e);
                    return self.stop(Stop::Failed(e));
                }
            }
        }
        self.written += done;
        if done < total {
            if self.written == 0 {
                return self.stop(Stop::NotTaken);
            }
            let mut tail = Vec::with_capacity(self.frame_len - self.written);
            tail.extend_from_slice(&self.head[done.min(head)..]);
            tail.extend_from_slice(&bytes[done.saturating_sub(head)..]);
            self.tail = Some(tail);
        }
        self.head.clear();
        Ok(())
    }

    fn stop(&mut self, why: Stop) -> postcard::Result<()> {
        self.stop = Some(why);
        Err(postcard::Error::SerializeBufferFull)
    }
}

impl Gather for Streamed<'_> {
    fn push(&mut self, byte: u8) -> postcard::Result<()> {
        self.tail.as_mut().unwrap_or(&mut self.head).push(byte);
        Ok(())
    }

    fn extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        match &mut self.tail {
            Some(tail) => tail.extend_from_slice(bytes),
            None if bytes.len() >= BORROWED_MIN => return self.write(bytes),
            None => self.head.extend_from_slice(bytes),
        }
        Ok(())
    }
}

impl StreamSender {
    /// [`FrameSender::send_encoded`](crate::transport::FrameSender::send_encoded) for a
    /// stream: a frame of at least [`STREAMED_MIN`] bytes is written as it is encoded, its
    /// large byte strings straight from the caller's buffer. False if nothing was sent (a
    /// smaller frame, a frame pending); `WouldBlock`/`TimedOut` if the wait ran out before
    /// any byte was written (nothing was sent).
    pub(super) fn send_streamed(
        &mut self,
        len: usize,
        encode: &mut Encode<'_>,
        wait: Wait,
    ) -> Result<bool, TransportError> {
        if len < STREAMED_MIN || len > self.max || self.pending.is_pending() || self.closed {
            return Ok(false);
        }
        let prefix = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(&prefix);
        let mut streamed = Streamed {
            sender: self,
            wait,
            frame_len: HEADROOM + len,
            head,
            written: 0,
            tail: None,
            stop: None,
        };
        let mut sink = Sink::gathered(&mut streamed, len);
        let encoded = encode(&mut sink).is_ok() && sink.written() == len;
        if encoded && streamed.tail.is_none() && !streamed.head.is_empty() {
            // What followed the last large byte string (or a frame without one).
            let _ = streamed.write(&[]);
        }
        match streamed.stop.take() {
            Some(Stop::NotTaken) => return Err(not_taken(wait, &self.peer)),
            Some(Stop::Failed(e)) => return Err(e),
            None if !encoded && streamed.written == 0 => return Ok(false),
            None if !encoded => {
                // Part of the frame is out and the rest cannot be made: the stream is broken.
                let peer = streamed.sender.peer.clone();
                let why = io::Error::other("the payload encoded to another size than it was measured at");
                return Err(TransportError::io("encode", peer, why));
            }
            None => {}
        }
        if let Some(tail) = streamed.tail.take() {
            self.pending.keep_owned(tail);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::gathered::pair;
    use super::*;
    use crate::transport::{FrameReceiver, FrameSender};

    fn encoded(value: &(u64, serde_bytes::ByteBuf, u8)) -> Vec<u8> {
        postcard::to_stdvec(value).unwrap()
    }

    #[test]
    fn a_large_frame_written_as_encoded_arrives_as_a_frame_would() {
        let (mut tx, mut rx) = pair();
        let value = (7u64, serde_bytes::ByteBuf::from(vec![9u8; 3 << 20]), 5u8);
        let expected = encoded(&value);
        let len = expected.len();
        let drain = std::thread::spawn(move || rx.recv(Wait::Block).unwrap());
        let sent = tx.send_encoded(
            len,
            &mut |sink| postcard::serialize_with_flavor(&value, &mut *sink),
            Wait::Block,
        );
        assert!(sent.unwrap(), "sent as encoded");
        assert!(!tx.has_pending());
        assert!(drain.join().unwrap() == expected, "the same bytes as the frame");
    }

    #[test]
    fn a_full_socket_keeps_the_rest_of_a_frame_written_as_encoded_for_flush() {
        let (mut tx, mut rx) = pair();
        let value = (1u64, serde_bytes::ByteBuf::from(vec![3u8; 4 << 20]), 2u8);
        let expected = encoded(&value);
        let len = expected.len();
        let sent = tx.send_encoded(
            len,
            &mut |sink| postcard::serialize_with_flavor(&value, &mut *sink),
            Wait::NonBlock,
        );
        assert!(sent.unwrap(), "taken in part");
        assert!(tx.has_pending(), "4 MiB do not fit in a socket buffer");
        let drain = std::thread::spawn(move || rx.recv(Wait::Block).unwrap());
        tx.flush(Wait::Block).unwrap();
        assert!(drain.join().unwrap() == expected);
    }

    #[test]
    fn a_frame_no_byte_of_which_fits_is_not_taken() {
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        // Fill the socket by hand, then hand it to a sender (which makes it blocking again).
        a.set_nonblocking(true).unwrap();
        while std::io::Write::write(&mut a, &[0; 4096]).is_ok() {}
        let fd = std::os::fd::OwnedFd::from(a);
        let mut tx = StreamSender::new(fd, super::super::FdKind::Socket, "test").unwrap();
        let value = (1u64, serde_bytes::ByteBuf::from(vec![3u8; 1 << 20]), 2u8);
        let len = encoded(&value).len();
        let sent = tx.send_encoded(
            len,
            &mut |sink| postcard::serialize_with_flavor(&value, &mut *sink),
            Wait::NonBlock,
        );
        assert!(matches!(sent, Err(TransportError::WouldBlock { .. })), "{sent:?}");
        assert!(!tx.has_pending(), "nothing of it kept");
    }

    #[test]
    fn a_small_frame_is_left_to_the_copying_send() {
        let (mut tx, _rx) = pair();
        let sent = tx.send_encoded(
            16,
            &mut |sink| postcard::serialize_with_flavor(&[1u8; 15][..], &mut *sink),
            Wait::Block,
        );
        assert!(!sent.unwrap());
    }
}

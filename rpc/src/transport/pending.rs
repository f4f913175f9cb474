//! What the byte-writing senders (streams, shared-memory rings) share: a frame that a
//! non-blocking or deadline-bound send left partly written.

use crate::error::TransportError;
use crate::protocol::Frame;
use crate::wait::Wait;

/// Writes `bytes` from `*off` on: `Ok(true)` when all written, `Ok(false)` when the wait ran
/// out (with `*off` how far it got).
pub(crate) type WriteAll<'a> = dyn FnMut(&[u8], &mut usize, Wait) -> Result<bool, TransportError> + 'a;

/// The unwritten tail of a frame that was partly written.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    bytes: Vec<u8>,
    off: usize,
}

/// The error for a frame not taken because `wait` ran out.
pub(crate) fn not_taken(wait: Wait, peer: &str) -> TransportError {
    match wait {
        Wait::NonBlock => TransportError::WouldBlock { peer: peer.to_owned() },
        _ => TransportError::TimedOut { peer: peer.to_owned() },
    }
}

impl Pending {
    /// True while part of a frame waits to be written.
    pub(crate) fn is_pending(&self) -> bool {
        self.off < self.bytes.len()
    }

    /// Finishes the pending frame, then writes `frame`: `Ok(false)` if `wait` ran out before
    /// `frame` was taken at all. A frame only partly written is taken: its tail is kept.
    pub(crate) fn send(
        &mut self,
        frame: &mut Frame,
        wait: Wait,
        write: &mut WriteAll<'_>,
    ) -> Result<bool, TransportError> {
        if !self.flush(wait, write)? {
            return Ok(false);
        }
        let bytes = frame.as_length_prefixed();
        let mut off = 0;
        if !write(bytes, &mut off, wait)? {
            if off == 0 {
                return Ok(false);
            }
            self.keep(&bytes[off..]);
        }
        Ok(true)
    }

    /// Keeps `tail`, the unwritten rest of a frame that was partly written; nothing may be
    /// pending already.
    pub(crate) fn keep(&mut self, tail: &[u8]) {
        debug_assert!(!self.is_pending());
        self.bytes.clear();
        self.bytes.extend_from_slice(tail);
        self.off = 0;
    }

    /// As [`keep`](Self::keep), taking the tail's buffer.
    pub(crate) fn keep_owned(&mut self, tail: Vec<u8>) {
        debug_assert!(!self.is_pending());
        self.bytes = tail;
        self.off = 0;
    }

    /// Writes what is pending: `Ok(false)` if `wait` ran out first.
    pub(crate) fn flush(&mut self, wait: Wait, write: &mut WriteAll<'_>) -> Result<bool, TransportError> {
        if !self.is_pending() {
            return Ok(true);
        }
        let mut off = self.off;
        let result = write(&self.bytes, &mut off, wait);
        self.off = off;
        if result? {
            self.bytes.clear();
            self.off = 0;
            return Ok(true);
        }
        Ok(false)
    }
}

/// A sender that writes each frame's bytes with a [`Pending`] tail (streams, shared-memory
/// rings, message queues): what [`send_frame`] and [`flush_frame`] need of it.
pub(crate) trait ByteSender {
    /// The peer, for errors.
    fn peer(&self) -> &str;
    /// The largest payload this side sends.
    fn max_frame_len(&self) -> usize;
    /// True once this side was closed.
    fn is_closed(&self) -> bool;
    /// `Closed` once this side was closed.
    fn check_open(&self) -> Result<(), TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed {
                peer: self.peer().to_owned(),
            });
        }
        Ok(())
    }
    /// The partly written frame.
    fn pending(&mut self) -> &mut Pending;
    /// Writes `bytes` from `*off` on: `Ok(true)` when all written, `Ok(false)` when `wait`
    /// ran out (with `*off` how far it got).
    fn write_all(&mut self, bytes: &[u8], off: &mut usize, wait: Wait) -> Result<bool, TransportError>;
}

/// [`FrameSender::send`](super::FrameSender::send) for a [`ByteSender`].
pub(crate) fn send_frame(sender: &mut impl ByteSender, frame: &mut Frame, wait: Wait) -> Result<(), TransportError> {
    if frame.payload_len() > sender.max_frame_len() {
        return Err(TransportError::FrameTooLarge {
            peer: sender.peer().to_owned(),
            len: frame.payload_len() as u64,
            max: sender.max_frame_len(),
        });
    }
    sender.check_open()?;
    let mut pending = std::mem::take(sender.pending());
    let taken = pending.send(frame, wait, &mut |b, off, w| sender.write_all(b, off, w));
    *sender.pending() = pending;
    if taken? {
        Ok(())
    } else {
        Err(not_taken(wait, sender.peer()))
    }
}

/// [`FrameSender::flush`](super::FrameSender::flush) for a [`ByteSender`].
pub(crate) fn flush_frame(sender: &mut impl ByteSender, wait: Wait) -> Result<(), TransportError> {
    sender.check_open()?;
    let mut pending = std::mem::take(sender.pending());
    let done = pending.flush(wait, &mut |b, off, w| sender.write_all(b, off, w));
    *sender.pending() = pending;
    if done? {
        Ok(())
    } else {
        Err(not_taken(wait, sender.peer()))
    }
}

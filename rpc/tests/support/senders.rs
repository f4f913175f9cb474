//! Senders that wrap a transport's own: one that counts the writes it makes, one that
//! holds frames back to write several in one write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use procwire_rpc::protocol::Frame;
use procwire_rpc::transport::{Encode, FrameSender};
use procwire_rpc::{TransportError, Wait};

/// Counts the writes a connection's sender makes, and the frames they carry.
pub struct CountingSender {
    pub inner: Box<dyn FrameSender>,
    pub counts: Arc<Counts>,
}

#[derive(Default)]
pub struct Counts {
    pub writes: AtomicUsize,
    pub frames: AtomicUsize,
}

impl Counts {
    fn wrote(&self, frames: usize) {
        if frames > 0 {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.frames.fetch_add(frames, Ordering::SeqCst);
        }
    }
}

impl FrameSender for CountingSender {
    fn send(&mut self, frame: &mut Frame, wait: Wait) -> Result<(), TransportError> {
        let sent = self.inner.send(frame, wait);
        self.counts.wrote(usize::from(sent.is_ok()));
        sent
    }

    fn flush(&mut self, wait: Wait) -> Result<(), TransportError> {
        self.inner.flush(wait)
    }

    fn has_pending(&self) -> bool {
        self.inner.has_pending()
    }

    fn close(&mut self) {
        self.inner.close()
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.inner.set_max_frame_len(max)
    }

    fn send_many(&mut self, frames: &mut [Frame], wait: Wait) -> (usize, Result<(), TransportError>) {
        let (taken, result) = self.inner.send_many(frames, wait);
        self.counts.wrote(taken);
        (taken, result)
    }

    fn try_send_encoded(&mut self, len: usize, encode: &mut Encode<'_>) -> bool {
        let sent = self.inner.try_send_encoded(len, encode);
        self.counts.wrote(usize::from(sent));
        sent
    }

    fn send_encoded(&mut self, len: usize, encode: &mut Encode<'_>, wait: Wait) -> Result<bool, TransportError> {
        let sent = self.inner.send_encoded(len, encode, wait);
        self.counts.wrote(usize::from(matches!(sent, Ok(true))));
        sent
    }

    fn encodes_without_waiting(&self) -> bool {
        self.inner.encodes_without_waiting()
    }
}

/// Passes the first `pass` frames through, then holds the next `gather` back and writes
/// them in one write (as a client's deferred frames leave), then passes every later one
/// through: so that the peer's one read brings them all.
pub struct GatherSender {
    pub inner: Box<dyn FrameSender>,
    pub pass: usize,
    pub gather: usize,
    pub held: Vec<Frame>,
}

impl FrameSender for GatherSender {
    fn send(&mut self, frame: &mut Frame, wait: Wait) -> Result<(), TransportError> {
        if self.pass > 0 {
            self.pass -= 1;
            return self.inner.send(frame, wait);
        }
        if self.gather == 0 {
            return self.inner.send(frame, wait);
        }
        self.held.push(std::mem::take(frame));
        if self.held.len() < self.gather {
            return Ok(());
        }
        self.gather = 0;
        let mut held = std::mem::take(&mut self.held);
        let mut at = 0;
        while at < held.len() {
            let (taken, result) = self.inner.send_many(&mut held[at..], Wait::Block);
            result?;
            at += taken;
        }
        Ok(())
    }

    fn flush(&mut self, wait: Wait) -> Result<(), TransportError> {
        self.inner.flush(wait)
    }

    fn has_pending(&self) -> bool {
        self.inner.has_pending()
    }

    fn close(&mut self) {
        self.inner.close()
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.inner.set_max_frame_len(max)
    }
}

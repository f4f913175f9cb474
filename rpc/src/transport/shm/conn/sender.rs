//! The sending half of a shared-memory connection: the producer of one ring, and the kick
//! that wakes a parked consumer.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags};

use super::{corrupt, poll_until, Shared};
use crate::error::TransportError;
use crate::protocol::{Frame, DEFAULT_MAX_FRAME_LEN};
use crate::transport::pending::{flush_frame, send_frame, ByteSender, Pending};
use crate::transport::shm::ring::{InPlace, Producer, Ring};
use crate::transport::shm::spin::{publish_cpu, Spinner, Strategy};
use crate::transport::{Encode, FrameSender};
use crate::wait::Wait;

/// How a producer kicks a parked consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kick {
    /// After a frame: first waits briefly for the consumer to look anyway, if that pays.
    Grace,
    /// Inside a frame published as it is encoded: a consumer already kicked for it is on
    /// its way, and a wait per piece would only slow the copy.
    Now,
    /// At the close: always (a parked consumer must see it even if a kick is on its way).
    Always,
}

/// Kicks the consumer of `ring` if it is parked (see the module docs for the ordering).
fn kick(ring: &Ring, spinner: &Spinner, data: &OwnedFd, how: Kick) {
    // SeqCst: orders our tail store before the load of the consumer's flag.
    fence(Ordering::SeqCst);
    if ring.consumer_parked().load(Ordering::Relaxed) == 0 {
        return;
    }
    // A consumer that clears its flag after our store looks at the ring after it too (it
    // spins on it, and re-checks after raising the flag again); one that consumed our
    // bytes needs nothing either. The head is the peer's word: only a hint here.
    let tail = ring.tail().load(Ordering::Relaxed);
    let looked = || ring.consumer_parked().load(Ordering::Relaxed) == 0 || ring.head().load(Ordering::Relaxed) >= tail;
    if how == Kick::Grace && spinner.grace(ring.producer_cpu(), ring.consumer_cpu(), looked) {
        return;
    }
    if ring.kicked().swap(1, Ordering::Relaxed) == 0 || how == Kick::Always {
        // An eventfd write fails only when the counter would overflow, which leaves it
        // readable anyway; a dead peer is noticed by the receiver.
        let _ = nix::unistd::write(data, &1u64.to_ne_bytes());
    }
}

/// Frames at least this long are published as they are encoded when the consumer runs on
/// another CPU: it copies the first pieces out while the rest are written, which on two
/// CPUs nearly halves the time a large frame takes (a copy in, then a copy out, overlap).
/// On one CPU that would only switch between the two ends per piece.
const PIPELINED_MIN: usize = 256 * 1024;

/// The sending half: the producer of one ring.
#[derive(Debug)]
pub struct ShmSender {
    sh: Arc<Shared>,
    tx: Producer,
    /// Rung by the consumer when it frees space while we are parked.
    space: Arc<OwnedFd>,
    /// Rung by us when we publish bytes while the consumer is parked.
    data: OwnedFd,
    spinner: Spinner,
    max: usize,
    pending: Pending,
    closed: bool,
}

impl ShmSender {
    pub(crate) fn new(
        sh: Arc<Shared>,
        tx: Producer,
        space: Arc<OwnedFd>,
        data: OwnedFd,
        strategy: Strategy,
    ) -> ShmSender {
        ShmSender {
            sh,
            tx,
            space,
            data,
            spinner: Spinner::new(strategy),
            max: DEFAULT_MAX_FRAME_LEN,
            pending: Pending::default(),
            closed: false,
        }
    }

    /// Kicks the consumer if it is parked (see the module docs for the ordering).
    fn kick(&self, how: Kick) {
        kick(self.tx.ring(), &self.spinner, &self.data, how);
    }

    fn has_space(&self) -> Result<bool, TransportError> {
        Ok(self.tx.free().map_err(|e| corrupt(&self.sh.name, e))? > 0)
    }

    /// Waits until the ring has room; false when `wait` ran out.
    fn wait_space(&mut self, wait: Wait) -> Result<bool, TransportError> {
        if wait == Wait::NonBlock {
            return Ok(false);
        }
        let ring = self.tx.ring().clone();
        let tx = &self.tx;
        if self
            .spinner
            .spin(ring.producer_cpu(), ring.consumer_cpu(), wait.as_deadline(), || {
                tx.free().map_or(true, |n| n > 0)
            })
        {
            return Ok(true);
        }
        // Park: drain old rings, raise the flag, re-check, sleep.
        let _ = nix::unistd::read(self.space.as_raw_fd(), &mut [0; 8]);
        ring.producer_parked().store(1, Ordering::Relaxed);
        // SeqCst: orders the flag's store before the re-check's load of head.
        fence(Ordering::SeqCst);
        if self.has_space()? {
            ring.producer_parked().store(0, Ordering::Relaxed);
            return Ok(true);
        }
        let parked_at = Instant::now();
        let mut fds = [
            PollFd::new(self.space.as_fd(), PollFlags::POLLIN),
            // No events asked: only hang-up and error, the peer's death.
            PollFd::new(self.sh.socket.as_fd(), PollFlags::empty()),
        ];
        let woke = poll_until(&mut fds, wait, &self.sh.name);
        ring.producer_parked().store(0, Ordering::Relaxed);
        let hung_up = fds[1].revents().is_some_and(|r| !r.is_empty());
        if !woke? {
            return Ok(false);
        }
        self.spinner.parked(parked_at.elapsed());
        if hung_up && !self.has_space()? {
            return Err(TransportError::Closed {
                peer: self.sh.name.clone(),
            });
        }
        Ok(true)
    }
}

impl ByteSender for ShmSender {
    fn peer(&self) -> &str {
        &self.sh.name
    }

    fn max_frame_len(&self) -> usize {
        self.max
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn pending(&mut self) -> &mut Pending {
        &mut self.pending
    }

    /// Writes `bytes` from `*off` on. `Ok(true)` when all written; `Ok(false)` when `wait`
    /// ran out.
    fn write_all(&mut self, bytes: &[u8], off: &mut usize, wait: Wait) -> Result<bool, TransportError> {
        publish_cpu(self.tx.ring().producer_cpu());
        while *off < bytes.len() {
            let n = self.tx.push(&bytes[*off..]).map_err(|e| corrupt(&self.sh.name, e))?;
            if n > 0 {
                *off += n;
                self.kick(Kick::Grace);
                continue;
            }
            if !self.wait_space(wait)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl FrameSender for ShmSender {
    fn send(&mut self, frame: &mut Frame, wait: Wait) -> Result<(), TransportError> {
        send_frame(self, frame, wait)
    }

    fn flush(&mut self, wait: Wait) -> Result<(), TransportError> {
        flush_frame(self, wait)
    }

    fn has_pending(&self) -> bool {
        self.pending.is_pending()
    }

    fn close(&mut self) {
        if !self.closed {
            self.tx.close();
            self.kick(Kick::Always);
        }
        self.closed = true;
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
    }

    fn try_send_encoded(&mut self, len: usize, encode: &mut Encode<'_>) -> bool {
        // A broken frame closed this side: the send the caller falls back to says so.
        self.send_encoded(len, encode, Wait::NonBlock).unwrap_or(false)
    }

    fn encodes_without_waiting(&self) -> bool {
        true
    }

    /// Encodes the frame straight into the ring if it has room for it in one piece now; a
    /// large one, for a consumer on another CPU, published as it is encoded. Never waits:
    /// a frame that does not fit goes through [`send`](FrameSender::send) (the caller's
    /// fallback), in pieces as the consumer frees space.
    fn send_encoded(&mut self, len: usize, encode: &mut Encode<'_>, _wait: Wait) -> Result<bool, TransportError> {
        if self.closed || self.pending.is_pending() || len > self.max {
            return Ok(false);
        }
        let ring = self.tx.ring();
        publish_cpu(ring.producer_cpu());
        let pipelined = len >= PIPELINED_MIN && self.spinner.pays(ring.producer_cpu(), ring.consumer_cpu());
        let (spinner, data) = (&self.spinner, &self.data);
        let mut first = true;
        let mut published = |ring: &Ring| {
            kick(
                ring,
                spinner,
                data,
                if std::mem::take(&mut first) {
                    Kick::Grace
                } else {
                    Kick::Now
                },
            );
        };
        // A corrupt ring is reported by the `send` the caller falls back to. An encoder that
        // panics after part of the frame went out leaves the ring unusable, as one that
        // fails does: this side closes before the panic goes on (a server catches it).
        let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.tx.encode_in_place(
                len,
                pipelined.then_some(&mut published as &mut dyn FnMut(&Ring)),
                |sink| encode(sink).is_ok(),
            )
        }));
        let sent = match sent {
            Ok(sent) => sent,
            Err(panic) => {
                if !first {
                    self.close();
                }
                std::panic::resume_unwind(panic)
            }
        };
        match sent {
            Ok(InPlace::Sent) => {
                // A pipelined frame's consumer was kicked for its first piece already.
                self.kick(if pipelined { Kick::Now } else { Kick::Grace });
                Ok(true)
            }
            Ok(InPlace::Broken) => {
                // Part of the frame is out and the rest cannot be made: the ring is broken.
                self.close();
                let why = io::Error::other("the payload encoded to another size than it was measured at");
                Err(TransportError::io("encode", self.sh.name.clone(), why))
            }
            Ok(InPlace::NotSent) | Err(_) => Ok(false),
        }
    }
}

impl Drop for ShmSender {
    fn drop(&mut self) {
        self.close();
    }
}

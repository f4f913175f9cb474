//! The receiving half of a shared-memory connection: the consumer of one ring.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{recv, MsgFlags};

use super::{corrupt, poll_until, Shared};
use crate::buffers;
use crate::error::TransportError;
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, HEADROOM};
use crate::transport::pending::not_taken;
use crate::transport::shm::ring::{Consumer, PADDING};
use crate::transport::shm::spin::{Spinner, Strategy};
use crate::transport::{FrameReceiver, Incoming, Interrupt, Payload};
use crate::wait::Wait;

/// A padding marker where it cannot be: split across the ring's end.
fn corrupt_padding(peer: &str, before_end: usize) -> TransportError {
    TransportError::io(
        "reading the shared ring",
        peer,
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a padding marker {before_end} bytes before the ring's end, too few to hold it"),
        ),
    )
}

/// What the ring says of the next frame ([`ShmReceiver::next_frame`]).
enum Next {
    /// Not even its length prefix is out yet.
    Unknown,
    /// A padding marker this many bytes before the ring's end, too few to hold it.
    BadPadding(usize),
    /// Its length prefix says `len`, behind `skip` bytes of padding.
    Frame { skip: usize, len: usize },
}

/// The receiving half: the consumer of one ring.
#[derive(Debug)]
pub struct ShmReceiver {
    sh: Arc<Shared>,
    rx: Consumer,
    /// Rung by us when we free space while the producer is parked.
    space: Arc<OwnedFd>,
    /// Rung by the producer when it publishes bytes while we are parked.
    data: OwnedFd,
    spinner: Spinner,
    max: usize,
    interrupt: Option<Interrupt>,
    /// A frame being read out of the ring.
    body: Option<Incoming>,
    /// A small payload given back (`recycle`), for the next small frame: a round trip
    /// allocated and freed one per side.
    spare: Vec<u8>,
    /// The socket said end of file: the peer is gone (its ring may still hold frames).
    peer_gone: bool,
    /// A thread of ours spins on the ring, with `consumer_parked` cleared.
    watching: bool,
    /// Bytes were consumed since the producer's flag was last looked at (`settle`).
    freed: bool,
    /// A fatal error was returned: every later receive says the connection is closed.
    finished: bool,
    /// When `prepare_wait` last told a server thread to sleep, for the spinner to learn.
    parked_at: Option<Instant>,
    /// A receive that must not wait found nothing: if it followed a wake-up, that was the
    /// peer's end of file or a stale kick, which only a drain tells apart.
    found_nothing: bool,
}

impl ShmReceiver {
    pub(crate) fn new(
        sh: Arc<Shared>,
        rx: Consumer,
        space: Arc<OwnedFd>,
        data: OwnedFd,
        strategy: Strategy,
    ) -> ShmReceiver {
        ShmReceiver {
            sh,
            rx,
            space,
            data,
            spinner: Spinner::new(strategy),
            max: DEFAULT_MAX_FRAME_LEN,
            interrupt: None,
            body: None,
            spare: Vec::new(),
            peer_gone: false,
            watching: false,
            freed: false,
            finished: false,
            parked_at: None,
            found_nothing: false,
        }
    }

    fn available(&self) -> Result<usize, TransportError> {
        self.rx.available().map_err(|e| corrupt(&self.sh.name, e))
    }

    /// Stops watching the ring (from now on a frame kicks) and tells a producer parked for
    /// space about the space freed since the last time: one fence for both, the only one of
    /// a receive that found its frame (a fence waits for our stores to reach the peer's
    /// CPU, which costs a cache-line round trip).
    fn settle(&mut self) {
        let watching = std::mem::take(&mut self.watching);
        if watching {
            self.rx.ring().consumer_parked().store(1, Ordering::Relaxed);
        }
        let freed = std::mem::take(&mut self.freed);
        if !watching && !freed {
            return;
        }
        // SeqCst: orders the flag's store before the next look at the ring (a frame
        // published before it is seen by whoever looks next: the server's `has_buffered`
        // right after a receive, the client's next reader), and our head store (in
        // `consume`) before the load of the producer's flag.
        fence(Ordering::SeqCst);
        // Load first: a write to the producer's cache line per frame would cost more.
        let parked = self.rx.ring().producer_parked();
        if freed && parked.load(Ordering::Relaxed) != 0 && parked.swap(0, Ordering::Relaxed) != 0 {
            let _ = nix::unistd::write(self.space.as_fd(), &1u64.to_ne_bytes());
        }
    }

    /// Where the next frame starts, of the `avail` bytes published, without consuming
    /// anything: behind a [`PADDING`] marker if the ring's end is padding.
    fn next_frame(&self, avail: usize) -> Next {
        if avail < HEADROOM {
            return Next::Unknown;
        }
        let mut prefix = [0; HEADROOM];
        self.rx.peek(0, &mut prefix);
        let mut skip = 0;
        if u32::from_le_bytes(prefix) == PADDING {
            // The rest of the ring is padding; the producer published at least the frame's
            // prefix behind it with it (a hostile one may not have: then this waits for more).
            skip = self.rx.until_end();
            if skip < HEADROOM {
                return Next::BadPadding(skip);
            }
            if avail < skip + HEADROOM {
                return Next::Unknown;
            }
            self.rx.peek(skip, &mut prefix);
        }
        Next::Frame {
            skip,
            len: u32::from_le_bytes(prefix) as usize,
        }
    }

    /// Returns a whole frame if the ring has one, moving a partial one out as it arrives. A
    /// large one may be split before a trailing byte string if `split`: its bytes are copied
    /// out of the ring straight into the buffer the caller keeps.
    fn take_frame(&mut self, split: bool) -> Result<Option<Payload>, TransportError> {
        let avail = self.available()?;
        if self.body.is_none() {
            let (skip, len) = match self.next_frame(avail) {
                Next::Unknown => return Ok(None),
                Next::BadPadding(skip) => {
                    self.finished = true;
                    return Err(corrupt_padding(&self.sh.name, skip));
                }
                Next::Frame { skip, len } => (skip, len),
            };
            if skip > 0 {
                self.rx.consume(skip);
                self.freed = true;
            }
            if len > self.max {
                self.finished = true;
                return Err(TransportError::FrameTooLarge {
                    peer: self.sh.name.clone(),
                    len: len as u64,
                    max: self.max,
                });
            }
            self.rx.consume(HEADROOM);
            // The prefix was consumed: `settle` tells the producer, before this end waits
            // or returns (as for the bytes below).
            self.freed = true;
            // A recycled buffer is smaller than any payload that may split.
            self.body = Some(match len <= self.spare.capacity() {
                true => Incoming::whole(std::mem::take(&mut self.spare), len),
                false => Incoming::new(len, split),
            });
        }
        let Some(mut body) = self.body.take() else {
            unreachable!("a body was just set")
        };
        let mut avail = self.available()?;
        while avail > 0 && !body.is_complete() {
            let (buf, left) = body.dest();
            let n = left.min(avail);
            self.rx.take_into(buf, n);
            body.advance();
            avail -= n;
            self.freed = true;
        }
        if body.is_complete() {
            return Ok(Some(body.into_payload()));
        }
        self.body = Some(body);
        Ok(None)
    }

    /// Quiets the data doorbell, then clears `kicked` so that the next frame kicks again
    /// (drain, then clear; the caller re-checks the ring after its next fence).
    fn drain_kicks(&mut self) {
        // Nonblocking: EAGAIN when a kick's write has not landed yet (it wakes us once more).
        let _ = nix::unistd::read(self.data.as_raw_fd(), &mut [0; 8]);
        self.rx.ring().kicked().store(0, Ordering::Relaxed);
    }

    /// Reads the socket without waiting to note the peer's end of file (nothing else is
    /// sent on it: stray bytes from a confused peer are dropped).
    fn check_liveness(&mut self) -> Result<(), TransportError> {
        let mut buf = [0; 64];
        loop {
            match recv(self.sh.socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(Errno::ECONNRESET) => {
                    self.peer_gone = true;
                    return Ok(());
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(TransportError::io("read", self.sh.name.clone(), e)),
            }
        }
    }

    /// Whether the ring can say something new: bytes, or the producer's close.
    fn news(&self) -> bool {
        self.rx.available().map_or(true, |n| n > 0) || self.rx.is_closed()
    }

    /// Spins if it pays, else parks: drain kicks, raise the flag, re-check. True if there is
    /// news (or the peer is gone); false if the caller should sleep on the doorbell. `liveness`
    /// reads the socket: a server thread woken for nothing may have been woken by the peer's
    /// end of file, and must find out here, or spin on it.
    fn spin_then_park(&mut self, deadline: Option<Instant>, liveness: bool) -> Result<bool, TransportError> {
        // A producer waiting for the space of a partly read frame must hear of it first.
        self.settle();
        let ring = self.rx.ring().clone();
        ring.consumer_parked().store(0, Ordering::Relaxed);
        self.watching = true;
        let rx = &self.rx;
        let spun = self
            .spinner
            .spin(ring.consumer_cpu(), ring.producer_cpu(), deadline, || {
                rx.available().map_or(true, |n| n > 0) || rx.is_closed()
            });
        if spun {
            return Ok(true);
        }
        self.watching = false;
        if liveness {
            self.check_liveness()?;
        }
        // Only a kick since the last drain can have left the doorbell readable (or one whose
        // write was still on its way then: it wakes us once for nothing).
        if ring.kicked().load(Ordering::Relaxed) != 0 {
            self.drain_kicks();
        }
        ring.consumer_parked().store(1, Ordering::Relaxed);
        // SeqCst: orders the flag's (and `kicked`'s) store before the re-check's load of tail.
        fence(Ordering::SeqCst);
        Ok(self.news() || self.peer_gone)
    }

    /// The peer is gone or closed its side: `Truncated` inside a frame, `Closed` between.
    fn ended(&mut self) -> TransportError {
        self.finished = true;
        match self.body.take().as_ref().map(Incoming::received) {
            Some((got, len)) => TransportError::Truncated {
                peer: self.sh.name.clone(),
                got: HEADROOM + got,
                expected: HEADROOM + len,
            },
            None => TransportError::Closed {
                peer: self.sh.name.clone(),
            },
        }
    }

    fn recv_inner(&mut self, wait: Wait, split: bool) -> Result<Payload, TransportError> {
        if self.rx.ring().kicked().load(Ordering::Relaxed) != 0 {
            // Quiet the readiness descriptor for a server's epoll set.
            self.drain_kicks();
            fence(Ordering::SeqCst);
        }
        loop {
            if let Some(frame) = self.take_frame(split)? {
                return Ok(frame);
            }
            // Closed is published after the last bytes: if it is set and nothing is left,
            // nothing more will come.
            if (self.rx.is_closed() || self.peer_gone) && self.available()? == 0 {
                return Err(self.ended());
            }
            if wait == Wait::NonBlock {
                return Err(not_taken(wait, &self.sh.name));
            }
            // Our own poll shows the end of file, and the liveness check after it notes it.
            if self.spin_then_park(wait.as_deadline(), false)? {
                continue;
            }
            let parked_at = Instant::now();
            let socket = self.sh.socket.as_fd();
            let mut fds = [
                PollFd::new(self.data.as_fd(), PollFlags::POLLIN),
                PollFd::new(socket, PollFlags::POLLIN),
                PollFd::new(
                    self.interrupt.as_ref().map_or(socket, Interrupt::as_fd),
                    PollFlags::POLLIN,
                ),
            ];
            let n = if self.interrupt.is_some() { 3 } else { 2 };
            if !poll_until(&mut fds[..n], wait, &self.sh.name)? {
                return Err(not_taken(wait, &self.sh.name));
            }
            if n == 3 && fds[2].any().unwrap_or(false) && !self.news() {
                return Err(TransportError::Interrupted {
                    peer: self.sh.name.clone(),
                });
            }
            let (kicked, hung_up) = (
                fds[0].any().unwrap_or(false),
                fds[1].revents().is_some_and(|r| !r.is_empty()),
            );
            self.spinner.parked(parked_at.elapsed());
            if hung_up {
                self.check_liveness()?;
            }
            if kicked {
                self.drain_kicks();
                // SeqCst: the loop's re-check of the ring comes after clearing `kicked`.
                fence(Ordering::SeqCst);
            }
        }
    }
}

impl ShmReceiver {
    fn receive(&mut self, wait: Wait, split: bool) -> Result<Payload, TransportError> {
        if self.finished {
            return Err(TransportError::Closed {
                peer: self.sh.name.clone(),
            });
        }
        if let Some(parked_at) = self.parked_at.take() {
            self.spinner.parked(parked_at.elapsed());
        }
        let result = self.recv_inner(wait, split);
        self.settle();
        self.found_nothing = matches!(result, Err(TransportError::WouldBlock { .. }));
        if matches!(&result, Err(TransportError::Io { .. })) {
            self.finished = true;
        }
        result
    }
}

impl FrameReceiver for ShmReceiver {
    fn recv(&mut self, wait: Wait) -> Result<Vec<u8>, TransportError> {
        self.receive(wait, false).map(Payload::into_whole)
    }

    fn recv_payload(&mut self, wait: Wait) -> Result<Payload, TransportError> {
        self.receive(wait, true)
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = Some(interrupt);
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
    }

    fn recycle(&mut self, mut payload: Vec<u8>) {
        if payload.capacity() < buffers::POOLED_MIN {
            payload.clear();
            self.spare = payload;
        } else {
            buffers::give(payload);
        }
    }

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.data.as_fd())
    }

    fn liveness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.sh.socket.as_fd())
    }

    fn has_buffered(&self) -> bool {
        let Ok(avail) = self.rx.available() else {
            // recv reports the corruption.
            return true;
        };
        match &self.body {
            Some(body) => {
                let (got, len) = body.received();
                got + avail >= len
            }
            None => match self.next_frame(avail) {
                Next::Unknown => false,
                // recv reports the corruption.
                Next::BadPadding(_) => true,
                // The frame may not be whole yet (one published as it is encoded).
                Next::Frame { skip, len } => len > self.max || avail - skip - HEADROOM >= len,
            },
        }
    }

    fn prepare_wait(&mut self) -> bool {
        if self.finished || self.has_buffered() {
            return true;
        }
        // After a receive that found nothing, the wake-up may have been the peer's end of
        // file on the liveness descriptor: read the socket to know.
        let liveness = std::mem::take(&mut self.found_nothing);
        let ready = self.spin_then_park(None, liveness).unwrap_or(true);
        // Ready after a spin, this end still watches the ring: the receive that follows
        // stops watching in its own `settle`, under the one fence it needs anyway for the
        // space it frees (a fence here as well cost a second wait for our stores to reach
        // the peer's CPU on every request). A server thread that does not receive after
        // a true here leaves the connection, which is ending.
        if !ready {
            self.parked_at = Some(Instant::now());
        }
        ready
    }
}

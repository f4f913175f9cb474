//! The two halves of a shared-memory connection and the doorbells between them.
//!
//! # Doorbells and the parked protocol
//!
//! Each ring has two wake-ups, both of which `poll(2)` can wait on together with the
//! [`Interrupt`]:
//!
//! - **data**: an eventfd shared by both processes (a "kick" is a write to it), for a
//!   consumer waiting for bytes. It is the consumer's readiness descriptor; the connection's
//!   Unix socket is its liveness descriptor (the peer's death shows as end of file there), so
//!   a server's epoll set holds both. An eventfd rather than a byte on the socket: a write
//!   and a read of a counter cost a fraction of a socket's send and receive, which on one CPU
//!   are most of a round trip.
//! - **space**: an eventfd shared by both processes, for a producer waiting for room.
//!
//! Both are rung only when the waiting side said it is parked, so a busy connection makes no
//! system calls. For data, the consumer's `consumer_parked` flag is 1 unless one of its
//! threads is watching (spinning on) the ring; for space, `producer_parked` is 1 while the
//! producer waits. The lost wake-up to avoid is "the waiter checks, finds nothing, the other
//! side publishes and sees no flag, the waiter sleeps". Each side therefore does, in order:
//!
//! ```text
//! waiter:  flag = 1;  fence(SeqCst);  re-check the ring;  sleep if still nothing
//! waker:   publish (Release store of tail or head);  fence(SeqCst);  ring if flag == 1
//! ```
//!
//! This is the store-buffering pattern: with a sequentially consistent fence between each
//! side's store and its load, the two loads cannot both miss the other side's store. Either
//! the waiter's re-check sees the new index (and it does not sleep), or the waker sees the
//! flag (and it rings; the kick stays in the socket, or the eventfd stays readable, until the
//! waiter polls, so ringing before the waiter sleeps is not lost). A `kicked` flag, set by the
//! producer when it kicks and cleared by the consumer when it drains the socket (drain, then
//! clear, then re-check), keeps a parked consumer from getting a kick per frame, and from
//! reading a drained doorbell once more (a system call for nothing) on its next receive. And a producer
//! that finds the consumer parked first spins for up to 2 us (if spinning pays at all) for it
//! to clear its flag or consume the bytes: a server thread on its way back from sending a
//! reply usually does, and the kick would cost a system call and wake a second thread.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags};

use super::ring::{Consumer, Corrupt, InPlace, Layout, Producer, Ring, PADDING};
use super::spin::{publish_cpu, Spinner, Strategy};
use crate::buffers;
use crate::error::TransportError;
use crate::protocol::{Frame, DEFAULT_MAX_FRAME_LEN, HEADROOM};
use crate::transport::pending::{flush_frame, not_taken, send_frame, ByteSender, Pending};
use crate::transport::{Encode, FrameReceiver, FrameSender, Incoming, Interrupt, Payload};
use crate::wait::Wait;

/// What both halves of a connection hold.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Keeps the mapping alive for the rings.
    pub(crate) _layout: Layout,
    /// The Unix socket the connection was set up on: liveness (nothing is sent on it).
    pub(crate) socket: OwnedFd,
    pub(crate) name: String,
}

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

fn corrupt(peer: &str, e: Corrupt) -> TransportError {
    TransportError::io(
        "reading the shared ring",
        peer,
        io::Error::new(io::ErrorKind::InvalidData, e),
    )
}

/// The poll timeout for what is left of `wait`, rounded up so a wait never ends early.
fn poll_timeout(wait: Wait) -> Option<PollTimeout> {
    match wait.remaining() {
        None => Some(PollTimeout::NONE),
        Some(left) if left.is_zero() => None,
        Some(left) => {
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            Some(PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX))
        }
    }
}

/// Polls `fds` until one is ready or `wait` runs out (`Ok(false)`).
pub(crate) fn poll_until(fds: &mut [PollFd<'_>], wait: Wait, peer: &str) -> Result<bool, TransportError> {
    loop {
        let Some(timeout) = poll_timeout(wait) else {
            return Ok(false);
        };
        match poll(fds, timeout) {
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(TransportError::io("poll", peer, e)),
        }
    }
}

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
            Ok(InPlace::Sent) if pipelined => {
                self.kick(Kick::Now);
                Ok(true)
            }
            Ok(InPlace::Sent) => {
                self.kick(Kick::Grace);
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

    /// Returns a whole frame if the ring has one, moving a partial one out as it arrives. A
    /// large one may be split before a trailing byte string if `split`: its bytes are copied
    /// out of the ring straight into the buffer the caller keeps.
    fn take_frame(&mut self, split: bool) -> Result<Option<Payload>, TransportError> {
        let avail = self.available()?;
        if self.body.is_none() {
            if avail < HEADROOM {
                return Ok(None);
            }
            let mut prefix = [0; HEADROOM];
            self.rx.peek(0, &mut prefix);
            if u32::from_le_bytes(prefix) == PADDING {
                // The rest of the ring is padding; the producer published at least the
                // frame's prefix behind it with it (a hostile one may not have: then this
                // waits for more).
                let skip = self.rx.until_end();
                if skip < HEADROOM {
                    self.finished = true;
                    return Err(corrupt_padding(&self.sh.name, skip));
                }
                if avail < skip + HEADROOM {
                    return Ok(None);
                }
                self.rx.consume(skip);
                self.freed = true;
                self.rx.peek(0, &mut prefix);
            }
            let len = u32::from_le_bytes(prefix) as usize;
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
            None if avail >= HEADROOM => {
                let mut prefix = [0; HEADROOM];
                self.rx.peek(0, &mut prefix);
                let mut skip = 0;
                if u32::from_le_bytes(prefix) == PADDING {
                    // The frame is behind the padding, which came with its first bytes at
                    // least (a frame published as it is encoded may not be whole yet).
                    skip = self.rx.until_end();
                    if skip < HEADROOM {
                        // recv reports the corruption.
                        return true;
                    }
                    if avail < skip + HEADROOM {
                        return false;
                    }
                    self.rx.peek(skip, &mut prefix);
                }
                let len = u32::from_le_bytes(prefix) as usize;
                len > self.max || avail - skip - HEADROOM >= len
            }
            None => false,
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

//! Frames over byte streams: the one implementation behind the socket, pipe and FIFO
//! transports.
//!
//! Descriptors stay in blocking mode, so a blocking operation is one plain `read` or
//! `write`, exactly as a hand-written ping-pong would do it. Non-blocking and deadline-bound
//! operations use `MSG_DONTWAIT` on sockets; on pipes, whose two ends are separate file
//! descriptions, `O_NONBLOCK` is switched only when the mode changes. Waits with a deadline or
//! an [`Interrupt`] are `poll(2)` on the descriptor and the interrupt's eventfd.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{send, sendmsg, shutdown, MsgFlags, Shutdown, UnixAddr};

use super::budget::Reservation;
use super::pending::{flush_frame, not_taken, send_frame, ByteSender, Pending};
use super::{Encode, FrameBudget, FrameReceiver, FrameSender, Incoming, Interrupt, Payload};
use crate::error::TransportError;
use crate::protocol::{Frame, DEFAULT_MAX_FRAME_LEN, HEADROOM};
use crate::sys::read_spare;
use crate::wait::Wait;

mod catch_up;
#[cfg(test)]
mod payloads;
mod streamed;

use catch_up::CatchUp;

/// Size of the receive staging buffer: frames that fit are read with one system call,
/// several at a time; larger ones are read straight into a buffer of their own.
const STAGING: usize = 64 * 1024;

/// The most slices one `writev` is given (Linux's `IOV_MAX` is 1024).
const MAX_IOV: usize = 64;

/// Whether a descriptor is a socket (per-call flags, `MSG_NOSIGNAL`, shut down on close) or
/// a pipe/FIFO end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdKind {
    Socket,
    Pipe,
}

/// Sets or clears `O_NONBLOCK` on `fd`.
fn toggle_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    let mut flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Asks for a 1 MiB pipe buffer (the default 64 KiB makes large frames cross in many small
/// steps); best effort, as unprivileged processes are capped by `fs.pipe-max-size`.
pub(crate) fn enlarge_pipe(fd: BorrowedFd<'_>) {
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(1 << 20));
}

/// Waits until `fd` is ready for `events`, the interrupt fires, or `wait` runs out.
pub(crate) fn wait_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    wait: Wait,
    interrupt: Option<&Interrupt>,
    peer: &str,
) -> Result<(), TransportError> {
    loop {
        let timeout = match wait.remaining() {
            None => PollTimeout::NONE,
            Some(left) if left.is_zero() => {
                return Err(match wait {
                    Wait::NonBlock => TransportError::WouldBlock { peer: peer.to_owned() },
                    _ => TransportError::TimedOut { peer: peer.to_owned() },
                })
            }
            // Round up so that a wait never ends early and spins.
            Some(left) => {
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [
            PollFd::new(fd, events),
            PollFd::new(interrupt.map_or(fd, Interrupt::as_fd), PollFlags::POLLIN),
        ];
        let n = if interrupt.is_some() { 2 } else { 1 };
        match poll(&mut fds[..n], timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(TransportError::io("poll", peer, e)),
        }
        if n == 2 && fds[1].any().unwrap_or(false) {
            return Err(TransportError::Interrupted { peer: peer.to_owned() });
        }
        // Readiness, hang-up and error all mean: try the operation, it will tell.
        if fds[0].any().unwrap_or(false) {
            return Ok(());
        }
    }
}

/// The blocking mode a pipe end is in, switched only on change.
#[derive(Debug)]
struct Mode {
    kind: FdKind,
    nonblocking: bool,
}

impl Mode {
    fn new(fd: &OwnedFd, kind: FdKind, peer: &str) -> Result<Self, TransportError> {
        toggle_nonblocking(fd.as_fd(), false).map_err(|e| TransportError::io("fcntl", peer, e))?;
        Ok(Mode {
            kind,
            nonblocking: false,
        })
    }

    /// Prepares `fd` for one operation; returns the flags for `send`/`recv` on a socket.
    fn prepare(&mut self, fd: &OwnedFd, nonblocking: bool) -> Result<libc::c_int, Errno> {
        match self.kind {
            FdKind::Socket => Ok(if nonblocking { libc::MSG_DONTWAIT } else { 0 }),
            FdKind::Pipe => {
                if self.nonblocking != nonblocking {
                    toggle_nonblocking(fd.as_fd(), nonblocking)?;
                    self.nonblocking = nonblocking;
                }
                Ok(0)
            }
        }
    }
}

/// The receiving half of a byte-stream transport.
#[derive(Debug)]
pub struct StreamReceiver {
    fd: OwnedFd,
    mode: Mode,
    peer: String,
    max: usize,
    interrupt: Option<Interrupt>,
    /// Bytes read and not yet returned are `staging[start..]`.
    staging: Vec<u8>,
    start: usize,
    /// A large frame being read straight into buffers of its own.
    body: Option<Incoming>,
    /// Where large frames' buffers are counted, if anywhere, and what `body` holds of it.
    budget: Option<FrameBudget>,
    reserved: Option<Reservation>,
    /// A fatal error already returned; repeated on every later call.
    failed: Option<fn(&str) -> TransportError>,
    /// Whether a read inside a frame looks again before it sleeps (see `catch_up.rs`).
    catch_up: CatchUp,
    /// Whether a server thread about to sleep between frames looks again first (see
    /// `catch_up.rs`), and when that was decided: at the first `prepare_sleep` (so a client
    /// never asks) and again every [`catch_up::RECHECK`].
    between: Option<(CatchUp, Instant)>,
    /// When the last look between frames ran out (the thread went to sleep), until the next
    /// frame: how long a look would have had to last.
    slept_at: Option<Instant>,
}

impl StreamReceiver {
    /// Wraps a connected stream descriptor.
    pub(crate) fn new(fd: OwnedFd, kind: FdKind, peer: impl Into<String>) -> Result<Self, TransportError> {
        let peer = peer.into();
        let mode = Mode::new(&fd, kind, &peer)?;
        Ok(StreamReceiver {
            fd,
            mode,
            peer,
            max: DEFAULT_MAX_FRAME_LEN,
            interrupt: None,
            staging: Vec::with_capacity(STAGING),
            start: 0,
            body: None,
            budget: None,
            reserved: None,
            failed: None,
            catch_up: CatchUp::new(kind == FdKind::Socket),
            between: None,
            slept_at: None,
        })
    }

    /// A duplicate of the descriptor (for a handshake answer written from the receiving side).
    pub(crate) fn dup_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    fn prefix_at(&self, at: usize) -> usize {
        let mut prefix = [0; HEADROOM];
        prefix.copy_from_slice(&self.staging[at..at + HEADROOM]);
        u32::from_le_bytes(prefix) as usize
    }

    /// Returns a whole frame if one is buffered, and makes room for the next read. A large
    /// one may be split before a trailing byte string if `split`.
    fn take_frame(&mut self, split: bool) -> Result<Option<Payload>, TransportError> {
        if let Some(body) = &self.body {
            if body.is_complete() {
                self.reserved = None;
                return Ok(self.body.take().map(Incoming::into_payload));
            }
            return Ok(None);
        }
        let avail = self.staging.len() - self.start;
        if avail < HEADROOM {
            if self.start > 0 {
                self.staging.drain(..self.start);
                self.start = 0;
            }
            return Ok(None);
        }
        let len = self.prefix_at(self.start);
        if len > self.max {
            self.failed = Some(|peer| TransportError::Closed { peer: peer.to_owned() });
            return Err(TransportError::FrameTooLarge {
                peer: self.peer.clone(),
                len: len as u64,
                max: self.max,
            });
        }
        let begin = self.start + HEADROOM;
        if avail - HEADROOM >= len {
            let frame = self.staging[begin..begin + len].to_vec();
            self.start = begin + len;
            if self.start == self.staging.len() {
                self.staging.clear();
                self.start = 0;
            }
            return Ok(Some(Payload::Whole(frame)));
        }
        if HEADROOM + len > STAGING {
            // Too big for the staging buffer: give it its own and read the rest straight in.
            if let Some(budget) = &self.budget {
                let Some(reserved) = budget.reserve(len) else {
                    self.failed = Some(|peer| TransportError::Closed { peer: peer.to_owned() });
                    return Err(TransportError::BudgetExhausted {
                        peer: self.peer.clone(),
                        len: len as u64,
                        held: budget.held(),
                        limit: budget.limit(),
                    });
                };
                self.reserved = Some(reserved);
            }
            // What the first read brought of it is copied (at most 1/16 of a 1 MiB frame).
            let mut body = Incoming::new(len, split);
            body.extend(&self.staging[begin..]);
            self.staging.clear();
            self.start = 0;
            self.body = Some(body);
        } else if self.start + HEADROOM + len > STAGING {
            self.staging.drain(..self.start);
            self.start = 0;
        }
        Ok(None)
    }

    /// Reads what the descriptor has. `Ok(0)` is the end of the stream.
    fn fill(&mut self, nonblocking: bool) -> Result<usize, Errno> {
        let flags = self.mode.prepare(&self.fd, nonblocking)?;
        let flags = (self.mode.kind == FdKind::Socket).then_some(flags);
        match &mut self.body {
            Some(body) => {
                let (buf, left) = body.dest();
                let n = read_spare(self.fd.as_fd(), buf, left, flags)?;
                body.advance();
                Ok(n)
            }
            None => read_spare(self.fd.as_fd(), &mut self.staging, STAGING, flags),
        }
    }

    /// The peer is gone: `Truncated` inside a frame, `Closed` between frames.
    fn ended(&mut self) -> TransportError {
        self.failed = Some(|peer| TransportError::Closed { peer: peer.to_owned() });
        match self.partial_len() {
            Some((got, expected)) => TransportError::Truncated {
                peer: self.peer.clone(),
                got,
                expected,
            },
            None => TransportError::Closed {
                peer: self.peer.clone(),
            },
        }
    }

    /// Non-blocking reads for as long as the catch-up budget allows: what the first one that
    /// did not find the socket empty said, or `EAGAIN`.
    fn catch_up_on_frame(&mut self) -> Result<usize, Errno> {
        let mut catch_up = std::mem::take(&mut self.catch_up);
        let got = catch_up.spin(|| match self.fill(true) {
            Err(Errno::EAGAIN) => None,
            other => Some(other),
        });
        self.catch_up = catch_up;
        got.unwrap_or(Err(Errno::EAGAIN))
    }

    /// Non-blocking reads between frames for as long as that budget allows, if this end
    /// spins there at all: true if one found bytes, the end of the stream or an error,
    /// which the next receive returns.
    fn look_between_frames(&mut self) -> bool {
        let now = Instant::now();
        let (mut between, checked) = match self.between.take() {
            Some((between, at)) if now.duration_since(at) < catch_up::RECHECK => (between, at),
            kept => {
                let fresh = match self.mode.kind {
                    FdKind::Socket => CatchUp::between_frames(self.fd.as_fd()),
                    _ => CatchUp::default(),
                };
                // What the budget learnt stays while the answer does.
                match kept {
                    Some((between, _)) if between.enabled() == fresh.enabled() => (between, now),
                    _ => (fresh, now),
                }
            }
        };
        let got = between.enabled()
            && between
                .spin(|| match self.fill(true) {
                    Err(Errno::EAGAIN) => None,
                    other => Some(other),
                })
                .is_some();
        if !got && between.enabled() {
            self.slept_at = Some(Instant::now());
        }
        self.between = Some((between, checked));
        got
    }

    fn partial_len(&self) -> Option<(usize, usize)> {
        match &self.body {
            Some(body) => {
                let (got, len) = body.received();
                Some((HEADROOM + got, HEADROOM + len))
            }
            None if self.staging.len() > self.start => {
                let avail = self.staging.len() - self.start;
                let expected = if avail >= HEADROOM {
                    HEADROOM + self.prefix_at(self.start)
                } else {
                    HEADROOM
                };
                Some((avail, expected))
            }
            None => None,
        }
    }
}

impl StreamReceiver {
    fn receive(&mut self, wait: Wait, split: bool) -> Result<Payload, TransportError> {
        if let Some(failed) = self.failed {
            return Err(failed(&self.peer));
        }
        // A plain blocking read when nothing but data can end the wait.
        let blocking = wait == Wait::Block && self.interrupt.is_none();
        let slept_at = self.slept_at.take();
        loop {
            if let Some(frame) = self.take_frame(split)? {
                if let (Some(at), Some((between, _))) = (slept_at, &mut self.between) {
                    between.slept(at.elapsed());
                }
                return Ok(frame);
            }
            // Inside a frame its writer has committed to: look again for a moment before
            // sleeping, where that pays (see `catch_up.rs`).
            let catching_up = self.catch_up.enabled() && self.partial_len().is_some();
            let filled = match self.fill(!blocking || catching_up) {
                Err(Errno::EAGAIN) if catching_up => self.catch_up_on_frame(),
                filled => filled,
            };
            match filled {
                // The end of the stream, or a reset: either way the peer is gone.
                Ok(0) | Err(Errno::ECONNRESET) => return Err(self.ended()),
                Ok(_) => {}
                Err(Errno::EAGAIN) => wait_ready(
                    self.fd.as_fd(),
                    PollFlags::POLLIN,
                    wait,
                    self.interrupt.as_ref(),
                    &self.peer,
                )?,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(TransportError::io("read", self.peer.clone(), e)),
            }
        }
    }
}

impl FrameReceiver for StreamReceiver {
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

    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }

    fn in_frame(&self) -> bool {
        self.partial_len().is_some()
    }

    fn set_budget(&mut self, budget: FrameBudget) {
        self.budget = Some(budget);
    }

    fn prepare_sleep(&mut self) -> bool {
        self.failed.is_some() || self.has_buffered() || self.look_between_frames()
    }

    fn has_buffered(&self) -> bool {
        if let Some(body) = &self.body {
            return body.is_complete();
        }
        let avail = self.staging.len() - self.start;
        // A whole frame, or a length prefix that recv will refuse.
        avail >= HEADROOM && {
            let len = self.prefix_at(self.start);
            len > self.max || avail - HEADROOM >= len
        }
    }
}

/// The sending half of a byte-stream transport.
#[derive(Debug)]
pub struct StreamSender {
    fd: OwnedFd,
    mode: Mode,
    peer: String,
    max: usize,
    pending: Pending,
    closed: bool,
}

impl StreamSender {
    /// Wraps a connected stream descriptor.
    pub(crate) fn new(fd: OwnedFd, kind: FdKind, peer: impl Into<String>) -> Result<Self, TransportError> {
        let peer = peer.into();
        let mode = Mode::new(&fd, kind, &peer)?;
        Ok(StreamSender {
            fd,
            mode,
            peer,
            max: DEFAULT_MAX_FRAME_LEN,
            pending: Pending::default(),
            closed: false,
        })
    }

    fn write(&mut self, bytes: &[u8], nonblocking: bool) -> Result<usize, Errno> {
        let flags = self.mode.prepare(&self.fd, nonblocking)?;
        match self.mode.kind {
            // MSG_NOSIGNAL: a dead peer is an EPIPE error here, never a SIGPIPE.
            FdKind::Socket => send(
                self.fd.as_raw_fd(),
                bytes,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::from_bits_retain(flags),
            ),
            FdKind::Pipe => nix::unistd::write(&self.fd, bytes),
        }
    }

    /// Writes from `bufs` in one system call, as [`write`](Self::write) does from one buffer.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>], nonblocking: bool) -> Result<usize, Errno> {
        let flags = self.mode.prepare(&self.fd, nonblocking)?;
        match self.mode.kind {
            FdKind::Socket => sendmsg::<UnixAddr>(
                self.fd.as_raw_fd(),
                bufs,
                &[],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::from_bits_retain(flags),
                None,
            ),
            FdKind::Pipe => nix::sys::uio::writev(&self.fd, bufs),
        }
    }

    /// Writes `frames` (length prefixes set) with as few `writev`s as it takes, waiting as
    /// `wait` allows: how many bytes of them were written, and the fatal error, if any.
    fn write_frames(&mut self, frames: &[Frame], wait: Wait) -> (usize, Result<(), TransportError>) {
        let total: usize = frames.iter().map(|f| f.bytes().len()).sum();
        let mut written = 0;
        let mut iov = Vec::with_capacity(frames.len().min(MAX_IOV));
        while written < total {
            // The slices from `written` on.
            iov.clear();
            let mut start = 0;
            for frame in frames {
                let bytes = frame.bytes();
                let end = start + bytes.len();
                if end > written {
                    iov.push(IoSlice::new(&bytes[written.saturating_sub(start)..]));
                    if iov.len() == MAX_IOV {
                        break;
                    }
                }
                start = end;
            }
            match self.write_vectored(&iov, wait != Wait::Block) {
                Ok(n) => written += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => match wait_ready(self.fd.as_fd(), PollFlags::POLLOUT, wait, None, &self.peer) {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => break,
                    Err(e) => return (written, Err(e)),
                },
                Err(e) => return (written, Err(self.write_error(e))),
            }
        }
        (written, Ok(()))
    }

    fn write_error(&self, e: Errno) -> TransportError {
        match e {
            Errno::EPIPE | Errno::ECONNRESET => TransportError::Closed {
                peer: self.peer.clone(),
            },
            e => TransportError::io("write", self.peer.clone(), io::Error::from(e)),
        }
    }
}

impl ByteSender for StreamSender {
    fn peer(&self) -> &str {
        &self.peer
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
        let blocking = wait == Wait::Block;
        while *off < bytes.len() {
            match self.write(&bytes[*off..], !blocking) {
                Ok(n) => *off += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => match wait_ready(self.fd.as_fd(), PollFlags::POLLOUT, wait, None, &self.peer) {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => return Ok(false),
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(self.write_error(e)),
            }
        }
        Ok(true)
    }
}

impl FrameSender for StreamSender {
    fn send(&mut self, frame: &mut Frame, wait: Wait) -> Result<(), TransportError> {
        send_frame(self, frame, wait)
    }

    fn send_many(&mut self, frames: &mut [Frame], wait: Wait) -> (usize, Result<(), TransportError>) {
        // Up to the first frame above the maximum, which is refused.
        let fits = frames
            .iter()
            .position(|f| f.payload_len() > self.max)
            .unwrap_or(frames.len());
        if fits == 0 {
            return (0, send_frame(self, &mut frames[0], wait));
        }
        let (frames, too_large) = frames.split_at_mut(fits);
        if let Err(e) = flush_frame(self, wait) {
            return (0, Err(e));
        }
        for frame in frames.iter_mut() {
            frame.set_length_prefix();
        }
        let (written, result) = self.write_frames(frames, wait);
        // Whole frames are taken; so is one partly written, its tail kept for `flush`.
        let mut taken = 0;
        let mut start = 0;
        for frame in frames.iter() {
            let bytes = frame.bytes();
            if start >= written {
                break;
            }
            if start + bytes.len() > written {
                self.pending.keep(&bytes[written - start..]);
            }
            taken += 1;
            start += bytes.len();
        }
        match (result, too_large.first_mut()) {
            (Err(e), _) => (taken, Err(e)),
            (Ok(()), _) if taken < frames.len() => (taken, Err(not_taken(wait, &self.peer))),
            (Ok(()), Some(refused)) => (taken, send_frame(self, refused, wait)),
            (Ok(()), None) => (taken, Ok(())),
        }
    }

    fn send_encoded(&mut self, len: usize, encode: &mut Encode<'_>, wait: Wait) -> Result<bool, TransportError> {
        self.send_streamed(len, encode, wait)
    }

    fn flush(&mut self, wait: Wait) -> Result<(), TransportError> {
        flush_frame(self, wait)
    }

    fn has_pending(&self) -> bool {
        self.pending.is_pending()
    }

    fn close(&mut self) {
        if !self.closed && self.mode.kind == FdKind::Socket {
            // Other clones of the socket (the receiving half) keep it open; shut the write
            // direction down so the peer sees the end of the stream now.
            let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Write);
        }
        self.closed = true;
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;

    fn pair() -> (UnixStream, StreamReceiver) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            a,
            StreamReceiver::new(OwnedFd::from(b), FdKind::Socket, "test").unwrap(),
        )
    }

    fn prefixed(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_frame_arriving_byte_by_byte_is_kept_across_would_block() {
        let (mut raw, mut rx) = pair();
        let bytes = prefixed(b"hello, frames");
        for (i, byte) in bytes.iter().enumerate() {
            assert!(
                matches!(rx.recv(Wait::NonBlock), Err(TransportError::WouldBlock { .. })),
                "no frame after {i} bytes"
            );
            raw.write_all(&[*byte]).unwrap();
        }
        assert_eq!(rx.recv(Wait::NonBlock).unwrap(), b"hello, frames");
    }

    #[test]
    fn many_frames_in_one_write_come_out_in_order() {
        let (mut raw, mut rx) = pair();
        let mut bytes = Vec::new();
        for i in 0..1000u32 {
            bytes.extend(prefixed(&i.to_le_bytes()));
        }
        raw.write_all(&bytes).unwrap();
        for i in 0..1000u32 {
            assert_eq!(rx.recv(Wait::Block).unwrap(), i.to_le_bytes());
        }
    }

    #[test]
    fn a_large_frame_is_read_whole() {
        let (mut raw, mut rx) = pair();
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let bytes = prefixed(&payload);
        let writer = std::thread::spawn(move || raw.write_all(&bytes).unwrap());
        assert_eq!(rx.recv(Wait::timeout(Duration::from_secs(30))).unwrap(), payload);
        writer.join().unwrap();
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocation_and_stays_refused() {
        let (mut raw, mut rx) = pair();
        rx.set_max_frame_len(1024);
        raw.write_all(&1025u32.to_le_bytes()).unwrap();
        match rx.recv(Wait::Block) {
            Err(TransportError::FrameTooLarge {
                len: 1025, max: 1024, ..
            }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert!(rx.recv(Wait::Block).is_err());
    }

    #[test]
    fn a_large_frame_past_the_budget_is_refused_and_a_finished_one_gives_its_bytes_back() {
        let budget = FrameBudget::new(200_000);
        let (mut raw, mut rx) = pair();
        rx.set_budget(budget.clone());
        raw.write_all(&prefixed(&[1; 150_000])).unwrap();
        assert_eq!(rx.recv(Wait::Block).unwrap().len(), 150_000);
        assert_eq!(budget.held(), 0, "a whole frame holds nothing");
        let (mut raw2, mut rx2) = pair();
        rx2.set_budget(budget.clone());
        raw.write_all(&prefixed(&[2; 150_000])[..1000]).unwrap();
        assert!(matches!(
            rx.recv(Wait::NonBlock),
            Err(TransportError::WouldBlock { .. })
        ));
        assert!(rx.in_frame());
        assert_eq!(budget.held(), 150_000);
        raw2.write_all(&100_000u32.to_le_bytes()).unwrap();
        match rx2.recv(Wait::Block) {
            Err(TransportError::BudgetExhausted {
                len: 100_000,
                limit: 200_000,
                ..
            }) => {}
            other => panic!("expected BudgetExhausted, got {other:?}"),
        }
        drop(rx);
        assert_eq!(budget.held(), 0, "a dropped receiver gives its bytes back");
    }

    #[test]
    fn the_end_of_the_stream_mid_frame_is_truncated() {
        let (mut raw, mut rx) = pair();
        raw.write_all(&prefixed(&[7; 100])[..50]).unwrap();
        drop(raw);
        match rx.recv(Wait::Block) {
            Err(TransportError::Truncated {
                got: 50, expected: 104, ..
            }) => {}
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn the_end_of_the_stream_between_frames_is_closed() {
        let (raw, mut rx) = pair();
        drop(raw);
        assert!(matches!(rx.recv(Wait::Block), Err(TransportError::Closed { .. })));
    }

    #[test]
    fn an_interrupt_ends_a_blocked_receive() {
        let (_raw, mut rx) = pair();
        let interrupt = Interrupt::new().unwrap();
        rx.set_interrupt(interrupt.clone());
        let waiter = std::thread::spawn(move || rx.recv(Wait::Block));
        interrupt.fire();
        assert!(matches!(
            waiter.join().unwrap(),
            Err(TransportError::Interrupted { .. })
        ));
    }

    #[test]
    fn a_deadline_ends_a_receive_with_timed_out() {
        let (_raw, mut rx) = pair();
        let result = rx.recv(Wait::timeout(Duration::from_millis(10)));
        assert!(matches!(result, Err(TransportError::TimedOut { .. })));
    }

    #[test]
    fn a_nonblocking_send_into_a_full_socket_takes_all_or_nothing() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut tx = StreamSender::new(OwnedFd::from(a), FdKind::Socket, "test").unwrap();
        let mut rx = StreamReceiver::new(OwnedFd::from(b), FdKind::Socket, "test").unwrap();
        // Fill the socket with frames until one is refused or left partly written.
        let mut sent = 0usize;
        loop {
            let mut frame = Frame::from_payload(&[sent as u8; 4096]);
            match tx.send(&mut frame, Wait::NonBlock) {
                Ok(()) => sent += 1,
                Err(TransportError::WouldBlock { .. }) => break,
                Err(e) => panic!("{e}"),
            }
            if tx.has_pending() {
                break;
            }
        }
        // Drain while finishing any partly written frame; every frame taken arrives whole.
        let drain = std::thread::spawn(move || (0..sent).map(|_| rx.recv(Wait::Block).unwrap()).collect::<Vec<_>>());
        tx.flush(Wait::Block).unwrap();
        let frames = drain.join().unwrap();
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame, &vec![i as u8; 4096]);
        }
    }
}

#[cfg(test)]
mod gathered {
    use std::os::unix::net::UnixStream;

    use super::*;

    /// A sender and a receiver over a socketpair.
    pub(super) fn pair() -> (StreamSender, StreamReceiver) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            StreamSender::new(OwnedFd::from(a), FdKind::Socket, "test").unwrap(),
            StreamReceiver::new(OwnedFd::from(b), FdKind::Socket, "test").unwrap(),
        )
    }

    #[test]
    fn frames_sent_together_arrive_whole_and_in_order() {
        let (mut tx, mut rx) = pair();
        let mut frames: Vec<Frame> = (0..8u8).map(|i| Frame::from_payload(&[i; 3])).collect();
        let (taken, sent) = tx.send_many(&mut frames, Wait::Block);
        sent.unwrap();
        assert_eq!(taken, 8);
        for i in 0..8u8 {
            assert_eq!(rx.recv(Wait::Block).unwrap(), [i; 3]);
        }
    }

    #[test]
    fn a_full_socket_takes_whole_frames_and_at_most_one_tail_of_a_gathered_write() {
        let (mut tx, mut rx) = pair();
        // 4 MiB: more than a socket buffer holds.
        let mut frames: Vec<Frame> = (0..64u8).map(|i| Frame::from_payload(&[i; 65536])).collect();
        let (taken, sent) = tx.send_many(&mut frames, Wait::NonBlock);
        assert!(matches!(sent, Err(TransportError::WouldBlock { .. })), "{sent:?}");
        assert!(taken > 0 && taken < 64, "{taken} frames taken");
        // Every frame taken arrives whole once the tail is flushed; the rest go after.
        let drain = std::thread::spawn(move || (0..64).map(|_| rx.recv(Wait::Block).unwrap()).collect::<Vec<_>>());
        tx.flush(Wait::Block).unwrap();
        let (more, sent) = tx.send_many(&mut frames[taken..], Wait::Block);
        sent.unwrap();
        assert_eq!(taken + more, 64);
        for (i, frame) in drain.join().unwrap().iter().enumerate() {
            assert!(frame.len() == 65536 && frame.iter().all(|b| *b == i as u8), "frame {i}");
        }
    }
}

//! Frames over byte streams: the one implementation behind the socket, pipe and FIFO
//! transports.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{send, shutdown, MsgFlags, Shutdown};

use super::{FrameReceiver, FrameSender, Interrupt};
use crate::error::TransportError;
use crate::protocol::{Frame, DEFAULT_MAX_FRAME_LEN, HEADROOM};
use crate::wait::Wait;

/// Size of the receive staging buffer: frames that fit are read with one system call,
/// several at a time; larger ones are read straight into their own allocation.
const STAGING: usize = 64 * 1024;

/// Whether a descriptor is a socket (sent to with `MSG_NOSIGNAL`, shut down on close) or a
/// pipe/FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdKind {
    Socket,
    Pipe,
}

pub(crate) fn set_nonblocking(fd: &OwnedFd, peer: &str) -> Result<(), TransportError> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| TransportError::io("fcntl", peer, e))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(|e| TransportError::io("fcntl", peer, e))?;
    Ok(())
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
        let mut fds = vec![PollFd::new(fd, events)];
        if let Some(interrupt) = interrupt {
            fds.push(PollFd::new(interrupt.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(TransportError::io("poll", peer, e)),
        }
        if fds.len() > 1 && fds[1].any().unwrap_or(false) {
            return Err(TransportError::Interrupted { peer: peer.to_owned() });
        }
        // Readiness, hang-up and error all mean: try the operation, it will tell.
        if fds[0].any().unwrap_or(false) {
            return Ok(());
        }
    }
}

/// The receiving half of a byte-stream transport.
#[derive(Debug)]
pub struct StreamReceiver {
    fd: OwnedFd,
    peer: String,
    max: usize,
    interrupt: Option<Interrupt>,
    staging: Box<[u8]>,
    start: usize,
    end: usize,
    /// A large frame being read straight into its own buffer: (buffer, bytes filled).
    body: Option<(Vec<u8>, usize)>,
    /// A fatal error already returned; repeated on every later call.
    failed: Option<fn(&str) -> TransportError>,
}

impl StreamReceiver {
    /// Wraps a connected stream descriptor, switching it to non-blocking mode.
    pub(crate) fn new(fd: OwnedFd, peer: impl Into<String>) -> Result<Self, TransportError> {
        let peer = peer.into();
        set_nonblocking(&fd, &peer)?;
        Ok(StreamReceiver {
            fd,
            peer,
            max: DEFAULT_MAX_FRAME_LEN,
            interrupt: None,
            staging: vec![0; STAGING].into_boxed_slice(),
            start: 0,
            end: 0,
            body: None,
            failed: None,
        })
    }

    /// Returns a whole frame if one is buffered.
    fn take_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        if let Some((body, filled)) = &self.body {
            if *filled == body.len() {
                return Ok(self.body.take().map(|(body, _)| body));
            }
            return Ok(None);
        }
        let avail = self.end - self.start;
        if avail < HEADROOM {
            return Ok(None);
        }
        let mut prefix = [0; HEADROOM];
        prefix.copy_from_slice(&self.staging[self.start..self.start + HEADROOM]);
        let len = u32::from_le_bytes(prefix) as usize;
        if len > self.max {
            let (peer, max) = (self.peer.clone(), self.max);
            self.failed = Some(|peer| TransportError::Closed { peer: peer.to_owned() });
            return Err(TransportError::FrameTooLarge {
                peer,
                len: len as u64,
                max,
            });
        }
        let begin = self.start + HEADROOM;
        if avail - HEADROOM >= len {
            let frame = self.staging[begin..begin + len].to_vec();
            self.start = begin + len;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            return Ok(Some(frame));
        }
        if HEADROOM + len > self.staging.len() {
            // Too big for the staging buffer: give it its own and read the rest straight in.
            let mut body = vec![0; len];
            let have = self.end - begin;
            body[..have].copy_from_slice(&self.staging[begin..self.end]);
            self.start = 0;
            self.end = 0;
            self.body = Some((body, have));
        } else if self.start + HEADROOM + len > self.staging.len() {
            self.staging.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        Ok(None)
    }

    /// Reads what the descriptor has. `Ok(0)` is the end of the stream.
    fn fill(&mut self) -> Result<usize, Errno> {
        let target = match &mut self.body {
            Some((body, filled)) => &mut body[*filled..],
            None => &mut self.staging[self.end..],
        };
        let n = nix::unistd::read(self.fd.as_raw_fd(), target)?;
        match &mut self.body {
            Some((_, filled)) => *filled += n,
            None => self.end += n,
        }
        Ok(n)
    }

    fn partial_len(&self) -> Option<(usize, usize)> {
        match &self.body {
            Some((body, filled)) => Some((HEADROOM + filled, HEADROOM + body.len())),
            None if self.end > self.start => {
                let avail = self.end - self.start;
                let expected = if avail >= HEADROOM {
                    let mut prefix = [0; HEADROOM];
                    prefix.copy_from_slice(&self.staging[self.start..self.start + HEADROOM]);
                    HEADROOM + u32::from_le_bytes(prefix) as usize
                } else {
                    HEADROOM
                };
                Some((avail, expected))
            }
            None => None,
        }
    }
}

impl FrameReceiver for StreamReceiver {
    fn recv(&mut self, wait: Wait) -> Result<Vec<u8>, TransportError> {
        if let Some(failed) = self.failed {
            return Err(failed(&self.peer));
        }
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            match self.fill() {
                Ok(0) => {
                    let err = match self.partial_len() {
                        Some((got, expected)) => TransportError::Truncated {
                            peer: self.peer.clone(),
                            got,
                            expected,
                        },
                        None => TransportError::Closed {
                            peer: self.peer.clone(),
                        },
                    };
                    self.failed = Some(|peer| TransportError::Closed { peer: peer.to_owned() });
                    return Err(err);
                }
                Ok(_) => {}
                Err(Errno::EAGAIN) => wait_ready(
                    self.fd.as_fd(),
                    PollFlags::POLLIN,
                    wait,
                    self.interrupt.as_ref(),
                    &self.peer,
                )?,
                Err(Errno::EINTR) => {}
                Err(Errno::ECONNRESET) => {
                    self.failed = Some(|peer| TransportError::Closed { peer: peer.to_owned() });
                    return Err(TransportError::Closed {
                        peer: self.peer.clone(),
                    });
                }
                Err(e) => return Err(TransportError::io("read", self.peer.clone(), e)),
            }
        }
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = Some(interrupt);
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
    }
}

/// The sending half of a byte-stream transport.
#[derive(Debug)]
pub struct StreamSender {
    fd: OwnedFd,
    kind: FdKind,
    peer: String,
    max: usize,
    /// The unwritten tail of a frame that was partly written.
    pending: Vec<u8>,
    pending_off: usize,
    closed: bool,
}

impl StreamSender {
    /// Wraps a connected stream descriptor, switching it to non-blocking mode.
    pub(crate) fn new(fd: OwnedFd, kind: FdKind, peer: impl Into<String>) -> Result<Self, TransportError> {
        let peer = peer.into();
        set_nonblocking(&fd, &peer)?;
        Ok(StreamSender {
            fd,
            kind,
            peer,
            max: DEFAULT_MAX_FRAME_LEN,
            pending: Vec::new(),
            pending_off: 0,
            closed: false,
        })
    }

    fn write(&self, bytes: &[u8]) -> Result<usize, Errno> {
        match self.kind {
            // MSG_NOSIGNAL: a dead peer is an EPIPE error here, never a SIGPIPE.
            FdKind::Socket => send(self.fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL),
            FdKind::Pipe => nix::unistd::write(&self.fd, bytes),
        }
    }

    fn write_error(&self, e: Errno) -> TransportError {
        match e {
            Errno::EPIPE | Errno::ECONNRESET => TransportError::Closed {
                peer: self.peer.clone(),
            },
            e => TransportError::io("write", self.peer.clone(), io::Error::from(e)),
        }
    }

    /// Writes `bytes` from `*off` on. `Ok(true)` when all written; `Ok(false)` when `wait`
    /// ran out.
    fn write_all(&self, bytes: &[u8], off: &mut usize, wait: Wait) -> Result<bool, TransportError> {
        while *off < bytes.len() {
            match self.write(&bytes[*off..]) {
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
        if frame.payload_len() > self.max {
            return Err(TransportError::FrameTooLarge {
                peer: self.peer.clone(),
                len: frame.payload_len() as u64,
                max: self.max,
            });
        }
        self.flush(wait)?;
        let bytes = frame.as_length_prefixed();
        let mut off = 0;
        let done = self.write_all(bytes, &mut off, wait)?;
        if !done {
            if off == 0 {
                // Nothing written: the frame was not taken.
                return Err(match wait {
                    Wait::NonBlock => TransportError::WouldBlock {
                        peer: self.peer.clone(),
                    },
                    _ => TransportError::TimedOut {
                        peer: self.peer.clone(),
                    },
                });
            }
            // Part written: the frame is taken; keep the tail for flush.
            self.pending.clear();
            self.pending.extend_from_slice(&bytes[off..]);
            self.pending_off = 0;
        }
        Ok(())
    }

    fn flush(&mut self, wait: Wait) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::Closed {
                peer: self.peer.clone(),
            });
        }
        if self.pending_off == self.pending.len() {
            return Ok(());
        }
        let mut off = self.pending_off;
        let pending = std::mem::take(&mut self.pending);
        let result = self.write_all(&pending, &mut off, wait);
        self.pending = pending;
        self.pending_off = off;
        match result? {
            true => {
                self.pending.clear();
                self.pending_off = 0;
                Ok(())
            }
            false => Err(match wait {
                Wait::NonBlock => TransportError::WouldBlock {
                    peer: self.peer.clone(),
                },
                _ => TransportError::TimedOut {
                    peer: self.peer.clone(),
                },
            }),
        }
    }

    fn has_pending(&self) -> bool {
        self.pending_off < self.pending.len()
    }

    fn close(&mut self) {
        if !self.closed && self.kind == FdKind::Socket {
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
        (a, StreamReceiver::new(OwnedFd::from(b), "test").unwrap())
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
        let mut rx = StreamReceiver::new(OwnedFd::from(b), "test").unwrap();
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

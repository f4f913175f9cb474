//! The two halves of a message-queue connection.
//!
//! A frame is the usual length prefix and payload, cut into messages of at most the queue's
//! message size: the first message starts with the prefix, the others continue it, and no
//! message holds parts of two frames. Each queue has one writer (this connection's sender),
//! so the pieces of a frame cannot interleave with another's.
//!
//! Neither half can learn from a queue that its peer went away, so each also watches the
//! Unix socket the connection was set up on, which carries nothing after the setup: the
//! peer shutting down its writing side (its sender closed) makes it readable, which ends
//! the receiver once the queue is drained; the peer closing it (dropped, or dead) is a
//! hang-up, which also fails a sender waiting for room.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{shutdown, Shutdown};

use super::limits::MqError;
use super::queue::Queue;
use crate::buffers;
use crate::error::TransportError;
use crate::protocol::{Frame, DEFAULT_MAX_FRAME_LEN, HEADROOM};
use crate::transport::budget::Reservation;
use crate::transport::pending::{flush_frame, not_taken, send_frame, ByteSender, Pending};
use crate::transport::shm::poll_until;
use crate::transport::{FrameBudget, FrameReceiver, FrameSender, Interrupt};
use crate::wait::Wait;

/// What both halves of a connection hold.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The Unix socket the connection was set up on: liveness only.
    pub(crate) socket: OwnedFd,
    pub(crate) name: String,
    /// Queue names the listener still owns, removed when the connection ends (the client
    /// removes them as soon as it has opened them; this covers a client that died first).
    pub(crate) names: Vec<String>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Queue::unlink(name);
        }
    }
}

fn queue_error(op: &'static str, peer: &str, e: MqError) -> TransportError {
    TransportError::io(op, peer, io::Error::other(e))
}

fn malformed(peer: &str, detail: String) -> TransportError {
    TransportError::io(
        "reading a message queue frame",
        peer,
        io::Error::new(io::ErrorKind::InvalidData, detail),
    )
}

/// The sending half: the writer of one queue.
#[derive(Debug)]
pub struct MqSender {
    sh: Arc<Shared>,
    queue: Queue,
    max: usize,
    pending: Pending,
    closed: bool,
}

impl MqSender {
    pub(crate) fn new(sh: Arc<Shared>, queue: Queue) -> Self {
        MqSender {
            sh,
            queue,
            max: DEFAULT_MAX_FRAME_LEN,
            pending: Pending::default(),
            closed: false,
        }
    }

    /// Waits for room in the queue: `Ok(false)` if `wait` ran out, `Closed` if the peer
    /// hung up (no reader is left to make room).
    fn wait_for_room(&self, wait: Wait) -> Result<bool, TransportError> {
        let mut fds = [
            PollFd::new(self.queue.as_fd(), PollFlags::POLLOUT),
            // No events asked: only a hang-up or an error shows.
            PollFd::new(self.sh.socket.as_fd(), PollFlags::empty()),
        ];
        if !poll_until(&mut fds, wait, &self.sh.name)? {
            return Ok(false);
        }
        if fds[1].any().unwrap_or(false) {
            return Err(TransportError::Closed {
                peer: self.sh.name.clone(),
            });
        }
        Ok(true)
    }
}

impl ByteSender for MqSender {
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

    /// Sends `bytes` from `*off` on, a message at a time: `Ok(false)` when `wait` ran out.
    fn write_all(&mut self, bytes: &[u8], off: &mut usize, wait: Wait) -> Result<bool, TransportError> {
        let size = self.queue.attrs().message_size;
        while *off < bytes.len() {
            let end = bytes.len().min(*off + size);
            match self.queue.send(&bytes[*off..end], Wait::NonBlock) {
                Ok(()) => *off = end,
                Err(MqError::Full { .. }) => {
                    if !self.wait_for_room(wait)? {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(queue_error("mq_send", &self.sh.name, e)),
            }
        }
        Ok(true)
    }
}

impl FrameSender for MqSender {
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
            // Every message sent is in the queue already: the peer drains it, then ends.
            let _ = shutdown(self.sh.socket.as_raw_fd(), Shutdown::Write);
        }
        self.closed = true;
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
    }
}

impl Drop for MqSender {
    fn drop(&mut self) {
        self.close();
    }
}

/// Where the receiver is in the stream of messages.
#[derive(Debug)]
enum Reading {
    /// The next message starts a frame.
    Between,
    /// A frame of `len` bytes whose first `body.len()` have arrived.
    Inside { body: Vec<u8>, len: usize },
    /// A fatal error was returned; every later call ends the same way.
    Failed,
}

/// The receiving half: the reader of one queue.
#[derive(Debug)]
pub struct MqReceiver {
    sh: Arc<Shared>,
    queue: Queue,
    /// One message, as large as the queue's message size.
    message: Vec<u8>,
    max: usize,
    interrupt: Option<Interrupt>,
    reading: Reading,
    /// The peer has closed its sending side: what is queued is all that will come.
    peer_done: bool,
    budget: Option<FrameBudget>,
    reserved: Option<Reservation>,
}

impl MqReceiver {
    pub(crate) fn new(sh: Arc<Shared>, queue: Queue) -> Self {
        let message = vec![0; queue.attrs().message_size];
        MqReceiver {
            sh,
            queue,
            message,
            max: DEFAULT_MAX_FRAME_LEN,
            interrupt: None,
            reading: Reading::Between,
            peer_done: false,
            budget: None,
            reserved: None,
        }
    }

    /// Takes in the message of `n` bytes just received; returns a frame it completed.
    fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>, TransportError> {
        let message = &self.message[..n];
        let peer = &self.sh.name;
        match &mut self.reading {
            Reading::Between => {
                if n < HEADROOM {
                    self.reading = Reading::Failed;
                    return Err(malformed(peer, format!("a message of {n} bytes cannot start a frame")));
                }
                let mut prefix = [0; HEADROOM];
                prefix.copy_from_slice(&message[..HEADROOM]);
                let len = u32::from_le_bytes(prefix) as usize;
                if len > self.max {
                    self.reading = Reading::Failed;
                    return Err(TransportError::FrameTooLarge {
                        peer: peer.clone(),
                        len: len as u64,
                        max: self.max,
                    });
                }
                let first = &message[HEADROOM..];
                if first.len() > len {
                    self.reading = Reading::Failed;
                    return Err(malformed(
                        peer,
                        format!("a frame of {len} bytes began with a message of {n}"),
                    ));
                }
                let mut body = buffers::take(len);
                body.extend_from_slice(first);
                if body.len() == len {
                    return Ok(Some(body));
                }
                if let Some(budget) = &self.budget {
                    let Some(reserved) = budget.reserve(len) else {
                        self.reading = Reading::Failed;
                        return Err(TransportError::BudgetExhausted {
                            peer: peer.clone(),
                            len: len as u64,
                            held: budget.held(),
                            limit: budget.limit(),
                        });
                    };
                    self.reserved = Some(reserved);
                }
                self.reading = Reading::Inside { body, len };
                Ok(None)
            }
            Reading::Inside { body, len } => {
                if body.len() + n > *len {
                    let detail = format!(
                        "a message of {n} bytes overruns a frame of {len} bytes with {} still to come",
                        *len - body.len()
                    );
                    self.reading = Reading::Failed;
                    return Err(malformed(peer, detail));
                }
                body.extend_from_slice(message);
                if body.len() < *len {
                    return Ok(None);
                }
                self.reserved = None;
                match std::mem::replace(&mut self.reading, Reading::Between) {
                    Reading::Inside { body, .. } => Ok(Some(body)),
                    _ => unreachable!("matched above"),
                }
            }
            Reading::Failed => Err(TransportError::Closed { peer: peer.clone() }),
        }
    }

    /// The peer is gone and the queue is drained: `Truncated` inside a frame, else `Closed`.
    fn ended(&mut self) -> TransportError {
        let peer = self.sh.name.clone();
        match std::mem::replace(&mut self.reading, Reading::Failed) {
            Reading::Inside { body, len } => TransportError::Truncated {
                peer,
                got: HEADROOM + body.len(),
                expected: HEADROOM + len,
            },
            _ => TransportError::Closed { peer },
        }
    }

    /// Waits for a message, the peer's end, or the interrupt.
    fn wait_for_message(&mut self, wait: Wait) -> Result<(), TransportError> {
        let queue = self.queue.as_fd();
        let mut fds = [
            PollFd::new(queue, PollFlags::POLLIN),
            // Readable only at its end: nothing is sent on it after the setup.
            PollFd::new(self.sh.socket.as_fd(), PollFlags::POLLIN),
            PollFd::new(
                self.interrupt.as_ref().map_or(queue, Interrupt::as_fd),
                PollFlags::POLLIN,
            ),
        ];
        let n = if self.interrupt.is_some() { 3 } else { 2 };
        let ready = if wait.remaining().is_some_and(|left| left.is_zero()) {
            // Not waiting, but still looking: a caller that waits elsewhere (an async
            // client's reactor, woken by the peer's end) must learn of that end here.
            match nix::poll::poll(&mut fds[..n], nix::poll::PollTimeout::ZERO) {
                Ok(ready) => ready > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => return Err(TransportError::io("poll", self.sh.name.clone(), e)),
            }
        } else {
            poll_until(&mut fds[..n], wait, &self.sh.name)?
        };
        if !ready {
            return Err(not_taken(wait, &self.sh.name));
        }
        if n == 3 && fds[2].any().unwrap_or(false) {
            return Err(TransportError::Interrupted {
                peer: self.sh.name.clone(),
            });
        }
        if fds[1].any().unwrap_or(false) {
            self.peer_done = true;
        }
        Ok(())
    }
}

impl FrameReceiver for MqReceiver {
    fn recv(&mut self, wait: Wait) -> Result<Vec<u8>, TransportError> {
        if matches!(self.reading, Reading::Failed) {
            return Err(TransportError::Closed {
                peer: self.sh.name.clone(),
            });
        }
        loop {
            match self.queue.recv_into(&mut self.message, Wait::NonBlock) {
                Ok(n) => {
                    if let Some(frame) = self.take(n)? {
                        return Ok(frame);
                    }
                }
                Err(MqError::Empty { .. }) if self.peer_done => return Err(self.ended()),
                Err(MqError::Empty { .. }) => self.wait_for_message(wait)?,
                Err(e) => return Err(queue_error("mq_receive", &self.sh.name, e)),
            }
        }
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = Some(interrupt);
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
    }

    fn in_frame(&self) -> bool {
        matches!(self.reading, Reading::Inside { .. })
    }

    fn set_budget(&mut self, budget: FrameBudget) {
        self.budget = Some(budget);
    }

    /// The queue's descriptor: Linux's message queues poll readable while a message waits.
    /// With it a server waits for the connection in its epoll set, as for a socket, so the
    /// frame and idle timeouts apply over `mq:` too.
    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.queue.as_fd())
    }

    /// The setup socket, which shows the peer's end (a queue does not).
    fn liveness_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.sh.socket.as_fd())
    }
}

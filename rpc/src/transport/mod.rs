//! Transports: how frames move between two processes.
//!
//! A [`Transport`] is one bidirectional connection, made of a [`FrameSender`] and a
//! [`FrameReceiver`] that can be used from different threads. The client and server are
//! written once against these traits; each module here supplies one kind of channel:
//!
//! | module    | channel                               | how a connection is made                  |
//! |-----------|---------------------------------------|-------------------------------------------|
//! | [`unix`]  | Unix stream socket                    | [`unix::connect`], [`unix::Listener`]     |
//! | [`tcp`]   | plain TCP (`TCP_NODELAY`), `tcp+plain:` | [`tcp::connect`], [`tcp::Listener`]     |
//! | [`noise`] | TCP, authenticated and encrypted, `tcp:` | [`noise::connect`], [`noise::Listener`] |
//! | [`pipe`]  | two anonymous pipes                   | [`pipe::pair`], inherited by a child      |
//! | [`fifo`]  | two named FIFOs in a directory        | [`fifo::open`] on each side               |
//! | [`shm`]   | two rings in a shared memfd           | [`shm::connect`], [`shm::Listener`]       |
//! | [`mq`]    | two POSIX message queues              | [`mq::connect`], [`mq::Listener`]         |
//!
//! # Blocking, timeouts and non-blocking use
//!
//! Every send, receive and accept takes a [`Wait`]: [`Wait::Block`], [`Wait::Until`] a
//! deadline, or [`Wait::NonBlock`], which fails at once with
//! [`TransportError::WouldBlock`]. Sending and receiving are independent, so all four
//! combinations are expressible, per call:
//!
//! | send \ receive | blocking receive                       | non-blocking receive                      |
//! |----------------|----------------------------------------|-------------------------------------------|
//! | blocking       | `send(f, Wait::Block)`, `recv(Wait::Block)` | `send(f, Wait::Block)`, `recv(Wait::NonBlock)` |
//! | non-blocking   | `send(f, Wait::NonBlock)`, `recv(Wait::Block)` | `send(f, Wait::NonBlock)`, `recv(Wait::NonBlock)` |
//!
//! # The contract every transport keeps
//!
//! - Frames arrive whole, in the order sent, or not at all; a receiver never yields part of one.
//!   [`FrameReceiver::recv_payload`] yields the same bytes as `recv`, perhaps in two buffers
//!   ([`Payload::Split`]: the head, then the rest), and makes the same checks.
//! - A frame whose length is above the receiver's maximum is refused with
//!   [`TransportError::FrameTooLarge`] before anything is allocated for it.
//! - A `WouldBlock` or `TimedOut` receive loses nothing: bytes of a partly received frame are
//!   kept, and the next receive continues where it stopped.
//! - A `WouldBlock` or `TimedOut` send either took the frame whole (`Ok`) or did not take it
//!   at all (`Err`). A frame that was only partly written is kept and finished by
//!   [`FrameSender::flush`] or the next send; [`FrameSender::has_pending`] says so.
//! - The peer closing between frames is [`TransportError::Closed`]; closing inside a frame is
//!   [`TransportError::Truncated`].
//! - A receive or accept blocked on an [`Interrupt`] that fires returns
//!   [`TransportError::Interrupted`].

mod budget;
pub mod fifo;
pub mod mq;
pub mod noise;
mod payload;
mod pending;
pub mod pipe;
pub mod shm;
mod sink;
mod stream;
pub mod tcp;
pub mod unix;

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::TransportError;
use crate::protocol::Frame;
use crate::wait::Wait;

pub use budget::{FrameBudget, DEFAULT_FRAME_BUDGET};
pub use payload::Payload;
pub(crate) use payload::{counts_exactly, last_split_bytes, last_split_bytes_in_process, Incoming};
pub use sink::{Encode, Sink};
pub(crate) use stream::wait_ready;
pub use stream::{StreamReceiver, StreamSender};

/// The sending half of a connection.
pub trait FrameSender: Send + 'static {
    /// Sends one frame, waiting as `wait` allows. See the [module docs](self) for what a
    /// `WouldBlock` or `TimedOut` means for the frame.
    fn send(&mut self, frame: &mut Frame, wait: Wait) -> Result<(), TransportError>;

    /// Finishes writing a frame that an earlier non-blocking or deadline-bound send left
    /// partly written.
    fn flush(&mut self, wait: Wait) -> Result<(), TransportError>;

    /// True while part of an earlier frame is still waiting to be written.
    fn has_pending(&self) -> bool;

    /// Closes the sending direction: the peer's receiver sees the end of the stream once
    /// every frame already taken has arrived.
    fn close(&mut self);

    /// Sets the largest payload this side will send.
    fn set_max_frame_len(&mut self, max: usize);

    /// Sends `frames`, in order, in as few writes as the transport can (a stream gathers
    /// them into one `writev`): what a connection's writer does with the frames other threads
    /// queued while it was busy. Returns how many frames from the front were taken (a frame
    /// only partly written is taken, its tail pending, as for [`send`](Self::send)) and the
    /// error that stopped the rest, which were not taken. The default sends them one by one.
    fn send_many(&mut self, frames: &mut [Frame], wait: Wait) -> (usize, Result<(), TransportError>) {
        for (i, frame) in frames.iter_mut().enumerate() {
            if let Err(e) = self.send(frame, wait) {
                return (i, Err(e));
            }
        }
        (frames.len(), Ok(()))
    }

    /// Sends a frame whose payload `encode` writes (at most `len` bytes, at most the
    /// maximum) straight into the transport's own buffer, if the transport can take it
    /// whole, now, without waiting: the shared-memory rings encode into the ring's free
    /// space, saving the copy from a [`Frame`]. True if the frame was sent; false if it was
    /// not (no room in one piece, a frame pending, the encoder failed, or a transport that
    /// cannot): the caller then encodes a [`Frame`] and [`send`](Self::send)s it, which
    /// also reports any error. Nothing was sent then, but for a transport that publishes a
    /// large frame as it is encoded (shared memory, for a peer on another CPU), whose
    /// encoder failed with part of the frame out: that transport closed its side, and the
    /// `send` says so. The default is false.
    fn try_send_encoded(&mut self, len: usize, encode: &mut Encode<'_>) -> bool {
        let _ = (len, encode);
        false
    }

    /// As [`try_send_encoded`](Self::try_send_encoded), but a transport may wait as `wait`
    /// allows and take the frame in part (its tail pending, as for [`send`](Self::send)):
    /// a stream writes a large frame as it is encoded, its large byte strings from the
    /// caller's buffer. `Ok(false)` if nothing was sent and nothing tried; `WouldBlock` or
    /// `TimedOut` if the wait ran out before any of the frame was written (nothing was
    /// sent); any other error is the connection's. The default is `try_send_encoded`.
    fn send_encoded(&mut self, len: usize, encode: &mut Encode<'_>, wait: Wait) -> Result<bool, TransportError> {
        let _ = wait;
        Ok(self.try_send_encoded(len, encode))
    }

    /// True if [`send_encoded`](Self::send_encoded) never waits for room, whatever `wait`
    /// says (it takes what fits now or nothing): a caller may then pass an unbounded wait
    /// even under a write timeout, and need not read the clock to bound it, so a transport
    /// that says true must never block there. The default is false.
    fn encodes_without_waiting(&self) -> bool {
        false
    }
}

/// The receiving half of a connection.
pub trait FrameReceiver: Send + 'static {
    /// Receives one frame's payload, waiting as `wait` allows.
    fn recv(&mut self, wait: Wait) -> Result<Vec<u8>, TransportError>;

    /// Receives one frame's payload as [`recv`](Self::recv) does, but a large reply whose
    /// body is one byte string may come as [`Payload::Split`]: its bytes read straight into
    /// a buffer of their own, which a client decoding a `Vec<u8>` returns as it is, with no
    /// copy. What a client reads replies with; a server uses `recv`. The default is `recv`'s
    /// payload, whole.
    fn recv_payload(&mut self, wait: Wait) -> Result<Payload, TransportError> {
        self.recv(wait).map(Payload::Whole)
    }

    /// Makes waits in [`recv`](Self::recv) end with [`TransportError::Interrupted`] once
    /// `interrupt` fires.
    fn set_interrupt(&mut self, interrupt: Interrupt);

    /// Sets the largest payload accepted; a longer frame is refused before allocation.
    fn set_max_frame_len(&mut self, max: usize);

    /// A descriptor that polls readable when [`recv`](Self::recv) may make progress, for
    /// servers that wait on many receivers at once; `None` if the transport has none.
    fn readiness_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// A second descriptor a server waits on beside the [`readiness_fd`](Self::readiness_fd),
    /// when that one does not show the peer's death: it polls readable (end of file) once
    /// the peer is gone. `None` if the readiness descriptor shows it.
    fn liveness_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// True if [`recv`](Self::recv) can return a whole frame (or its refusal) from bytes
    /// already read, which a readiness descriptor does not show.
    fn has_buffered(&self) -> bool {
        false
    }

    /// Called by a reader just before it sleeps on the
    /// [`readiness_fd`](Self::readiness_fd): true if [`recv`](Self::recv) may make progress
    /// now, so the reader should not sleep. A transport whose descriptor is signalled only
    /// for a reader that said it sleeps (the shared-memory rings) says so here, and may spin
    /// briefly first. The default is [`has_buffered`](Self::has_buffered).
    fn prepare_wait(&mut self) -> bool {
        self.has_buffered()
    }

    /// Like [`prepare_wait`](Self::prepare_wait), called by a server thread of the
    /// connection, which has nothing else to do: it may spin for longer (a Unix socket whose
    /// peer runs only on other CPUs looks again for up to 100 us). The default is
    /// `prepare_wait`.
    fn prepare_sleep(&mut self) -> bool {
        self.prepare_wait()
    }

    /// True while part of a frame has arrived and the rest has not, for servers that bound
    /// how long a frame may take (see `ServerConfig::frame_timeout`).
    fn in_frame(&self) -> bool {
        false
    }

    /// Makes large frames take their buffers from `budget`; a frame that does not fit is
    /// refused with [`TransportError::BudgetExhausted`]. Transports that hold no per-frame
    /// buffers ignore it.
    fn set_budget(&mut self, budget: FrameBudget) {
        let _ = budget;
    }

    /// The name of the key the peer authenticated with, once it has (see [`noise`]); `None`
    /// for transports that do not authenticate.
    fn authenticated_as(&self) -> Option<&str> {
        None
    }

    /// Takes back a payload [`recv`](Self::recv) returned, once its reader is done with it,
    /// so that the next frame may reuse the buffer rather than allocate one. The default
    /// drops it.
    fn recycle(&mut self, payload: Vec<u8>) {
        drop(payload);
    }
}

/// Accepts incoming connections.
pub trait Listener: Send + 'static {
    /// Accepts one connection, waiting as `wait` allows.
    fn accept(&mut self, wait: Wait) -> Result<Transport, TransportError>;

    /// Makes waits in [`accept`](Self::accept) end with [`TransportError::Interrupted`] once
    /// `interrupt` fires.
    fn set_interrupt(&mut self, interrupt: Interrupt);

    /// A description of the address, for messages.
    fn local_addr(&self) -> String;
}

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// A description for messages: `unix:/run/app.sock`, `tcp:127.0.0.1:4000`, ...
    pub name: String,
    /// The peer process's credentials, where the transport knows them.
    pub credentials: Option<Credentials>,
}

impl PeerInfo {
    /// A peer known only by name.
    pub fn named(name: impl Into<String>) -> Self {
        PeerInfo {
            name: name.into(),
            credentials: None,
        }
    }
}

/// A peer process's identity, as the kernel reports it (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One bidirectional connection: a sender, a receiver, and who the peer is.
pub struct Transport {
    /// The sending half.
    pub sender: Box<dyn FrameSender>,
    /// The receiving half.
    pub receiver: Box<dyn FrameReceiver>,
    /// The other end.
    pub peer: PeerInfo,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Sends one frame.
    pub fn send(&mut self, frame: &mut Frame, wait: Wait) -> Result<(), TransportError> {
        self.sender.send(frame, wait)
    }

    /// Sets the largest payload sent or accepted on this connection (default
    /// [`DEFAULT_MAX_FRAME_LEN`](crate::protocol::DEFAULT_MAX_FRAME_LEN)).
    pub fn set_max_frame_len(&mut self, max: usize) {
        self.sender.set_max_frame_len(max);
        self.receiver.set_max_frame_len(max);
    }

    /// Receives one frame's payload.
    pub fn recv(&mut self, wait: Wait) -> Result<Vec<u8>, TransportError> {
        self.receiver.recv(wait)
    }
}

/// A wake-up that ends blocked receives and accepts, from any thread, once and for all.
///
/// Backed by an eventfd: once fired it stays readable, so every wait that includes it ends.
#[derive(Clone, Debug)]
pub struct Interrupt {
    fd: Arc<EventFd>,
}

impl Interrupt {
    /// A new interrupt that has not fired.
    pub fn new() -> std::io::Result<Self> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Interrupt { fd: Arc::new(fd) })
    }

    /// Fires the interrupt. Idempotent.
    pub fn fire(&self) {
        // EAGAIN only if the counter would overflow, which means it has fired already.
        let _ = self.fd.write(1);
    }

    /// The file descriptor to include in a poll set; readable once fired.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Waits until `interrupt` fires or `timeout` passes; true if it fired.
pub(crate) fn wait_interrupt(interrupt: &Interrupt, timeout: std::time::Duration) -> bool {
    stream::wait_ready(
        interrupt.as_fd(),
        nix::poll::PollFlags::POLLIN,
        Wait::timeout(timeout),
        None,
        "interrupt",
    )
    .is_ok()
}

impl Listener for Box<dyn Listener> {
    fn accept(&mut self, wait: Wait) -> Result<Transport, TransportError> {
        (**self).accept(wait)
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        (**self).set_interrupt(interrupt)
    }

    fn local_addr(&self) -> String {
        (**self).local_addr()
    }
}

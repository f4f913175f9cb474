//! The two halves of a shared-memory connection and the doorbells between them.
//!
//! # Doorbells and the parked protocol
//!
//! Each ring has two wake-ups, both of which `poll(2)` can wait on together with the
//! [`Interrupt`](crate::transport::Interrupt):
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
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollTimeout};

use super::ring::{Corrupt, Layout};
use crate::error::TransportError;
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

pub(super) fn corrupt(peer: &str, e: Corrupt) -> TransportError {
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

mod receiver;
mod sender;

pub use receiver::ShmReceiver;
pub use sender::ShmSender;

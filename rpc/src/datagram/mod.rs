//! One-way calls as datagrams, over Unix datagram sockets and UDP: for events and
//! notifications where message boundaries matter, a lost message is acceptable, and no
//! connection, handshake or reply is wanted.
//!
//! A [`Sender`] sends the `#[procwire(oneway)]` methods of a service, each call one
//! datagram; `#[procwire::service]` generates a typed one (`CalcDatagrams` for `Calc`, with
//! the trait's one-way methods). A [`Receiver`] bound to an address hands each datagram to
//! the same generated server that serves connections ([`serve`]), as a one-way call.
//!
//! # What is guaranteed, and what is not
//!
//! - **A datagram arrives whole or not at all**, and carries exactly one call. A datagram
//!   larger than the sender's limit ([`Sender::max_datagram`]; by default 64 KiB over Unix
//!   sockets and 1472 bytes over UDP, one Ethernet frame unfragmented) is **refused at the
//!   sender** with [`DatagramError::TooLarge`]: nothing is sent, nothing is split.
//! - **No delivery is confirmed.** A successful send means the local kernel took the
//!   datagram, not that the receiver got it or ran it. There is no reply, and a handler's
//!   error or panic stays on the receiver's side (counted in [`Stats`]).
//! - **UDP**: datagrams may be lost, duplicated or reordered, silently, also on one host
//!   (a full receive buffer drops them). A receiver that is not there is not an error, or
//!   is one only on a later send (an ICMP "port unreachable" turns into
//!   [`DatagramError::NoReceiver`] on the sending socket).
//! - **Unix datagram sockets** (Linux): on one host datagrams are not reordered, and a
//!   sender whose receiver's queue is full waits (or fails with `WouldBlock` or `TimedOut`,
//!   as its timeout says) rather than losing one; a receiver that is not bound, or has gone,
//!   is [`DatagramError::NoReceiver`] at the send. What is queued when the receiver exits
//!   is lost.
//! - Each datagram carries its method's signature fingerprint (the one the handshake
//!   compares, see [`crate::schema`]), so a receiver drops (and counts) calls of a method it
//!   lacks or has with another signature, and malformed datagrams, without stopping.
//!
//! Wire format: `"PWDG"`, a version byte, the method's signature fingerprint (8 bytes, little-endian),
//! then the envelope and arguments exactly as in a one-way frame on a connection.

mod receiver;
mod sender;
#[cfg(test)]
mod tests;

use std::io;

pub use receiver::{serve, DatagramServer, Receiver, Stats};
pub use sender::Sender;

/// What every datagram starts with: a marker and the format's version.
const MAGIC: &[u8; 5] = b"PWDG\x01";
/// Marker, version and fingerprint.
const HEADER: usize = MAGIC.len() + 8;

/// The largest datagram a sender sends by default over a Unix socket.
pub const DEFAULT_UNIX_MAX: usize = 64 << 10;
/// The largest datagram a sender sends by default over UDP: what fits in one 1500-byte
/// Ethernet frame after the IPv4 and UDP headers, so it is never fragmented.
pub const DEFAULT_UDP_MAX: usize = 1472;
/// The largest UDP payload over IPv4.
pub const UDP_MAX: usize = 65_507;

/// A datagram could not be sent or received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The datagram is larger than the sender's limit; nothing was sent.
    #[error("a datagram of {len} bytes to {peer} is larger than the limit of {max} bytes; nothing was sent")]
    TooLarge {
        /// The receiver.
        peer: String,
        /// The datagram's length, header included.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nothing is bound at the receiver's address (a Unix socket path with no receiver, or
    /// a UDP port that answered "unreachable").
    #[error("no receiver at {peer}")]
    NoReceiver {
        /// The receiver's address.
        peer: String,
    },
    /// The sender's queue, or the receiver's, is full and the caller asked not to wait.
    #[error("sending to {peer} would block")]
    WouldBlock {
        /// The receiver.
        peer: String,
    },
    /// The wait for room or for a datagram ran out.
    #[error("waiting on {peer} timed out")]
    TimedOut {
        /// The other end.
        peer: String,
    },
    /// A receive was interrupted (the server is stopping).
    #[error("receiving on {peer} was interrupted")]
    Interrupted {
        /// The local address.
        peer: String,
    },
    /// The arguments could not be encoded.
    #[error("cannot encode the arguments of `{method}`: {source}")]
    Encode {
        /// The method.
        method: &'static str,
        /// The codec's error.
        #[source]
        source: postcard::Error,
    },
    /// A system call failed.
    #[error("{op} on {peer} failed: {source}")]
    Io {
        /// The call.
        op: &'static str,
        /// The address concerned.
        peer: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl DatagramError {
    fn io(op: &'static str, peer: &str, e: impl Into<io::Error>) -> Self {
        DatagramError::Io {
            op,
            peer: peer.to_owned(),
            source: e.into(),
        }
    }
}

impl From<crate::error::TransportError> for DatagramError {
    /// A wait's end, from the transports' shared poll.
    fn from(e: crate::error::TransportError) -> Self {
        use crate::error::TransportError as T;
        match e {
            T::WouldBlock { peer } => DatagramError::WouldBlock { peer },
            T::TimedOut { peer } => DatagramError::TimedOut { peer },
            T::Interrupted { peer } => DatagramError::Interrupted { peer },
            T::Io { op, peer, source } => DatagramError::Io { op, peer, source },
            other => DatagramError::io("poll", "a datagram socket", io::Error::other(other)),
        }
    }
}

/// Splits a datagram into its fingerprint and the one-way frame's payload, or says why it
/// is not one.
fn parse(datagram: &[u8]) -> Result<(u64, &[u8]), &'static str> {
    if datagram.len() < HEADER || &datagram[..MAGIC.len()] != MAGIC {
        return Err("not a procwire datagram (or of another version)");
    }
    let mut fingerprint = [0; 8];
    fingerprint.copy_from_slice(&datagram[MAGIC.len()..HEADER]);
    Ok((u64::from_le_bytes(fingerprint), &datagram[HEADER..]))
}

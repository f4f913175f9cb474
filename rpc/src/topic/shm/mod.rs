//! Topics over shared memory: the [`Publisher`] writes each message once into a ring in a
//! memfd region, and every [`Subscriber`] reads it there with a cursor of its own, so N
//! subscribers cost no N copies and no thread per subscriber in the publisher's hot path.
//!
//! A subscriber joins over the publisher's Unix socket: a hello (topic, type), then a welcome
//! that carries the region, the subscriber's doorbell and the publisher's "space" doorbell
//! (eventfds, `SCM_RIGHTS`). The socket then stays open as the liveness channel: its end of
//! file tells the publisher the subscriber left (its cursor slot is freed), and tells the
//! subscriber the publisher is gone, after what was left in the ring; the publisher's
//! reason for ending a subscription ([`Event::Ended`]) travels on it too.
//!
//! # Waiting
//!
//! Nobody spins. A subscriber that finds nothing new sets its `parked` word, checks once
//! more, and sleeps in `poll(2)` on its doorbell and the socket (an idle subscriber costs no
//! CPU); the publisher, after a message, rings the doorbell of each subscriber parked. A
//! `Block` publisher waiting for the slowest cursor sleeps on its space doorbell, which a
//! subscriber rings after moving its cursor while the publisher says it waits, with the
//! publish deadline; a subscriber leaving rings it too.
//!
//! # Overflow
//!
//! The ring has [`Options`]' `capacity` slots; a subscriber a whole ring behind is full.
//! [`Overflow::DropOldest`]: the writer overwrites, and the lapped subscriber finds a later
//! number in the slot and reports [`Event::Gap`]; [`Overflow::Block`]: the writer waits for
//! the slowest cursor (until its deadline, then [`TopicError::Full`], and nobody got the
//! message); [`Overflow::Disconnect`]: the slow subscriber is cut off and told why.
//! [`Overflow::DropNewest`] is refused ([`TopicError::Unsupported`]): one ring is every
//! subscriber's queue, so the writer cannot drop a message for one of them only.
//!
//! # Trust
//!
//! Subscribers map the region writable (their cursors are in it), so one could scribble on
//! it. The publisher reads nothing from the region but the cursors, each taken as a hint:
//! its own count numbers the messages, a cursor from the future counts as caught up, one
//! from the past as slow (which only its own policy answers). Every access is bounds-checked
//! and atomic ([`Region`](crate::shm::Region)), so scribbling causes no undefined behaviour
//! and no crash anywhere; other subscribers may then read garbage, which shows as a gap or
//! as a message that fails to decode ([`TopicError::Codec`]), never as a wrong type. Where
//! subscribers must not be able to disturb each other, use the socket topic.
//!
//! ```
//! use procwire_rpc::topic::shm::{Options, Publisher, Subscriber};
//! use procwire_rpc::topic::Event;
//! use procwire_rpc::Wait;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("prices.sock");
//! let publisher = Publisher::<u64>::bind(&path, "prices", Options::default())?;
//! publisher.publish(&100, Wait::Block)?;
//! let mut subscriber = Subscriber::<u64>::connect_with_last(&path, "prices")?;
//! publisher.publish(&101, Wait::Block)?;
//! assert_eq!(subscriber.recv(Wait::Block)?, Event::Message { seq: 1, value: 100 });
//! assert_eq!(subscriber.recv(Wait::Block)?, Event::Message { seq: 2, value: 101 });
//! # Ok(()) }
//! ```

mod publisher;
mod ring;
mod subscriber;
#[cfg(test)]
mod tests;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::{Control, TopicError};
#[cfg(doc)]
use super::{Event, Overflow};

pub use publisher::Publisher;
pub use subscriber::Subscriber;

/// The largest message of a shared-memory topic unless its options say otherwise: 4 KiB.
pub const DEFAULT_MESSAGE_SIZE: usize = 4096;
/// Subscribers at once unless the options say otherwise.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 64;
/// The largest control message on the socket.
const MAX_CONTROL: usize = 64 * 1024;

/// A shared-memory publisher's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The topic's settings: `capacity` is the ring's slots.
    pub topic: super::Options,
    /// The largest encoded message, in bytes: each slot's size; default
    /// [`DEFAULT_MESSAGE_SIZE`].
    pub message_size: usize,
    /// Subscribers at once (a cursor slot each); default [`DEFAULT_MAX_SUBSCRIBERS`].
    pub max_subscribers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options::new(super::Options::default())
    }
}

impl Options {
    /// `topic`'s settings, with the default sizes.
    pub fn new(topic: super::Options) -> Self {
        Options {
            topic,
            message_size: DEFAULT_MESSAGE_SIZE,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
        }
    }

    /// Sets [`message_size`](Self::message_size) (at least 1).
    pub fn message_size(mut self, bytes: usize) -> Self {
        self.message_size = bytes.max(1);
        self
    }

    /// Sets [`max_subscribers`](Self::max_subscribers) (at least 1).
    pub fn max_subscribers(mut self, subscribers: usize) -> Self {
        self.max_subscribers = subscribers.max(1);
        self
    }
}

/// The messages on the socket ([`Control`](super::Control)): a 4-byte little-endian length,
/// then postcard.
fn encode(control: &Control) -> Vec<u8> {
    let body = postcard::to_stdvec(control).expect("a control message encodes");
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

/// Reads one control message from `socket`, after the `pending` bytes already read.
fn read_control(socket: &mut UnixStream, pending: &mut Vec<u8>) -> std::io::Result<Option<Control>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    loop {
        if pending.len() >= 4 {
            let len = u32::from_le_bytes(pending[..4].try_into().expect("4 bytes")) as usize;
            if len > MAX_CONTROL {
                return Err(bad("a control message over 64 KiB"));
            }
            if pending.len() >= 4 + len {
                let control = postcard::from_bytes(&pending[4..4 + len]).map_err(|_| bad("not a control message"))?;
                pending.drain(..4 + len);
                return Ok(Some(control));
            }
        }
        let mut buf = [0; 4096];
        match socket.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn write_control(mut socket: impl Write, control: &Control) -> std::io::Result<()> {
    socket.write_all(&encode(control))
}

fn io_error(topic: &str, op: &'static str, peer: &str, e: std::io::Error) -> TopicError {
    TopicError::Transport {
        topic: topic.to_owned(),
        source: crate::error::TransportError::io(op, peer, e),
    }
}

//! Publish/subscribe topics over Unix sockets: one [`Publisher`] of typed messages, any
//! number of [`Subscriber`]s, each with a bounded queue and an explicit [`Overflow`] policy,
//! and sequence numbers, so that a subscriber learns of every message it missed.
//!
//! The publisher binds a Unix socket; a subscriber connects to it by its path. Under a
//! supervisor, a topic is declared by name (`[topic.NAME]`, [`named`]): the supervisor owns
//! its socket, so subscribers' connects wait in its backlog while the publisher restarts;
//! the publishing worker wraps the socket it is handed with [`Publisher::from_listener`]
//! (`procwire_workers::topic::publisher`), and subscribers are told its path
//! (`procwire_workers::topic::subscriber`). [`shm`] is the same over shared memory: each
//! message written once into a ring that every subscriber reads with its own cursor.
//!
//! # What a subscriber is told
//!
//! - Every message carries the topic's sequence number, 1, 2, 3, ... per publisher run. A
//!   subscriber whose next message is not the one it expected gets [`Event::Gap`] first,
//!   with how many it missed: messages are never lost without a word (ZeroMQ and nng drop
//!   them silently).
//! - A subscriber that asks for it ([`Subscriber::connect_with_last`]) gets the last message
//!   published before it joined first, if there was one.
//! - The end: [`Event::Ended`], with the publisher's reason when it gave one (it stopped, or
//!   disconnected this subscriber for being too slow). Each publisher run has an epoch, so a
//!   subscriber that connects again learns whether it is the same run
//!   ([`Subscriber::epoch`]): a new run restarts the numbering. Messages a publisher had
//!   queued but not yet written when it crashed are lost with it, and no gap can report
//!   them: the new epoch is what says the stream started over.
//!
//! # Overflow
//!
//! Each subscriber has a queue of [`Options::capacity`] messages in the publisher, emptied
//! by a thread that writes to its socket. When it is full, the policy decides:
//! [`Overflow::Block`] makes [`Publisher::publish`] wait (with its deadline) for room,
//! [`Overflow::DropOldest`] and [`Overflow::DropNewest`] drop a message for that subscriber
//! only (which sees the gap), and [`Overflow::Disconnect`] ends that subscriber's
//! connection, telling it why. The other subscribers are not affected by a slow one, except
//! under `Block`.
//!
//! ```
//! use procwire_rpc::topic::{Event, Options, Publisher, Subscriber};
//! use procwire_rpc::Wait;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("prices.sock");
//! let publisher = Publisher::<u64>::bind(&path, "prices", Options::default())?;
//! publisher.publish(&100, Wait::Block)?;
//! let mut subscriber = Subscriber::<u64>::connect_with_last(&path, "prices")?;
//! publisher.publish(&101, Wait::Block)?;
//! assert!(matches!(subscriber.recv(Wait::Block)?, Event::Message { seq: 1, value: 100 }));
//! assert!(matches!(subscriber.recv(Wait::Block)?, Event::Message { seq: 2, value: 101 }));
//! # Ok(()) }
//! ```

pub mod named;
mod publisher;
pub mod shm;
mod subscriber;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::TransportError;

pub use publisher::Publisher;
pub use subscriber::Subscriber;

/// How long either side waits for the other's half of the setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a full subscriber queue does to the next message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// The publisher waits for room (until its deadline): no message is dropped, and the
    /// slowest subscriber sets the pace.
    Block,
    /// The oldest queued message is dropped for this subscriber.
    DropOldest,
    /// The new message is dropped for this subscriber.
    DropNewest,
    /// The subscriber is disconnected, and told it was too slow.
    Disconnect,
}

impl Overflow {
    /// Each policy with its name in a manifest (`overflow = "drop-oldest"`).
    pub const NAMES: &'static [(&'static str, Overflow)] = &[
        ("block", Overflow::Block),
        ("drop-oldest", Overflow::DropOldest),
        ("drop-newest", Overflow::DropNewest),
        ("disconnect", Overflow::Disconnect),
    ];

    /// Its name in a manifest.
    pub fn name(self) -> &'static str {
        Overflow::NAMES
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("drop-oldest", |(name, _)| name)
    }

    /// The policy called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Overflow> {
        Overflow::NAMES.iter().find(|(n, _)| *n == name).map(|(_, o)| *o)
    }
}

/// A publisher's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Messages queued per subscriber (over shared memory: slots in the ring); default 64.
    pub capacity: usize,
    /// What a full queue does; default [`Overflow::DropOldest`].
    pub overflow: Overflow,
    /// Whether a subscriber that asks gets the last message published before it joined;
    /// default true.
    pub last_value: bool,
    /// Over a Unix socket: subscriber connections at once, counting those still setting up,
    /// each a thread of the publisher's; past it a new connection is closed at once, and
    /// logged. Default 256. (Over shared memory `shm::Options::max_subscribers` counts.)
    pub max_subscribers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: 64,
            overflow: Overflow::DropOldest,
            last_value: true,
            max_subscribers: 256,
        }
    }
}

impl Options {
    /// Sets [`capacity`](Self::capacity) (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sets [`overflow`](Self::overflow).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Sets [`last_value`](Self::last_value).
    pub fn last_value(mut self, last_value: bool) -> Self {
        self.last_value = last_value;
        self
    }

    /// Sets [`max_subscribers`](Self::max_subscribers) (at least 1).
    pub fn max_subscribers(mut self, subscribers: usize) -> Self {
        self.max_subscribers = subscribers.max(1);
        self
    }
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<T> {
    /// A message and its sequence number.
    Message {
        /// Its number in this publisher run.
        seq: u64,
        /// The message.
        value: T,
    },
    /// Messages were missed (dropped for this subscriber by its overflow policy); the next
    /// event is the message numbered `next`.
    Gap {
        /// How many.
        missed: u64,
        /// The number of the next message.
        next: u64,
    },
    /// The connection ended; nothing more comes on it.
    Ended {
        /// The publisher's reason, if it gave one (stopping, or this subscriber too slow).
        reason: Option<String>,
    },
}

/// A topic operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The publisher refused the subscription (another topic, another message type).
    #[error("topic {topic:?} at {peer} refused the subscription: {reason}")]
    Refused {
        /// The topic asked for.
        topic: String,
        /// The publisher's address.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A `Block` publisher waited for a full subscriber until its deadline; the message went
    /// to no subscriber, used up no sequence number and is not the last value.
    #[error("publishing on topic {topic:?} timed out waiting for a full subscriber")]
    Full {
        /// The topic.
        topic: String,
    },
    /// A message could not be encoded or decoded as the topic's type.
    #[error("a message on topic {topic:?} cannot be {what}: {source}")]
    Codec {
        /// The topic.
        topic: String,
        /// `encoded` or `decoded`.
        what: &'static str,
        /// The codec's error.
        #[source]
        source: postcard::Error,
    },
    /// The peer sent something that is not this protocol.
    #[error("{peer} does not speak the topic protocol: {detail}")]
    Protocol {
        /// The other end.
        peer: String,
        /// What was wrong.
        detail: String,
    },
    /// A topic handed over by a supervisor (`[topic.NAME]`) is not there, or not as asked:
    /// its environment variable is unset or malformed, its socket not inherited, or it is
    /// the other transport.
    #[error("topic {topic:?} was not handed over as asked: {detail}")]
    NotHanded {
        /// The topic.
        topic: String,
        /// What is missing or wrong.
        detail: String,
    },
    /// The topic's inherited socket could not be claimed.
    #[error("topic {topic:?}: the socket in {var} cannot be claimed: {problem}")]
    Inherited {
        /// The topic.
        topic: String,
        /// The variable naming the descriptor.
        var: String,
        /// Why not.
        #[source]
        problem: crate::shm::EnvProblem,
    },
    /// A message is larger than a shared-memory topic's slots.
    #[error("a message of {len} bytes does not fit topic {topic:?}'s slots of {max} bytes")]
    TooLarge {
        /// The topic.
        topic: String,
        /// The encoded message's size.
        len: usize,
        /// The largest message.
        max: usize,
    },
    /// A setting a shared-memory topic cannot have (drop-newest: one ring is every
    /// subscriber's queue, so the writer cannot drop a message for one of them only).
    #[error("topic {topic:?}: {detail}")]
    Unsupported {
        /// The topic.
        topic: String,
        /// What and why.
        detail: String,
    },
    /// The shared region of a shared-memory topic failed (created, mapped, passed).
    #[error("topic {topic:?}: {source}")]
    Shm {
        /// The topic.
        topic: String,
        /// The region's error.
        #[source]
        source: crate::shm::ShmError,
    },
    /// The transport failed.
    #[error("topic {topic:?}: {source}")]
    Transport {
        /// The topic.
        topic: String,
        /// The transport's error.
        #[source]
        source: TransportError,
    },
}

/// The control messages, postcard-encoded after a 0 byte; a message is a 1 byte, its
/// sequence number (8 bytes, little-endian) and the postcard-encoded value.
#[derive(Debug, Serialize, Deserialize)]
enum Control {
    Hello {
        topic: String,
        type_name: String,
        last: bool,
    },
    Welcome {
        epoch: u64,
        next: u64,
    },
    Refused {
        reason: String,
    },
    Ended {
        reason: String,
    },
    /// Over shared memory, with the region, the subscriber's doorbell and the space doorbell
    /// (see [`shm`]).
    ShmWelcome {
        epoch: u64,
        capacity: u64,
        message_size: u64,
        max_subscribers: u64,
        index: u64,
        next: u64,
    },
}

/// Why a hello for `topic` with messages of `type_name` is refused by the publisher of
/// `ours` with messages of `our_type`, if it is.
fn refusal(ours: &str, our_type: &str, topic: &str, type_name: &str) -> Option<String> {
    if topic != ours {
        return Some(format!("this is topic {ours:?}, not {topic:?}"));
    }
    (type_name != our_type).then(|| format!("its messages are {our_type}, not {type_name}"))
}

/// A publisher run's epoch: the time and the process, so that a restarted publisher's
/// differs.
fn new_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 40)
}

const CONTROL: u8 = 0;
const MESSAGE: u8 = 1;

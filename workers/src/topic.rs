//! The topics a worker's pool publishes or subscribes to (`[topic.NAME]` in the manifest),
//! by name: [`publisher`], [`subscriber`], and their shared-memory forms ([`shm_publisher`],
//! [`shm_subscriber`]) for a topic with `transport = "shm"`.
//!
//! The supervisor owns each topic's socket. The one worker of the pool whose `publishes`
//! lists the topic inherits it and runs the fan-out; a pool whose `subscribes` lists it is
//! told its path. Neither names the other's endpoint. When the supervisor restarts the
//! publisher, its subscribers see [`Event::Ended`](procwire_rpc::topic::Event::Ended) (with
//! no reason, after a crash) and [`Subscriber::reconnect`]; their connects wait in the
//! socket's backlog for the new run, whose [`epoch`](Subscriber::epoch) differs and whose
//! numbering starts at 1.
//!
//! ```no_run
//! use procwire_rpc::topic::Event;
//! use procwire_rpc::Wait;
//!
//! # fn main() -> Result<(), procwire_rpc::topic::TopicError> {
//! // In the publishing pool (`publishes = ["prices"]`):
//! let prices = procwire_workers::topic::publisher::<u64>("prices")?;
//! prices.publish(&101, Wait::Block)?;
//! // In a subscribing pool (`subscribes = ["prices"]`):
//! let mut prices = procwire_workers::topic::subscriber::<u64>("prices")?;
//! loop {
//!     match prices.recv(Wait::Block)? {
//!         Event::Message { seq, value } => println!("{seq}: {value}"),
//!         Event::Gap { missed, .. } => println!("missed {missed}"),
//!         Event::Ended { .. } => prices.reconnect()?,
//!     }
//! }
//! # }
//! ```

use procwire_rpc::topic::named::{Handed, Transport};
use procwire_rpc::topic::{shm, Publisher, Subscriber, TopicError};
use procwire_rpc::transport::unix;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Publishes topic `name` on the socket the supervisor handed this worker, with the
/// manifest's settings. Once per process.
pub fn publisher<T: Serialize>(name: &str) -> Result<Publisher<T>, TopicError> {
    let handed = Handed::from_env(name, Transport::Unix)?;
    let listener = unix::Listener::from_std(Handed::listener(name)?).map_err(|source| TopicError::Transport {
        topic: name.to_owned(),
        source,
    })?;
    Publisher::from_listener(listener, name, handed.options)
}

/// Subscribes to topic `name`, from the next message published.
pub fn subscriber<T: DeserializeOwned>(name: &str) -> Result<Subscriber<T>, TopicError> {
    Subscriber::connect(Handed::from_env(name, Transport::Unix)?.path(), name)
}

/// Subscribes to topic `name`, from the last message published before this call (if the
/// topic keeps it: `last_value`, default true).
pub fn subscriber_with_last<T: DeserializeOwned>(name: &str) -> Result<Subscriber<T>, TopicError> {
    Subscriber::connect_with_last(Handed::from_env(name, Transport::Unix)?.path(), name)
}

/// [`publisher`] for a topic with `transport = "shm"`: each message written once into a
/// ring in shared memory.
pub fn shm_publisher<T: Serialize>(name: &str) -> Result<shm::Publisher<T>, TopicError> {
    let handed = Handed::from_env(name, Transport::Shm)?;
    let options = shm::Options::new(handed.options).message_size(handed.message_size);
    shm::Publisher::from_listener(Handed::listener(name)?, name, options)
}

/// [`subscriber`] for a topic with `transport = "shm"`; `last` asks for the last value.
pub fn shm_subscriber<T: DeserializeOwned>(name: &str, last: bool) -> Result<shm::Subscriber<T>, TopicError> {
    let path = Handed::from_env(name, Transport::Shm)?.path;
    if last {
        shm::Subscriber::connect_with_last(&path, name)
    } else {
        shm::Subscriber::connect(&path, name)
    }
}

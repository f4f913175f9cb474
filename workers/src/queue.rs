//! The message queues a worker was handed: [`queue`].

use procwire_rpc::transport::mq::{MqError, Queue};

/// The message queue named `name` that the supervisor (a `[queue.NAME]` in the manifest,
/// listed by the worker's pool's `queues`) or a parent ([`Queue::pass_to`]) handed to this
/// process, by descriptor. It can be claimed once per process; share the `Queue` (it is
/// `Sync`) between threads rather than asking again.
///
/// ```no_run
/// use procwire_rpc::Wait;
///
/// # fn main() -> Result<(), procwire_rpc::transport::mq::MqError> {
/// let jobs = procwire_workers::queue("jobs")?;
/// jobs.send_value(&("resize", 42u64), Wait::Block)?;
/// let (what, id): (String, u64) = jobs.recv_value(Wait::Block)?;
/// # let _ = (what, id); Ok(()) }
/// ```
pub fn queue(name: &str) -> Result<Queue, MqError> {
    Queue::from_env(name)
}

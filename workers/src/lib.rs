//! Life inside a procwire worker: receive endpoints (systemd's `LISTEN_FDS` protocol), report
//! readiness and heartbeats (`sd_notify`), drain on `SIGTERM`.
//!
//! - [`Worker`]: serves a service on the endpoints this process was handed (or binds its
//!   own when run by hand), sends `READY=1`, heartbeats when asked to, and on SIGTERM sends
//!   `STOPPING=1`, finishes the calls in flight and returns. The same binary runs by hand,
//!   under `procwire up` and under systemd with a `.socket` unit, unchanged.
//! - [`WorkerError`]: why a worker could not serve. It prints its causes with `{}` and with
//!   `{:?}`, so a `main` returning `Result<(), WorkerError>` says why it could not start
//!   (`Error: cannot serve on unix:/run/calc.sock: bind on unix:/run/calc.sock failed:
//!   Permission denied (os error 13)`).
//! - [`shared`]: a shared memory region this worker was handed, by name.
//! - [`queue()`]: a message queue this worker was handed, by name.
//! - [`topic`]: the publish/subscribe topics its pool publishes or subscribes to, by name.
//! - [`activation`]: the socket-activation protocol.
//! - [`notify`]: the sd_notify protocol.
//!
//! A connection whose handshake fails (a client built against another interface, one that
//! says nothing in time) is reported on stderr, which the supervisor keeps with the
//! worker's other output, unless a `tracing` subscriber is installed: then the server's
//! warning is the report. [`Worker::on_handshake_failure`] replaces the default.
//!
//! A TCP socket a worker is handed is served with Noise authentication (the `tcp:`
//! endpoint), with the key of `PROCWIRE_KEY_FILE` (which `procwire up` sets from the pool's
//! `key_file`) or `PROCWIRE_KEY`, unless its name in `LISTEN_FDNAMES` ends in
//! [`.plain`](activation::PLAIN_SUFFIX) (a `tcp+plain:` endpoint; under systemd,
//! `FileDescriptorName=NAME.plain`). Without a key the worker refuses to serve rather than
//! serve unauthenticated peers.
//!
//! ```no_run
//! # use procwire_rpc::{CallContext, Fault, Frame, Service, ServiceInfo};
//! # struct Calc;
//! # impl Service for Calc {
//! #     fn info(&self) -> ServiceInfo { ServiceInfo::new("calc") }
//! #     fn method_name(&self, _: u32) -> Option<&'static str> { None }
//! #     fn call(&self, _: &CallContext, _: &[u8]) -> Result<Frame, Fault> { unreachable!() }
//! # }
//! // `Calc` is a service, normally `CalcServer::new(MyCalc)` from `#[procwire::service]`.
//! fn main() -> Result<(), procwire_workers::WorkerError> {
//!     // Socket-activated (systemd, `procwire up`): serves what it was handed; by hand:
//!     // `PROCWIRE_LISTEN=unix:/tmp/calc.sock ./worker`.
//!     procwire_workers::Worker::new().serve(Calc)
//! }
//! ```
#![deny(missing_docs)]

pub mod activation;
pub mod notify;
mod queue;
mod shared;
pub mod topic;
mod worker;

pub use procwire_rpc as rpc;
pub use queue::queue;
pub use shared::shared;
pub use worker::{Worker, WorkerError, LISTEN_ENV};

/// Signal numbers for [`Worker::on_signal`] (`signal::SIGHUP`, `signal::SIGUSR1`, ...).
pub use signal_hook::consts as signal;

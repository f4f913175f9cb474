//! Life inside a procwire worker: receive endpoints (systemd's `LISTEN_FDS` protocol), report
//! readiness and heartbeats (`sd_notify`), drain on `SIGTERM`.
//!
//! - [`Worker`]: serves a service on the endpoints this process was handed (or binds its
//!   own when run by hand), sends `READY=1`, heartbeats when asked to, and on SIGTERM sends
//!   `STOPPING=1`, finishes the calls in flight and returns. The same binary runs by hand,
//!   under `procwire up` and under systemd with a `.socket` unit, unchanged.
//! - [`activation`]: the socket-activation protocol.
//! - [`notify`]: the sd_notify protocol.
#![deny(missing_docs)]

pub mod activation;
pub mod notify;
mod worker;

pub use procwire_rpc as rpc;
pub use worker::{Worker, WorkerError, LISTEN_ENV};

/// Signal numbers for [`Worker::on_signal`] (`signal::SIGHUP`, `signal::SIGUSR1`, ...).
pub use signal_hook::consts as signal;

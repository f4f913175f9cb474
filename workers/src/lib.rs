//! Life inside a procwire worker: receiving endpoints (systemd's `LISTEN_FDS` protocol),
//! reporting readiness and heartbeats (`sd_notify`), draining on `SIGTERM`.
//!
//! This crate is filled by the worker-runtime work; today it only re-exports the RPC layer a
//! worker serves with.
#![deny(missing_docs)]

pub use procwire_rpc as rpc;

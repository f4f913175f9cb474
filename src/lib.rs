//! procwire: a framework for programs made of many processes.
//!
//! This facade re-exports the member crates:
//! - [`rpc`]: wire format, transports, multiplexed client and concurrent server;
//! - [`workers`]: life inside a worker;
//! - [`supervisor`]: the process supervisor;
//! - [`service`]: the attribute that turns a trait into a typed client and server.
#![deny(missing_docs)]

#[doc(inline)]
pub use procwire_macros::service;
pub use procwire_rpc as rpc;
pub use procwire_supervisor as supervisor;
#[doc(inline)]
pub use procwire_supervisor::{role, Supervisor};
pub use procwire_workers as workers;

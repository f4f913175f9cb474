//! procwire: a framework for programs made of many processes.
//!
//! This facade re-exports the member crates:
//! - [`rpc`]: wire format, transports, multiplexed client and concurrent server;
//! - [`workers`]: life inside a worker;
//! - [`supervisor`]: the process supervisor.
#![deny(missing_docs)]

#[doc(hidden)]
pub use procwire_macros as macros;
pub use procwire_rpc as rpc;
pub use procwire_supervisor as supervisor;
pub use procwire_workers as workers;

//! procwire: a framework for programs made of many processes.
//!
//! This facade re-exports the member crates:
//! - [`rpc`]: wire format, transports, multiplexed client and concurrent server;
//! - [`workers`]: life inside a worker;
//! - [`supervisor`]: the process supervisor;
//! - [`service`]: the attribute that turns a trait into a typed client, a pool client and a
//!   server; [`Schema`]: the derive every type crossing the wire implements;
//! - [`Supervisor`] and [`role`]: a supervisor embedded in this program, whose workers can
//!   be this very program in a role.
//!
//! The `procwire` command (`procwire up FILE`, `procwire check FILE`) is the binary of
//! `procwire-supervisor`.
//!
//! ```
//! #[procwire::service]
//! pub trait Calc {
//!     fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct MyCalc;
//! impl Calc for MyCalc {
//!     fn add(&self, a: i64, b: i64) -> i64 { a + b }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A connected pair stands in for a worker's socket here.
//! let (worker_end, caller_end) = procwire::rpc::transport::unix::pair()?;
//! let server = procwire::rpc::Server::new(CalcServer::new(MyCalc)).spawn_connection(worker_end)?;
//! let calc = CalcClient::connect(caller_end)?;
//! assert_eq!(calc.add(2, 3)?, 5);
//! drop(calc);
//! server.wait()?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

#[doc(inline)]
pub use procwire_macros::service;
/// `#[derive(Schema)]`, and the trait it implements: every type crossing the wire in a
/// service method describes its structure for the handshake (see [`rpc::schema`]).
#[doc(inline)]
pub use procwire_macros::Schema;
pub use procwire_rpc as rpc;
#[doc(inline)]
pub use procwire_rpc::Schema;
pub use procwire_supervisor as supervisor;
#[doc(inline)]
pub use procwire_supervisor::{role, Supervisor};
pub use procwire_workers as workers;

//! procwire's supervisor: reads a manifest, forks and monitors pools of workers, restarts them
//! by policy, owns their endpoints and forwards lifecycle signals.
//!
//! The supervisor core has not landed yet; the `procwire` binary only reports its version.
#![deny(missing_docs)]

/// The version of this crate, as the `procwire` binary reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

//! procwire's supervisor: reads a manifest, forks and monitors pools of workers, restarts them
//! by policy, owns their endpoints and forwards lifecycle signals.
//!
//! - [`manifest`]: the TOML manifest, read and checked with `file:line:col` errors;
//! - [`policy`]: restart, backoff, intensity, dependency order and shutdown as a pure state
//!   machine, fed events and a clock;
//! - [`run`]: the event loop that carries the policy out with real processes;
//! - [`control`]: the control socket and the `procwire` verbs that steer a running one;
//! - [`Supervisor`]: the same supervisor embedded in a program, whose pools may be the
//!   program itself in another [`role`].
#![deny(missing_docs)]

pub mod control;
mod embed;
pub mod manifest;
pub mod policy;
pub mod run;
pub mod top;

pub use embed::{role, Supervisor, ROLE_ENV};

/// Entry points for fuzzing (`fuzz/` and the corpus replay in `tests/corpus.rs`); not part
/// of the API.
#[doc(hidden)]
pub mod fuzz {
    /// The manifest parser on `bytes`, as `procwire check` and `up` read a file: text that
    /// is not UTF-8 is refused before parsing, as reading the file refuses it.
    pub fn manifest(bytes: &[u8]) {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = crate::manifest::Manifest::parse(text, "fuzz.toml");
        }
    }
}

/// The version of this crate, as the `procwire` binary reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

//! The control plane: a running supervisor seen and steered over procwire's own RPC.
//!
//! `procwire up` serves the [`Control`] service on a Unix socket, `RUNTIME/NAME.sock` beside
//! its name lock ([`socket_path`]; `--control PATH` or `PROCWIRE_CONTROL` put it elsewhere),
//! mode 0600 in a 0700 directory. Only the supervisor's own user and root are served: any
//! other peer (by `SO_PEERCRED`) is disconnected before the handshake, so no method runs for
//! it ([`server`]). Each call becomes a [`Command`](crate::run::command::Command) sent to
//! the event loop, which owns all state and answers on a channel; the call waits for the
//! answer with a deadline ([`REPLY_TIMEOUT`]). The `procwire` verbs (`status`, `stop`,
//! `start`, `restart`, `signal`, `down`, ...) are clients of it ([`client`]).
//!
//! Followers (`procwire logs -f`, `procwire events`) long-poll: the loop appends every
//! output line and lifecycle event to a bounded [`feed`] it never waits on, and each call
//! reads from a cursor on the server's own thread, waiting there for something new.

pub mod client;
pub mod events;
pub mod feed;
pub mod follow;
pub mod server;
pub mod status;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use events::{Event, What};
pub use feed::Batch;
pub use status::{LastExit, PoolState, PoolStatus, Status, SupervisorStatus, WorkerState, WorkerStatus};

/// How long a control call waits for the event loop's answer (all but `down`, which waits
/// for the supervisor to end).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that overrides the control socket's path.
pub const CONTROL_ENV: &str = "PROCWIRE_CONTROL";

/// What a verb acts on: a whole pool, or one of its workers (`web`, `web.2`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, procwire_macros::Schema)]
pub struct Target {
    /// The pool's name.
    pub pool: String,
    /// One worker's index, or `None` for every worker of the pool.
    pub index: Option<u32>,
}

impl std::str::FromStr for Target {
    type Err = String;

    /// `POOL` or `POOL.INDEX`.
    fn from_str(text: &str) -> Result<Target, String> {
        let (pool, index) = match text.rsplit_once('.') {
            Some((pool, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
                let index = index
                    .parse()
                    .map_err(|e| format!("worker index {index:?} in {text:?}: {e}"))?;
                (pool, Some(index))
            }
            _ => (text, None),
        };
        if pool.is_empty() {
            return Err(format!("{text:?} names no pool; write POOL or POOL.INDEX"));
        }
        Ok(Target {
            pool: pool.to_owned(),
            index,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(index) => write!(f, "{}.{index}", self.pool),
            None => f.write_str(&self.pool),
        }
    }
}

/// Why the supervisor did not do what a control call asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, procwire_macros::Schema, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No pool of that name runs.
    #[error("no pool named {pool:?} (pools: {})", known.join(", "))]
    NoSuchPool {
        /// The name asked for.
        pool: String,
        /// The pools there are.
        known: Vec<String>,
    },
    /// The pool has no worker of that index.
    #[error("pool {pool} has no worker {index} (it has {workers})")]
    NoSuchWorker {
        /// The pool.
        pool: String,
        /// The index asked for.
        index: u32,
        /// How many workers the pool has.
        workers: u32,
    },
    /// The supervisor is shutting down and starts or changes nothing any more.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// The signal number is not a signal.
    #[error("{0} is not a signal number")]
    BadSignal(i32),
    /// A rolling restart of the pool is under way already.
    #[error("a rolling restart of pool {0} is under way already")]
    Rolling(String),
    /// The pool cannot be scaled so.
    #[error("cannot scale pool {pool}: {reason}")]
    CannotScale {
        /// The pool.
        pool: String,
        /// Why.
        reason: String,
    },
    /// The reloaded manifest is refused (it does not check, or its sockets cannot be
    /// bound); nothing changed.
    #[error("reload refused, nothing changed: {0}")]
    ReloadRefused(String),
    /// The event loop did not answer in time, or has ended.
    #[error("the supervisor's event loop did not answer: {0}")]
    NoAnswer(String),
}

/// The supervisor's control interface, served on its control socket.
#[procwire_macros::service]
pub trait Control {
    /// Every pool (or the one named) and its workers.
    fn status(&self, pool: Option<String>) -> Result<Status, ControlError>;
    /// Stops the target by hand: it stays stopped (no restart, across restarts of other
    /// pools) until started. Answers with what was done, a line per worker.
    fn stop_target(&self, target: Target) -> Result<Vec<String>, ControlError>;
    /// Starts the target's workers that are not running, reviving a pool that gave up.
    fn start_target(&self, target: Target) -> Result<Vec<String>, ControlError>;
    /// Restarts the target's workers (stop, then start at once), starting those not running.
    fn restart_target(&self, target: Target) -> Result<Vec<String>, ControlError>;
    /// The last `lines` output lines of each of the target's workers (every worker's if
    /// `None`), as `pool.index | line`, kept in memory (a bounded number per worker, across
    /// restarts).
    fn logs(&self, target: Option<Target>, lines: u32) -> Result<Vec<String>, ControlError>;
    /// Restarts the pool's workers one at a time, each once the one before is ready again.
    fn rolling_restart(&self, pool: String) -> Result<Vec<String>, ControlError>;
    /// Sends `signal` (a number) to the process group of each of the target's running workers.
    fn signal_target(&self, target: Target, signal: i32) -> Result<Vec<String>, ControlError>;
    /// Grows or shrinks `pool` to `workers` workers; the others keep running untouched.
    /// Answers with a line per worker added or removed.
    fn scale(&self, pool: String, workers: u32) -> Result<Vec<String>, ControlError>;
    /// Reads the manifest again and applies the difference, as HUP does (`dry_run`: only
    /// says what it would do). Answers with what changes, a line each.
    fn reload(&self, dry_run: bool) -> Result<Vec<String>, ControlError>;
    /// Shuts the supervisor down gracefully, as TERM does; answers with its exit code once
    /// every worker is down.
    fn down(&self) -> Result<i32, ControlError>;
    /// The endpoint of each of `pool`'s current workers (its first `listen` endpoint, per
    /// worker), in index order, for a pool client: they change with `scale` and reloads.
    fn endpoints(&self, pool: String) -> Result<Vec<String>, ControlError>;
    /// Lifecycle events after `cursor` (`None`: from now on), oldest first, waiting up to
    /// `wait_ms` (at most 5 s) while there is none: a long poll, each answer carrying the
    /// next cursor and how many events the follower missed by reading too slowly.
    fn next_events(&self, cursor: Option<u64>, wait_ms: u32) -> Result<Batch<Event>, ControlError>;
    /// `procwire logs -f`. Without a cursor: the last `lines` lines of each of the target's
    /// workers (as [`logs`](Control::logs) gives them), and the cursor that follows them;
    /// with one: the target's lines after it, as `pool.index | line`, waiting like
    /// [`next_events`](Control::next_events).
    fn follow_logs(
        &self,
        target: Option<Target>,
        cursor: Option<u64>,
        lines: u32,
        wait_ms: u32,
    ) -> Result<Batch<String>, ControlError>;
}

/// Where the supervisor named `name` serves its control socket by default:
/// `RUNTIME/NAME.sock`, beside its name lock ([`crate::run::lock::runtime_dir`]).
pub fn socket_path(name: &str) -> Result<PathBuf, crate::run::lock::LockError> {
    Ok(crate::run::lock::runtime_dir()?.join(format!("{name}.sock")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_pool_or_a_pool_and_a_worker_index() {
        assert_eq!(
            "web".parse(),
            Ok(Target {
                pool: "web".into(),
                index: None
            })
        );
        assert_eq!(
            "web.2".parse(),
            Ok(Target {
                pool: "web".into(),
                index: Some(2)
            })
        );
        assert_eq!("web.2".parse::<Target>().unwrap().to_string(), "web.2");
        assert!("".parse::<Target>().is_err());
        assert!(".1".parse::<Target>().is_err());
        assert!("web.99999999999".parse::<Target>().is_err());
    }
}

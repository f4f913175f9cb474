//! What `procwire status` reports, as `procwire status --json` prints it. The shape is
//! stable (fields are only ever added):
//!
//! ```json
//! {"supervisor": {"name": "app", "pid": 4120, "manifest": "/srv/app/procwire.toml", "uptime_ms": 5230},
//!  "pools": [{"name": "web", "state": "ready", "workers": [
//!     {"index": 0, "pid": 4121, "state": "ready", "restarts": 0, "uptime_ms": 5100,
//!      "last_exit": null, "status": "serving", "next_restart_ms": null},
//!     {"index": 1, "pid": null, "state": "backoff", "restarts": 3, "uptime_ms": null,
//!      "last_exit": {"code": 1}, "status": null, "next_restart_ms": 800}]}]}
//! ```

use serde::{Deserialize, Serialize};

/// The whole supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, procwire_macros::Schema)]
pub struct Status {
    /// The supervisor itself.
    pub supervisor: SupervisorStatus,
    /// Its pools, in manifest order.
    pub pools: Vec<PoolStatus>,
}

/// The supervisor process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, procwire_macros::Schema)]
pub struct SupervisorStatus {
    /// `[supervisor] name`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// The manifest it runs.
    pub manifest: String,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
}

/// One pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, procwire_macros::Schema)]
pub struct PoolStatus {
    /// Its name.
    pub name: String,
    /// The pool as a whole.
    pub state: PoolState,
    /// Its workers, by index.
    pub workers: Vec<WorkerStatus>,
}

/// A pool as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, procwire_macros::Schema)]
#[serde(rename_all = "lowercase")]
pub enum PoolState {
    /// Waiting for its dependencies.
    Pending,
    /// Some worker is starting (or backing off) and none is stopped or failed.
    Starting,
    /// Every worker is ready.
    Ready,
    /// Some workers run, others are stopped by hand, failed or exited.
    Partial,
    /// Every worker is stopped by hand.
    Stopped,
    /// Every worker ended and none will be restarted.
    Exited,
    /// It gave up, or can never start (a dependency failed); `procwire start` revives it.
    Failed,
}

/// One worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, procwire_macros::Schema)]
pub struct WorkerStatus {
    /// Its index in the pool.
    pub index: u32,
    /// Its process, while it has one.
    pub pid: Option<i32>,
    /// What it is doing.
    pub state: WorkerState,
    /// How many times it was started again after its first start.
    pub restarts: u32,
    /// Milliseconds since its current process started, while it has one.
    pub uptime_ms: Option<u64>,
    /// How its last process ended: `{"code": N}`, `{"signal": N}`, or null (none ended yet,
    /// or how is unknown).
    pub last_exit: Option<LastExit>,
    /// The last `STATUS=` text it sent, if any.
    pub status: Option<String>,
    /// While it backs off: milliseconds until it is started again.
    pub next_restart_ms: Option<u64>,
}

/// What a worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, procwire_macros::Schema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Its pool waits for dependencies.
    Pending,
    /// Running, not ready yet.
    Starting,
    /// Running and ready.
    Ready,
    /// Asked to stop, not yet gone.
    Stopping,
    /// Waiting out its backoff before a restart.
    Backoff,
    /// Stopped by hand (`procwire stop`): stays down until started.
    Stopped,
    /// Ended, with no restart due.
    Exited,
    /// Given up (too many failed starts or restarts), or its pool can never start.
    Failed,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, procwire_macros::Schema)]
#[serde(rename_all = "lowercase")]
pub enum LastExit {
    /// It exited with this code.
    Code(i32),
    /// This signal killed it.
    Signal(i32),
}

impl WorkerState {
    /// The word `procwire status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Pending => "pending",
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Stopping => "stopping",
            WorkerState::Backoff => "backoff",
            WorkerState::Stopped => "stopped",
            WorkerState::Exited => "exited",
            WorkerState::Failed => "failed",
        }
    }
}

impl PoolState {
    /// The word `procwire status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Pending => "pending",
            PoolState::Starting => "starting",
            PoolState::Ready => "ready",
            PoolState::Partial => "partial",
            PoolState::Stopped => "stopped",
            PoolState::Exited => "exited",
            PoolState::Failed => "failed",
        }
    }

    /// The state of a pool whose workers are in `states`; `failed` if the pool as a whole
    /// gave up or can never start.
    pub fn of(states: &[WorkerState], failed: bool) -> PoolState {
        let all = |s: WorkerState| !states.is_empty() && states.iter().all(|&x| x == s);
        let any = |s: WorkerState| states.contains(&s);
        if failed || all(WorkerState::Failed) {
            PoolState::Failed
        } else if all(WorkerState::Pending) {
            PoolState::Pending
        } else if all(WorkerState::Ready) {
            PoolState::Ready
        } else if all(WorkerState::Stopped) {
            PoolState::Stopped
        } else if states
            .iter()
            .all(|s| matches!(s, WorkerState::Exited | WorkerState::Failed | WorkerState::Stopped))
        {
            PoolState::Exited
        } else if any(WorkerState::Stopped) || any(WorkerState::Failed) || any(WorkerState::Exited) {
            PoolState::Partial
        } else {
            PoolState::Starting
        }
    }
}

//! The manifest: what `procwire up FILE` runs, read from TOML.
//!
//! [`Manifest::load`] reads and checks a file; every problem is refused before anything
//! starts, with one clear message carrying `file:line:col` ([`ManifestError`]).
//! [`Manifest::validate_for`] checks a manifest, from a file or built in code, against the
//! system it is about to run on (programs, directories, socket paths, users), and
//! [`Manifest::load_validated`] does both, pointing a problem at its key in the file. The
//! reference of every key is `docs/manifest.md`.

mod access;
mod defaults;
mod error;
mod fields;
mod grammar;
mod graph;
mod locate;
mod queue;
mod schema;
mod shared;
#[cfg(test)]
mod testing;
mod topic;
mod validate;
mod walk;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use error::ManifestError;
pub use queue::{DEFAULT_QUEUE_MESSAGES, DEFAULT_QUEUE_MESSAGE_SIZE, MAX_QUEUE_MESSAGES, MAX_QUEUE_MESSAGE_SIZE};
pub use shared::MAX_SHARED_SIZE;
pub use topic::{MAX_TOPIC_CAPACITY, MAX_TOPIC_MESSAGE_SIZE};
pub(crate) use validate::rlimit_resource;
pub use validate::{Host, ValidationError, MAX_WORKERS, UNIX_PATH_MAX};

/// A whole manifest, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The file it was read from.
    pub path: PathBuf,
    /// The `[supervisor]` table.
    pub supervisor: SupervisorConfig,
    /// The `[pool.NAME]` tables, in file order.
    pub pools: Vec<Pool>,
    /// The `[shared.NAME]` tables, in file order: shared memory regions the supervisor
    /// creates once and hands to the pools that list them.
    pub shared: Vec<SharedRegion>,
    /// The `[queue.NAME]` tables, in file order: POSIX message queues the supervisor
    /// creates once and hands to the pools that list them.
    pub queues: Vec<QueueDecl>,
    /// The `[topic.NAME]` tables, in file order: publish/subscribe topics whose socket the
    /// supervisor owns, published by one pool and subscribed to by others.
    pub topics: Vec<TopicDecl>,
}

/// One `[topic.NAME]` table: a publish/subscribe topic. The supervisor binds its Unix socket
/// (in its runtime directory, mode `mode`), keeps it across worker restarts and removes it
/// on exit; the one pool whose `publishes` lists NAME gets the socket and runs the fan-out
/// (`procwire::workers::topic::publisher::<T>("NAME")`), the pools whose `subscribes` lists
/// it get its path (`procwire::workers::topic::subscriber::<T>("NAME")`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicDecl {
    /// The NAME in `[topic.NAME]`.
    pub name: String,
    /// How messages travel (`transport = "unix"` or `"shm"`); default unix.
    pub transport: procwire_rpc::topic::named::Transport,
    /// Messages queued per subscriber (over shm: slots of the ring), 1 to
    /// [`MAX_TOPIC_CAPACITY`]; default 64.
    pub capacity: usize,
    /// What a full queue does (`overflow = "block" | "drop-oldest" | "drop-newest" |
    /// "disconnect"`); default drop-oldest. Over shm not drop-newest.
    pub overflow: procwire_rpc::topic::Overflow,
    /// Whether a late joiner may ask for the last value; default true.
    pub last_value: bool,
    /// Over shm, the largest message (`message_size = "4KiB"`), 1 byte to
    /// [`MAX_TOPIC_MESSAGE_SIZE`]; default 4 KiB.
    pub message_size: u64,
    /// The socket file's mode (`mode = "0660"`); default 0600.
    pub mode: u32,
    /// Where the socket is (`path = "run/ticks.sock"`, relative to the manifest's
    /// directory), so that programs the supervisor does not run can subscribe too; default
    /// `RUNTIME/topic.NAME.sock` in the supervisor's runtime directory.
    pub path: Option<PathBuf>,
}

impl TopicDecl {
    /// A topic named `name` with the default settings.
    pub fn new(name: &str) -> Self {
        let options = procwire_rpc::topic::Options::default();
        TopicDecl {
            name: name.to_owned(),
            transport: procwire_rpc::topic::named::Transport::Unix,
            capacity: options.capacity,
            overflow: options.overflow,
            last_value: options.last_value,
            message_size: procwire_rpc::topic::shm::DEFAULT_MESSAGE_SIZE as u64,
            mode: 0o600,
            path: None,
        }
    }
}

/// One `[queue.NAME]` table: a POSIX message queue, the kernel's bounded mailbox, which the
/// supervisor creates when it starts (mode 0600, named `/procwire.UID.SUPERVISOR.PID-N.NAME`),
/// keeps across worker restarts, hands to every worker of the pools whose `queues` lists
/// NAME, and removes when it exits (or, after a crash, when the next supervisor of this user
/// starts). A worker opens it with `procwire::workers::queue("NAME")`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDecl {
    /// The NAME in `[queue.NAME]`.
    pub name: String,
    /// Messages it holds before senders wait (`messages = 10`), 1 to
    /// [`MAX_QUEUE_MESSAGES`]; default [`DEFAULT_QUEUE_MESSAGES`].
    pub messages: usize,
    /// The largest message in bytes (`message_size = "8KiB"`), 1 to
    /// [`MAX_QUEUE_MESSAGE_SIZE`]; default [`DEFAULT_QUEUE_MESSAGE_SIZE`].
    pub message_size: u64,
}

impl QueueDecl {
    /// A queue named `name` of the default shape.
    pub fn new(name: &str) -> Self {
        QueueDecl {
            name: name.to_owned(),
            messages: DEFAULT_QUEUE_MESSAGES,
            message_size: DEFAULT_QUEUE_MESSAGE_SIZE,
        }
    }
}

/// One `[shared.NAME]` table: a shared memory region (an unnamed, sealed memfd; nothing in
/// /dev/shm) that the supervisor creates when it starts and keeps for its whole life, across
/// worker restarts, and hands to every worker of the pools whose `shared` lists NAME. A
/// worker maps it with `procwire::workers::shared("NAME")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRegion {
    /// The NAME in `[shared.NAME]`.
    pub name: String,
    /// Its size in bytes (`size = "64MiB"`), 1 byte to [`MAX_SHARED_SIZE`].
    pub size: u64,
}

/// The `[supervisor]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct SupervisorConfig {
    /// Names the control socket and prefixes log lines; default: the file's stem.
    pub name: String,
    /// Deadline for the whole ordered shutdown; default 30 s.
    pub shutdown_timeout: Duration,
}

/// One `[pool.NAME]` table: a group of identical workers.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// The NAME in `[pool.NAME]`.
    pub name: String,
    /// argv, no shell; `{index}` is replaced by the worker's index (also in `env` values).
    pub command: Vec<String>,
    /// How many workers; default 1.
    pub workers: u32,
    /// When a worker counts as ready; default [`Ready::Spawned`].
    pub ready: Ready,
    /// How long a worker may take to become ready; default 30 s.
    pub ready_timeout: Duration,
    /// When an exited worker is restarted; default [`Restart::OnFailure`].
    pub restart: Restart,
    /// Exit codes that count as success; default `[0]`.
    pub success_codes: Vec<i32>,
    /// Delay before a restart after a failed start.
    pub backoff: Backoff,
    /// When a worker is given up.
    pub limit: Limit,
    /// Which workers restart when one exits; default [`Strategy::OneForOne`].
    pub strategy: Strategy,
    /// Pools that must reach a condition before this one starts, in file order.
    pub after: Vec<(String, Condition)>,
    /// `WATCHDOG=1` expected at least this often, else the worker is killed and restarted.
    pub watchdog: Option<Duration>,
    /// Sent to stop a worker; default TERM.
    pub stop_signal: Signal,
    /// How long after `stop_signal` before SIGKILL to the worker's process group; default 10 s.
    pub stop_timeout: Duration,
    /// Sent to reload a worker; default HUP.
    pub reload_signal: Signal,
    /// Signals the supervisor receives and passes on to this pool.
    pub forward: Vec<Signal>,
    /// Extra environment; values may contain `{index}`.
    pub env: BTreeMap<String, String>,
    /// Working directory (a relative path in the file is resolved against the manifest's
    /// directory); default the manifest's directory.
    pub cwd: Option<PathBuf>,
    /// User to run as (needs root).
    pub user: Option<String>,
    /// Group to run as (needs root); default the user's primary group.
    pub group: Option<String>,
    /// Sets `PR_SET_NO_NEW_PRIVS` on the workers, so that nothing they exec gains privileges
    /// (setuid and setgid bits, file capabilities); default false, because setuid helpers
    /// such as `ping` or `sudo` run inside a worker would stop working.
    pub no_new_privs: bool,
    /// The workers' file mode creation mask (`umask`), at most 0777; default `None`: the
    /// supervisor's own, inherited.
    pub umask: Option<u32>,
    /// Resource limits, by name (`nofile`, `nproc`, `core`, `memlock`, `stack`, `as`, `cpu`, `fsize`).
    pub rlimits: BTreeMap<String, u64>,
    /// Where the workers' stdout goes.
    pub stdout: Output,
    /// Where the workers' stderr goes.
    pub stderr: Output,
    /// Size-based rotation of `file:` outputs.
    pub log_rotate: Option<LogRotate>,
    /// Endpoints the supervisor binds once and hands to every worker of the pool by the
    /// socket-activation protocol (`LISTEN_FDS`, from fd 3, in this order); `{index}` in a
    /// Unix path gives each worker its own (see [`Endpoint::for_worker`]).
    pub listen: Vec<Endpoint>,
    /// Permissions of the pool's Unix socket files; default 0600, or in a file without
    /// `mode`, as `allow_uids` and `allow_gids` need (0660 for one group, 0666 for more).
    pub mode: u32,
    /// Users besides the supervisor's (and root) who may connect to the pool's Unix
    /// endpoints, checked by uid (`SO_PEERCRED`) before the handshake; default none.
    pub allow_uids: Vec<u32>,
    /// Groups whose members (by the peer's effective gid) may connect, as `allow_uids`; the
    /// socket files get the first as their group. Default none.
    pub allow_gids: Vec<u32>,
    /// The pre-shared key of the pool's authenticated TCP endpoints (`tcp:HOST:PORT`): a
    /// file of 32 raw bytes or 64 hex digits that only its owner may read (relative to the
    /// manifest's directory). Checked when the manifest is validated; the workers get its
    /// path in `PROCWIRE_KEY_FILE`, never the secret. A pool with a `tcp:` endpoint must
    /// have one. It is also the key the workers' own clients use.
    pub key_file: Option<PathBuf>,
    /// More keys the pool's authenticated TCP endpoints accept (`key_file = [KEY, MORE...]`
    /// in the manifest), for rotating keys without refusing anyone: checked as `key_file`
    /// is, and handed to the workers by path in `PROCWIRE_ACCEPT_KEY_FILES`. Default none.
    pub accept_key_files: Vec<PathBuf>,
    /// Instead of `command`: run the supervising program's own executable in this role
    /// (`PROCWIRE_ROLE`), so one binary is both supervisor and workers. Only an embedded
    /// supervisor ([`crate::Supervisor`]) can do it.
    pub role: Option<String>,
    /// Whose notifications (`READY=1`, `WATCHDOG=1`, ...) count for a worker; default
    /// [`NotifyAccess::Main`].
    pub notify_access: NotifyAccess,
    /// The `[shared.NAME]` regions its workers get, by name.
    pub shared: Vec<String>,
    /// The `[queue.NAME]` queues its workers get, by name.
    pub queues: Vec<String>,
    /// The `[topic.NAME]` topics it publishes, by name: its workers get each one's socket.
    pub publishes: Vec<String>,
    /// The `[topic.NAME]` topics it subscribes to, by name: its workers get each one's path.
    pub subscribes: Vec<String>,
}

/// Whose messages on `NOTIFY_SOCKET` count for a worker (systemd's `NotifyAccess=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyAccess {
    /// Only the worker's own process (the one the supervisor started).
    Main,
    /// Any process of the worker's tree: in its process group, or with the worker among its
    /// ancestors (a shell running `systemd-notify --ready`, a child of `sh -c`). The sender
    /// must still exist when the supervisor reads the message; `systemd-notify` waits for
    /// that by itself (its barrier), other senders should not exit at once.
    All,
}

/// A listening endpoint the supervisor owns: procwire's one endpoint type. In a manifest,
/// a relative Unix path resolves against the manifest's directory, and `{index}` in it gives
/// each worker a socket of its own ([`Endpoint::for_worker`]).
pub use procwire_rpc::Endpoint;

impl Pool {
    /// Every endpoint the pool's workers listen on, each once.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let mut all: Vec<Endpoint> = (0..self.workers)
            .flat_map(|i| self.listen.iter().map(move |e| e.for_worker(i)))
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

impl Manifest {
    /// A manifest built in code, for an embedded supervisor: no pools yet, every setting at
    /// its default; relative paths resolve against the current directory.
    pub fn new(name: &str) -> Manifest {
        Manifest {
            path: std::env::current_dir().unwrap_or_default().join(format!("{name}.toml")),
            supervisor: SupervisorConfig {
                name: name.to_owned(),
                shutdown_timeout: Duration::from_secs(30),
            },
            pools: Vec::new(),
            shared: Vec::new(),
            queues: Vec::new(),
            topics: Vec::new(),
        }
    }

    /// Adds a shared memory region of `size` bytes named `name`, for the pools that list it in
    /// their `shared` (like a `[shared.NAME]` table).
    pub fn shared_region(mut self, name: &str, size: u64) -> Manifest {
        self.shared.push(SharedRegion {
            name: name.to_owned(),
            size,
        });
        self
    }

    /// Adds a message queue, for the pools that list it in their `queues` (like a
    /// `[queue.NAME]` table).
    pub fn queue(mut self, queue: QueueDecl) -> Manifest {
        self.queues.push(queue);
        self
    }

    /// Adds a topic, for the pools that list it in their `publishes` or `subscribes` (like
    /// a `[topic.NAME]` table).
    pub fn topic(mut self, topic: TopicDecl) -> Manifest {
        self.topics.push(topic);
        self
    }

    /// Adds a pool (started in dependency order, like the manifest's `[pool.NAME]` tables).
    pub fn pool(mut self, pool: Pool) -> Manifest {
        self.pools.push(pool);
        self
    }
}

impl Pool {
    /// A pool named `name` running `command`, with every other setting at its default (as
    /// if the manifest gave only `command`).
    pub fn new(name: &str, command: Vec<String>) -> Pool {
        Pool {
            command,
            ..defaults::default_pool(name)
        }
    }
}

/// When a worker counts as ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// As soon as it is spawned.
    Spawned,
    /// When it sends `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// When a TCP connection to this address succeeds.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// When this command (argv) exits 0.
    Exec(Vec<String>),
}

/// When an exited worker is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Always,
    /// When it exited with a code not in `success_codes`, or by a signal.
    OnFailure,
    /// Never.
    Never,
}

/// Delay before restarting a worker whose start failed.
///
/// A worker that had been ready for `reset_after` (default 1 s, s6's rule) counts as
/// started: when it exits it restarts at once, with no delay, and its count of failed starts
/// goes back to 0. A run that ends sooner (or never became ready, or could not be spawned)
/// is a failed start: the restart waits `initial`, multiplied by `factor` per consecutive
/// failed start up to `max`, randomised by ±`jitter` (a fraction).
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed start; default 100 ms.
    pub initial: Duration,
    /// Largest delay; default 30 s.
    pub max: Duration,
    /// Growth per consecutive failed start; default 2.0.
    pub factor: f64,
    /// Randomisation, a fraction of the delay; default 0.1.
    pub jitter: f64,
    /// How long a worker must have been ready for its run to count as a start that
    /// succeeded; default 1 s.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(1),
        }
    }
}

/// When a worker is given up, counted for each worker on its own (so that many workers of a
/// large pool each failing once never add up to a limit): after more than `restarts`
/// restarts `within` a sliding window, or after `start_attempts` consecutive failed starts
/// (see [`Backoff`]: a run that ended before it had been ready for `reset_after`), like
/// supervisord's "never got started". Then `then` happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Restarts of one worker allowed in the window; default 10.
    pub restarts: u32,
    /// The window; default 60 s.
    pub within: Duration,
    /// Consecutive failed starts after which the worker is given up; 0 never gives up;
    /// default 10 (with the default backoff, about 50 s of retrying).
    pub start_attempts: u32,
    /// What happens when a worker is given up; default [`LimitAction::Stop`].
    pub then: LimitAction,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            restarts: 10,
            within: Duration::from_secs(60),
            start_attempts: 10,
            then: LimitAction::Stop,
        }
    }
}

/// What happens when a worker is given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitAction {
    /// The worker stays down; in a one-for-all pool, the whole pool (marked failed). The
    /// other pools, and a one-for-one pool's other workers, carry on.
    Stop,
    /// The supervisor shuts everything down and exits non-zero.
    Shutdown,
}

/// Which workers restart when one exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Only that worker.
    OneForOne,
    /// Every worker of the pool.
    OneForAll,
}

/// What a dependency must reach before its dependents start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// All its workers were spawned.
    Started,
    /// All its workers are ready.
    Ready,
    /// All its workers exited successfully.
    Completed,
}

/// Where a stream of a worker's output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Into the supervisor's own output, line by line, prefixed with `pool.index`.
    Inherit,
    /// Appended to this file (relative to the manifest's directory), rotated by `log_rotate`.
    File(PathBuf),
    /// Nowhere.
    Discard,
}

/// Size-based rotation of log files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRotate {
    /// Rotate when the file reaches this many bytes.
    pub size: u64,
    /// How many rotated files to keep.
    pub keep: u32,
}

/// A signal, by its name without `SIG` (`TERM`, `HUP`, `USR1`, ...).
pub type Signal = nix::sys::signal::Signal;

//! Why a manifest cannot run here: [`ValidationError`], and the key in the file each
//! variant is about.

use std::path::PathBuf;

use super::{MAX_WORKERS, UNIX_PATH_MAX};
use crate::manifest::Endpoint;

/// Why a manifest cannot run here; found by [`Manifest::validate`](crate::manifest::Manifest::validate) before anything starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The supervisor's name is empty or cannot name a file.
    #[error("supervisor name {name:?} {why}")]
    SupervisorName {
        /// The name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A manifest without pools.
    #[error("no pools: add at least one pool")]
    NoPools,
    /// A pool's name is empty or has characters other than letters, digits, `-` and `_`.
    #[error("bad pool name {pool:?}: use letters, digits, `-` and `_`")]
    PoolName {
        /// The name.
        pool: String,
    },
    /// Two pools have the same name.
    #[error("two pools are named {pool:?}")]
    DuplicatePool {
        /// The name.
        pool: String,
    },
    /// `workers` is 0 or more than [`MAX_WORKERS`].
    #[error("pool {pool}: `workers` is {workers}; it must be from 1 to {MAX_WORKERS}")]
    Workers {
        /// The pool.
        pool: String,
        /// How many it asks for.
        workers: u32,
    },
    /// A pool without a program to run.
    #[error("pool {pool}: `command` is empty: it needs at least the program to run")]
    EmptyCommand {
        /// The pool.
        pool: String,
    },
    /// A pool uses `role` where the supervisor cannot run itself as a worker.
    #[error("pool {pool}: `role` runs the supervising program itself in that role; only an embedded supervisor (procwire::Supervisor) can do that, not `procwire up`")]
    Role {
        /// The pool.
        pool: String,
    },
    /// A program (the `command`, or an `exec:` readiness probe) is not in `PATH`.
    #[error("pool {pool}: `{key}`: program {program:?} is not in PATH ({search})")]
    ProgramNotFound {
        /// The pool.
        pool: String,
        /// `command` or `ready`.
        key: &'static str,
        /// The program as written.
        program: String,
        /// The `PATH` searched.
        search: String,
    },
    /// A program given by its path cannot be run.
    #[error("pool {pool}: `{key}`: program {}: {source}", path.display())]
    Program {
        /// The pool.
        pool: String,
        /// `command` or `ready`.
        key: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// Why it cannot run: missing, not a file, not executable.
        #[source]
        source: std::io::Error,
    },
    /// The working directory is missing or not a directory.
    #[error("pool {pool}: working directory {}: {source}", dir.display())]
    Cwd {
        /// The pool.
        pool: String,
        /// The directory.
        dir: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// A Unix socket's directory is missing or not a directory.
    #[error("pool {pool}: listen {endpoint}: directory {}: {source}", dir.display())]
    ListenDirectory {
        /// The pool.
        pool: String,
        /// The endpoint, for this worker.
        endpoint: Endpoint,
        /// Its position in `listen`.
        index: usize,
        /// The directory.
        dir: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// A Unix socket's directory can be written by anyone, who could swap the socket.
    #[error("pool {pool}: listen {endpoint}: {} is writable by everyone; put the socket in a private directory", dir.display())]
    WorldWritable {
        /// The pool.
        pool: String,
        /// The endpoint.
        endpoint: Endpoint,
        /// Its position in `listen`.
        index: usize,
        /// The directory.
        dir: PathBuf,
    },
    /// A Unix socket path is longer than [`UNIX_PATH_MAX`].
    #[error("pool {pool}: listen {endpoint}: the path is {length} bytes, and a Unix socket path can have at most {UNIX_PATH_MAX} (108 with the terminating NUL); use a shorter or relative path")]
    PathTooLong {
        /// The pool.
        pool: String,
        /// The endpoint.
        endpoint: Endpoint,
        /// Its position in `listen`.
        index: usize,
        /// The path's length in bytes.
        length: usize,
    },
    /// Something other than a socket is in a Unix socket's place.
    #[error("pool {pool}: listen {endpoint}: {} exists and is not a socket", path.display())]
    NotASocket {
        /// The pool.
        pool: String,
        /// The endpoint.
        endpoint: Endpoint,
        /// Its position in `listen`.
        index: usize,
        /// The path.
        path: PathBuf,
    },
    /// A pool listens on authenticated TCP (`tcp:HOST:PORT`) without a `key_file`.
    #[error("pool {pool}: listen {endpoint} is authenticated TCP and needs a key: give the pool `key_file = \"PATH\"` (32 bytes, or 64 hex digits, readable only by its owner), or write \"tcp+plain:…\" for TCP that serves anyone")]
    NoKey {
        /// The pool.
        pool: String,
        /// The endpoint.
        endpoint: Endpoint,
        /// Its position in `listen`.
        index: usize,
    },
    /// A pool's `key_file` cannot be read, may be read by others, or is not a key.
    #[error("pool {pool}: `key_file`: {}", procwire_rpc::ErrorChain(.source))]
    Key {
        /// The pool.
        pool: String,
        /// Why it is not a key.
        #[source]
        source: procwire_rpc::transport::noise::KeyError,
    },
    /// `user` or `group` names no user or group, or needs root.
    #[error("pool {pool}: `{key}`: {why}")]
    Identity {
        /// The pool.
        pool: String,
        /// `user` or `group`.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
    /// An `after` edge names no pool, or closes a cycle.
    #[error("{message}")]
    After {
        /// The pool whose `after` is at fault.
        pool: String,
        /// The dependency named.
        dependency: String,
        /// What is wrong.
        message: String,
    },
    /// A `[shared.NAME]` region with a bad name, a size out of range, or a name used twice.
    #[error("shared region {name:?} {why}")]
    Shared {
        /// The region's name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A `[queue.NAME]` with a bad name, a shape out of range, or a name used twice.
    #[error("queue {name:?} {why}")]
    Queue {
        /// The queue's name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A `[topic.NAME]` with a bad name or setting, a name used twice, or not published by
    /// exactly one pool of one worker.
    #[error("topic {name:?} {why}")]
    Topic {
        /// The topic's name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A setting out of its range (a duration, the backoff, `mode`, `forward`, `rlimits`, ...).
    #[error("pool {pool}: `{key}` {why}")]
    Value {
        /// The pool.
        pool: String,
        /// The key, dotted (`backoff.factor`).
        key: String,
        /// What is wrong.
        why: String,
    },
}

/// Where in a manifest file a problem lies: a path of keys from the top.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::manifest) enum Segment {
    /// The value under this key.
    Key(String),
    /// The item at this position of an array.
    Index(usize),
    /// This key itself, not its value (an `after` dependency).
    Name(String),
}

impl ValidationError {
    /// The pool at fault, if the problem is in one.
    pub fn pool(&self) -> Option<&str> {
        use ValidationError as E;
        match self {
            E::SupervisorName { .. } | E::NoPools | E::Shared { .. } | E::Queue { .. } | E::Topic { .. } => None,
            E::PoolName { pool }
            | E::DuplicatePool { pool }
            | E::Workers { pool, .. }
            | E::EmptyCommand { pool }
            | E::Role { pool }
            | E::ProgramNotFound { pool, .. }
            | E::Program { pool, .. }
            | E::Cwd { pool, .. }
            | E::ListenDirectory { pool, .. }
            | E::WorldWritable { pool, .. }
            | E::PathTooLong { pool, .. }
            | E::NotASocket { pool, .. }
            | E::NoKey { pool, .. }
            | E::Key { pool, .. }
            | E::Identity { pool, .. }
            | E::After { pool, .. }
            | E::Value { pool, .. } => Some(pool),
        }
    }

    /// The key at fault, from the top of the file; empty for the file as a whole.
    pub(in crate::manifest) fn place(&self) -> Vec<Segment> {
        use Segment::{Index, Key, Name};
        use ValidationError as E;
        let key = |k: &str| Key(k.to_owned());
        let pool = |rest: Vec<Segment>| {
            let mut path = vec![key("pool"), Name(self.pool().unwrap_or_default().to_owned())];
            path.extend(rest);
            path
        };
        match self {
            E::SupervisorName { .. } => vec![key("supervisor"), key("name")],
            E::NoPools => Vec::new(),
            E::Shared { name, .. } => vec![key("shared"), Name(name.clone())],
            E::Queue { name, .. } => vec![key("queue"), Name(name.clone())],
            E::Topic { name, .. } => vec![key("topic"), Name(name.clone())],
            E::PoolName { .. } | E::DuplicatePool { .. } => pool(Vec::new()),
            E::Workers { .. } => pool(vec![key("workers")]),
            E::EmptyCommand { .. } => pool(vec![key("command")]),
            E::Role { .. } => pool(vec![key("role")]),
            E::ProgramNotFound { key: "command", .. } | E::Program { key: "command", .. } => {
                pool(vec![key("command"), Index(0)])
            }
            E::ProgramNotFound { key: k, .. } | E::Program { key: k, .. } | E::Identity { key: k, .. } => {
                pool(vec![key(k)])
            }
            E::Cwd { .. } => pool(vec![key("cwd")]),
            E::ListenDirectory { index, .. }
            | E::WorldWritable { index, .. }
            | E::PathTooLong { index, .. }
            | E::NotASocket { index, .. }
            | E::NoKey { index, .. } => pool(vec![key("listen"), Index(*index)]),
            E::Key { .. } => pool(vec![key("key_file")]),
            E::After { dependency, .. } => pool(vec![key("after"), Name(dependency.clone())]),
            E::Value { key: dotted, .. } => pool(dotted.split('.').map(key).collect()),
        }
    }
}

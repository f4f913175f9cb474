//! The documented defaults of a pool, its `backoff` and its `limit`: what a manifest gets
//! for every key it omits, and what [`Pool::new`] starts from.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Backoff, Limit, NotifyAccess, Output, Pool, Ready, Restart, Signal, Strategy};

pub(super) fn default_pool(name: &str) -> Pool {
    Pool {
        name: name.to_owned(),
        command: Vec::new(),
        workers: 1,
        ready: Ready::Spawned,
        ready_timeout: Duration::from_secs(30),
        restart: Restart::OnFailure,
        success_codes: vec![0],
        backoff: default_backoff(),
        limit: default_limit(),
        strategy: Strategy::OneForOne,
        after: Vec::new(),
        watchdog: None,
        stop_signal: Signal::SIGTERM,
        stop_timeout: Duration::from_secs(10),
        reload_signal: Signal::SIGHUP,
        forward: Vec::new(),
        env: BTreeMap::new(),
        cwd: None,
        user: None,
        group: None,
        no_new_privs: false,
        umask: None,
        rlimits: BTreeMap::new(),
        stdout: Output::Inherit,
        stderr: Output::Inherit,
        log_rotate: None,
        listen: Vec::new(),
        mode: 0o600,
        allow_uids: Vec::new(),
        allow_gids: Vec::new(),
        key_file: None,
        accept_key_files: Vec::new(),
        role: None,
        notify_access: NotifyAccess::Main,
        shared: Vec::new(),
        queues: Vec::new(),
        publishes: Vec::new(),
        subscribes: Vec::new(),
    }
}

pub(super) fn default_backoff() -> Backoff {
    Backoff::default()
}

pub(super) fn default_limit() -> Limit {
    Limit::default()
}

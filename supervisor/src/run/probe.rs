//! Readiness probes: `tcp:` connects, `exec:` runs a command as a child watched like the
//! workers, until one succeeds.

use std::time::Instant;

use nix::unistd::Pid;

use super::{spawn, Runner};
use crate::manifest::Ready;
use crate::policy::{Event, WorkerId};

/// How often a readiness probe runs until it succeeds.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a `tcp:` probe waits for its connection.
const PROBE_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

impl Runner {
    /// Runs worker `w`'s readiness probe once. A `tcp:` probe connects with a short timeout
    /// (the loop waits at most that long); an `exec:` probe runs as a child, reaped like the
    /// workers.
    pub(super) fn probe(&mut self, w: WorkerId) {
        self.probes.remove(&w);
        if !self.policy.is_alive(w) {
            return;
        }
        match self.policy.pool(w.pool).ready.clone() {
            Ready::Tcp { host, port } => {
                use std::net::ToSocketAddrs;
                let ok = (host.as_str(), port)
                    .to_socket_addrs()
                    .ok()
                    .into_iter()
                    .flatten()
                    .any(|addr| std::net::TcpStream::connect_timeout(&addr, PROBE_CONNECT_TIMEOUT).is_ok());
                self.probe_done(w, ok);
            }
            Ready::Exec(argv) => {
                let argv: Vec<String> = argv.iter().map(|a| spawn::expand(a, w.index)).collect();
                let Some(program) = argv.first() else {
                    self.report(w, "has an empty readiness probe command");
                    return;
                };
                let spawned = std::process::Command::new(program)
                    .args(&argv[1..])
                    .current_dir(&self.base)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
                match spawned {
                    Ok(child) => {
                        let pid = Pid::from_raw(child.id() as i32);
                        self.probe_pids.insert(pid, w);
                        self.watch_child(pid);
                    }
                    Err(e) => {
                        self.say(&format!("readiness probe {program:?} cannot start: {e}"));
                        self.probe_done(w, false);
                    }
                }
            }
            Ready::Spawned | Ready::Notify => {}
        }
    }

    pub(super) fn probe_done(&mut self, w: WorkerId, ready: bool) {
        if ready {
            self.feed(Event::Ready(w));
        } else if self.policy.is_alive(w) {
            self.probes.insert(w, Instant::now() + PROBE_INTERVAL);
        }
    }
}

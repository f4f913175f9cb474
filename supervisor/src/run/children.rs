//! Learning that a child exited, without SIGCHLD where the kernel allows: a pidfd per child
//! (Linux 5.3 and later) is readable once the child has exited, and sits in the loop's poll
//! set; then `waitpid` on that one pid collects it, leaving every other child of the program
//! alone. Where there are no pidfds, SIGCHLD wakes the loop instead and each known child is
//! asked the same way. Then the loop's part: a worker's exit becomes an event, a probe's
//! its verdict, and an orphan is only reported.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::Reaping;
use crate::policy::{Event, Exit, WorkerId};

/// A pidfd for `pid`, a child of this process not reaped yet.
pub(crate) fn pidfd(pid: Pid) -> std::io::Result<OwnedFd> {
    super::sys::pidfd_open(pid)
}

/// Whether this kernel has pidfds.
pub(crate) fn have_pidfds() -> bool {
    pidfd(Pid::this()).is_ok()
}

fn exit_of(status: WaitStatus) -> Option<(Pid, Exit)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, Exit::Code(code))),
        WaitStatus::Signaled(pid, signal, _) => Some((pid, Exit::Signal(signal as i32))),
        _ => None,
    }
}

/// Collects child `pid` if it has exited; `None` while it runs. A child that someone else
/// in the program reaped first ended with an [`Exit::Unknown`].
pub(crate) fn wait_for(pid: Pid) -> Option<Exit> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => match exit_of(status) {
                Some((_, exit)) => return Some(exit),
                None if status == WaitStatus::StillAlive => return None,
                None => continue,
            },
            Err(Errno::EINTR) => continue,
            Err(_) => return Some(Exit::Unknown),
        }
    }
}

/// Collects any child of the process that has exited (a worker, a probe, an orphan
/// re-parented to us); `None` once none is left.
pub(crate) fn wait_any() -> Option<(Pid, Exit)> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
            Ok(status) => {
                if let Some(found) = exit_of(status) {
                    return Some(found);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

impl super::Runner {
    /// SIGCHLD: collects every exited child (all of the process's, or only our own).
    pub(super) fn reap(&mut self) {
        match self.reaping {
            Reaping::All => {
                while let Some((pid, exit)) = wait_any() {
                    self.exited(pid, exit);
                }
            }
            Reaping::Own => {
                let own: Vec<Pid> = self.pids.keys().chain(self.probe_pids.keys()).copied().collect();
                for pid in own {
                    if let Some(exit) = wait_for(pid) {
                        self.exited(pid, exit);
                    }
                }
            }
        }
    }

    /// Child `pid` has exited and was collected: a probe, a worker, or an orphan.
    pub(super) fn exited(&mut self, pid: Pid, exit: Exit) {
        if let Some(fds) = &mut self.pidfds {
            fds.remove(&pid);
        }
        if let Some(w) = self.probe_pids.remove(&pid) {
            self.probe_done(w, exit == Exit::Code(0));
            return;
        }
        if let Some(w) = self.pids.remove(&pid) {
            // Its last lines come before the news of its exit.
            let ready: Vec<bool> = self.logs.iter().map(|l| l.owner() == pid).collect();
            self.pump_logs(&ready);
            self.workers.remove(&w);
            self.probes.remove(&w);
            // A probe still running for the dead worker must not speak for its successor.
            let stale: Vec<Pid> = self
                .probe_pids
                .iter()
                .filter(|(_, pw)| **pw == w)
                .map(|(p, _)| *p)
                .collect();
            for probe in stale {
                self.probe_pids.remove(&probe);
                let _ = nix::sys::signal::kill(probe, Signal::SIGKILL);
                // Collected now, as nothing will wait for it later.
                if let Some(fds) = &mut self.pidfds {
                    fds.remove(&probe);
                }
                let _ = nix::sys::wait::waitpid(probe, None);
            }
            // Whatever the worker left behind goes with it: its process group, and its
            // cgroup, which also holds what left the group.
            let _ = killpg(pid, Signal::SIGKILL);
            self.kill_cgroup(w);
            self.feed(Event::Exited(w, exit));
        } else if self.verbose {
            // An orphan re-parented to us (we are a subreaper, or PID 1).
            self.say(&format!("reaped orphan {pid} ({exit})"));
        }
    }

    /// Kills what is left in worker `w`'s cgroup (where there are cgroups).
    pub(super) fn kill_cgroup(&mut self, w: WorkerId) {
        let pool = self.policy.pool_name(w.pool).to_owned();
        if let Err(e) = self.containment.kill_worker(&pool, w.index) {
            self.report(w, &format!("cannot kill what is left in its cgroup: {e}"));
        }
    }

    /// Puts a pidfd for child `pid` in the poll set (where the kernel has pidfds).
    pub(super) fn watch_child(&mut self, pid: Pid) {
        let Some(fds) = &mut self.pidfds else { return };
        match pidfd(pid) {
            Ok(fd) => {
                fds.insert(pid, fd);
            }
            // Only if we are out of descriptors: its exit is noticed at the next SIGCHLD,
            // if that is watched.
            Err(e) => self.say(&format!("cannot watch process {pid}: pidfd_open: {e}")),
        }
    }
}

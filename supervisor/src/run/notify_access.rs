//! Which worker a notification is from: the sender's pid, as the kernel reports it, is a
//! worker's, or (with `notify_access = "all"`) that of a process in a worker's tree.
//!
//! Membership is read from `/proc/PID/stat`: the sender belongs to worker W if its process
//! group is W's (every worker leads its own group, which its descendants inherit and keep
//! when they are orphaned and re-parented to the supervisor), or if W is among its
//! ancestors by the parent chain (which holds where a descendant made a group or session of
//! its own). A process can join a group only within its own session, so the group test
//! admits no stranger from outside the supervisor's session; the parent chain cannot be
//! forged at all. cgroups would need a cgroup per worker, which the supervisor does not make.
//!
//! Both read the sender's `/proc` entry, so a sender that has exited and been reaped by the
//! time the message is read is not recognised (systemd's `NotifyAccess=all` has the same
//! limit; `systemd-notify` waits for the message to be processed by its barrier).

use std::collections::HashMap;

use nix::unistd::Pid;

use crate::manifest::NotifyAccess;
use crate::policy::WorkerId;

/// How far up the parent chain a sender may be from its worker.
const MAX_DEPTH: usize = 64;

/// The `(ppid, pgrp)` of `pid`, or `None` if it is gone.
fn parent_and_group(pid: Pid) -> Option<(Pid, Pid)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE PPID PGRP ...`; COMM may hold spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((Pid::from_raw(ppid), Pid::from_raw(pgrp)))
}

/// The worker `sender` speaks for: the worker itself, or, where its pool allows it
/// (`access`), a process of its tree. `None` for anyone else.
pub(super) fn sender_worker(
    sender: Pid,
    workers: &HashMap<Pid, WorkerId>,
    access: impl Fn(WorkerId) -> NotifyAccess,
) -> Option<WorkerId> {
    if let Some(&w) = workers.get(&sender) {
        return Some(w);
    }
    let allowed = |pid: Pid| workers.get(&pid).copied().filter(|&w| access(w) == NotifyAccess::All);
    let (mut parent, group) = parent_and_group(sender)?;
    if let Some(w) = allowed(group) {
        return Some(w);
    }
    for _ in 0..MAX_DEPTH {
        if let Some(w) = allowed(parent) {
            return Some(w);
        }
        if parent.as_raw() <= 1 {
            return None;
        }
        parent = parent_and_group(parent)?.0;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(index: u32) -> WorkerId {
        WorkerId { pool: 0, index }
    }

    #[test]
    fn a_child_of_a_worker_speaks_for_it_only_with_notify_access_all() {
        // This test process plays the worker; a child of it is the sender.
        let mut child = std::process::Command::new("sleep").arg("1000").spawn().unwrap();
        let sender = Pid::from_raw(child.id() as i32);
        let workers = HashMap::from([(Pid::this(), worker(3))]);
        assert_eq!(sender_worker(sender, &workers, |_| NotifyAccess::All), Some(worker(3)));
        assert_eq!(sender_worker(sender, &workers, |_| NotifyAccess::Main), None);
        assert_eq!(
            sender_worker(Pid::this(), &workers, |_| NotifyAccess::Main),
            Some(worker(3))
        );
        // A process that is neither its ancestor nor its group leader has no say.
        let mut other = std::process::Command::new("sleep").arg("1000").spawn().unwrap();
        let strangers = HashMap::from([(Pid::from_raw(other.id() as i32), worker(0))]);
        assert_eq!(sender_worker(sender, &strangers, |_| NotifyAccess::All), None);
        other.kill().unwrap();
        other.wait().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            sender_worker(sender, &workers, |_| NotifyAccess::All),
            None,
            "a reaped sender is unknown"
        );
    }
}

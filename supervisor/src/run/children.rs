//! Learning that a child exited, without SIGCHLD where the kernel allows: a pidfd per child
//! (Linux 5.3 and later) is readable once the child has exited, and sits in the loop's poll
//! set; then `waitpid` on that one pid collects it, leaving every other child of the program
//! alone. Where there are no pidfds, SIGCHLD wakes the loop instead and each known child is
//! asked the same way.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::policy::Exit;

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

//! The raw system calls nix does not wrap, each behind a safe function.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// pidfd_open(2): a descriptor for process `pid`, readable once it has exited.
pub(crate) fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // Flags 0: a pidfd is always close-on-exec, and pidfd_open refuses any flag but
    // PIDFD_NONBLOCK (O_CLOEXEC among them: EINVAL).
    // SAFETY: pidfd_open takes a pid and a flags word, reads no memory of ours, and returns
    // a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("pidfd_open returned no descriptor"))?;
    // SAFETY: pidfd_open just returned `fd`: it is open and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `signal` is at its default disposition (neither handled nor ignored).
pub(crate) fn at_default(signal: Signal) -> std::io::Result<bool> {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction(2) only writes the current one into `old`,
    // which is valid, writable memory of the right type.
    if unsafe { libc::sigaction(signal as libc::c_int, std::ptr::null(), old.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded, so it filled `old` in (and zeroed memory is a valid
    // sigaction besides).
    let old = unsafe { old.assume_init() };
    Ok(old.sa_sigaction == libc::SIG_DFL)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a given: with O_CLOEXEC in its flags pidfd_open fails with EINVAL, and the
    /// supervisor quietly fell back to SIGCHLD.
    #[test]
    fn a_pidfd_of_this_process_opens_and_is_close_on_exec() {
        let fd = pidfd_open(Pid::this()).expect("pidfd_open");
        let flags = nix::fcntl::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }
}

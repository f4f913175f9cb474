//! The raw system calls nix does not wrap, each behind a safe function.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// pidfd_open(2): a descriptor for process `pid`, readable once it has exited.
pub(crate) fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word, reads no memory of ours, and returns
    // a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), libc::O_CLOEXEC) };
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

//! `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)`: the child is born in its cgroup.
//!
//! Moving a process into a cgroup afterwards (writing to `cgroup.procs`) takes the kernel's
//! cgroup threadgroup lock for writing, which waits for an RCU grace period unless the
//! hierarchy is mounted with `favordynmods`: measured here, 7-18 ms per move when moves are
//! 150 ms apart (a restart now and then), against about 0.05 ms back to back. A child cloned
//! straight into its cgroup takes none of it.
//!
//! libc has no wrapper, and with `CLONE_VM` and a stack of its own the child returns from the
//! system call on that stack, with nothing of the caller's frame: only a few instructions of
//! assembly can take it from there into [`super::child`]. They exist for x86_64 and aarch64;
//! elsewhere (and on kernels before 5.7, or where seccomp refuses clone3) [`clone3`] returns
//! `None` and the caller clones without the cgroup, and the child moves itself.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;

/// struct clone_args (linux/sched.h), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (linux/sched.h, Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Set once clone3 was refused as unknown: every later spawn goes straight to the fallback.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Clones a child that runs `child(arg)` on the stack `[stack, stack + size)`, sharing our
/// memory, in the cgroup whose directory is open as `cgroup`; returns once the child has
/// exec'd or exited. `None`: clone3 with a cgroup is not available here, nothing was done.
///
/// # Safety
///
/// As for `libc::clone` with `CLONE_VM | CLONE_VFORK`: `child` must only make system calls,
/// allocate nothing, and end in execve or `_exit`; the stack must be writable memory no one
/// else uses, 16-byte aligned at both ends; `arg` must stay valid until this returns.
pub(super) unsafe fn clone3(
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
    stack: *mut libc::c_void,
    size: usize,
    cgroup: libc::c_int,
) -> Option<std::io::Result<libc::pid_t>> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack as u64,
        stack_size: size as u64,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    // SAFETY: passed on from our caller; `args` is a valid clone_args of the size given.
    let ret = unsafe { raw(&args, child, arg) }?;
    if ret >= 0 {
        return Some(Ok(ret as libc::pid_t));
    }
    let errno = (-ret) as i32;
    match errno {
        // No clone3 (before 5.3, or filtered), no cgroup field (before 5.7: E2BIG), an
        // unknown flag (EINVAL), or a seccomp policy's EPERM: the fallback moves the child.
        libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            None
        }
        _ => Some(Err(std::io::Error::from_raw_os_error(errno))),
    }
}

/// The system call; returns the kernel's result (a pid, or minus an errno).
#[cfg(target_arch = "x86_64")]
unsafe fn raw(
    args: &CloneArgs,
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> Option<i64> {
    let ret: i64;
    // SAFETY: clone3 reads `args`. In the parent the sequence is one syscall (rcx and r11
    // clobbered). In the child (rax = 0) the kernel has set rsp to the top of the new stack,
    // 16-byte aligned, and r12/r13 still hold `child` and `arg`: it calls child(arg) with the
    // ABI's alignment (the call pushes the return address) and exits with its result should
    // it ever return. The child never comes back into Rust code on this stack.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit_group,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    Some(ret)
}

/// The system call; returns the kernel's result (a pid, or minus an errno).
#[cfg(target_arch = "aarch64")]
unsafe fn raw(
    args: &CloneArgs,
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> Option<i64> {
    let ret: i64;
    // SAFETY: as on x86_64: in the parent one `svc`; in the child (x0 = 0) sp is the top of
    // the new stack, x20/x21 still hold `child` and `arg`, and it calls child(arg), then
    // exits with its result should it ever return.
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x0, x21",
            "blr x20",
            "mov x8, {exit}",
            "svc 0",
            "udf 0",
            "2:",
            exit = const libc::SYS_exit_group,
            in("x8") libc::SYS_clone3,
            inlateout("x0") args as *const CloneArgs as i64 => ret,
            in("x1") std::mem::size_of::<CloneArgs>(),
            in("x20") child,
            in("x21") arg,
            lateout("x30") _,
            options(nostack),
        );
    }
    Some(ret)
}

/// Elsewhere: not available, the caller falls back.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn raw(
    _args: &CloneArgs,
    _child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    _arg: *mut libc::c_void,
) -> Option<i64> {
    None
}

//! Starting a worker the way `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`, a few
//! system calls in the child, then `execve`.
//!
//! Why not `fork`: a fork copies the supervisor's page tables and write-protects every
//! private page of it, in both processes. The child then takes a copy-on-write fault for each
//! page it writes before `execve` throws the copy away, the parent takes one for each page it
//! writes afterwards, and on a VM the write protection costs a TLB shoot-down across vCPUs.
//! Profiled here, those faults were about half of the supervisor's CPU time per restart and
//! most of the time from a worker's death to its replacement's `execve`. With `CLONE_VM` the
//! child borrows the parent's memory and the calling thread sleeps until the child has
//! exec'd (or exited): nothing is copied, and nothing faults.
//!
//! Why not `posix_spawn` itself (what `std::process::Command` uses when it can): it cannot set
//! the parent-death signal, `no_new_privs`, a umask or resource limits, and std falls back to
//! `fork` as soon as there is a `pre_exec` hook.
//!
//! The rules the child lives by, because it runs on the parent's memory while the parent's
//! other threads keep running:
//! - it allocates nothing, takes no lock, and touches only its [`Plan`] and its own stack
//!   (a separate mapping with a guard page);
//! - it makes system calls directly where glibc's wrapper would do more: `setuid`, `setgid`
//!   and `setgroups` go through `syscall(2)`, because glibc's wrappers would signal every
//!   thread of the *parent* to change their credentials too;
//! - every signal is blocked from before the clone until the child has reset each handled
//!   signal to its default, so no handler of the parent's runs in the child;
//! - it reports a failure through its [`Plan`] (shared memory, read by the parent once
//!   the clone returns) and ends with `_exit`.

mod clone3;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use nix::libc;
use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};
use nix::unistd::Pid;

/// The child's stack. It needs little: one frame of [`child`] and the libc calls it makes.
const STACK: usize = 64 * 1024;
/// Below the stack, never mapped readable or writable: an overflow faults instead of
/// writing over the parent's memory.
const GUARD: usize = 4096;

/// Who the worker runs as.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// Its user, if one is set (a group alone keeps the supervisor's user).
    pub uid: Option<libc::uid_t>,
    /// Its group.
    pub gid: libc::gid_t,
    /// Its supplementary groups.
    pub groups: Vec<libc::gid_t>,
}

/// Everything the child does between clone and exec, resolved before the clone.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Where the program may be, tried in turn as execvp tries `PATH`: paths absolute or
    /// relative to `cwd`.
    paths: Vec<CString>,
    /// `argv`, NULL-terminated; the strings are owned by `_strings`.
    argv: Vec<*const libc::c_char>,
    /// `envp`, NULL-terminated; the strings are owned by `_strings` and `listen_pid`.
    envp: Vec<*const libc::c_char>,
    /// Keeps the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
    /// `LISTEN_PID=` and room for the digits and a NUL, filled in by the child, which alone
    /// knows its pid. Empty when the worker gets no sockets.
    listen_pid: Vec<u8>,
    /// Where the digits go in `listen_pid`.
    pid_at: usize,
    /// Descriptors to place at 0, 1 and 2.
    pub stdio: [RawFd; 3],
    /// Descriptors to place at 3, 4, ...
    pub fds: Vec<RawFd>,
    /// The working directory.
    pub cwd: CString,
    /// The umask, if the pool sets one.
    pub umask: Option<libc::mode_t>,
    /// Resource limits, soft and hard alike.
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
    /// A change of identity.
    pub identity: Option<Identity>,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// The worker's cgroup, its directory open (`ctx.cgroup` in spawn.rs, which outlives the
    /// clone): the child is cloned into it (see [`clone3`]).
    pub cgroup: Option<RawFd>,
    /// Where the child cannot be cloned into its cgroup: the cgroup's `cgroup.procs`, open
    /// for writing, for the child to move itself in.
    move_into: Option<RawFd>,
    /// The supervisor's pid: a child whose parent is no longer it exits at once.
    pub parent: libc::pid_t,
    /// The step that failed, as a [`Step`], or 0.
    failed: AtomicU8,
    /// Its errno.
    errno: AtomicI32,
}

// SAFETY: the raw pointers in `argv` and `envp` point into `strings` and `listen_pid`, which
// the same `Plan` owns and never changes after construction except for the digits the child
// writes into `listen_pid` (which moves no buffer).
unsafe impl Send for Plan {}

/// The steps of the child, named in the parent's error when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    None = 0,
    Cgroup,
    ProcessGroup,
    Umask,
    Rlimit,
    Groups,
    Group,
    User,
    DeathSignal,
    NoNewPrivs,
    Descriptors,
    Directory,
    Exec,
    ParentGone,
}

impl Step {
    const ALL: [Step; 14] = [
        Step::None,
        Step::Cgroup,
        Step::ProcessGroup,
        Step::Umask,
        Step::Rlimit,
        Step::Groups,
        Step::Group,
        Step::User,
        Step::DeathSignal,
        Step::NoNewPrivs,
        Step::Descriptors,
        Step::Directory,
        Step::Exec,
        Step::ParentGone,
    ];

    fn what(self) -> &'static str {
        match self {
            Step::None => "starting the worker",
            Step::Cgroup => "moving the worker into its cgroup",
            Step::ProcessGroup => "setting the worker's process group",
            Step::Umask => "setting the worker's umask",
            Step::Rlimit => "setting the worker's resource limits",
            Step::Groups => "setting the worker's supplementary groups",
            Step::Group => "setting the worker's group",
            Step::User => "setting the worker's user",
            Step::DeathSignal => "setting the worker's parent-death signal",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::Descriptors => "placing the worker's descriptors",
            Step::Directory => "entering the working directory",
            Step::Exec => "exec",
            Step::ParentGone => "the supervisor went away while starting the worker",
        }
    }
}

impl Plan {
    /// A plan to run the first of `paths` that the worker may exec, with `argv` and `envp` (each a list of strings), from `cwd`, with
    /// `stdio` at 0, 1 and 2 and nothing else open. `listen_pid`: whether the environment
    /// gets `LISTEN_PID` with the child's own pid.
    pub fn new(
        paths: Vec<CString>,
        argv: Vec<CString>,
        envp: Vec<CString>,
        listen_pid: Option<&str>,
        cwd: CString,
        stdio: [RawFd; 3],
    ) -> Plan {
        let argc = argv.len();
        let mut strings = argv;
        strings.extend(envp);
        let ptrs = |s: &[CString]| s.iter().map(|s| s.as_ptr()).collect::<Vec<_>>();
        let mut argv = ptrs(&strings[..argc]);
        argv.push(std::ptr::null());
        let mut envp = ptrs(&strings[argc..]);
        let (mut buffer, mut pid_at) = (Vec::new(), 0);
        if let Some(name) = listen_pid {
            buffer = format!("{name}=").into_bytes();
            pid_at = buffer.len();
            // Digits of any pid, and the NUL.
            buffer.resize(pid_at + 21, 0);
            envp.push(buffer.as_ptr().cast());
        }
        envp.push(std::ptr::null());
        Plan {
            paths,
            argv,
            envp,
            _strings: strings,
            listen_pid: buffer,
            pid_at,
            stdio,
            fds: Vec::new(),
            cwd,
            umask: None,
            rlimits: Vec::new(),
            identity: None,
            no_new_privs: false,
            cgroup: None,
            move_into: None,
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            failed: AtomicU8::new(0),
            errno: AtomicI32::new(0),
        }
    }
}

/// The child's stack: a private anonymous mapping with a guard page below it.
struct Stack {
    base: NonNull<libc::c_void>,
}

impl Stack {
    fn new() -> std::io::Result<Stack> {
        let len = std::num::NonZeroUsize::new(GUARD + STACK).expect("a nonzero length");
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_STACK,
            )
        }?;
        // SAFETY: the guard page is the first page of the mapping just made, which nothing
        // uses yet.
        if let Err(e) = unsafe { mprotect(base, GUARD, ProtFlags::PROT_NONE) } {
            // SAFETY: as in Drop.
            let _ = unsafe { munmap(base, GUARD + STACK) };
            return Err(e.into());
        }
        Ok(Stack { base })
    }

    /// The lowest address of the stack proper, above the guard page (page-aligned).
    fn bottom(&self) -> *mut libc::c_void {
        // SAFETY: the guard page is inside the mapping.
        unsafe { self.base.as_ptr().cast::<u8>().add(GUARD).cast() }
    }

    /// The highest address of the stack (it grows down), 16-byte aligned as the ABI asks.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: the offset is the mapping's length: one past its end, in bounds for `add`.
        unsafe { self.base.as_ptr().cast::<u8>().add(GUARD + STACK).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: `base` is the mapping Stack::new made, of this length; the child that used
        // it has exec'd or exited (CLONE_VFORK returns only then).
        let _ = unsafe { munmap(self.base, GUARD + STACK) };
    }
}

/// Runs `plan`: returns the new process's pid once it has exec'd, or the error of the step
/// that failed (the failed child already reaped).
pub(crate) fn spawn(plan: &mut Plan) -> std::io::Result<Pid> {
    spawn_by(plan, Cloning::IntoCgroup)
}

/// How [`spawn`] clones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cloning {
    /// With a cgroup, clone3 straight into it where the kernel can.
    IntoCgroup,
    /// clone(2), the child moving itself into its cgroup: the fallback, chosen by tests.
    #[cfg_attr(not(test), allow(dead_code))]
    ThenMove,
}

thread_local! {
    /// The child stack this thread clones with, made on its first spawn and kept: a fresh
    /// mapping per spawn cost an mmap, an mprotect and an munmap each time, and the munmap
    /// of a multi-threaded process interrupts its other CPUs to flush their TLBs.
    static SPARE: std::cell::RefCell<Option<Stack>> = const { std::cell::RefCell::new(None) };
}

/// The thread's stack while a spawn uses it; put back in [`SPARE`] on drop.
struct Kept(Option<Stack>);

impl std::ops::Deref for Kept {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        self.0.as_ref().expect("a stack until dropped")
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        // While the thread is exiting its slot may be gone: the stack is then unmapped.
        let _ = SPARE.try_with(|slot| *slot.borrow_mut() = self.0.take());
    }
}

fn spawn_by(plan: &mut Plan, how: Cloning) -> std::io::Result<Pid> {
    let stack = match SPARE.with(|s| s.borrow_mut().take()) {
        Some(stack) => stack,
        None => Stack::new()?,
    };
    // Given back to the thread when this returns, by which time no child runs on it.
    let stack = Kept(Some(stack));
    plan.failed.store(0, Ordering::Relaxed);
    plan.errno.store(0, Ordering::Relaxed);
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask reads `all` and writes `old`,
    // both valid sigset_t storage. Blocking every signal in this thread is undone below.
    unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
    }
    let arg: *mut libc::c_void = (plan as *mut Plan).cast();
    // Kept open until the child has exec'd, when it moves itself into its cgroup.
    let mut procs: Option<OwnedFd> = None;
    // SAFETY (both clones): `child` follows the rules in this module's docs: it runs on
    // `stack`, a mapping of its own, touches only `plan` (which outlives the call:
    // CLONE_VFORK returns only once the child has exec'd or exited, and nothing else uses
    // `plan` meanwhile since we hold it mutably), allocates nothing and ends in execve or
    // _exit. Without CLONE_FILES, CLONE_FS and CLONE_SIGHAND, its descriptors, directory,
    // umask and signal dispositions are its own copies.
    let born = match plan.cgroup {
        Some(dir) if how == Cloning::IntoCgroup => {
            // SAFETY: see above; the stack's bottom and size are its mapping's, page-aligned.
            unsafe { clone3::clone3(child, arg, stack.bottom(), STACK, dir) }
        }
        _ => None,
    };
    let pid = match born {
        Some(Ok(pid)) => pid,
        Some(Err(e)) => {
            // SAFETY: restores the mask saved above, from valid storage.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
            return Err(std::io::Error::new(
                e.kind(),
                format!("cloning the worker into its cgroup: {e}"),
            ));
        }
        None => {
            if let Some(dir) = plan.cgroup {
                // SAFETY: openat reads a NUL-terminated name; the result is checked.
                let fd = unsafe { libc::openat(dir, c"cgroup.procs".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
                if fd >= 0 {
                    // SAFETY: openat just returned `fd`, owned by nothing else.
                    procs = Some(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                // A failure to open shows as the child's failure to move itself.
                plan.move_into = Some(procs.as_ref().map_or(-1, |fd| fd.as_raw_fd()));
            }
            // SAFETY: as above.
            unsafe {
                libc::clone(
                    child,
                    stack.top(),
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    arg,
                )
            }
        }
    };
    let clone_error = std::io::Error::last_os_error();
    // SAFETY: restores the mask saved above, from valid storage.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
    drop((stack, procs));
    if pid < 0 {
        return Err(clone_error);
    }
    let pid = Pid::from_raw(pid);
    let step = plan.failed.load(Ordering::Relaxed);
    if step == 0 {
        return Ok(pid);
    }
    // The child has exited (it is a zombie, or will be in a moment): reap it here, so the
    // event loop never mistakes it for a worker that ran.
    let _ = nix::sys::wait::waitpid(pid, None);
    let step = Step::ALL.get(step as usize).copied().unwrap_or(Step::None);
    let os = std::io::Error::from_raw_os_error(plan.errno.load(Ordering::Relaxed));
    Err(match step {
        // As execve(2) or std say it: "No such file or directory (os error 2)".
        Step::Exec => os,
        step => std::io::Error::new(os.kind(), format!("{}: {os}", step.what())),
    })
}

/// The errno of the last failed call, as the child sees it (it shares the parent's thread
/// pointer, so this is the parent thread's errno slot, which is asleep meanwhile).
fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's valid errno slot.
    unsafe { *libc::__errno_location() }
}

/// Records that `step` failed with the current errno.
fn fail(plan: &Plan, step: Step) -> ! {
    plan.errno.store(errno(), Ordering::Relaxed);
    plan.failed.store(step as u8, Ordering::Relaxed);
    // SAFETY: _exit ends this process at once, running nothing of the parent's.
    unsafe { libc::_exit(127) }
}

/// The child, between clone and exec.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a `*mut Plan` that stays valid and unaliased until we exec or
    // exit (its thread is suspended by CLONE_VFORK).
    let plan = unsafe { &mut *arg.cast::<Plan>() };
    // SAFETY: each call below is a system call (or glibc's thin wrapper of one) on values
    // resolved before the clone; none allocates or locks. The `ok` closure only reads the
    // return value.
    unsafe {
        let ok = |r: libc::c_int| r >= 0;
        // No handler of the parent's may run here: every handled signal goes back to its
        // default (SIGPIPE too, which the Rust runtime ignores), while all are still blocked.
        for signal in 1..libc::SIGRTMAX() + 1 {
            let mut action = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
            if libc::sigaction(signal, std::ptr::null(), action.as_mut_ptr()) != 0 {
                continue;
            }
            let handler = (*action.as_ptr()).sa_sigaction;
            if handler != libc::SIG_DFL && (handler != libc::SIG_IGN || signal == libc::SIGPIPE) {
                let mut default = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
                (*default.as_mut_ptr()).sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, default.as_ptr(), std::ptr::null_mut());
            }
        }
        // Into its cgroup before anything else, and while still the supervisor's user
        // (moving needs write access to the cgroup's files). "0" moves the writer.
        if let Some(fd) = plan.move_into {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(plan, Step::Cgroup);
            }
        }
        // Its own process group, so that signals and SIGKILL reach its whole tree.
        if !ok(libc::setpgid(0, 0)) {
            fail(plan, Step::ProcessGroup);
        }
        if let Some(mask) = plan.umask {
            libc::umask(mask);
        }
        // Limits first, while still privileged enough to raise them.
        for &(resource, value) in &plan.rlimits {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if !ok(libc::setrlimit(resource, &limit)) {
                fail(plan, Step::Rlimit);
            }
        }
        // Then the identity: groups, group, user, in that order (each needs the privilege
        // the next one gives up). Raw system calls: see the module's docs.
        if let Some(id) = &plan.identity {
            if libc::syscall(libc::SYS_setgroups, id.groups.len(), id.groups.as_ptr()) < 0 {
                fail(plan, Step::Groups);
            }
            if libc::syscall(libc::SYS_setgid, id.gid) < 0 {
                fail(plan, Step::Group);
            }
            if let Some(uid) = id.uid {
                if libc::syscall(libc::SYS_setuid, uid) < 0 {
                    fail(plan, Step::User);
                }
            }
        }
        // No worker outlives a killed supervisor. It fires when the cloning thread exits,
        // which is why the supervisor spawns from its one long-lived thread; and a change
        // of identity clears it, which is why it comes after.
        if !ok(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )) {
            fail(plan, Step::DeathSignal);
        }
        // Nothing the worker execs gains privileges (setuid bits, file capabilities).
        if plan.no_new_privs && !ok(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0)) {
            fail(plan, Step::NoNewPrivs);
        }
        if libc::getppid() != plan.parent {
            // The supervisor died before the death signal was armed.
            fail(plan, Step::ParentGone);
        }
        if !place_descriptors(plan) {
            fail(plan, Step::Descriptors);
        }
        if !ok(libc::chdir(plan.cwd.as_ptr())) {
            fail(plan, Step::Directory);
        }
        if !plan.listen_pid.is_empty() {
            write_pid(&mut plan.listen_pid, plan.pid_at, libc::getpid() as u32);
        }
        // Whatever mask the supervising thread had, workers start with none.
        let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(none.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
        // As execvp: a path that is missing or may not be entered is skipped, and EACCES
        // is reported if nothing else worked but something was refused.
        let mut refused = false;
        for path in &plan.paths {
            libc::execve(path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
            match errno() {
                libc::EACCES => refused = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => break,
            }
        }
        if refused {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(plan, Step::Exec)
    }
}

/// Puts `stdio` at 0, 1, 2 and `fds` at 3.., without close-on-exec, and marks everything
/// above close-on-exec. In the child only.
///
/// # Safety
///
/// Only in the cloned child: it rearranges the descriptor table.
unsafe fn place_descriptors(plan: &mut Plan) -> bool {
    let n = 3 + plan.fds.len() as RawFd;
    // Out of the way first, so that placing one cannot overwrite another's source.
    for fd in plan.stdio.iter_mut().chain(plan.fds.iter_mut()) {
        // SAFETY: fcntl on a descriptor number; a closed one fails with EBADF.
        let high = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, n) };
        if high < 0 {
            return false;
        }
        *fd = high;
    }
    for (target, fd) in plan.stdio.iter().chain(plan.fds.iter()).enumerate() {
        // dup2 leaves the new descriptor without close-on-exec: exactly these cross.
        // SAFETY: as above.
        if unsafe { libc::dup2(*fd, target as RawFd) } < 0 {
            return false;
        }
    }
    // Everything else, also descriptors the supervisor itself inherited, closes at exec.
    // Kernels before 5.11 lack close_range; there only close-on-exec discipline applies.
    // SAFETY: close_range only marks descriptors from `n` on close-on-exec.
    let _ = unsafe { libc::syscall(libc::SYS_close_range, n as u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    true
}

/// Writes `pid` in decimal and a NUL into `buffer` from `at`. No allocation, no panic: the
/// buffer has room for any u32 and a NUL (see [`Plan::new`]).
fn write_pid(buffer: &mut [u8], at: usize, mut pid: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    while let Some(slot) = digits.get_mut(len) {
        *slot = b'0' + (pid % 10) as u8;
        len += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let Some(out) = buffer.get_mut(at..) else { return };
    for (slot, digit) in out.iter_mut().zip(digits[..len].iter().rev()) {
        *slot = *digit;
    }
    if let Some(nul) = out.get_mut(len) {
        *nul = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_written_in_decimal_and_ends_in_a_nul() {
        let mut buffer = b"LISTEN_PID=xxxxxxxxxxxxxxxxxxxxx".to_vec();
        write_pid(&mut buffer, 11, 4_194_304);
        assert_eq!(&buffer[..19], b"LISTEN_PID=4194304\0");
        write_pid(&mut buffer, 11, 7);
        assert_eq!(&buffer[..13], b"LISTEN_PID=7\0");
    }

    fn plan(program: &str, cwd: &str, null: &std::fs::File) -> Plan {
        use std::os::fd::AsRawFd;
        let fd = null.as_raw_fd();
        Plan::new(
            vec![CString::new(program).unwrap()],
            vec![CString::new("program").unwrap()],
            Vec::new(),
            None,
            CString::new(cwd).unwrap(),
            [fd, fd, fd],
        )
    }

    #[test]
    fn a_missing_program_is_the_exec_error_as_the_os_says_it() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let error = spawn(&mut plan("/nonexistent/program", "/", &null)).expect_err("nothing to exec");
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{error}");
    }

    /// Both ways into a cgroup put the child there before it execs: it reads its own
    /// cgroup from /proc and writes it to its stdout, a file.
    #[test]
    fn the_child_runs_in_its_cgroup_whether_cloned_into_it_or_moved() {
        let own = match crate::run::cgroup::own() {
            Ok(own) if crate::run::cgroup::is_cgroup2(&own) => own,
            other => {
                println!("skipped: no cgroup v2 here ({other:?})");
                return;
            }
        };
        for how in [Cloning::IntoCgroup, Cloning::ThenMove] {
            let dir = own.join(format!("procwire-vfork-test-{}-{how:?}", std::process::id()));
            if let Err(e) = std::fs::create_dir(&dir) {
                println!("skipped: cannot make a cgroup in {}: {e}", own.display());
                return;
            }
            let out = tempfile::NamedTempFile::new().unwrap();
            let null = std::fs::File::open("/dev/null").unwrap();
            let cgroup = std::fs::File::open(&dir).unwrap();
            use std::os::fd::AsRawFd;
            let mut plan = Plan::new(
                vec![CString::new("/bin/cat").unwrap()],
                vec![CString::new("cat").unwrap(), CString::new("/proc/self/cgroup").unwrap()],
                Vec::new(),
                None,
                CString::new("/").unwrap(),
                [null.as_raw_fd(), out.as_file().as_raw_fd(), null.as_raw_fd()],
            );
            plan.cgroup = Some(cgroup.as_raw_fd());
            let pid = spawn_by(&mut plan, how).expect("spawned");
            let status = nix::sys::wait::waitpid(pid, None).unwrap();
            let text = std::fs::read_to_string(out.path()).unwrap();
            let _ = std::fs::remove_dir(&dir);
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0), "{how:?}");
            let name = dir.file_name().unwrap().to_str().unwrap();
            assert!(
                text.lines().any(|l| l.starts_with("0::") && l.ends_with(name)),
                "{how:?}: {text}"
            );
        }
    }

    #[test]
    fn a_failed_step_is_named_in_the_error() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let mut plan = plan("/bin/true", "/nonexistent/directory", &null);
        let error = spawn(&mut plan).expect_err("no such directory");
        assert!(
            error.to_string().starts_with("entering the working directory: "),
            "{error}"
        );
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    }
}

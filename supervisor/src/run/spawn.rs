//! Starting one worker process: argv, environment, working directory, descriptors, process
//! group, parent-death signal, resource limits, user and groups, `no_new_privs`, umask, and
//! the listening sockets of its pool by the socket-activation protocol.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::resource::setrlimit;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{pipe2, Pid};
use procwire_rpc::shm;
use procwire_workers::activation::{self, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID};
use procwire_workers::notify::{self, NOTIFY_SOCKET, WATCHDOG_PID, WATCHDOG_USEC};

use crate::manifest::{rlimit_resource, Output, Pool};

/// A started worker process.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group id.
    pub pid: Pid,
    /// The read ends of its stdout and stderr pipes, where they go through the supervisor.
    pub stdout: Option<OwnedFd>,
    /// See `stdout`.
    pub stderr: Option<OwnedFd>,
}

/// What a worker is told about its supervisor.
#[derive(Debug)]
pub struct Context<'a> {
    /// The supervisor's name.
    pub supervisor: &'a str,
    /// The notify socket's path.
    pub notify_socket: &'a Path,
    /// The manifest's directory: relative paths resolve against it.
    pub base: &'a Path,
    /// The pool's listening sockets, handed over from fd 3 on, with their names.
    pub listen: &'a [(BorrowedFd<'a>, String)],
    /// The pool's shared memory regions, handed over after the sockets, with their names
    /// (`PROCWIRE_SHARED_<NAME>` says which descriptor is which).
    pub shared: &'a [(BorrowedFd<'a>, String)],
    /// The pool's message queues, handed over after the regions, with their names
    /// (`PROCWIRE_QUEUE_<NAME>` says which descriptor is which).
    pub queues: &'a [(BorrowedFd<'a>, String)],
}

/// One stream's destination in the child, and the supervisor's end if it reads it.
fn stream(output: &Output) -> std::io::Result<(Stdio, Option<OwnedFd>)> {
    match output {
        Output::Discard => Ok((Stdio::null(), None)),
        Output::Inherit | Output::File(_) => {
            let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
            Ok((Stdio::from(write), Some(read)))
        }
    }
}

/// Replaces `{index}` in `text`.
pub fn expand(text: &str, index: u32) -> String {
    text.replace("{index}", &index.to_string())
}

/// The worker's whole environment: the supervisor's, minus what must not leak, plus the
/// pool's and procwire's variables.
fn environment(pool: &Pool, index: u32, ctx: &Context<'_>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            // Descriptors a supervisor of ours handed us, and its watchdog, are not theirs.
            !k.to_str().is_some_and(|k| {
                [LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, WATCHDOG_USEC, WATCHDOG_PID].contains(&k)
                    || k.starts_with(shm::ENV_PREFIX)
                    || k.starts_with(procwire_rpc::transport::mq::ENV_PREFIX)
            })
        })
        .collect();
    let mut set = |key: &str, value: OsString| {
        env.retain(|(k, _)| k.as_bytes() != key.as_bytes());
        env.push((key.into(), value));
    };
    for (key, value) in &pool.env {
        set(key, expand(value, index).into());
    }
    set(NOTIFY_SOCKET, ctx.notify_socket.as_os_str().to_owned());
    set("PROCWIRE_SUPERVISOR", ctx.supervisor.into());
    set("PROCWIRE_POOL", pool.name.clone().into());
    set("PROCWIRE_INDEX", index.to_string().into());
    if let Some(role) = &pool.role {
        set(crate::ROLE_ENV, role.clone().into());
    }
    if let Some(period) = pool.watchdog {
        set(WATCHDOG_USEC, notify::encode_watchdog_usec(period).into());
    }
    if !ctx.listen.is_empty() {
        set(LISTEN_FDS, ctx.listen.len().to_string().into());
        set(
            LISTEN_FDNAMES,
            activation::encode_fdnames(ctx.listen.iter().map(|(_, n)| n.as_str())).into(),
        );
    }
    // The regions sit right after the sockets (see Exec).
    for (i, (_, name)) in ctx.shared.iter().enumerate() {
        set(
            &format!("{}{name}", shm::ENV_PREFIX),
            (3 + ctx.listen.len() + i).to_string().into(),
        );
    }
    // The queues after the regions.
    for (i, (_, name)) in ctx.queues.iter().enumerate() {
        set(
            &format!("{}{name}", procwire_rpc::transport::mq::ENV_PREFIX),
            (3 + ctx.listen.len() + ctx.shared.len() + i).to_string().into(),
        );
    }
    env
}

/// Finds `program` as `execvp` would, in `PATH` from `env`.
fn resolve_program(program: &str, env: &[(OsString, OsString)]) -> std::io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{program}: not found in PATH"),
    ))
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::other("a NUL byte in an argument or environment variable"))
}

/// Everything `execve` needs, built before the fork so that the child allocates nothing.
struct Exec {
    path: CString,
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    env: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` followed by room for the digits and a NUL, filled in by the child.
    listen_pid: Vec<u8>,
    /// Where the digits go in `listen_pid`.
    pid_at: usize,
    /// Descriptors to place at 3, 4, ...
    fds: Vec<RawFd>,
}

// SAFETY: the raw pointers point into buffers owned by the same `Exec`, which moves into the
// pre_exec closure whole; they are only read, and only in the forked child, which has one
// thread.
unsafe impl Send for Exec {}
// SAFETY: as above; a shared `Exec` is never read concurrently (only the child reads it).
unsafe impl Sync for Exec {}

impl Exec {
    /// `sockets`: whether `fds` starts with listening sockets, so that the environment gets
    /// `LISTEN_PID`.
    fn new(
        program: &str,
        argv: &[String],
        env: &[(OsString, OsString)],
        fds: Vec<RawFd>,
        sockets: bool,
    ) -> std::io::Result<Exec> {
        let path = cstring(resolve_program(program, env)?.as_os_str().as_bytes())?;
        let owned_argv = argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let owned_env = env
            .iter()
            .map(|(k, v)| {
                let mut entry = k.clone().into_vec();
                entry.push(b'=');
                entry.extend_from_slice(v.as_bytes());
                cstring(&entry)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut listen_pid = format!("{LISTEN_PID}=").into_bytes();
        let pid_at = listen_pid.len();
        listen_pid.resize(pid_at + 21, 0);
        let mut argv_ptrs: Vec<*const libc::c_char> = owned_argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const libc::c_char> = owned_env.iter().map(|e| e.as_ptr()).collect();
        if sockets {
            env_ptrs.push(listen_pid.as_ptr().cast());
        }
        env_ptrs.push(std::ptr::null());
        Ok(Exec {
            path,
            _argv: owned_argv,
            argv: argv_ptrs,
            _env: owned_env,
            env: env_ptrs,
            listen_pid,
            pid_at,
            fds,
        })
    }

    /// In the forked child: move the descriptors to 3.., write our pid into `LISTEN_PID`,
    /// and exec. Returns only on failure.
    ///
    /// # Safety
    ///
    /// Call only in a forked child before exec: it overwrites descriptors from 3 on.
    unsafe fn exec_in_child(&mut self) -> std::io::Error {
        let n = self.fds.len() as RawFd;
        // Out of the way first, so that placing one cannot overwrite another's source.
        for fd in self.fds.iter_mut() {
            match nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3 + n)) {
                Ok(high) => *fd = high,
                Err(e) => return e.into(),
            }
        }
        for (i, fd) in self.fds.iter().enumerate() {
            // dup2 leaves the new descriptor without close-on-exec: exactly these cross.
            if let Err(e) = nix::unistd::dup2(*fd, 3 + i as RawFd) {
                return e.into();
            }
        }
        // SAFETY: close_range only marks descriptors from 3 + n on close-on-exec.
        let _ = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                (3 + n) as u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        // getpid and decimal digits by hand: no allocation between fork and exec.
        let mut pid = nix::unistd::getpid().as_raw() as u32;
        let mut digits = [0u8; 10];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (pid % 10) as u8;
            len += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        for i in 0..len {
            self.listen_pid[self.pid_at + i] = digits[len - 1 - i];
        }
        self.listen_pid[self.pid_at + len] = 0;
        // SAFETY: `path`, `argv` and `env` are NUL-terminated strings in NULL-terminated
        // arrays that live in `self` (and `listen_pid`, which `env` points into, was sized
        // for any pid and a NUL); execve only reads them.
        unsafe { libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.env.as_ptr()) };
        std::io::Error::last_os_error()
    }
}

/// Starts worker `index` of `pool`.
pub fn spawn(pool: &Pool, index: u32, ctx: &Context<'_>) -> std::io::Result<Spawned> {
    let argv: Vec<String> = match &pool.role {
        // The supervising program's own executable, in that role.
        Some(_) => vec![std::env::current_exe()?.to_string_lossy().into_owned()],
        None => pool.command.iter().map(|a| expand(a, index)).collect(),
    };
    let Some((program, args)) = argv.split_first() else {
        // Manifest::validate refuses it; a manifest that skipped validation gets this.
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the pool's command is empty: nothing to run",
        ));
    };
    let env = environment(pool, index, ctx);
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    let cwd = match &pool.cwd {
        Some(cwd) => cwd.clone(),
        None => ctx.base.to_path_buf(),
    };
    if !cwd.is_dir() {
        // Otherwise the chdir failure reads as if the program were missing.
        return Err(std::io::Error::other(format!(
            "working directory {} does not exist",
            cwd.display()
        )));
    }
    cmd.current_dir(&cwd);
    // Who the worker runs as, worked out before the fork: (uid, gid, supplementary groups).
    let identity = match (&pool.user, &pool.group) {
        (None, None) => None,
        (user, group) => {
            let group_gid = |name: &String| -> std::io::Result<nix::unistd::Gid> {
                Ok(nix::unistd::Group::from_name(name)?
                    .ok_or_else(|| std::io::Error::other(format!("no group named {name:?}")))?
                    .gid)
            };
            match user {
                Some(user) => {
                    let found = nix::unistd::User::from_name(user)?
                        .ok_or_else(|| std::io::Error::other(format!("no user named {user:?}")))?;
                    let gid = match group {
                        Some(g) => group_gid(g)?,
                        None => found.gid,
                    };
                    let name = CString::new(user.as_bytes()).map_err(|_| std::io::Error::other("a NUL in `user`"))?;
                    let groups = nix::unistd::getgrouplist(&name, gid)?;
                    Some((Some(found.uid), gid, groups))
                }
                None => {
                    let gid = group_gid(group.as_ref().expect("a group"))?;
                    Some((None, gid, vec![gid]))
                }
            }
        }
    };
    let (stdout, out_read) = stream(&pool.stdout)?;
    let (stderr, err_read) = stream(&pool.stderr)?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let mut limits = Vec::new();
    for (name, value) in &pool.rlimits {
        let resource =
            rlimit_resource(name).ok_or_else(|| std::io::Error::other(format!("unknown rlimit {name:?}")))?;
        limits.push((resource, *value));
    }
    // With sockets to hand over, the child execs by itself: LISTEN_PID must be its own pid,
    // which only the child knows, so the environment is finished there (see Exec). Shared
    // regions are placed the same way, after the sockets.
    let mut exec = if ctx.listen.is_empty() && ctx.shared.is_empty() && ctx.queues.is_empty() {
        None
    } else {
        let fds = ctx
            .listen
            .iter()
            .chain(ctx.shared)
            .chain(ctx.queues)
            .map(|(fd, _)| fd.as_raw_fd())
            .collect();
        // Relative program paths are looked up from the worker's directory, as std does.
        Some(Exec::new(program, &argv, &env, fds, !ctx.listen.is_empty())?)
    };
    let supervisor = nix::unistd::getpid();
    let (no_new_privs, umask) = (
        pool.no_new_privs,
        pool.umask.map(nix::sys::stat::Mode::from_bits_truncate),
    );
    // SAFETY: the closure runs in the forked child before exec. It calls only setpgid, umask,
    // setrlimit, setgroups, setgid, setuid, prctl (PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS),
    // getppid, close_range, sigprocmask, fcntl, dup2, getpid, execve and _exit, which are
    // async-signal-safe system calls; it allocates nothing (`limits`, `identity`, `umask`
    // and `exec` were built before the fork) and takes no locks. close_range only sets
    // close-on-exec on descriptors >= 3.
    unsafe {
        cmd.pre_exec(move || {
            // Its own process group, so that signals and SIGKILL reach its whole tree.
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            // The pool's umask, if it sets one; else the supervisor's is inherited.
            if let Some(mask) = umask {
                nix::sys::stat::umask(mask);
            }
            // Limits first, while still privileged enough to raise them.
            for (resource, value) in &limits {
                setrlimit(*resource, *value, *value)?;
            }
            // Then the identity: groups, group, user, in that order (each needs the
            // privilege the next one gives up).
            if let Some((uid, gid, groups)) = &identity {
                nix::unistd::setgroups(groups)?;
                nix::unistd::setgid(*gid)?;
                if let Some(uid) = uid {
                    nix::unistd::setuid(*uid)?;
                }
            }
            // No worker outlives a killed supervisor. It fires when the forking thread
            // exits, which is why the supervisor forks from its one long-lived thread; and
            // a change of identity clears it, which is why it comes after.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // Nothing the worker execs gains privileges (setuid bits, file capabilities).
            // It only restricts what execve grants, not setuid calls made by root, so it
            // may come after the change of identity as well as before.
            if no_new_privs {
                nix::sys::prctl::set_no_new_privs()?;
            }
            if nix::unistd::getppid() != supervisor {
                // The supervisor died between fork and prctl.
                libc::_exit(1);
            }
            // Whatever mask the supervising thread inherited from its program, workers start
            // with none.
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            match exec.as_mut() {
                // SAFETY: we are the forked child, before exec.
                Some(exec) => Err(exec.exec_in_child()),
                None => {
                    // Only stdin, stdout and stderr cross exec: whatever else is open here,
                    // also descriptors the supervisor itself inherited, is marked
                    // close-on-exec. (Closing them now would also close the pipe std uses to
                    // report a failed exec.) Kernels before 5.11 lack close_range; there only
                    // close-on-exec discipline applies.
                    let _ = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
                    Ok(())
                }
            }
        });
    }
    let child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    // The Child handle is not needed: the supervisor reaps with waitpid(-1).
    drop(child);
    for fd in [&out_read, &err_read].into_iter().flatten() {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
    }
    Ok(Spawned {
        pid,
        stdout: out_read,
        stderr: err_read,
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::time::Duration;

    use super::*;

    /// The variables the supervisor sets are the ones the worker runtime reads, encoded as
    /// it decodes them: both sides use procwire-workers' names and encodings.
    #[test]
    fn a_workers_environment_decodes_with_the_worker_runtimes_own_decoders() {
        let mut pool = Pool::new("calc", vec!["calc".into()]);
        pool.watchdog = Some(Duration::from_millis(1500));
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let listen = [(a.as_fd(), "calc".to_owned()), (b.as_fd(), "admin".to_owned())];
        let ctx = Context {
            supervisor: "test",
            notify_socket: Path::new("/run/notify.sock"),
            base: Path::new("/"),
            listen: &listen,
            shared: &[],
            queues: &[],
        };
        let env = environment(&pool, 0, &ctx);
        let get = |key: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k.as_bytes() == key.as_bytes())
                .map(|(_, v)| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| panic!("{key} is set"))
        };
        assert_eq!(get(NOTIFY_SOCKET), "/run/notify.sock");
        assert_eq!(
            notify::decode_watchdog_usec(&get(WATCHDOG_USEC)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(get(LISTEN_FDS), "2");
        assert_eq!(
            activation::decode_fdnames(&get(LISTEN_FDNAMES)),
            [Some("calc".to_owned()), Some("admin".to_owned())]
        );
    }

    #[test]
    fn shared_regions_and_queues_are_named_by_the_descriptors_after_the_sockets() {
        let pool = Pool::new("calc", vec!["calc".into()]);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let listen = [(a.as_fd(), "calc".to_owned())];
        let shared = [(b.as_fd(), "counters".to_owned()), (b.as_fd(), "big-1".to_owned())];
        let ctx = Context {
            supervisor: "test",
            notify_socket: Path::new("/run/notify.sock"),
            base: Path::new("/"),
            listen: &listen,
            shared: &shared,
            queues: &[(b.as_fd(), "jobs".to_owned())],
        };
        let env = environment(&pool, 0, &ctx);
        let handed: Vec<(&str, &str)> = env
            .iter()
            .filter_map(|(k, v)| Some((k.to_str()?, v.to_str()?)))
            .filter(|(k, _)| k.starts_with("PROCWIRE_SHARED_") || k.starts_with("PROCWIRE_QUEUE_"))
            .collect();
        assert_eq!(
            handed,
            [
                ("PROCWIRE_SHARED_counters", "4"),
                ("PROCWIRE_SHARED_big-1", "5"),
                ("PROCWIRE_QUEUE_jobs", "6")
            ]
        );
    }

    #[test]
    fn an_empty_command_is_an_error_naming_it_not_a_panic() {
        let ctx = Context {
            supervisor: "test",
            notify_socket: Path::new("/run/notify.sock"),
            base: Path::new("/"),
            listen: &[],
            shared: &[],
            queues: &[],
        };
        let error = spawn(&Pool::new("empty", Vec::new()), 0, &ctx).expect_err("nothing to run");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("command is empty"), "{error}");
    }
}

//! Starting one worker process: argv, environment, working directory, descriptors, process
//! group, parent-death signal, resource limits, user and group.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{pipe2, Pid};

use crate::manifest::{Output, Pool};

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
}

fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "core" => Resource::RLIMIT_CORE,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "stack" => Resource::RLIMIT_STACK,
        "as" => Resource::RLIMIT_AS,
        "cpu" => Resource::RLIMIT_CPU,
        "fsize" => Resource::RLIMIT_FSIZE,
        _ => return None,
    })
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

/// Starts worker `index` of `pool`.
pub fn spawn(pool: &Pool, index: u32, ctx: &Context<'_>) -> std::io::Result<Spawned> {
    let argv: Vec<String> = pool.command.iter().map(|a| expand(a, index)).collect();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
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
    cmd.current_dir(cwd);
    for (key, value) in &pool.env {
        cmd.env(key, expand(value, index));
    }
    cmd.env("NOTIFY_SOCKET", ctx.notify_socket)
        .env("PROCWIRE_SUPERVISOR", ctx.supervisor)
        .env("PROCWIRE_POOL", &pool.name)
        .env("PROCWIRE_INDEX", index.to_string());
    match pool.watchdog {
        Some(period) => cmd.env("WATCHDOG_USEC", period.as_micros().to_string()),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    // Descriptors a supervisor of ours may have handed us must not leak to workers.
    cmd.env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    if let Some(user) = &pool.user {
        let found = nix::unistd::User::from_name(user)?
            .ok_or_else(|| std::io::Error::other(format!("no user named {user:?}")))?;
        cmd.uid(found.uid.as_raw());
        let gid = match &pool.group {
            Some(group) => {
                nix::unistd::Group::from_name(group)?
                    .ok_or_else(|| std::io::Error::other(format!("no group named {group:?}")))?
                    .gid
            }
            None => found.gid,
        };
        cmd.gid(gid.as_raw());
    } else if let Some(group) = &pool.group {
        let found = nix::unistd::Group::from_name(group)?
            .ok_or_else(|| std::io::Error::other(format!("no group named {group:?}")))?;
        cmd.gid(found.gid.as_raw());
    }
    let (stdout, out_read) = stream(&pool.stdout)?;
    let (stderr, err_read) = stream(&pool.stderr)?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let mut limits = Vec::new();
    for (name, value) in &pool.rlimits {
        let resource =
            rlimit_resource(name).ok_or_else(|| std::io::Error::other(format!("unknown rlimit {name:?}")))?;
        limits.push((resource, *value));
    }
    let supervisor = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec. It calls only setpgid,
    // prctl, getppid, setrlimit, close_range, sigprocmask and _exit, which are
    // async-signal-safe system calls; it allocates nothing (`limits` was built before the
    // fork) and takes no locks. close_range only sets close-on-exec on descriptors >= 3.
    unsafe {
        cmd.pre_exec(move || {
            // Its own process group, so that signals and SIGKILL reach its whole tree.
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            // No worker outlives a killed supervisor. It fires when the forking thread
            // exits, which is why the supervisor forks from its one long-lived thread.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != supervisor {
                // The supervisor died between fork and prctl.
                nix::libc::_exit(1);
            }
            for (resource, value) in &limits {
                setrlimit(*resource, *value, *value)?;
            }
            // Only stdin, stdout and stderr cross exec: whatever else is open here, also
            // descriptors the supervisor itself inherited, is marked close-on-exec. (Closing
            // them now would also close the pipe std uses to report a failed exec.) Kernels
            // before 5.11 lack close_range; there only close-on-exec discipline applies.
            let _ = nix::libc::syscall(
                nix::libc::SYS_close_range,
                3u32,
                u32::MAX,
                nix::libc::CLOSE_RANGE_CLOEXEC,
            );
            // The supervisor blocks the signals it reads from a signalfd; workers start clean.
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            Ok(())
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

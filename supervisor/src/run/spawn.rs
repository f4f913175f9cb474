//! Starting one worker process: argv, environment, working directory, descriptors, process
//! group, parent-death signal, resource limits, user and groups, `no_new_privs`, umask, and
//! the listening sockets of its pool by the socket-activation protocol; worked out here,
//! carried out in the child by `run::vfork`.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::libc;
use nix::unistd::{pipe2, Pid};
use procwire_rpc::shm;
use procwire_workers::activation::{self, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID};
use procwire_workers::notify::{self, NOTIFY_SOCKET, WATCHDOG_PID, WATCHDOG_USEC};

use super::vfork;
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
    /// The worker's own cgroup, its directory open: the child is cloned into it (or moves
    /// itself in first thing after the clone), so everything it starts is inside.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// The pool's message queues, handed over after the regions, with their names
    /// (`PROCWIRE_QUEUE_<NAME>` says which descriptor is which).
    pub queues: &'a [(BorrowedFd<'a>, String)],
    /// The sockets of the topics the pool publishes, handed over after the queues, with
    /// their names (`PROCWIRE_TOPICFD_<NAME>` says which descriptor is which).
    pub topics: &'a [(BorrowedFd<'a>, String)],
    /// The `PROCWIRE_TOPIC_<NAME>` variables of the topics it publishes or subscribes to.
    pub topic_env: &'a [(String, String)],
}

/// One stream's write end for the child (`None`: `/dev/null`), and the supervisor's read
/// end if it reads it.
fn stream(output: &Output) -> std::io::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    match output {
        Output::Discard => Ok((None, None)),
        Output::Inherit | Output::File(_) => {
            let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
            Ok((Some(write), Some(read)))
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
                    || k.starts_with(procwire_rpc::topic::named::ENV_PREFIX)
                    || k.starts_with(procwire_rpc::topic::named::FD_ENV_PREFIX)
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
    // Who its servers may serve on Unix endpoints (procwire-workers reads these).
    for (key, value) in pool.access().to_env() {
        set(key, value.into());
    }
    // The key of its authenticated TCP endpoints, by path: the secret stays in its file.
    if let Some(path) = &pool.key_file {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        set(procwire_rpc::transport::noise::KEY_FILE_ENV, path.into_os_string());
        if !pool.accept_key_files.is_empty() {
            let absolute = pool
                .accept_key_files
                .iter()
                .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()));
            // Validation refused paths a path list cannot hold.
            if let Ok(list) = std::env::join_paths(absolute) {
                set(procwire_rpc::transport::noise::ACCEPT_KEY_FILES_ENV, list);
            }
        }
    }
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
    // The regions sit right after the sockets (see spawn).
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
    // The publisher's topic sockets after the queues.
    for (i, (_, name)) in ctx.topics.iter().enumerate() {
        set(
            &procwire_rpc::topic::named::Handed::fd_env_var(name),
            (3 + ctx.listen.len() + ctx.shared.len() + ctx.queues.len() + i)
                .to_string()
                .into(),
        );
    }
    for (key, value) in ctx.topic_env {
        set(key, value.into());
    }
    env
}

/// Where `program` may be, as `execvp` would look for it in `PATH` from `env`: every
/// executable file of that name, in `PATH`'s order. The child tries them in turn, as the
/// worker's user (one it may not enter is skipped, as execvp skips it).
fn resolve_program(program: &str, env: &[(OsString, OsString)]) -> std::io::Result<Vec<CString>> {
    if program.contains('/') {
        return Ok(vec![cstring(program.as_bytes())?]);
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut found = Vec::new();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                found.push(cstring(candidate.as_os_str().as_bytes())?);
            }
        }
    }
    if found.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{program}: not found in PATH"),
        ));
    }
    Ok(found)
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::other("a NUL byte in an argument or environment variable"))
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
    let identity = identity(pool)?;
    let (stdout, out_read) = stream(&pool.stdout)?;
    let (stderr, err_read) = stream(&pool.stderr)?;
    let null = null()?;
    let mut rlimits = Vec::new();
    for (name, value) in &pool.rlimits {
        let resource =
            rlimit_resource(name).ok_or_else(|| std::io::Error::other(format!("unknown rlimit {name:?}")))?;
        rlimits.push((resource as _, *value as _));
    }
    // Relative program paths are looked up from the worker's directory, as std does.
    let paths = resolve_program(program, &env)?;
    let argv = std::iter::once(program)
        .chain(args.iter())
        .map(|a| cstring(a.as_bytes()))
        .collect::<std::io::Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| {
            let mut entry = k.clone().into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            cstring(&entry)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    // With sockets to hand over, LISTEN_PID must be the worker's own pid, which only the
    // child knows: it finishes the environment (see vfork::Plan).
    let listen_pid = (!ctx.listen.is_empty()).then_some(LISTEN_PID);
    let stdio = [null.as_raw_fd(), raw(&stdout, &null), raw(&stderr, &null)];
    let mut plan = vfork::Plan::new(
        paths,
        argv,
        envp,
        listen_pid,
        cstring(cwd.as_os_str().as_bytes())?,
        stdio,
    );
    // The pool's sockets from 3 on, then its shared regions, then its queues.
    plan.fds = ctx
        .listen
        .iter()
        .chain(ctx.shared)
        .chain(ctx.queues)
        .chain(ctx.topics)
        .map(|(fd, _)| fd.as_raw_fd())
        .collect();
    plan.umask = pool.umask.map(|m| m as libc::mode_t);
    plan.rlimits = rlimits;
    plan.identity = identity;
    plan.no_new_privs = pool.no_new_privs;
    plan.cgroup = ctx.cgroup.map(|fd| fd.as_raw_fd());
    let pid = vfork::spawn(&mut plan)?;
    // The child has its copies; the write ends here close with `stdout` and `stderr`.
    drop((stdout, stderr, null));
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

/// `/dev/null`, for stdin and for discarded output.
fn null() -> std::io::Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

/// The descriptor a stream goes to: its pipe, or `/dev/null`.
fn raw(stream: &Option<OwnedFd>, null: &OwnedFd) -> RawFd {
    stream.as_ref().unwrap_or(null).as_raw_fd()
}

/// Who a worker of `pool` runs as, worked out before the clone: uid, gid and supplementary
/// groups, or `None` to keep the supervisor's.
fn identity(pool: &Pool) -> std::io::Result<Option<vfork::Identity>> {
    let group_gid = |name: &String| -> std::io::Result<nix::unistd::Gid> {
        Ok(nix::unistd::Group::from_name(name)?
            .ok_or_else(|| std::io::Error::other(format!("no group named {name:?}")))?
            .gid)
    };
    Ok(match (&pool.user, &pool.group) {
        (None, None) => None,
        (Some(user), group) => {
            let found = nix::unistd::User::from_name(user)?
                .ok_or_else(|| std::io::Error::other(format!("no user named {user:?}")))?;
            let gid = match group {
                Some(g) => group_gid(g)?,
                None => found.gid,
            };
            let name = CString::new(user.as_bytes()).map_err(|_| std::io::Error::other("a NUL in `user`"))?;
            let groups = nix::unistd::getgrouplist(&name, gid)?;
            Some(vfork::Identity {
                uid: Some(found.uid.as_raw()),
                gid: gid.as_raw(),
                groups: groups.iter().map(|g| g.as_raw()).collect(),
            })
        }
        (None, Some(group)) => {
            let gid = group_gid(group)?.as_raw();
            Some(vfork::Identity {
                uid: None,
                gid,
                groups: vec![gid],
            })
        }
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
            topics: &[],
            topic_env: &[],
            cgroup: None,
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
    fn shared_regions_queues_and_topics_are_named_by_the_descriptors_after_the_sockets() {
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
            topics: &[(b.as_fd(), "ticks".to_owned())],
            topic_env: &[],
            cgroup: None,
        };
        let env = environment(&pool, 0, &ctx);
        let handed: Vec<(&str, &str)> = env
            .iter()
            .filter_map(|(k, v)| Some((k.to_str()?, v.to_str()?)))
            .filter(|(k, _)| {
                ["PROCWIRE_SHARED_", "PROCWIRE_QUEUE_", "PROCWIRE_TOPICFD_"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .collect();
        assert_eq!(
            handed,
            [
                ("PROCWIRE_SHARED_counters", "4"),
                ("PROCWIRE_SHARED_big-1", "5"),
                ("PROCWIRE_QUEUE_jobs", "6"),
                ("PROCWIRE_TOPICFD_ticks", "7")
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
            topics: &[],
            topic_env: &[],
            cgroup: None,
        };
        let error = spawn(&Pool::new("empty", Vec::new()), 0, &ctx).expect_err("nothing to run");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("command is empty"), "{error}");
    }
}

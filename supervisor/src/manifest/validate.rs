//! Checking a manifest against the machine it is about to run on: [`Manifest::validate`].
//!
//! Parsing checks the text; this checks what only the running system can tell (is the
//! program there and executable, does a socket's directory exist and is it private, does
//! the user exist) and the invariants a manifest built in code may break (an empty command,
//! a cycle in `after`, a duration that would overflow the clock). Each of these would
//! otherwise surface only once the supervisor runs: as a crash loop, a refusal halfway
//! through starting, or a panic.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::graph::check_graph;
use super::{Endpoint, Manifest, Pool, Ready, Signal};
pub(super) use error::Segment;
pub use error::ValidationError;

/// The most workers a pool may have. Each worker is a process, and the supervisor holds up
/// to two pipes per worker (its stdout and stderr) against its own descriptor limit, which
/// is commonly 1024: far more workers than this is a typo, not a plan.
pub const MAX_WORKERS: u32 = 1024;

/// The longest Unix socket path, in bytes, that `bind(2)` accepts on Linux: `sun_path` holds
/// 108 bytes, the last of them the terminating NUL. The limit applies to the path as given
/// (relative paths are shorter), after `{index}` is replaced.
pub const UNIX_PATH_MAX: usize = 107;

/// The longest duration a manifest may give: far beyond any use, and a deadline further out
/// would overflow the clock.
pub(super) const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The `PATH` a worker gets when neither the pool's `env` nor the supervisor has one.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Which supervisor will run the manifest: what a pool's `role` may do depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Host {
    /// `procwire up`: a pool cannot use `role` (there is no program to run in a role).
    Command,
    /// [`crate::Supervisor`] inside a program: `role` runs that program's own executable.
    Embedded,
}

impl Manifest {
    /// Checks everything the supervisor needs before it starts anything, as run by
    /// `procwire check`, `procwire up` and [`crate::Supervisor::start`] (which is
    /// `validate_for(Host::Embedded)`): for each pool,
    /// - a name of letters, digits, `-` and `_`, unique; `after` naming pools, without a cycle;
    /// - from 1 to [`MAX_WORKERS`] workers;
    /// - a non-empty `command` whose program exists and is executable (looked up in the
    ///   pool's `PATH`, or relative to its working directory), and the same for an `exec:`
    ///   readiness probe; `role` only where the host can run it;
    /// - a working directory that exists;
    /// - for every Unix `listen` path (per worker): a directory that exists and that others
    ///   cannot write to, a path of at most [`UNIX_PATH_MAX`] bytes, and nothing but a socket
    ///   in its place;
    /// - a `key_file` for a pool with an authenticated TCP endpoint (`tcp:`), and a key in it
    ///   (32 bytes or 64 hex digits, in a file only its owner may read);
    /// - a `user` and `group` that exist, and a supervisor running as root to switch to them;
    /// - `shared` naming `[shared.NAME]` regions, whose names are valid and unique and whose
    ///   sizes are from 1 byte to [`MAX_SHARED_SIZE`](super::MAX_SHARED_SIZE);
    /// - settings in range: durations up to 100 years, the backoff's factor and jitter,
    ///   `mode`, `umask`, `forward`, `rlimits` (known names, within the hard limit unless root).
    ///
    /// The first problem found is returned. A manifest read from a file is better checked
    /// with [`Manifest::load_validated`], whose error points at the key in the file.
    pub fn validate_for(&self, host: Host) -> Result<(), ValidationError> {
        let name = &self.supervisor.name;
        if name.is_empty() {
            return Err(ValidationError::SupervisorName {
                name: name.clone(),
                why: "is empty",
            });
        }
        if name.contains(['/', '\0']) {
            return Err(ValidationError::SupervisorName {
                name: name.clone(),
                why: "must not contain `/` or NUL (it names the supervisor's files)",
            });
        }
        check_duration("", "shutdown_timeout", self.supervisor.shutdown_timeout)?;
        if self.pools.is_empty() {
            return Err(ValidationError::NoPools);
        }
        for (i, pool) in self.pools.iter().enumerate() {
            let good = !pool.name.is_empty()
                && pool
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !good {
                return Err(ValidationError::PoolName {
                    pool: pool.name.clone(),
                });
            }
            if self.pools[..i].iter().any(|other| other.name == pool.name) {
                return Err(ValidationError::DuplicatePool {
                    pool: pool.name.clone(),
                });
            }
        }
        if let Some(problem) = check_graph(&self.pools) {
            let (pool, edge) = problem.edge();
            return Err(ValidationError::After {
                pool: self.pools[pool].name.clone(),
                dependency: self.pools[pool].after[edge].0.clone(),
                message: problem.message(&self.pools),
            });
        }
        super::shared::validate(self)?;
        super::queue::validate(self)?;
        super::topic::validate(self)?;
        let base = self.base();
        for pool in &self.pools {
            validate_pool(pool, host, &base)?;
        }
        Ok(())
    }

    /// [`validate_for`](Self::validate_for) an embedded supervisor, where `role` is allowed.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_for(Host::Embedded)
    }

    /// The directory relative paths resolve against: the manifest's.
    fn base(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

fn value(pool: &Pool, key: &str, why: impl Into<String>) -> ValidationError {
    ValidationError::Value {
        pool: pool.name.clone(),
        key: key.to_owned(),
        why: why.into(),
    }
}

fn check_duration(pool: &str, key: &str, duration: Duration) -> Result<(), ValidationError> {
    if duration > LONGEST {
        return Err(ValidationError::Value {
            pool: pool.to_owned(),
            key: key.to_owned(),
            why: format!("({duration:?}) is longer than 100 years"),
        });
    }
    Ok(())
}

fn validate_pool(pool: &Pool, host: Host, base: &Path) -> Result<(), ValidationError> {
    let name = || pool.name.clone();
    if pool.workers == 0 || pool.workers > MAX_WORKERS {
        return Err(ValidationError::Workers {
            pool: name(),
            workers: pool.workers,
        });
    }
    validate_settings(pool)?;
    let cwd = pool.cwd.clone().unwrap_or_else(|| base.to_path_buf());
    match std::fs::metadata(&cwd) {
        Ok(meta) if meta.is_dir() => {}
        result => {
            let source = result.err().unwrap_or_else(|| std::io::Error::other("not a directory"));
            return Err(ValidationError::Cwd {
                pool: name(),
                dir: cwd,
                source,
            });
        }
    }
    let search = search_path(pool);
    match (&pool.role, host) {
        (Some(_), Host::Command) => return Err(ValidationError::Role { pool: name() }),
        (Some(_), _) => {}
        (None, _) => {
            if pool.command.first().is_none_or(String::is_empty) {
                return Err(ValidationError::EmptyCommand { pool: name() });
            }
            for index in programs_to_check(&pool.command[0], pool.workers) {
                let program = pool.command[0].replace("{index}", &index.to_string());
                find_program(pool, "command", &program, &cwd, &search)?;
            }
        }
    }
    if let Ready::Exec(argv) = &pool.ready {
        let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
            return Err(value(pool, "ready", "\"exec:\" needs a command to run"));
        };
        // Probes run from the manifest's directory with the supervisor's environment.
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        for index in programs_to_check(program, pool.workers) {
            let program = program.replace("{index}", &index.to_string());
            find_program(pool, "ready", &program, base, &path)?;
        }
    }
    validate_listen(pool)?;
    validate_identity(pool)?;
    validate_key(pool)
}

/// The worker indices whose program must be looked up: one, unless it differs by `{index}`.
fn programs_to_check(program: &str, workers: u32) -> std::ops::Range<u32> {
    if program.contains("{index}") {
        0..workers
    } else {
        0..1
    }
}

/// The `PATH` a worker's program is looked up in: the pool's `env`, else the supervisor's.
fn search_path(pool: &Pool) -> OsString {
    pool.env
        .get("PATH")
        .map(OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

/// Finds `program` as exec will: a path with `/` relative to `cwd`, a bare name in `search`.
fn find_program(
    pool: &Pool,
    key: &'static str,
    program: &str,
    cwd: &Path,
    search: &OsString,
) -> Result<PathBuf, ValidationError> {
    if program.contains('/') {
        // `./web` is `cwd/web` (said so in the error, without the `./`).
        let relative: PathBuf = Path::new(program)
            .components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect();
        let path = cwd.join(relative);
        return match executable(&path) {
            Ok(()) => Ok(path),
            Err(source) => Err(ValidationError::Program {
                pool: pool.name.clone(),
                key,
                path,
                source,
            }),
        };
    }
    std::env::split_paths(search)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate).is_ok())
        .ok_or_else(|| ValidationError::ProgramNotFound {
            pool: pool.name.clone(),
            key,
            program: program.to_owned(),
            search: search.to_string_lossy().into_owned(),
        })
}

/// Whether `path` is a file this process may execute.
fn executable(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map_err(std::io::Error::from)
}

fn validate_settings(pool: &Pool) -> Result<(), ValidationError> {
    for (key, duration) in [
        ("ready_timeout", Some(pool.ready_timeout)),
        ("stop_timeout", Some(pool.stop_timeout)),
        ("watchdog", pool.watchdog),
        ("backoff.initial", Some(pool.backoff.initial)),
        ("backoff.max", Some(pool.backoff.max)),
        ("backoff.reset_after", Some(pool.backoff.reset_after)),
        ("limit.within", Some(pool.limit.within)),
    ] {
        if let Some(duration) = duration {
            check_duration(&pool.name, key, duration)?;
        }
    }
    if pool.watchdog == Some(Duration::ZERO) {
        return Err(value(pool, "watchdog", "must be longer than zero"));
    }
    let backoff = &pool.backoff;
    if !(backoff.factor.is_finite() && backoff.factor >= 1.0) {
        return Err(value(
            pool,
            "backoff.factor",
            format!("must be at least 1.0, not {}", backoff.factor),
        ));
    }
    if !(0.0..1.0).contains(&backoff.jitter) {
        return Err(value(
            pool,
            "backoff.jitter",
            format!("must be at least 0 and less than 1, not {}", backoff.jitter),
        ));
    }
    if backoff.max < backoff.initial {
        return Err(value(
            pool,
            "backoff.max",
            format!(
                "({:?}) is less than `backoff.initial` ({:?})",
                backoff.max, backoff.initial
            ),
        ));
    }
    if pool.mode > 0o777 {
        return Err(value(
            pool,
            "mode",
            format!("must be permissions up to 0777, not {:o}", pool.mode),
        ));
    }
    if let Some(mask) = pool.umask.filter(|mask| *mask > 0o777) {
        return Err(value(pool, "umask", format!("must be at most 0777, not {mask:o}")));
    }
    for signal in &pool.forward {
        if matches!(
            signal,
            Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGTERM | Signal::SIGINT | Signal::SIGCHLD
        ) {
            return Err(value(
                pool,
                "forward",
                format!("cannot forward {signal}: it cannot be caught, or it is the supervisor's own"),
            ));
        }
    }
    let root = nix::unistd::geteuid().is_root();
    for (name, limit) in &pool.rlimits {
        let key = format!("rlimits.{name}");
        let Some(resource) = rlimit_resource(name) else {
            return Err(value(pool, &key, "is not a known resource limit"));
        };
        if !root {
            if let Ok((_, hard)) = nix::sys::resource::getrlimit(resource) {
                if *limit > hard {
                    return Err(value(
                        pool,
                        &key,
                        format!("({limit}) is above the hard limit ({hard}); only root can raise it"),
                    ));
                }
            }
        }
    }
    let nul = |s: &String| s.contains('\0');
    if pool.command.iter().any(nul) {
        return Err(value(pool, "command", "contains a NUL character"));
    }
    if pool
        .env
        .iter()
        .any(|(k, v)| nul(k) || k.is_empty() || k.contains('=') || nul(v))
    {
        return Err(value(
            pool,
            "env",
            "has a name that is empty or holds `=` or NUL, or a value with NUL",
        ));
    }
    Ok(())
}

/// The resource a `rlimits` name stands for.
pub(crate) fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource;
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

/// One key file of `pool`: a key only its owner can read, owned by who the workers run as.
fn validate_key_file(pool: &Pool, path: &std::path::Path) -> Result<(), ValidationError> {
    use std::os::unix::fs::MetadataExt;
    procwire_rpc::transport::noise::NoiseKey::from_file(path).map_err(|source| ValidationError::Key {
        pool: pool.name.clone(),
        source,
    })?;
    // Only the owner may read it (from_file checked), so a worker of another user could not.
    let user = pool
        .user
        .as_deref()
        .and_then(|u| nix::unistd::User::from_name(u).ok().flatten());
    let owner = std::fs::metadata(path).map(|m| m.uid()).ok();
    match (user, owner) {
        (Some(user), Some(owner)) if owner != user.uid.as_raw() => Err(value(
            pool,
            "key_file",
            format!(
                "{} belongs to uid {owner}, but the workers run as {} (uid {}), who cannot read it: chown it to {}",
                path.display(),
                user.name,
                user.uid,
                user.name
            ),
        )),
        _ => Ok(()),
    }
}

/// An authenticated TCP endpoint needs the pool's key, and a key file must hold a key that
/// only its owner can read, and that owner must be who the workers run as: read here, so
/// that a bad one is reported before anything starts rather than by a crash loop.
fn validate_key(pool: &Pool) -> Result<(), ValidationError> {
    if pool.key_file.is_some() {
        for path in &pool.accept_key_files {
            validate_key_file(pool, path)?;
            // The workers get them as a path list.
            if path.to_string_lossy().contains(':') {
                let shown = path.display();
                return Err(value(
                    pool,
                    "key_file",
                    format!("{shown}: a key file to accept besides the first may not have `:` in its path"),
                ));
            }
        }
    }
    match &pool.key_file {
        Some(path) => validate_key_file(pool, path),
        None => match pool.listen.iter().position(|e| matches!(e, Endpoint::TcpNoise { .. })) {
            Some(index) => Err(ValidationError::NoKey {
                pool: pool.name.clone(),
                endpoint: pool.listen[index].clone(),
                index,
            }),
            None => Ok(()),
        },
    }
}

fn validate_listen(pool: &Pool) -> Result<(), ValidationError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    for (index, endpoint) in pool.listen.iter().enumerate() {
        let mut seen = Vec::new();
        for worker in 0..pool.workers {
            let endpoint = endpoint.for_worker(worker);
            if seen.contains(&endpoint) {
                continue;
            }
            let (Endpoint::Unix(path) | Endpoint::Shm(path) | Endpoint::Mq(path)) = &endpoint else {
                break;
            };
            let length = path.as_os_str().as_bytes().len();
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let (pool_name, path) = (pool.name.clone(), path.clone());
            if length > UNIX_PATH_MAX {
                return Err(ValidationError::PathTooLong {
                    pool: pool_name,
                    endpoint,
                    index,
                    length,
                });
            }
            let mode = match std::fs::metadata(&dir) {
                Ok(meta) if meta.is_dir() => meta.permissions().mode(),
                result => {
                    let source = result.err().unwrap_or_else(|| std::io::Error::other("not a directory"));
                    return Err(ValidationError::ListenDirectory {
                        pool: pool_name,
                        endpoint,
                        index,
                        dir,
                        source,
                    });
                }
            };
            if mode & 0o002 != 0 {
                return Err(ValidationError::WorldWritable {
                    pool: pool_name,
                    endpoint,
                    index,
                    dir,
                });
            }
            if std::fs::symlink_metadata(&path).is_ok_and(|meta| !meta.file_type().is_socket()) {
                return Err(ValidationError::NotASocket {
                    pool: pool_name,
                    endpoint,
                    index,
                    path,
                });
            }
            seen.push(endpoint);
        }
    }
    Ok(())
}

fn validate_identity(pool: &Pool) -> Result<(), ValidationError> {
    let identity = |key: &'static str, why: String| ValidationError::Identity {
        pool: pool.name.clone(),
        key,
        why,
    };
    if let Some(user) = &pool.user {
        match nix::unistd::User::from_name(user) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(identity("user", format!("no user named {user:?}"))),
            Err(e) => return Err(identity("user", format!("cannot look up user {user:?}: {e}"))),
        }
    }
    if let Some(group) = &pool.group {
        match nix::unistd::Group::from_name(group) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(identity("group", format!("no group named {group:?}"))),
            Err(e) => return Err(identity("group", format!("cannot look up group {group:?}: {e}"))),
        }
    }
    if (pool.user.is_some() || pool.group.is_some()) && !nix::unistd::geteuid().is_root() {
        let key = if pool.user.is_some() { "user" } else { "group" };
        return Err(identity(
            key,
            "running a worker as another user or group needs a supervisor running as root".to_owned(),
        ));
    }
    Ok(())
}

mod error;
#[cfg(test)]
mod tests;

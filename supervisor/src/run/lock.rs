//! One supervisor per name, and no taking over of live sockets.
//!
//! `procwire up` takes an exclusive `flock(2)` on `RUNTIME/NAME.lock` (the runtime directory
//! is `$XDG_RUNTIME_DIR/procwire`, else `/tmp/procwire-UID`, mode 0700) and writes its pid
//! into it, so that a second supervisor of the same name is refused with the first one's
//! pid. The lock goes with the process, however it ends: the kernel drops it when the
//! descriptor closes, so a killed supervisor never leaves a stale lock behind (the file
//! stays, empty or with a dead pid, and is taken over by the next one).
//!
//! Before a Unix socket file left at a `listen` path is removed, the supervisor connects
//! to it: if something answers, the path belongs to a running program and is refused.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the supervisor's name or one of its sockets is not free.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The runtime directory cannot be made, or is not private.
    #[error("runtime directory {}: {source}", dir.display())]
    RuntimeDir {
        /// The directory.
        dir: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// The lock file cannot be opened, locked or written.
    #[error("lock file {}: {source}", path.display())]
    File {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another supervisor of this name is running.
    #[error("another supervisor named {name:?} is running{}: it holds {}; stop it first, or give this one another [supervisor] name",
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(), path.display())]
    Busy {
        /// The supervisor's name.
        name: String,
        /// The other supervisor's pid, as it wrote it into the lock file.
        pid: Option<i32>,
        /// The lock file.
        path: PathBuf,
    },
}

/// The directory for a supervisor's lock (and, later, its control socket):
/// `$XDG_RUNTIME_DIR/procwire`, else `/tmp/procwire-UID`. Created with mode 0700; an
/// existing one must belong to this user and be closed to others, since anyone can create
/// `/tmp/procwire-UID` first.
pub fn runtime_dir() -> Result<PathBuf, LockError> {
    let uid = nix::unistd::geteuid();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        Some(base) => PathBuf::from(base).join("procwire"),
        None => std::env::temp_dir().join(format!("procwire-{uid}")),
    };
    let fail = |source| LockError::RuntimeDir {
        dir: dir.clone(),
        source,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(e)),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(fail)?;
    if !meta.is_dir() {
        return Err(fail(std::io::Error::other("it is not a directory")));
    }
    if meta.uid() != uid.as_raw() {
        return Err(fail(std::io::Error::other(format!(
            "it belongs to uid {}, not to this user ({uid})",
            meta.uid()
        ))));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(dir)
}

/// The lock on a supervisor's name, held until it is dropped (or the process ends).
#[derive(Debug)]
pub struct NameLock {
    file: Flock<File>,
    path: PathBuf,
}

impl NameLock {
    /// Takes the lock on `name` in [`runtime_dir`], writing this process's pid into it.
    pub fn acquire(name: &str) -> Result<NameLock, LockError> {
        let path = runtime_dir()?.join(format!("{name}.lock"));
        let fail = |source| LockError::File {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(fail)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Busy {
                    name: name.to_owned(),
                    pid: text.trim().parse().ok(),
                    path,
                });
            }
            Err((_, errno)) => return Err(fail(errno.into())),
        };
        file.set_len(0).map_err(fail)?;
        file.rewind().map_err(fail)?;
        writeln!(file, "{}", std::process::id()).map_err(fail)?;
        Ok(NameLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        // The file stays (removing it would race with a supervisor that just opened it);
        // emptied, it names no pid. The lock itself goes when the descriptor closes.
        let _ = self.file.set_len(0);
    }
}

/// Removes the socket file a previous run left at `path`, after making sure nothing
/// listens there any more: a socket that accepts a connection is refused, naming its
/// owner's pid where the kernel tells it.
pub fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => {
            let owner = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .map(|cred| format!(" (pid {})", cred.pid()))
                .unwrap_or_default();
            Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} is a live socket: a running program{owner} answers on it; refusing to take it over",
                    path.display()
                ),
            ))
        }
        // Nobody listens: a leftover of a run that ended.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_nobody_listens_on_is_removed_and_a_live_one_is_kept() {
        let dir = tempfile::TempDir::new().unwrap();
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        remove_stale_socket(&stale).unwrap();
        assert!(!stale.exists());

        let live = dir.path().join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let error = remove_stale_socket(&live).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            error
                .to_string()
                .contains(&format!("(pid {}) answers on it", std::process::id())),
            "{error}"
        );
        assert!(live.exists(), "a live socket must never be deleted");
    }
}

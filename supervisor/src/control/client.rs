//! The `procwire` verbs' end of the control socket: finding a running supervisor's socket,
//! connecting to it, and the exit codes scripts can rely on ([`ClientError::exit_code`]).

use std::path::{Path, PathBuf};

use procwire_rpc::transport::unix;

use super::{socket_path, ControlClient, Status, CONTROL_ENV};
use crate::manifest::Manifest;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: the supervisor refused or failed the command (no such pool, shutting down, ...).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage, or a manifest that does not load.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no supervisor is running there.
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit code: the supervisor does not serve this user.
pub const EXIT_NOT_ALLOWED: u8 = 4;

/// Why a verb could not reach its supervisor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No supervisor listens at the socket.
    #[error("no supervisor is running at {}: {source}", path.display())]
    NotRunning {
        /// The control socket.
        path: PathBuf,
        /// The OS error (no such file, connection refused).
        #[source]
        source: std::io::Error,
    },
    /// No control socket was found to guess from.
    #[error("no supervisor is running for this user (no control socket in {})", dir.display())]
    NoneFound {
        /// The runtime directory searched.
        dir: PathBuf,
    },
    /// This user may not use the socket, or the supervisor refused the connection.
    #[error("not allowed to control the supervisor at {} (it serves only its own user and root): {reason}", path.display())]
    NotAllowed {
        /// The control socket.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
    /// Which supervisor is meant cannot be told.
    #[error("{0}")]
    Usage(String),
    /// The connection could not be set up.
    #[error(transparent)]
    Transport(#[from] procwire_rpc::TransportError),
    /// The call failed on the way.
    #[error(transparent)]
    Rpc(#[from] procwire_rpc::RpcError),
    /// The supervisor refused what was asked.
    #[error(transparent)]
    Refused(super::ControlError),
    /// The thread that follows a pool cannot be started.
    #[error("cannot start the thread that follows pool {pool}")]
    Thread {
        /// The pool.
        pool: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The exit code a verb ends with for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::NotRunning { .. } | ClientError::NoneFound { .. } => EXIT_NOT_RUNNING,
            ClientError::NotAllowed { .. } => EXIT_NOT_ALLOWED,
            ClientError::Usage(_) => EXIT_USAGE,
            ClientError::Transport(_) | ClientError::Rpc(_) | ClientError::Refused(_) | ClientError::Thread { .. } => {
                EXIT_FAILED
            }
        }
    }
}

/// The control socket a verb talks to: `control` if given (`--control`, or
/// `PROCWIRE_CONTROL`); else that of the supervisor `manifest` names (given, or
/// `./procwire.toml` if there is one); else the only one running for this user.
pub fn locate(control: Option<&Path>, manifest: Option<&Path>) -> Result<PathBuf, ClientError> {
    if let Some(path) = control {
        return Ok(path.to_owned());
    }
    let default = Path::new("procwire.toml");
    let manifest = manifest.or_else(|| default.exists().then_some(default));
    let runtime = |e: crate::run::lock::LockError| ClientError::Usage(e.to_string());
    if let Some(manifest) = manifest {
        let manifest = Manifest::load(manifest).map_err(|e| ClientError::Usage(e.to_string()))?;
        return socket_path(&manifest.supervisor.name).map_err(runtime);
    }
    let dir = crate::run::lock::runtime_dir().map_err(runtime)?;
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", dir.display())))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "sock"))
        .collect();
    sockets.sort();
    match sockets.len() {
        0 => Err(ClientError::NoneFound { dir }),
        1 => Ok(sockets.remove(0)),
        _ => {
            let names: Vec<String> = sockets
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            Err(ClientError::Usage(format!(
                "several supervisors are running ({}); say which with --file MANIFEST or --control PATH (or {CONTROL_ENV})",
                names.join(", ")
            )))
        }
    }
}

/// Connects to the control socket at `path`.
pub fn connect(path: &Path) -> Result<ControlClient, ClientError> {
    let stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ClientError::NotAllowed {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
        Err(e) => {
            return Err(ClientError::NotRunning {
                path: path.to_owned(),
                source: e,
            })
        }
    };
    let transport = unix::from_stream(stream, format!("unix:{}", path.display()))?;
    // A peer the supervisor does not serve is disconnected before the handshake.
    ControlClient::connect(transport).map_err(|e| ClientError::NotAllowed {
        path: path.to_owned(),
        reason: format!("the connection was closed before the handshake ended: {e}"),
    })
}

/// Whether a call failed only because the supervisor stopped gracefully (between two calls
/// of a follower, say): for a verb that runs until the supervisor ends, the end.
pub fn stopped(error: &procwire_rpc::CallError<super::ControlError>) -> bool {
    matches!(
        error,
        procwire_rpc::CallError::Rpc(procwire_rpc::RpcError::Disconnected {
            ending: procwire_rpc::Ending::Stopped,
            ..
        })
    )
}

/// `procwire status` as a table: a line per pool, then one per worker.
pub fn render(status: &Status) -> String {
    let mut out = format!(
        "supervisor {} (pid {}), up {}, {}\n",
        status.supervisor.name,
        status.supervisor.pid,
        duration(status.supervisor.uptime_ms),
        status.supervisor.manifest
    );
    for pool in &status.pools {
        out.push_str(&format!("{}: {}\n", pool.name, pool.state.as_str()));
        for w in &pool.workers {
            let pid = w.pid.map_or("-".to_owned(), |pid| pid.to_string());
            let uptime = w.uptime_ms.map_or("-".to_owned(), duration);
            let exit = last_exit(w.last_exit);
            let mut line = format!(
                "  {}.{:<3} {:<9} pid {:<8} up {:<8} restarts {:<3} last {:<9}",
                pool.name,
                w.index,
                w.state.as_str(),
                pid,
                uptime,
                w.restarts,
                exit
            );
            if let Some(ms) = w.next_restart_ms {
                line.push_str(&format!(" restart in {}", duration(ms)));
            }
            if let Some(text) = &w.status {
                line.push_str(&format!(" \"{text}\""));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// `exit 3`, `SIGKILL`, `-` (none).
pub(crate) fn last_exit(exit: Option<super::LastExit>) -> String {
    match exit {
        Some(super::LastExit::Code(code)) => format!("exit {code}"),
        Some(super::LastExit::Signal(signal)) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(signal) => signal.as_str().to_owned(),
            Err(_) => format!("signal {signal}"),
        },
        None => "-".to_owned(),
    }
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub(crate) fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

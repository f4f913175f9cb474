//! The supervisor's end of the control socket: a listener that serves only the supervisor's
//! own user and root, and the [`Control`] service, which turns each call into a
//! [`Command::Control`] for the event loop and waits for its answer.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use procwire_rpc::transport::{Interrupt, Listener, Transport};
use procwire_rpc::{ServerHandle, TransportError, Wait};

use super::feed::{Batch, Feeds};
use super::{Control, ControlError, Event, PoolStatus, Status, SupervisorStatus, Target, REPLY_TIMEOUT};
use crate::policy::Manual;
use crate::run::command::{Command, Handle};

/// A control call, as the event loop receives it: what to do, and where to answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request {
    /// Report every pool (or the one named).
    Status {
        /// Only this pool.
        pool: Option<String>,
        /// Where to answer.
        reply: Sender<Result<Vec<PoolStatus>, ControlError>>,
    },
    /// Stop, start or restart by hand.
    Manual {
        /// What to do.
        what: Manual,
        /// To what.
        target: Target,
        /// Where to answer: a line per worker.
        reply: Sender<Result<Vec<String>, ControlError>>,
    },
    /// Send a signal to the target's running workers.
    Signal {
        /// To what.
        target: Target,
        /// The signal's number.
        signal: i32,
        /// Where to answer: a line per worker.
        reply: Sender<Result<Vec<String>, ControlError>>,
    },
    /// The recent output lines of the target (or of every worker).
    Logs {
        /// Whose.
        target: Option<Target>,
        /// How many per worker.
        lines: u32,
        /// Where to answer: `pool.index | line`, each worker's oldest first, and the log
        /// feed's cursor that follows them.
        reply: Sender<Result<(Vec<String>, u64), ControlError>>,
    },
    /// Restart a pool one worker at a time.
    Roll {
        /// The pool.
        pool: String,
        /// Where to answer.
        reply: Sender<Result<Vec<String>, ControlError>>,
    },
    /// Grow or shrink a pool.
    Scale {
        /// The pool.
        pool: String,
        /// How many workers it is to have.
        workers: u32,
        /// Where to answer: a line per worker added or removed.
        reply: Sender<Result<Vec<String>, ControlError>>,
    },
    /// Reload the manifest, or say what a reload would change.
    Reload {
        /// Only say what would change.
        dry_run: bool,
        /// Where to answer: a line per change.
        reply: Sender<Result<Vec<String>, ControlError>>,
    },
    /// The endpoints of a pool's current workers, for a pool client.
    Endpoints {
        /// The pool.
        pool: String,
        /// Where to answer: an endpoint per worker, in index order.
        reply: Sender<Result<Vec<procwire_rpc::Endpoint>, ControlError>>,
    },
    /// A peer was refused: the loop says so in the supervisor's output.
    Refused {
        /// Its pid.
        pid: i32,
        /// Its uid.
        uid: u32,
    },
}

/// Why the control socket cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The socket cannot be bound (a live one is there, the directory is missing, ...).
    #[error("control socket {}: {source}", path.display())]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The RPC server cannot start.
    #[error("control socket {}: {source}", path.display())]
    Serve {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<procwire_rpc::ServerError>,
    },
}

/// What the supervisor is, for the status's `supervisor` part.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `[supervisor] name`.
    pub name: String,
    /// The manifest's path.
    pub manifest: PathBuf,
    /// How long a graceful shutdown may take at most, for `down`'s deadline.
    pub shutdown_timeout: Duration,
}

/// A served control socket; [`ControlSocket::finish`] ends it.
#[derive(Debug)]
pub struct ControlSocket {
    server: Option<ServerHandle>,
    path: PathBuf,
    ended: Arc<Ended>,
    feeds: Arc<Feeds>,
}

/// The supervisor's exit code once known, for `down` calls waiting for it.
#[derive(Debug, Default)]
struct Ended {
    code: Mutex<Option<i32>>,
    known: Condvar,
}

impl ControlSocket {
    /// Binds `path` (mode 0600; a socket file nobody answers on is replaced, a live one
    /// refused) and serves [`Control`] on it, sending commands to the loop through `handle`;
    /// followers read `feeds`.
    pub fn serve(
        path: &Path,
        handle: Handle,
        identity: Identity,
        feeds: Arc<Feeds>,
    ) -> Result<ControlSocket, ServeError> {
        let bind = |source| ServeError::Bind {
            path: path.to_owned(),
            source,
        };
        crate::run::lock::remove_stale_socket(path).map_err(bind)?;
        let fd = crate::run::bind_unix(path, 0o600, None).map_err(bind)?;
        let listener = procwire_rpc::transport::unix::Listener::from_std(std::os::unix::net::UnixListener::from(fd))
            .map_err(|e| bind(std::io::Error::other(e)))?;
        let ended = Arc::new(Ended::default());
        let service = Service {
            handle: handle.clone(),
            identity,
            started: Instant::now(),
            ended: Arc::clone(&ended),
            feeds: Arc::clone(&feeds),
        };
        let guarded = Guarded {
            inner: listener,
            uid: nix::unistd::geteuid().as_raw(),
            handle,
        };
        let server = procwire_rpc::Server::new(super::ControlServer::new(service))
            .spawn(guarded)
            .map_err(|source| ServeError::Serve {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        Ok(ControlSocket {
            server: Some(server),
            path: path.to_owned(),
            ended,
            feeds,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The supervisor ended with `code`: `down` calls are answered, the server stops once
    /// they have their replies, and the socket file goes.
    pub fn finish(mut self, code: i32) {
        *self.ended.code.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
        self.ended.known.notify_all();
        self.stop();
    }

    fn stop(&mut self) {
        // Followers waiting for more return at once, so that the server can stop.
        self.feeds.end();
        if let Some(server) = self.server.take() {
            let _ = server.stop();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The listener that drops, before any handshake, a peer that is neither the supervisor's
/// user nor root.
struct Guarded {
    inner: procwire_rpc::transport::unix::Listener,
    uid: u32,
    handle: Handle,
}

impl Listener for Guarded {
    fn accept(&mut self, wait: Wait) -> Result<Transport, TransportError> {
        loop {
            let transport = self.inner.accept(wait)?;
            match transport.peer.credentials {
                Some(peer) if peer.uid == self.uid || peer.uid == 0 => return Ok(transport),
                peer => {
                    let (pid, uid) = peer.map_or((0, u32::MAX), |p| (p.pid, p.uid));
                    let _ = self.handle.send(Command::Control(Request::Refused { pid, uid }));
                    // Dropped unanswered: the peer sees the connection closed.
                }
            }
        }
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.inner.set_interrupt(interrupt);
    }

    fn local_addr(&self) -> String {
        self.inner.local_addr()
    }
}

struct Service {
    handle: Handle,
    identity: Identity,
    started: Instant,
    ended: Arc<Ended>,
    feeds: Arc<Feeds>,
}

/// Sends the request `make` builds to the loop behind `handle` and waits for its answer
/// ([`REPLY_TIMEOUT`]).
pub(crate) fn ask<T>(
    handle: &Handle,
    make: impl FnOnce(Sender<Result<T, ControlError>>) -> Request,
) -> Result<T, ControlError> {
    let (reply, answer) = mpsc::channel();
    handle
        .send(Command::Control(make(reply)))
        .map_err(|e| ControlError::NoAnswer(e.to_string()))?;
    match answer.recv_timeout(REPLY_TIMEOUT) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(ControlError::NoAnswer(format!("no answer within {REPLY_TIMEOUT:?}")))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ControlError::NoAnswer("the event loop has ended".into())),
    }
}

impl Service {
    fn ask<T>(&self, make: impl FnOnce(Sender<Result<T, ControlError>>) -> Request) -> Result<T, ControlError> {
        ask(&self.handle, make)
    }
}

impl Service {
    fn manual(&self, what: Manual, target: Target) -> Result<Vec<String>, ControlError> {
        self.ask(|reply| Request::Manual { what, target, reply })
    }
}

impl Control for Service {
    fn status(&self, pool: Option<String>) -> Result<Status, ControlError> {
        let pools = self.ask(|reply| Request::Status { pool, reply })?;
        Ok(Status {
            supervisor: SupervisorStatus {
                name: self.identity.name.clone(),
                pid: std::process::id(),
                manifest: self.identity.manifest.display().to_string(),
                uptime_ms: self.started.elapsed().as_millis() as u64,
            },
            pools,
        })
    }

    fn stop_target(&self, target: Target) -> Result<Vec<String>, ControlError> {
        self.manual(Manual::Stop, target)
    }

    fn start_target(&self, target: Target) -> Result<Vec<String>, ControlError> {
        self.manual(Manual::Start, target)
    }

    fn restart_target(&self, target: Target) -> Result<Vec<String>, ControlError> {
        self.manual(Manual::Restart, target)
    }

    fn signal_target(&self, target: Target, signal: i32) -> Result<Vec<String>, ControlError> {
        self.ask(|reply| Request::Signal { target, signal, reply })
    }

    fn logs(&self, target: Option<Target>, lines: u32) -> Result<Vec<String>, ControlError> {
        Ok(self.ask(|reply| Request::Logs { target, lines, reply })?.0)
    }

    fn endpoints(&self, pool: String) -> Result<Vec<String>, ControlError> {
        let endpoints = self.ask(|reply| Request::Endpoints { pool, reply })?;
        Ok(endpoints.iter().map(ToString::to_string).collect())
    }

    fn next_events(&self, cursor: Option<u64>, wait_ms: u32) -> Result<Batch<Event>, ControlError> {
        let events = &self.feeds.events;
        let cursor = cursor.unwrap_or_else(|| events.head());
        Ok(events.read(cursor, Duration::from_millis(wait_ms.into()), |_| true))
    }

    fn follow_logs(
        &self,
        target: Option<Target>,
        cursor: Option<u64>,
        lines: u32,
        wait_ms: u32,
    ) -> Result<Batch<String>, ControlError> {
        let Some(cursor) = cursor else {
            // The loop reads the tails and the feed's head at one moment: nothing is lost
            // or repeated between the two.
            let (items, next) = self.ask(|reply| Request::Logs { target, lines, reply })?;
            return Ok(Batch {
                items,
                next,
                missed: 0,
                ended: false,
            });
        };
        let wanted = |line: &super::feed::LogLine| {
            target
                .as_ref()
                .is_none_or(|t| t.pool == line.pool && t.index.is_none_or(|i| i == line.index))
        };
        let batch = self
            .feeds
            .logs
            .read(cursor, Duration::from_millis(wait_ms.into()), wanted);
        Ok(Batch {
            items: batch
                .items
                .into_iter()
                .map(|l| format!("{}.{} | {}", l.pool, l.index, l.text))
                .collect(),
            next: batch.next,
            missed: batch.missed,
            ended: batch.ended,
        })
    }

    fn rolling_restart(&self, pool: String) -> Result<Vec<String>, ControlError> {
        self.ask(|reply| Request::Roll { pool, reply })
    }

    fn scale(&self, pool: String, workers: u32) -> Result<Vec<String>, ControlError> {
        self.ask(|reply| Request::Scale { pool, workers, reply })
    }

    fn reload(&self, dry_run: bool) -> Result<Vec<String>, ControlError> {
        self.ask(|reply| Request::Reload { dry_run, reply })
    }

    fn down(&self) -> Result<i32, ControlError> {
        self.handle
            .send(Command::Stop)
            .map_err(|e| ControlError::NoAnswer(e.to_string()))?;
        // The shutdown kills what is left at its timeout; the margin covers the rest.
        let deadline = Instant::now() + self.identity.shutdown_timeout + REPLY_TIMEOUT;
        let mut code = self.ended.code.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(code) = *code {
                return Ok(code);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ControlError::NoAnswer("the supervisor did not end in time".into()));
            }
            code = self
                .ended
                .known
                .wait_timeout(code, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

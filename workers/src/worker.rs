//! [`Worker`]: serve a service on the endpoints this process was given, report readiness
//! and heartbeats, drain on SIGTERM.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::{mpsc, Arc};

use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
use procwire_rpc::transport::{mq, noise, shm, tcp, unix, Listener};
use procwire_rpc::{
    Endpoint, EndpointError, ErrorChain, HandshakeError, Server, ServerConfig, ServerError, ServerHandle, Service,
    TransportError,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::activation::{listen_fds, ActivationError, PLAIN_SUFFIX};
use crate::notify::{watchdog_interval, Notifier};

/// The environment variable a worker run by hand reads its endpoints from:
/// endpoint texts (`unix:PATH`, `tcp:HOST:PORT`, ...), comma-separated.
pub const LISTEN_ENV: &str = "PROCWIRE_LISTEN";

/// A worker could not serve.
///
/// It prints its causes with `{}` and with `{:?}` alike, so that a `main` returning
/// `Result<(), WorkerError>` says why: `Error: cannot serve on unix:/run/calc.sock: bind on
/// unix:/run/calc.sock failed: Permission denied (os error 13)`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The socket-activation variables were wrong.
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// No endpoint: not socket-activated, none given with [`Worker::listen`] or in
    /// [`LISTEN_ENV`].
    #[error("no endpoint to serve on: not socket-activated, and none given (Worker::listen or {LISTEN_ENV})")]
    NoEndpoint,
    /// An endpoint's text is not an [`Endpoint`].
    #[error("bad endpoint {endpoint:?}: {}", ErrorChain(.source))]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        #[source]
        source: EndpointError,
    },
    /// An endpoint could not be bound, or an inherited socket not used.
    #[error("cannot serve on {endpoint}: {}", ErrorChain(.source))]
    Endpoint {
        /// The endpoint (`an inherited descriptor` for one from socket activation).
        endpoint: String,
        /// The transport's failure.
        #[source]
        source: TransportError,
    },
    /// A descriptor handed over by socket activation is not a socket this worker serves on.
    #[error("cannot serve on an inherited descriptor: {}", ErrorChain(.source))]
    Inherited {
        /// Why not.
        #[source]
        source: io::Error,
    },
    /// The supervisor's access lists (`PROCWIRE_ALLOW_UIDS`, `PROCWIRE_ALLOW_GIDS`) are not
    /// lists of ids.
    #[error(transparent)]
    Access(#[from] procwire_rpc::AccessEnvError),
    /// A server could not start on an endpoint.
    #[error("cannot start serving on {endpoint}: {}", ErrorChain(.source))]
    Serve {
        /// The endpoint.
        endpoint: String,
        /// The server's failure (boxed: it can hold a whole handshake).
        #[source]
        source: Box<ServerError>,
    },
    /// The worker's own machinery (signal handling, its thread) could not start.
    #[error("cannot start the worker's {what}: {}", ErrorChain(.source))]
    Start {
        /// What could not start.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The message with its causes, as `Display`: `main` prints its error with `Debug`.
impl std::fmt::Debug for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

type Handler = Box<dyn Fn() + Send + 'static>;
type HandshakeReport = Arc<dyn Fn(&HandshakeError) + Send + Sync + 'static>;

/// Life inside a worker: serve, report, drain.
///
/// ```no_run
/// # use procwire_rpc::{CallContext, Fault, Frame, Service, ServiceInfo};
/// # struct Calc;
/// # impl Service for Calc {
/// #     fn info(&self) -> ServiceInfo { ServiceInfo::new("calc") }
/// #     fn method_name(&self, _: u32) -> Option<&'static str> { None }
/// #     fn call(&self, _: &CallContext, _: &[u8]) -> Result<Frame, Fault> { unreachable!() }
/// # }
/// fn main() -> Result<(), procwire_workers::WorkerError> {
///     procwire_workers::Worker::new()
///         .listen("unix:/tmp/calc.sock")        // used only when not socket-activated
///         .on_signal(procwire_workers::signal::SIGHUP, || eprintln!("reloading my configuration"))
///         .serve(Calc)
/// }
/// ```
pub struct Worker {
    endpoints: Vec<String>,
    handlers: Vec<(i32, Handler)>,
    config: ServerConfig,
    handshake_failed: HandshakeReport,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Default for Worker {
    fn default() -> Self {
        Self::new()
    }
}

impl Worker {
    /// A worker with no endpoint of its own: it serves what socket activation hands it.
    pub fn new() -> Self {
        Worker {
            endpoints: Vec::new(),
            handlers: Vec::new(),
            config: ServerConfig::default(),
            handshake_failed: Arc::new(report_on_stderr),
        }
    }

    /// Serves on `endpoint` (an [`Endpoint`], or its text: `unix:PATH`, `tcp:HOST:PORT`, ...)
    /// when the process was not socket-activated: the same binary runs by hand, under
    /// systemd and under procwire. A text that is not an endpoint fails [`serve`](Self::serve).
    pub fn listen(mut self, endpoint: impl ToString) -> Self {
        self.endpoints.push(endpoint.to_string());
        self
    }

    /// Runs `handler` on an ordinary thread (not in signal context) each time the process
    /// receives `signal` (HUP to reload a configuration, USR1 to dump state, ...). TERM and
    /// INT are the worker's own: they drain it.
    pub fn on_signal(mut self, signal: i32, handler: impl Fn() + Send + 'static) -> Self {
        self.handlers.push((signal, Box::new(handler)));
        self
    }

    /// The server's configuration. Its [handshake-failure
    /// hook](ServerConfig::on_handshake_failure) is replaced by the worker's own: set that
    /// with [`on_handshake_failure`](Self::on_handshake_failure). Under a supervisor, its
    /// [`allow`](ServerConfig::allow) is replaced by the manifest's (`allow_uids`,
    /// `allow_gids`; by default the supervisor's uid), which the supervisor passes in
    /// `PROCWIRE_ALLOW_UIDS` and `PROCWIRE_ALLOW_GIDS`.
    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Calls `report` with each connection whose handshake fails (a client built against
    /// another interface, say), in place of the default: a line on stderr, unless a
    /// `tracing` subscriber is installed, which gets the server's warning instead. A peer that
    /// connects and leaves without a word (a readiness probe) is not reported by the default.
    pub fn on_handshake_failure(mut self, report: impl Fn(&HandshakeError) + Send + Sync + 'static) -> Self {
        self.handshake_failed = Arc::new(report);
        self
    }

    /// Serves `service` until SIGTERM or SIGINT: sends `READY=1` once serving, `WATCHDOG=1`
    /// at half of `WATCHDOG_USEC`, and on the signal sends `STOPPING=1`, stops accepting,
    /// lets calls in flight finish, and returns `Ok(())` so that `main` can exit 0.
    pub fn serve<S: Service>(self, service: S) -> Result<(), WorkerError> {
        let listeners = self.listeners()?;
        let described: Vec<String> = listeners.iter().map(|l| l.local_addr()).collect();
        // Signals first, so that a TERM arriving while starting is not lost.
        let mut wanted = vec![SIGTERM, SIGINT];
        wanted.extend(self.handlers.iter().map(|(s, _)| *s));
        let mut signals = Signals::new(&wanted).map_err(|source| WorkerError::Start {
            what: "signal handling",
            source,
        })?;
        let signal_handle = signals.handle();
        let (stop_tx, stop_rx) = mpsc::channel::<i32>();
        let handlers = self.handlers;
        let signal_thread = std::thread::Builder::new()
            .name("procwire-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal == SIGTERM || signal == SIGINT {
                        let _ = stop_tx.send(signal);
                        continue;
                    }
                    for (s, handler) in &handlers {
                        if *s == signal {
                            handler();
                        }
                    }
                }
            })
            .map_err(|source| WorkerError::Start {
                what: "signal thread",
                source,
            })?;
        let service = Arc::new(service);
        let report = self.handshake_failed;
        let mut config = self.config.on_handshake_failure(move |e| report(e));
        // Under a supervisor, only the local users its manifest allows reach the service.
        if let Some(access) = procwire_rpc::Access::from_env()? {
            config = config.allow(access);
        }
        let mut servers: Vec<ServerHandle> = Vec::new();
        for (listener, endpoint) in listeners.into_iter().zip(&described) {
            let server = Server::new(Arc::clone(&service)).with_config(config.clone());
            servers.push(server.spawn(listener).map_err(|source| WorkerError::Serve {
                endpoint: endpoint.clone(),
                source: Box::new(source),
            })?);
        }
        let notifier = Notifier::from_env().ok().flatten();
        if let Some(n) = &notifier {
            let _ = n.send([
                ("READY", "1"),
                ("STATUS", &format!("serving on {}", described.join(", "))),
            ]);
        }
        // Heartbeats at half the watchdog period, until the drain begins.
        let (beat_stop, beat_rx) = mpsc::channel::<()>();
        let heartbeat = match (watchdog_interval(), Notifier::from_env().ok().flatten()) {
            (Some(period), Some(n)) => Some(std::thread::spawn(move || {
                let half = period / 2;
                while let Err(mpsc::RecvTimeoutError::Timeout) = beat_rx.recv_timeout(half) {
                    let _ = n.watchdog();
                }
            })),
            _ => None,
        };
        let signal = stop_rx.recv().unwrap_or(SIGTERM);
        if let Some(n) = &notifier {
            let _ = n.send([
                ("STOPPING", "1"),
                ("STATUS", &format!("draining after signal {signal}")),
            ]);
        }
        drop(beat_stop);
        if let Some(h) = heartbeat {
            let _ = h.join();
        }
        for server in servers {
            let _ = server.stop();
        }
        signal_handle.close();
        let _ = signal_thread.join();
        Ok(())
    }

    fn listeners(&self) -> Result<Vec<Box<dyn Listener>>, WorkerError> {
        let activated = listen_fds()?;
        if !activated.is_empty() {
            return activated
                .into_iter()
                .map(|a| {
                    let hands = match a.name.as_deref() {
                        Some(n) if n.ends_with(crate::activation::SHM_SUFFIX) => Hands::Shm,
                        Some(n) if n.ends_with(crate::activation::MQ_SUFFIX) => Hands::Mq,
                        Some(n) if n.ends_with(crate::activation::PLAIN_SUFFIX) => Hands::Plain,
                        _ => Hands::Streams,
                    };
                    from_fd(a.fd, hands)
                })
                .collect();
        }
        let mut endpoints = self.endpoints.clone();
        if endpoints.is_empty() {
            if let Ok(env) = std::env::var(LISTEN_ENV) {
                endpoints = env
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
        }
        if endpoints.is_empty() {
            return Err(WorkerError::NoEndpoint);
        }
        endpoints.iter().map(|e| bind(e)).collect()
    }
}

/// The default report of a failed handshake: a line on stderr, which a worker's supervisor
/// keeps, while no `tracing` subscriber would hear the server's warning.
fn report_on_stderr(e: &HandshakeError) {
    let probe = matches!(
        e,
        HandshakeError::Transport {
            source: TransportError::Closed { .. },
            ..
        }
    );
    let unheard = tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
    if !probe && unheard {
        eprintln!(
            "procwire worker {}: refused a connection: {}",
            std::process::id(),
            ErrorChain(e)
        );
    }
}

/// What the connections of an inherited socket are, as its name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hands {
    /// The socket's own streams; on TCP, authenticated and encrypted with Noise.
    Streams,
    /// A TCP socket's own streams without authentication (`tcp+plain:`).
    Plain,
    /// Shared-memory rings set up over it (`shm:`).
    Shm,
    /// Message queues set up over it (`mq:`).
    Mq,
}

/// A listener from an inherited descriptor, whatever its address family; a Unix socket
/// named as handing out shared-memory or message-queue connections becomes an shm or mq
/// listener. A TCP socket becomes a Noise listener with the key of the environment (so
/// its peers must authenticate before anything else), unless it is named as plain; with
/// no key to be had, the worker does not serve at all.
fn from_fd(fd: OwnedFd, hands: Hands) -> Result<Box<dyn Listener>, WorkerError> {
    let inherited = |source: TransportError| WorkerError::Endpoint {
        endpoint: "an inherited descriptor".into(),
        source,
    };
    let addr: SockaddrStorage = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()))
        .map_err(|e| WorkerError::Inherited { source: e.into() })?;
    match addr.family() {
        Some(AddressFamily::Unix) if hands == Hands::Shm => Ok(Box::new(
            shm::Listener::from_std(UnixListener::from(fd), shm::Options::default()).map_err(inherited)?,
        )),
        Some(AddressFamily::Unix) if hands == Hands::Mq => Ok(Box::new(
            mq::Listener::from_std(UnixListener::from(fd), mq::Options::default()).map_err(inherited)?,
        )),
        Some(AddressFamily::Unix) => Ok(Box::new(
            unix::Listener::from_std(UnixListener::from(fd)).map_err(inherited)?,
        )),
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            let listener = tcp::Listener::from_std(std::net::TcpListener::from(fd)).map_err(inherited)?;
            if hands == Hands::Plain {
                return Ok(Box::new(listener));
            }
            let endpoint = format!("tcp:{}", listener.addr());
            let keys = noise::keys_from_env().map_err(|source| WorkerError::Endpoint {
                endpoint: endpoint.clone(),
                source: TransportError::Key {
                    endpoint: format!("an inherited TCP socket not named NAME{PLAIN_SUFFIX}"),
                    source,
                },
            })?;
            Ok(Box::new(
                noise::Listener::from_tcp(listener, keys)
                    .map_err(|source| WorkerError::Endpoint { endpoint, source })?,
            ))
        }
        other => Err(WorkerError::Inherited {
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unsupported socket family {other:?}"),
            ),
        }),
    }
}

/// Parses and binds an endpoint's text.
fn bind(endpoint: &str) -> Result<Box<dyn Listener>, WorkerError> {
    let failed = |source| WorkerError::Endpoint {
        endpoint: endpoint.to_owned(),
        source,
    };
    let parsed: Endpoint = endpoint.parse().map_err(|source| WorkerError::BadEndpoint {
        endpoint: endpoint.to_owned(),
        source,
    })?;
    parsed.bind().map_err(failed)
}

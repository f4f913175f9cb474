//! [`ServerConfig`]: how a server behaves, and the limits that bound what one peer can cost.

use std::sync::Arc;
use std::time::Duration;

use crate::error::HandshakeError;
use crate::outbox::Buffering;
use crate::protocol::DEFAULT_MAX_FRAME_LEN;
use crate::transport::FrameBudget;

/// The default of [`ServerConfig::max_connections`].
///
/// Each connection costs one thread (more while calls run) and about 5 descriptors (the
/// socket and its duplicate, two eventfds, an epoll set per thread). 256 connections thus
/// take about 1300 descriptors at rest: under the common soft `RLIMIT_NOFILE` of 1024 the
/// process runs out first, and then `accept` backs off (the log says so) instead of
/// refusing politely; raise the soft limit to 4096 or more (`procwire` workers inherit the
/// supervisor's), or lower this. Without the limit, a peer could make connections until the
/// process had no descriptor left for anything else.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How a [`Server`](super::Server) behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest frame payload sent or accepted; default 16 MiB. A client sending a larger
    /// frame is told so and disconnected.
    pub max_frame_len: usize,
    /// How many outgoing frames (replies) may queue per connection while its transport is
    /// busy.
    pub buffering: Buffering,
    /// How many calls of one connection may run at once; default 16.
    pub max_calls_per_connection: usize,
    /// How long a new connection may take to complete its handshake.
    pub handshake_timeout: Duration,
    /// How long a reply may wait for the client to read before the connection is given up
    /// on; default 30 s. This also bounds how long a graceful stop waits for such a client.
    pub write_timeout: Duration,
    /// How many connections one listener serves at once; default
    /// [`DEFAULT_MAX_CONNECTIONS`]. One more is refused (its handshake is answered with a
    /// refusal) and logged with the peer's name.
    pub max_connections: usize,
    /// How long one frame may take to arrive once its first byte has (a peer that trickles a
    /// frame byte by byte is cut); default 30 s, time enough for 16 MiB over a slow link.
    pub frame_timeout: Duration,
    /// How long a connection may stay silent between frames while none of its calls runs;
    /// default `None` (a pooled client may keep an idle connection for hours; idle
    /// connections are bounded by [`max_connections`](Self::max_connections)).
    pub idle_timeout: Option<Duration>,
    /// How long a connection's spare thread may sleep with nothing to do before it ends;
    /// default 10 s. A connection starts a thread per call running at once (up to
    /// [`max_calls_per_connection`](Self::max_calls_per_connection)) and keeps one at
    /// least; without this, the threads a burst of calls started would stay for the life of
    /// the connection.
    pub spare_thread_timeout: Duration,
    /// Where buffers of partly received large frames are counted; default
    /// [`FrameBudget::process`], 64 MiB shared by every server of the process. A frame that
    /// would exceed it is refused and its connection closed.
    pub frame_budget: FrameBudget,
    /// Which local peers are served, checked with their kernel-reported credentials as each
    /// connection is accepted, before the handshake; a peer not allowed is refused (its
    /// handshake is answered with a refusal) and logged with its pid, uid and gid. Default
    /// `None`: no check (the socket file's mode is the only guard). Transports without
    /// credentials (TCP, pipes) are not checked. `procwire_workers::Worker` sets it from the
    /// supervisor's [`Access::from_env`](super::Access::from_env).
    pub allow: Option<super::Access>,
    /// Told of each connection whose handshake fails, besides the `tracing` warning.
    pub(super) handshake_failed: Option<HandshakeHook>,
}

/// A function told of each failed handshake (see [`ServerConfig::on_handshake_failure`]).
#[derive(Clone)]
pub(super) struct HandshakeHook(pub(super) Arc<dyn Fn(&HandshakeError) + Send + Sync>);

impl std::fmt::Debug for HandshakeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeHook")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            buffering: Buffering::default(),
            max_calls_per_connection: 16,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            frame_timeout: Duration::from_secs(30),
            idle_timeout: None,
            spare_thread_timeout: Duration::from_secs(10),
            frame_budget: FrameBudget::process(),
            allow: None,
            handshake_failed: None,
        }
    }
}

impl ServerConfig {
    /// Sets [`max_frame_len`](Self::max_frame_len).
    pub fn max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets [`buffering`](Self::buffering).
    pub fn buffering(mut self, buffering: Buffering) -> Self {
        self.buffering = buffering;
        self
    }

    /// Sets [`max_calls_per_connection`](Self::max_calls_per_connection) (at least 1).
    pub fn max_calls_per_connection(mut self, n: usize) -> Self {
        self.max_calls_per_connection = n.max(1);
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`write_timeout`](Self::write_timeout).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`max_connections`](Self::max_connections) (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets [`frame_timeout`](Self::frame_timeout).
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`spare_thread_timeout`](Self::spare_thread_timeout).
    pub fn spare_thread_timeout(mut self, timeout: Duration) -> Self {
        self.spare_thread_timeout = timeout;
        self
    }

    /// Sets [`frame_budget`](Self::frame_budget).
    pub fn frame_budget(mut self, budget: FrameBudget) -> Self {
        self.frame_budget = budget;
        self
    }

    /// Sets [`allow`](Self::allow).
    pub fn allow(mut self, access: super::Access) -> Self {
        self.allow = Some(access);
        self
    }

    /// Calls `hook` with each connection's failed handshake (a client of another service or
    /// interface version, a peer that says nothing in time, ...), besides the `tracing`
    /// warning the server always logs; none by default. `procwire_workers::Worker` sets one
    /// that reports on stderr, where a worker without a `tracing` subscriber is heard.
    pub fn on_handshake_failure(mut self, hook: impl Fn(&HandshakeError) + Send + Sync + 'static) -> Self {
        self.handshake_failed = Some(HandshakeHook(Arc::new(hook)));
        self
    }
}

//! Connecting to the pool's workers and remembering those that fail to answer: the links'
//! states change here (connecting in the background or, with none up, on the caller's
//! thread; down for a back-off; lost; timed out while silent).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ConnectFailure, Link, Shared, BACKOFF_FIRST, BACKOFF_MAX};
use crate::client::{Client, ClientConfig};
use crate::error::{HandshakeError, RpcError};

impl Shared {
    /// Starts a background connection to every worker that is not connected and not
    /// backing off.
    pub(super) fn connect_in_background(self: &Arc<Self>, links: &mut [Link], now: Instant) {
        for (slot, link) in links.iter_mut().enumerate() {
            let due = match link {
                Link::Idle => true,
                Link::Down { retry_at, .. } => *retry_at <= now,
                Link::Up(_) | Link::Connecting => false,
            };
            if !due {
                continue;
            }
            *link = Link::Connecting;
            let shared = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("procwire-pool-connect".into())
                .spawn(move || {
                    let result = shared.connect(slot, shared.config.clone());
                    shared.settle(slot, result);
                });
            if let Err(e) = spawned {
                *link = self.down(slot, format!("cannot start a thread to connect: {e}"));
            }
        }
    }

    /// Connects, on this thread, to each worker that is down, until one answers. A refusal
    /// (a worker of another interface, say) is the caller's to see as it is.
    pub(super) fn connect_all_now(&self, deadline: Option<Instant>) -> Option<HandshakeError> {
        let mut refusal = None;
        for slot in 0..self.endpoints.len() {
            {
                let mut links = self.lock();
                if !matches!(links[slot], Link::Down { .. } | Link::Idle) {
                    continue;
                }
                links[slot] = Link::Connecting;
            }
            let config = self.config_within(deadline);
            let result = self.connect(slot, config);
            let connected = result.is_ok();
            if let Some(refused) = self.settle(slot, result) {
                refusal = Some(refused);
            }
            if connected {
                return None;
            }
        }
        refusal
    }

    /// The pool's client configuration, its handshake timeout cut to what is left before
    /// `deadline`.
    pub(super) fn config_within(&self, deadline: Option<Instant>) -> ClientConfig {
        let mut config = self.config.clone();
        if let Some(d) = deadline {
            config.handshake_timeout = config
                .handshake_timeout
                .min(d.saturating_duration_since(Instant::now()));
        }
        config
    }

    pub(super) fn connect(&self, slot: usize, config: ClientConfig) -> Result<Client, ConnectFailure> {
        let transport = match &self.endpoints[slot] {
            Ok(endpoint) => endpoint
                .connect()
                .map_err(|e| ConnectFailure::Unreachable(crate::error::chain(&e)))?,
            Err(e) => return Err(ConnectFailure::Unreachable(e.to_string())),
        };
        Client::connect_with(transport, self.service.clone(), config).map_err(|e| match e {
            // Nobody answered the handshake: the worker is not there to answer.
            RpcError::Handshake(e @ (HandshakeError::Transport { .. } | HandshakeError::TimedOut { .. })) => {
                ConnectFailure::Unreachable(crate::error::chain(&e))
            }
            RpcError::Handshake(e) => ConnectFailure::Refused(e),
            e => ConnectFailure::Unreachable(e.to_string()),
        })
    }

    /// Files the outcome of connecting to `slot`; gives back a refusal.
    pub(super) fn settle(&self, slot: usize, result: Result<Client, ConnectFailure>) -> Option<HandshakeError> {
        let mut links = self.lock();
        let (link, refusal) = match result {
            Ok(client) => (Link::Up(client), None),
            Err(ConnectFailure::Unreachable(reason)) => (self.down(slot, reason), None),
            Err(ConnectFailure::Refused(e)) => (self.down(slot, crate::error::chain(&e)), Some(e)),
        };
        if let Link::Down { reason, .. } = &link {
            tracing::debug!(worker = %self.names[slot], %reason, "cannot connect to a worker");
        }
        links[slot] = link;
        self.notify_changed();
        refusal
    }

    /// A worker that failed to answer, skipped for a back-off that grows with each failure.
    pub(super) fn down(&self, slot: usize, reason: String) -> Link {
        let strikes = self.loads[slot].strikes.fetch_add(1, Ordering::Relaxed);
        Link::Down {
            retry_at: Instant::now() + backoff(strikes),
            reason,
        }
    }

    /// The connection `dead` to `slot` is gone: connect again (in the background), unless
    /// another caller already replaced it.
    pub(super) fn lost(&self, slot: usize, dead: &Client) {
        let mut links = self.lock();
        if matches!(&links[slot], Link::Up(c) if c.same_connection(dead)) {
            links[slot] = Link::Idle;
            self.notify_changed();
        }
    }

    /// A call to `slot` timed out while the worker answered nothing: skip it for a while.
    pub(super) fn timed_out(&self, slot: usize, client: &Client) {
        let mut links = self.lock();
        if matches!(&links[slot], Link::Up(c) if c.same_connection(client)) {
            tracing::debug!(worker = %self.names[slot], "a call timed out on a silent worker; skipping it");
            links[slot] = self.down(
                slot,
                "a call timed out and the worker answered nothing meanwhile".into(),
            );
            self.notify_changed();
        }
    }
}

/// How long a worker is skipped after `strikes` earlier consecutive failures, and this one.
pub(super) fn backoff(strikes: u32) -> Duration {
    BACKOFF_FIRST.saturating_mul(1 << strikes.min(16)).min(BACKOFF_MAX)
}

//! What bounds one peer's cost: connection slots per listener and refusals at the limit (the
//! clock that cuts a connection whose frame, or silence, lasts too long is in `clock`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{Frame, Welcome, PROTOCOL_VERSION};
use crate::service::ServiceInfo;
use crate::transport::Transport;
use crate::wait::Wait;

/// How many refusals may be under way at once; past it, extra connections are closed
/// without a word (and logged), so that a flood of connections costs at most this many
/// short-lived threads.
const MAX_REFUSING: usize = 4;

/// How long a refusal waits for the peer's hello, and then for the peer to close.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// The connections of one listener, counted against [`ServerConfig::max_connections`].
///
/// [`ServerConfig::max_connections`]: super::ServerConfig::max_connections
#[derive(Clone, Debug, Default)]
pub(super) struct Slots {
    taken: Arc<AtomicUsize>,
    refusing: Arc<AtomicUsize>,
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Slots {
    /// A slot, if fewer than `max` are taken.
    pub(super) fn take(&self, max: usize) -> Option<Slot> {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(Arc::clone(&self.taken)))
    }

    /// Refuses `transport` on a short-lived thread: reads its hello, answers with a refusal,
    /// and waits for the peer to close, so that the refusal is read rather than lost to a
    /// reset. At most [`MAX_REFUSING`] at once; past that the connection is just closed.
    /// Nothing of the service runs for it.
    pub(super) fn refuse(&self, mut transport: Transport, info: ServiceInfo, why: Refusal) {
        let peer = transport.peer.name.clone();
        let refusing = Arc::clone(&self.refusing);
        if refusing.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSING {
            refusing.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(%peer, "{why} and refusals busy; connection closed unanswered");
            return;
        }
        tracing::warn!(%peer, "{why}; connection refused");
        let spawned = std::thread::Builder::new()
            .name("procwire-refuse".into())
            .spawn(move || {
                let wait = Wait::timeout(REFUSAL_WAIT);
                let _hello = transport.recv(wait);
                let welcome = Welcome {
                    accepted: false,
                    version: PROTOCOL_VERSION,
                    service: info.name,
                    methods: Vec::new(),
                };
                let mut frame = Frame::new();
                frame
                    .encode(&welcome)
                    .expect("encoding a welcome into a Vec cannot fail");
                if transport.send(&mut frame, wait).is_ok() {
                    transport.sender.close();
                    // Until the peer closes, or the wait runs out: whatever it sends is dropped.
                    while transport.recv(wait).is_ok() {}
                }
                refusing.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.refusing.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Why a connection is refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The listener serves its maximum of connections.
    Full(usize),
    /// The peer's credentials are not in [`ServerConfig::allow`](super::ServerConfig::allow).
    NotAllowed(crate::transport::Credentials),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full(max) => write!(f, "connection limit of {max} reached"),
            Refusal::NotAllowed(peer) => write!(
                f,
                "peer pid {} with uid {} and gid {} is not allowed on this endpoint",
                peer.pid, peer.uid, peer.gid
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_past_the_maximum_are_refused_until_one_is_given_back() {
        let slots = Slots::default();
        let a = slots.take(2).expect("first");
        let _b = slots.take(2).expect("second");
        assert!(slots.take(2).is_none());
        drop(a);
        assert!(slots.take(2).is_some());
    }
}

//! What bounds one peer's cost: connection slots per listener, refusals at the limit, and the
//! clock that cuts a connection whose frame, or silence, lasts too long.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Why a connection is cut for its timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overdue {
    /// A frame began and did not end within the frame timeout.
    Frame(Duration),
    /// Nothing arrived, and no call ran, for the idle timeout.
    Idle(Duration),
}

impl std::fmt::Display for Overdue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overdue::Frame(limit) => write!(f, "a frame took longer than the frame timeout of {limit:?} to arrive"),
            Overdue::Idle(limit) => write!(
                f,
                "the connection was idle for longer than the idle timeout of {limit:?}"
            ),
        }
    }
}

/// When the current frame began and the last one ended, for one connection's receiver.
#[derive(Debug)]
pub(super) struct ReadClock {
    frame_timeout: Duration,
    idle_timeout: Option<Duration>,
    state: Mutex<Clock>,
}

#[derive(Debug)]
struct Clock {
    frame_started: Option<Instant>,
    last_frame: Instant,
}

impl ReadClock {
    pub(super) fn new(frame_timeout: Duration, idle_timeout: Option<Duration>) -> Self {
        ReadClock {
            frame_timeout,
            idle_timeout,
            state: Mutex::new(Clock {
                frame_started: None,
                last_frame: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clock> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a receive: whether it returned a frame, and whether one is now under way.
    pub(super) fn saw(&self, got_frame: bool, in_frame: bool) {
        let now = Instant::now();
        let mut clock = self.lock();
        if got_frame {
            clock.last_frame = now;
            clock.frame_started = None;
        }
        clock.frame_started = match (in_frame, clock.frame_started) {
            (false, _) => None,
            (true, started) => Some(started.unwrap_or(now)),
        };
    }

    /// The next moment something must have arrived, and what it is overdue as then; `busy`
    /// says whether a call runs (an idle timeout does not apply while one does).
    pub(super) fn deadline(&self, busy: bool) -> Option<(Instant, Overdue)> {
        let clock = self.lock();
        match (clock.frame_started, self.idle_timeout) {
            (Some(started), _) => Some((started + self.frame_timeout, Overdue::Frame(self.frame_timeout))),
            (None, Some(idle)) if !busy => Some((clock.last_frame + idle, Overdue::Idle(idle))),
            _ => None,
        }
    }

    /// What is overdue now, if anything.
    pub(super) fn overdue(&self, busy: bool) -> Option<Overdue> {
        self.deadline(busy)
            .and_then(|(at, why)| (Instant::now() >= at).then_some(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_under_way_has_a_deadline_and_a_finished_one_clears_it() {
        let clock = ReadClock::new(Duration::ZERO, None);
        assert_eq!(clock.deadline(false), None);
        clock.saw(false, true);
        assert_eq!(clock.overdue(false), Some(Overdue::Frame(Duration::ZERO)));
        clock.saw(true, false);
        assert_eq!(clock.overdue(false), None);
    }

    #[test]
    fn the_idle_timeout_does_not_apply_while_a_call_runs() {
        let clock = ReadClock::new(Duration::from_secs(30), Some(Duration::ZERO));
        assert_eq!(clock.overdue(true), None);
        assert_eq!(clock.overdue(false), Some(Overdue::Idle(Duration::ZERO)));
    }

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

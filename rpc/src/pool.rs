//! A client for a whole pool of workers: one connection to each worker's endpoint, each call
//! sent to the worker with the fewest calls outstanding.
//!
//! Each worker of the pool listens on an endpoint of its own (with `procwire up`, a pool's
//! `listen = ["unix:run/calc-{index}.sock"]`: the supervisor binds one socket per worker and
//! keeps it across restarts).
//!
//! # Routing
//!
//! Least outstanding: a call goes to the connected worker with the fewest calls in flight
//! from this pool, ties broken round robin. A worker that has calls in flight but has
//! answered none of them for [`STALLED_AFTER`] counts as stalled and is chosen only when
//! every worker is: so a worker that hangs (deadlocked, swapped out, SIGSTOPped) holds the
//! calls already sent to it, and no more.
//!
//! # Workers that do not answer
//!
//! A worker that fails to answer (connecting is refused, the handshake times out, a call
//! times out while the worker answers nothing else) is remembered and skipped for a back-off
//! that grows with each consecutive failure, from [`BACKOFF_FIRST`] to [`BACKOFF_MAX`]; it
//! is reset by the next answered call. Connecting and reconnecting are done by a background
//! thread, never on a caller's time while another worker can take the call: a socket whose
//! backlog accepts but that nobody serves costs the callers nothing. Only when no worker at
//! all is connected does a caller wait, until its deadline, for one to be.
//!
//! # Failures
//!
//! Every call has a deadline: its own, else the configuration's
//! [`call_timeout`](ClientConfig::call_timeout) ([`DEFAULT_CALL_TIMEOUT`] for
//! [`ClientConfig::for_pool`]). A call that fails with [`RpcError::Disconnected`] names the
//! worker and says whether it stopped or died; one that did not run
//! ([`Delivery::NotSent`]: never sent, or refused unread by a stopping worker) is sent to
//! another worker, and so is one of a method marked idempotent; each worker is tried at most
//! once. So is a call to a method the worker lacks or has with another signature
//! ([`RpcError::Incompatible`], never sent): during a rolling upgrade the workers already
//! upgraded answer the methods the others do not have yet.
//!
//! # Membership
//!
//! A pool whose workers come and go (`procwire scale`) is told of its new workers with
//! [`Pool::set_endpoints`]: calls made from then on go to those, connections to workers
//! still there are kept, and calls in flight finish where they were sent. The supervisor
//! does the telling for a pool client it is asked to keep up to date.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientConfig, PendingCall};

mod all;
use crate::endpoint::{Endpoint, EndpointError, ToEndpoint};
use crate::error::{Delivery, Ending, HandshakeError, RpcError};
use crate::service::ServiceInfo;
pub use all::WorkerReply;

mod attempts;
mod awaited;
mod links;

/// The call timeout of [`ClientConfig::for_pool`], the pool client's default. A pool exists
/// to route around a bad worker, and it can only learn that a worker hangs from a call that
/// times out: without a bound, a call sent to a hung worker would never return. Thirty
/// seconds is far above any call a pool should serve and still bounds a hang.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker may hold calls without answering any before it counts as stalled.
/// Only a preference follows from it, so a false alarm (a busy machine) costs little.
pub const STALLED_AFTER: Duration = Duration::from_millis(20);

/// How long a worker that failed to answer is first skipped.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);

/// The longest a worker that keeps failing is skipped between two tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// An untyped pool client; `#[procwire::service]` generates a typed one (`CalcPool`).
/// Cheap to clone: clones share the connections.
#[derive(Clone, Debug)]
pub struct Pool {
    /// The current workers; replaced whole by [`Pool::set_endpoints`], while calls in flight
    /// keep the one they started with.
    current: Arc<RwLock<Arc<Shared>>>,
}

/// A [`Pool`] that does not keep it alive ([`Pool::downgrade`]).
#[derive(Clone, Debug)]
pub struct WeakPool {
    current: std::sync::Weak<RwLock<Arc<Shared>>>,
}

impl WeakPool {
    /// The pool, while any clone of it is still held.
    pub fn upgrade(&self) -> Option<Pool> {
        self.current.upgrade().map(|current| Pool { current })
    }
}

#[derive(Debug)]
struct Shared {
    service: ServiceInfo,
    config: ClientConfig,
    /// Each worker's endpoint, or why its text is not one.
    endpoints: Vec<Result<Endpoint, EndpointError>>,
    /// Each worker's endpoint as printed in messages.
    names: Vec<String>,
    loads: Vec<Load>,
    links: Mutex<Vec<Link>>,
    /// Notified whenever a link changes.
    changed: Condvar,
    /// Awaited calls waiting for a link to change (see `pool/awaited.rs`).
    wakers: Mutex<Vec<std::task::Waker>>,
    /// Round-robin start of the next pick, for ties.
    next: AtomicUsize,
    /// The origin of the microsecond clocks in [`Load`].
    epoch: Instant,
}

/// The pool's connection to one worker.
#[derive(Debug)]
enum Link {
    /// Not connected, and nobody is connecting.
    Idle,
    /// Connected.
    Up(Client),
    /// A thread is connecting.
    Connecting,
    /// The worker failed to answer: skipped until `retry_at`.
    Down {
        /// When to try again.
        retry_at: Instant,
        /// The last failure.
        reason: String,
    },
}

/// Why connecting to a worker failed.
#[derive(Debug)]
enum ConnectFailure {
    /// Nobody answered there: refused, no such socket, a handshake that broke or timed out.
    Unreachable(String),
    /// The worker answered and refused the connection (another interface, say).
    Refused(HandshakeError),
}

/// What the pool's calls are doing on one worker.
#[derive(Debug, Default)]
struct Load {
    /// Calls in flight.
    outstanding: AtomicUsize,
    /// When the worker last answered, or began to be busy (µs since the epoch).
    progress_us: AtomicU64,
    /// Consecutive failures to answer.
    strikes: AtomicU32,
}

/// One call counted as outstanding on a worker, until dropped.
#[derive(Debug)]
pub(crate) struct Tracker {
    shared: Arc<Shared>,
    slot: usize,
    /// When the call was sent (µs since the epoch).
    started_us: u64,
}

impl Tracker {
    /// The worker answered the call.
    pub(crate) fn answered(&self) {
        let load = &self.shared.loads[self.slot];
        load.progress_us.store(self.shared.now_us(), Ordering::Relaxed);
        load.strikes.store(0, Ordering::Relaxed);
    }

    /// True if the worker answered nothing since this call was sent.
    fn silent_since_sent(&self) -> bool {
        self.shared.loads[self.slot].progress_us.load(Ordering::Relaxed) <= self.started_us
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.shared.loads[self.slot].outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool of the workers at `endpoints` (one per worker: [`Endpoint`]s, or their text
    /// like `unix:PATH`) serving `service`. Nothing is connected until the first call; a
    /// text that is not an endpoint makes that worker fail every connection with the reason.
    pub fn new(
        service: ServiceInfo,
        endpoints: impl IntoIterator<Item = impl ToEndpoint>,
        config: ClientConfig,
    ) -> Self {
        Pool {
            current: Arc::new(RwLock::new(Arc::new(Shared::new(service, endpoints, config)))),
        }
    }

    /// The pool's workers are now those at `endpoints` (one per worker, as for
    /// [`new`](Self::new)). Calls made from now on go to them; a connection to an endpoint
    /// still in the pool is kept, the others close once the calls in flight on them are
    /// done. Clones of this pool (and the typed pool it is in) see the change too.
    pub fn set_endpoints(&self, endpoints: impl IntoIterator<Item = impl ToEndpoint>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let new = Shared::new(current.service.clone(), endpoints, current.config.clone());
        {
            let old_links = current.lock();
            let mut new_links = new.lock();
            let mut taken = vec![false; old_links.len()];
            for (slot, endpoint) in new.endpoints.iter().enumerate() {
                let Ok(endpoint) = endpoint else { continue };
                let kept = (0..old_links.len()).find(|&old| {
                    !taken[old]
                        && matches!(old_links[old], Link::Up(_))
                        && current.endpoints[old].as_ref().is_ok_and(|e| e == endpoint)
                });
                if let Some(old) = kept {
                    taken[old] = true;
                    if let Link::Up(client) = &old_links[old] {
                        new_links[slot] = Link::Up(client.clone());
                    }
                }
            }
        }
        *current = Arc::new(new);
    }

    /// A handle on this pool that does not keep it alive: for a thread that maintains the
    /// pool (as a follower of its supervisor does) and should end once no one calls it.
    pub fn downgrade(&self) -> WeakPool {
        WeakPool {
            current: Arc::downgrade(&self.current),
        }
    }

    /// The current workers.
    fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many workers the pool has.
    pub fn len(&self) -> usize {
        self.shared().endpoints.len()
    }

    /// True if the pool has no worker.
    pub fn is_empty(&self) -> bool {
        self.shared().endpoints.is_empty()
    }

    /// Runs `call` on a worker, with the call's deadline: `deadline`, else the configured
    /// call timeout from now. A failure names the worker. A call that did not run, or any
    /// call if `idempotent`, is tried again on another worker after a disconnection, each
    /// worker at most once.
    pub fn call<R>(
        &self,
        method: &'static str,
        idempotent: bool,
        deadline: Option<Instant>,
        call: impl Fn(&Client, Option<Instant>) -> Result<R, RpcError>,
    ) -> Result<R, RpcError> {
        let deadline = self.shared().config.deadline(deadline);
        self.attempts(method, idempotent, deadline, |client, tracker| {
            let result = call(client, deadline);
            tracker.shared.observe(&tracker, client, &result);
            result
        })
    }

    /// Sends a one-way call with `send` on a worker, like [`call`](Self::call). Its success
    /// is no answer, so it tells nothing of the worker's health.
    pub fn notify(
        &self,
        method: &'static str,
        idempotent: bool,
        deadline: Option<Instant>,
        send: impl Fn(&Client, Option<Instant>) -> Result<(), RpcError>,
    ) -> Result<(), RpcError> {
        let deadline = self.shared().config.deadline(deadline);
        self.attempts(method, idempotent, deadline, |client, _tracker| send(client, deadline))
    }

    /// Starts `start` on a worker, like [`call`](Self::call), and counts the call as
    /// outstanding on it until the returned call is finished or dropped. Only a call that
    /// did not run is tried again elsewhere: once started, a call is the caller's.
    pub fn start<R>(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        start: impl Fn(&Client, Option<Instant>) -> Result<PendingCall<R>, RpcError>,
    ) -> Result<PendingCall<R>, RpcError> {
        let deadline = self.shared().config.deadline(deadline);
        self.attempts(method, false, deadline, |client, tracker| {
            start(client, deadline).map(|pending| pending.track(tracker))
        })
    }

    /// Runs `attempt` on one worker after another until one does not fail with a
    /// disconnection that allows a retry.
    fn attempts<T>(
        &self,
        method: &'static str,
        idempotent: bool,
        deadline: Option<Instant>,
        attempt: impl Fn(&Client, Tracker) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let sh = &self.shared();
        let mut tried = Vec::new();
        loop {
            let (client, tracker) = sh.pick(method, &tried, deadline)?;
            let slot = tracker.slot;
            let result = attempt(&client, tracker);
            if let Some(done) = sh.after_attempt(slot, &client, result, &mut tried, idempotent, deadline) {
                return done;
            }
        }
    }
}

impl Shared {
    fn new(service: ServiceInfo, endpoints: impl IntoIterator<Item = impl ToEndpoint>, config: ClientConfig) -> Self {
        let endpoints: Vec<Result<Endpoint, EndpointError>> = endpoints.into_iter().map(|e| e.to_endpoint()).collect();
        let names = endpoints
            .iter()
            .map(|e| match e {
                Ok(endpoint) => endpoint.to_string(),
                Err(error) => format!("an invalid endpoint ({error})"),
            })
            .collect();
        Shared {
            service,
            config,
            loads: endpoints.iter().map(|_| Load::default()).collect(),
            links: Mutex::new(endpoints.iter().map(|_| Link::Idle).collect()),
            endpoints,
            names,
            changed: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A connected worker for the next call, preferring those not in `avoid`, counted as
    /// outstanding on it. Waits, until `deadline`, only while no worker is connected.
    fn pick(
        self: &Arc<Self>,
        method: &'static str,
        avoid: &[usize],
        deadline: Option<Instant>,
    ) -> Result<(Client, Tracker), RpcError> {
        if self.endpoints.is_empty() {
            return Err(unreachable(method, "an empty pool", "the pool has no worker".into()));
        }
        let mut links = self.lock();
        let mut tried_myself = false;
        loop {
            let now = Instant::now();
            self.connect_in_background(&mut links, now);
            if let Some(slot) = self.least_loaded(&links, avoid, now) {
                match self.take(links, slot) {
                    Ok(picked) => return Ok(picked),
                    Err(relocked) => links = relocked,
                }
                continue;
            }
            if links.iter().any(|l| matches!(l, Link::Connecting)) {
                links = match deadline {
                    Some(d) if d <= now => return Err(no_worker_in_time(method)),
                    Some(d) => {
                        self.changed
                            .wait_timeout(links, d - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    None => self.changed.wait(links).unwrap_or_else(|e| e.into_inner()),
                };
                continue;
            }
            // Every worker is down: nothing to wait for but a worker tried on this caller's
            // time, once each.
            if tried_myself {
                return Err(self.all_down(&links, method));
            }
            tried_myself = true;
            drop(links);
            if let Some(refusal) = self.connect_all_now(deadline) {
                return Err(RpcError::Handshake(refusal));
            }
            links = self.lock();
        }
    }

    /// The connected worker with the fewest outstanding calls, stalled workers and those in
    /// `avoid` last, ties broken round robin.
    fn least_loaded(&self, links: &[Link], avoid: &[usize], now: Instant) -> Option<usize> {
        let n = links.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let stalled_us = STALLED_AFTER.as_micros() as u64;
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| matches!(links[i], Link::Up(_)))
            .min_by_key(|&i| {
                let load = &self.loads[i];
                let outstanding = load.outstanding.load(Ordering::Relaxed);
                let stalled =
                    outstanding > 0 && now_us.saturating_sub(load.progress_us.load(Ordering::Relaxed)) > stalled_us;
                (avoid.contains(&i), stalled, outstanding)
            })
    }

    fn track(self: &Arc<Self>, slot: usize) -> Tracker {
        let load = &self.loads[slot];
        let now_us = self.now_us();
        if load.outstanding.fetch_add(1, Ordering::Relaxed) == 0 {
            // The worker was idle: its silence starts now.
            load.progress_us.store(now_us, Ordering::Relaxed);
        }
        Tracker {
            shared: Arc::clone(self),
            slot,
            started_us: now_us,
        }
    }
}

fn unreachable(method: &'static str, peer: &str, reason: String) -> RpcError {
    RpcError::Disconnected {
        method,
        peer: peer.to_owned(),
        reason,
        delivery: Delivery::NotSent,
        ending: Ending::Unreachable,
    }
}

fn no_worker_in_time(method: &'static str) -> RpcError {
    RpcError::DeadlineExceeded {
        method,
        peer: "the pool (no worker connected in time)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::links::backoff;
    use super::*;

    #[test]
    fn the_back_off_doubles_with_each_consecutive_failure_up_to_its_maximum() {
        let delays: Vec<Duration> = (0..10).map(backoff).collect();
        assert_eq!(delays[0], BACKOFF_FIRST);
        assert_eq!(delays[1], BACKOFF_FIRST * 2);
        assert_eq!(delays[3], BACKOFF_FIRST * 8);
        assert_eq!(delays[9], BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_pool_whose_every_worker_is_absent_names_each_and_says_the_call_did_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let endpoints = ["a", "b"].map(|n| format!("unix:{}", dir.path().join(n).display()));
        let pool = Pool::new(ServiceInfo::new("calc"), &endpoints, ClientConfig::for_pool());
        let err = pool.call("add", false, None, |_, _| Ok(())).unwrap_err();
        assert!(
            matches!(
                err,
                RpcError::Disconnected {
                    method: "add",
                    delivery: Delivery::NotSent,
                    ending: Ending::Unreachable,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        eprintln!("{text}");
        for endpoint in &endpoints {
            let why = format!("{endpoint}: connect on {endpoint} failed: No such file or directory");
            assert!(text.contains(&why), "{text}");
        }
    }

    #[test]
    fn a_pool_told_of_other_endpoints_tries_those_from_its_next_call_on() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b, c] = ["a", "b", "c"].map(|n| format!("unix:{}", dir.path().join(n).display()));
        let pool = Pool::new(ServiceInfo::new("calc"), [&a, &b], ClientConfig::for_pool());
        let clone = pool.clone();
        pool.set_endpoints([&c]);
        assert_eq!(clone.len(), 1, "clones share the membership");
        let text = clone.call("add", false, None, |_, _| Ok(())).unwrap_err().to_string();
        assert!(text.contains(&c) && !text.contains(&a) && !text.contains(&b), "{text}");
    }

    #[test]
    fn a_text_that_is_not_an_endpoint_fails_the_calls_with_the_reason() {
        let pool = Pool::new(ServiceInfo::new("calc"), ["udp:1.2.3.4:5"], ClientConfig::default());
        let err = pool.call("add", false, None, |_, _| Ok(())).unwrap_err();
        assert!(
            err.to_string()
                .contains("endpoints are \"unix:PATH\", \"tcp:HOST:PORT\" (authenticated), \"tcp+plain:HOST:PORT\""),
            "{err}"
        );
    }
}

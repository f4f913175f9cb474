//! The concurrent server.
//!
//! One acceptor thread per listener; per connection, a small set of threads, each of which
//! reads a request, runs the handler and writes the reply itself. Idle threads sleep in
//! their own epoll sets, where the connection's descriptor is registered with
//! `EPOLLEXCLUSIVE`, so a request wakes exactly one of them; requests one read brought wake
//! another thread as [`backlog`] decides (at once, or on one CPU only if they wait behind a
//! call that blocks). A thread that takes a request
//! while no other is idle starts one more (up to
//! [`ServerConfig::max_calls_per_connection`]), so that a slow call never holds up the next
//! request. A lone caller thus costs no thread hand-off, slow calls do not block fast ones on
//! the same connection, and one connection's troubles stay on its own threads.

use std::os::fd::BorrowedFd;

use nix::sys::eventfd::{EfdFlags, EventFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::time::{Duration, Instant};

use crate::error::{ServerError, TransportError};
use crate::outbox::{Outbox, SendError};
use crate::protocol::{fault_frame, Envelope, Fault, FaultKind, Kind};
use crate::service::{Args, CallContext, Service};
use crate::transport::{FrameReceiver, Interrupt, Listener, Payload, PeerInfo, Transport};
use crate::wait::Wait;

mod accept;
mod access;
mod backlog;
mod calls;
mod clock;
mod config;
mod handshake;
mod limits;
mod waiter;

use accept::accept_loop;
pub use access::{Access, AccessEnvError, ALLOW_GIDS_ENV, ALLOW_UIDS_ENV};
use backlog::Backlog;
use calls::{Calls, Seat};
use clock::ReadClock;
use config::HandshakeHook;
pub use config::{ServerConfig, DEFAULT_MAX_CONNECTIONS};
use handshake::handshake;
pub(crate) use handshake::handshake as fuzz_handshake;
pub(crate) use handshake::mismatch;
use limits::Slot;
use waiter::Waiter;

/// Serves a [`Service`] on a listener or on single connections.
#[derive(Debug)]
pub struct Server<S> {
    service: Arc<S>,
    config: ServerConfig,
}

impl<S: Service> Server<S> {
    /// A server for `service` with the default configuration.
    pub fn new(service: S) -> Self {
        Server {
            service: Arc::new(service),
            config: ServerConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    fn shared(&self) -> Result<Arc<Shared>, ServerError> {
        Ok(Arc::new(Shared {
            interrupt: Interrupt::new().map_err(ServerError::Spawn)?,
            stopping: AtomicBool::new(false),
            live: Mutex::new(0),
            idle: Condvar::new(),
            failure: Mutex::new(None),
        }))
    }

    /// Accepts and serves connections on `listener` in the background until the returned
    /// handle stops it.
    pub fn spawn(self, mut listener: impl Listener) -> Result<ServerHandle, ServerError> {
        let shared = self.shared()?;
        listener.set_interrupt(shared.interrupt.clone());
        let (service, config, sh) = (self.service, self.config, Arc::clone(&shared));
        spawn_tracked(&shared, "procwire-accept", move || {
            accept_loop(listener, service, config, sh)
        })?;
        Ok(ServerHandle { shared })
    }

    /// Serves the one connection `transport` (a pipe pair, a FIFO pair, an inherited
    /// socket) in the background. [`ServerHandle::wait`] returns when it ends.
    pub fn spawn_connection(self, transport: Transport) -> Result<ServerHandle, ServerError> {
        let shared = self.shared()?;
        start_connection(transport, self.service, self.config, &shared, None)?;
        Ok(ServerHandle { shared })
    }
}

/// Controls a running server. Dropping it stops the server gracefully, like
/// [`stop`](Self::stop).
#[derive(Debug)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

/// Stops a server from another thread (a signal handler thread, say).
#[derive(Clone, Debug)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl Stopper {
    /// Begins a graceful stop; [`ServerHandle::wait`] returns once it is complete.
    pub fn stop(&self) {
        self.shared.begin_stop();
    }
}

impl ServerHandle {
    /// Stops gracefully: stops accepting, lets calls in flight finish and send their replies,
    /// closes every connection, and returns when all server threads have ended.
    pub fn stop(self) -> Result<(), ServerError> {
        self.shared.begin_stop();
        self.wait()
    }

    /// Waits until the server has ended: stopped through a [`Stopper`], its only connection
    /// closed (for [`Server::spawn_connection`]), or its listener failed.
    pub fn wait(self) -> Result<(), ServerError> {
        self.shared.wait_idle();
        match self.shared.failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A handle that can stop the server from elsewhere.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.begin_stop();
        self.shared.wait_idle();
    }
}

#[derive(Debug)]
struct Shared {
    interrupt: Interrupt,
    stopping: AtomicBool,
    /// Server threads still running.
    live: Mutex<usize>,
    idle: Condvar,
    /// Why the server ended, if not by a stop.
    failure: Mutex<Option<ServerError>>,
}

impl Shared {
    fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.interrupt.fire();
    }

    fn wait_idle(&self) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        while *live > 0 {
            live = self.idle.wait(live).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// How long a server thread holds replies back for one write at most (see `Conn::run`).
const HOLD_REPLIES_FOR: Duration = Duration::from_micros(100);

/// What became of a call's reply ([`Conn::handle`]).
enum Reply {
    /// Written, or attempted (it went with the replies held back, if any).
    Sent,
    /// Queued for the next write.
    Deferred,
    /// None is sent (a one-way call).
    None,
}

/// Counts a server thread for [`Shared::wait_idle`], even if it panics.
struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut live = self.0.live.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        if *live == 0 {
            self.0.idle.notify_all();
        }
    }
}

fn spawn_tracked(shared: &Arc<Shared>, name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ServerError> {
    *shared.live.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let guard = LiveGuard(Arc::clone(shared));
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _guard = guard;
            f()
        })
        .map(drop)
        .map_err(ServerError::Spawn)
}

struct Conn<S> {
    service: Arc<S>,
    config: ServerConfig,
    shared: Arc<Shared>,
    receiver: Mutex<Box<dyn FrameReceiver>>,
    outbox: Outbox,
    peer: Arc<PeerInfo>,
    /// The calls running now, a seat per thread (what a cancel looks for).
    calls: Calls,
    /// Threads of this connection, and how many of them wait to read.
    threads: AtomicUsize,
    idle: AtomicUsize,
    /// Set while an idle thread sleeps with the descriptor (one CPU; see `server/waiter.rs`).
    watching: AtomicBool,
    closed: AtomicBool,
    /// Written when requests are buffered in the receiver: wakes one idle thread.
    wake: EventFd,
    /// When to write `wake` (at once, or after a grace period on one CPU).
    backlog: Backlog,
    /// Fired when the connection stops reading: wakes every thread.
    ended: Interrupt,
    /// How long the current frame, or the silence, has lasted.
    clock: ReadClock,
    /// The listener's count of connections, while this one lives.
    _slot: Option<Slot>,
    /// The key the client authenticated with, if the transport authenticates.
    key_name: Option<Arc<str>>,
}

/// The earlier of two optional moments.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long a stopping server waits for room to queue its goodbye.
const GOODBYE_TIMEOUT: Duration = Duration::from_millis(100);

fn start_connection<S: Service>(
    mut transport: Transport,
    service: Arc<S>,
    config: ServerConfig,
    shared: &Arc<Shared>,
    slot: Option<Slot>,
) -> Result<(), ServerError> {
    // A connection without a listener's slot is the server's only one.
    let only = slot.is_none();
    transport.set_max_frame_len(config.max_frame_len);
    transport.receiver.set_interrupt(shared.interrupt.clone());
    transport.receiver.set_budget(config.frame_budget.clone());
    let sh = Arc::clone(shared);
    spawn_tracked(shared, "procwire-conn", move || {
        let peer = transport.peer.name.clone();
        if let Err(e) = handshake(&mut transport, &service, config.handshake_timeout) {
            tracing::warn!(%peer, error = %crate::error::ErrorChain(&e), "handshake failed; connection closed");
            if let Some(HandshakeHook(hook)) = &config.handshake_failed {
                hook(&e);
            }
            if only {
                // The server's one connection failed: that is how the server ended.
                *sh.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(ServerError::Handshake(e));
            }
            return;
        }
        let wakers = EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_SEMAPHORE,
        )
        .map_err(std::io::Error::from)
        .and_then(|wake| Ok((wake, Interrupt::new()?)));
        let (wake, ended) = match wakers {
            Ok(wakers) => wakers,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot create eventfds; connection closed");
                return;
            }
        };
        let Transport { sender, receiver, peer } = transport;
        let key_name = receiver.authenticated_as().map(Arc::from);
        let conn = Arc::new(Conn {
            key_name,
            clock: ReadClock::new(config.frame_timeout, config.idle_timeout),
            _slot: slot,
            outbox: Outbox::new(
                sender,
                config.buffering,
                peer.name.clone(),
                config.max_frame_len,
                Some(config.write_timeout),
            ),
            service,
            config,
            shared: sh,
            receiver: Mutex::new(receiver),
            peer: Arc::new(peer),
            calls: Calls::default(),
            threads: AtomicUsize::new(1),
            idle: AtomicUsize::new(0),
            watching: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            wake,
            backlog: Backlog::new(),
            ended,
        });
        conn.run();
    })
}

impl<S: Service> Conn<S> {
    /// The loop every thread of the connection runs: take the next request, run it, repeat.
    ///
    /// Threads that find nothing to read sleep in their own epoll set, where the connection's
    /// descriptor is registered with `EPOLLEXCLUSIVE`: a request wakes exactly one of them.
    /// A lone caller is served by whichever thread wakes, with no hand-off between threads;
    /// while one thread runs a slow call, the next request wakes another.
    fn run(self: Arc<Self>) {
        let waiter = {
            let receiver = self.receiver.lock().unwrap_or_else(|e| e.into_inner());
            receiver
                .readiness_fd()
                .and_then(|fd| self.waiter(fd, receiver.liveness_fd()).ok())
        };
        let wait = if waiter.is_some() { Wait::NonBlock } else { Wait::Block };
        let seat = self.calls.seat();
        let mut ctx = self.context(&seat);
        // The last small request's buffer, for the receiver to reuse.
        let mut spare: Option<Vec<u8>> = None;
        // When this thread queued the first of the replies it holds back unwritten, for the
        // next write (see `handle`), if it holds any.
        let mut held: Option<Instant> = None;
        loop {
            if self.done() {
                break;
            }
            let mut receiver = match &waiter {
                Some(waiter) => {
                    // Sleep first unless requests are already buffered: when the descriptor
                    // has data, epoll returns at once, and otherwise a read would only say
                    // EAGAIN. Only the thread that gets the receiver prepares (a transport may
                    // spin there); the others sleep until woken, rather than queue on the lock
                    // and take turns spinning on a CPU the running handler needs.
                    let ready = match self.receiver.try_lock() {
                        Ok(mut receiver) => self.look_before_sleep(&mut **receiver, &mut held).then_some(receiver),
                        Err(TryLockError::Poisoned(e)) => {
                            let mut receiver = e.into_inner();
                            self.look_before_sleep(&mut **receiver, &mut held).then_some(receiver)
                        }
                        Err(TryLockError::WouldBlock) => None,
                    };
                    match ready {
                        Some(receiver) => receiver,
                        None => {
                            // Nothing more to take now: the replies held back go out
                            // before this thread sleeps.
                            self.write_held(&mut held);
                            self.idle.fetch_add(1, Ordering::SeqCst);
                            let until = self.clock.deadline(self.busy()).map(|(at, _)| at);
                            // A spare thread also wakes to see whether it is still needed.
                            let spare_until = (self.threads.load(Ordering::SeqCst) > 1)
                                .then(|| Instant::now() + self.config.spare_thread_timeout);
                            seat.sleeping(until);
                            let woken =
                                waiter.wait(&self.watching, &self.wake, &self.backlog, earliest(until, spare_until));
                            seat.awake();
                            self.idle.fetch_sub(1, Ordering::SeqCst);
                            // Woken by the backlog timer, perhaps, for replies another
                            // thread held back before its handler stalled.
                            self.flush_deferred();
                            let receiver = self.receiver.lock().unwrap_or_else(|e| e.into_inner());
                            match woken {
                                Err(e) => {
                                    drop(receiver);
                                    self.close(&format!("epoll_wait failed: {e}"));
                                    break;
                                }
                                // Checked under the receiver's lock, which every receive
                                // holds while it updates the clock.
                                Ok(false) => {
                                    if let Some(why) = self.clock.overdue(self.busy()) {
                                        drop(receiver);
                                        self.cut("read timeout", why.to_string());
                                        break;
                                    }
                                    // Nothing to do for the spare thread timeout: leave, if
                                    // another thread sleeps (it answers the next request)
                                    // and keeps the time.
                                    if spare_until.is_some_and(|at| Instant::now() >= at) && self.may_leave(&seat) {
                                        break;
                                    }
                                }
                                Ok(true) => {}
                            }
                            if self.done() {
                                break;
                            }
                            receiver
                        }
                    }
                }
                None => self.receiver.lock().unwrap_or_else(|e| e.into_inner()),
            };
            if self.done() {
                break;
            }
            if let Some(buf) = spare.take() {
                receiver.recycle(buf);
            }
            let received = receiver.recv_payload(wait);
            self.clock.saw(received.is_ok(), receiver.in_frame());
            let payload = match received {
                Ok(payload) => payload,
                // Another thread took what woke us, or only part of a frame has arrived. A
                // thread woken for nothing while another waits leaves: spare threads only
                // multiply the wake-ups each arriving chunk of data causes. Unless it is the
                // one to keep the time: a frame under way or an idle connection must be
                // timed by a thread that sleeps with its deadline.
                // With one watcher (one CPU) no spare thread is woken by arriving data: one
                // woken for nothing was sent by the backlog timer, and stays.
                Err(TransportError::WouldBlock { .. }) => {
                    if !waiter.as_ref().is_some_and(Waiter::shares_watch) && self.may_leave(&seat) {
                        break;
                    }
                    continue;
                }
                Err(e @ TransportError::BudgetExhausted { .. }) => {
                    self.cut("frame budget exhausted", e.to_string());
                    break;
                }
                Err(TransportError::Interrupted { .. } | TransportError::Closed { .. }) => {
                    // Stopping, or the client is done sending: calls in flight still get their
                    // replies; the last thread out closes the connection.
                    self.finish();
                    break;
                }
                Err(e @ TransportError::FrameTooLarge { .. }) => {
                    self.violation(format!("{e}"));
                    break;
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer.name, error = %e, "connection failed");
                    self.close(&e.to_string());
                    break;
                }
            };
            let (envelope, at) = match Envelope::decode(payload.head()) {
                Ok((envelope, body)) => (envelope, payload.head().len() - body.len()),
                Err(e) => {
                    self.violation(format!("undecodable frame: {e}"));
                    break;
                }
            };
            match envelope.kind {
                Kind::Call | Kind::OneWay => {}
                Kind::Cancel => {
                    self.calls.cancel(envelope.id);
                    continue;
                }
                kind => {
                    self.violation(format!("unexpected {kind:?} frame from a client"));
                    break;
                }
            }
            // Keep a thread free to notice the next request while this one runs.
            if self.idle.load(Ordering::SeqCst) == 0
                && self.threads.load(Ordering::SeqCst) < self.config.max_calls_per_connection
            {
                self.threads.fetch_add(1, Ordering::SeqCst);
                let conn = Arc::clone(&self);
                if spawn_tracked(&self.shared, "procwire-conn", move || conn.run()).is_err() {
                    self.threads.fetch_sub(1, Ordering::SeqCst);
                }
            }
            // Requests already read from the descriptor wake no one by themselves; nor do
            // new ones the reserve threads (one CPU) while no thread watches.
            // On one CPU, where this thread takes the next request itself, its reply waits
            // for the next one's, so that one write carries the replies of requests that
            // came in one read; the timer, kept set while replies are held back, wakes a
            // helper to write them if a handler holds them up: only while one sleeps to be
            // woken (not with `max_calls_per_connection(1)`, nor while every thread is busy).
            let mut defer = false;
            // Whether the timer, kept for the replies held back, is unset once they are
            // written: as it would have been now, had none been held back.
            let mut settle = false;
            if let Some(waiter) = &waiter {
                let unwatched = waiter.shares_watch()
                    && self.idle.load(Ordering::SeqCst) > 0
                    && !self.watching.load(Ordering::SeqCst);
                let more = receiver.has_buffered();
                defer = more && self.backlog.is_deferred() && self.idle.load(Ordering::SeqCst) > 0;
                settle = !more && held.is_some() && !unwatched;
                if more || held.is_some() {
                    self.backlog.waiting(&self.wake);
                } else if unwatched {
                    self.backlog.unwatched(&self.wake);
                } else {
                    self.backlog.drained();
                }
            }
            // Register the call before letting go of the receiver, so that a cancel read by
            // another thread right after finds it.
            seat.start(envelope.id, envelope.kind == Kind::Call);
            drop(receiver);
            // Held back while a helper slept; none does now (all busy): they go before a
            // handler that may block, which no helper could then write them behind.
            if self.idle.load(Ordering::SeqCst) == 0 {
                self.write_held(&mut held);
            }
            let mut args = Args::new(payload, at);
            match self.handle(&mut ctx, envelope, &mut args, &seat, defer) {
                Reply::Deferred => {
                    held.get_or_insert_with(Instant::now);
                }
                // Written with those held back, if any.
                Reply::Sent => {
                    if held.take().is_some() && settle {
                        self.backlog.drained();
                    }
                }
                Reply::None => {}
            }
            // Requests that keep coming (a stream of one-way calls, or a ring the client
            // keeps filling) hold replies back no longer than this.
            if held.is_some_and(|since| since.elapsed() >= HOLD_REPLIES_FOR) {
                self.write_held(&mut held);
            }
            match args.into_payload() {
                Payload::Whole(buf) if buf.capacity() < crate::buffers::POOLED_MIN => spare = Some(buf),
                payload => payload.give_back(),
            }
        }
        self.write_held(&mut held);
        drop(ctx);
        drop(seat);
        if self.threads.fetch_sub(1, Ordering::SeqCst) == 1 {
            if self.shared.stopping.load(Ordering::SeqCst) {
                // Every call read has been answered, and no other will be read: say so, so
                // that the client knows its unanswered calls did not run (safe to retry).
                let goodbye = Fault::new(FaultKind::Stopping, "the server is stopping");
                let _ = self
                    .outbox
                    .send(fault_frame(0, 0, &goodbye), Wait::timeout(GOODBYE_TIMEOUT));
            }
            // Replies already accepted are written before the connection closes.
            self.outbox.close_gracefully("server closed the connection");
        }
    }

    /// True if `seat`'s thread may end, the connection keeping another: one sleeps (which
    /// answers the next request), and the connection's deadline, if any, is kept by a
    /// thread other than this one: one that sleeps with it (or an earlier one). Called
    /// under the receiver's lock: of two threads deciding at once, the second no longer
    /// counts the first as sleeping.
    fn may_leave(&self, seat: &Seat) -> bool {
        if self.idle.load(Ordering::SeqCst) == 0 || self.threads.load(Ordering::SeqCst) <= 1 {
            return false;
        }
        // With one watcher, the one sleeping must be it (a reserve thread would not see a
        // request arrive). Off one CPU `watching` is never set: every idle thread watches.
        if self.backlog.is_deferred() && !self.watching.load(Ordering::SeqCst) {
            return false;
        }
        match self.clock.deadline(self.busy()) {
            None => true,
            Some((at, _)) => self.calls.timed_by_another(seat, at),
        }
    }

    /// True while a call of this connection runs (the idle timeout waits for it).
    fn busy(&self) -> bool {
        self.calls.busy()
    }

    fn done(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.shared.stopping.load(Ordering::SeqCst)
    }

    /// No more requests will be read: wake every thread of the connection to leave.
    fn finish(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.ended.fire();
    }

    /// This thread's epoll set (see [`Waiter::new`]).
    fn waiter(&self, fd: BorrowedFd<'_>, liveness: Option<BorrowedFd<'_>>) -> nix::Result<Waiter> {
        Waiter::new(
            fd,
            &self.wake,
            self.backlog.timer_fd(),
            &[self.shared.interrupt.as_fd(), self.ended.as_fd()],
            liveness,
        )
    }

    /// A thread's call context. What stays the same from call to call (the peer, the key,
    /// the seat's cancel flag, the outbox) is set here once: each `Arc` cloned per call cost
    /// two atomic read-modify-writes. [`handle`](Self::handle) sets the rest.
    fn context(&self, seat: &Seat) -> CallContext {
        CallContext {
            envelope: Envelope {
                id: 0,
                kind: Kind::Call,
                method: 0,
                timeout_us: None,
            },
            deadline: None,
            peer: Arc::clone(&self.peer),
            key_name: self.key_name.clone(),
            cancelled: seat.cancel_flag(),
            replies: Some(self.outbox.replies()),
        }
    }

    /// True if `receiver` may have a request now; false if this thread, the one that holds
    /// the receiver, should sleep. The replies it held back go out before the receiver's
    /// last look, which may spin (`prepare_sleep`): they are not held up by it. While
    /// another of the connection's threads is awake (a handler runs), the look is the short
    /// one, `prepare_wait`: a longer spin could hold the CPU that handler needs.
    fn look_before_sleep(&self, receiver: &mut dyn FrameReceiver, held: &mut Option<Instant>) -> bool {
        if receiver.has_buffered() {
            return true;
        }
        self.write_held(held);
        let awake = self.threads.load(Ordering::SeqCst) - self.idle.load(Ordering::SeqCst);
        match awake {
            0 | 1 => receiver.prepare_sleep(),
            _ => receiver.prepare_wait(),
        }
    }

    /// Writes the replies this thread holds back (`held`), if any.
    fn write_held(&self, held: &mut Option<Instant>) {
        if held.take().is_some() {
            self.flush_deferred();
        }
    }

    /// Writes the replies held back (by any thread) and any other frames queued.
    fn flush_deferred(&self) {
        if let Err(e) = self.outbox.flush() {
            tracing::debug!(peer = %self.peer.name, error = ?e, "cannot send replies");
        }
    }

    /// Runs one call and sends its reply; with `defer`, the reply (unless the handler sent
    /// it in place) is queued for the next write instead, if the outbox has room.
    fn handle(&self, ctx: &mut CallContext, envelope: Envelope, args: &mut Args, seat: &Seat, defer: bool) -> Reply {
        ctx.envelope = envelope;
        ctx.deadline = envelope
            .timeout_us
            .and_then(|us| Instant::now().checked_add(Duration::from_micros(us)));
        let ctx = &*ctx;
        let outcome = catch_unwind(AssertUnwindSafe(|| self.service.call_args(ctx, args)));
        seat.finish();
        let frame = match outcome {
            Ok(Ok(frame)) => frame,
            Ok(Err(fault)) => ctx.fault(&fault),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".into());
                let method = self.service.method_name(envelope.method).unwrap_or("?");
                tracing::error!(peer = %self.peer.name, method, %message, "handler panicked");
                ctx.fault(&Fault::new(
                    FaultKind::Panicked,
                    format!("method `{method}` panicked: {message}"),
                ))
            }
        };
        if envelope.kind == Kind::OneWay {
            return Reply::None;
        }
        if frame.is_sent() {
            return Reply::Sent;
        }
        let frame = match defer {
            true => match self.outbox.defer(frame) {
                Ok(None) => return Reply::Deferred,
                Ok(Some(frame)) => Ok(frame),
                Err(e) => Err(e),
            },
            false => Ok(frame),
        };
        match frame.and_then(|frame| self.outbox.send(frame, Wait::Block)) {
            Ok(()) => {}
            Err(SendError::TooLarge(e)) => {
                // The caller still gets an answer: why there is no reply.
                let method = self.service.method_name(envelope.method).unwrap_or("?");
                let fault = Fault::new(
                    FaultKind::BadReply,
                    format!("the reply of `{method}` cannot be sent: {e}"),
                );
                let _ = self.outbox.send(ctx.fault(&fault), Wait::Block);
            }
            Err(SendError::Closed(reason)) => {
                // The outbox gave up on the client (it read nothing for the write timeout,
                // or it is gone): read no more of its calls, so that its threads end.
                if !self.closed.swap(true, Ordering::SeqCst) {
                    tracing::warn!(peer = %self.peer.name, %reason, "cannot send a reply; closing the connection");
                }
                self.ended.fire();
            }
            Err(e) => tracing::debug!(peer = %self.peer.name, error = ?e, "cannot send a reply"),
        }
        Reply::Sent
    }

    fn close(&self, reason: &str) {
        self.finish();
        self.outbox.close(reason);
    }

    /// The client broke the protocol: tell it why, then close the connection.
    fn violation(&self, detail: String) {
        self.cut("protocol violation", detail);
    }

    /// The client broke the protocol or a limit (`what`): tell it why, then close the
    /// connection.
    fn cut(&self, what: &str, detail: String) {
        tracing::warn!(peer = %self.peer.name, %detail, "{what}; closing the connection");
        let frame = fault_frame(0, 0, &Fault::new(FaultKind::Protocol, detail.clone()));
        let _ = self.outbox.send(frame, Wait::timeout(Duration::from_millis(100)));
        // Gracefully, so that the complaint is written even if it had to queue.
        self.finish();
        self.outbox.close_gracefully(&detail);
    }
}

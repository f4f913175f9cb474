//! The supervisor's policy as a pure state machine: fed events and a clock, it answers with
//! actions. No processes, no system calls, no real time: the event loop turns OS events into
//! [`Event`]s and carries out the [`Action`]s, and the tests drive it with a fake clock.
//!
//! What it decides: dependency order (a pool starts when every `after` condition holds),
//! restarts by policy (`always`, `on-failure`, `never`), restarts at once after a run that
//! counts as started and backoff with jitter over consecutive failed starts, each worker's
//! restart intensity within a sliding window and its give-up after too many failed starts,
//! one-for-one and one-for-all, readiness and watchdog deadlines, and the ordered shutdown
//! (reverse dependency order, `stop_signal`, then SIGKILL after `stop_timeout`, everything
//! killed at `shutdown_timeout`).

pub mod backoff;
mod control;
mod reload;
mod restart;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::manifest::{Condition, Manifest, Pool, Ready, Signal};
use backoff::{Intensity, Rng};
pub use control::{Desired, Manual, PoolView, WorkerView};

/// A pool, by its position in the manifest.
pub type PoolId = usize;

/// One worker: its pool and its index in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId {
    /// The pool.
    pub pool: PoolId,
    /// The index within the pool, from 0.
    pub index: u32,
}

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It ended, but how is unknown: something else in the program collected its exit
    /// status first (an embedded supervisor's host calling `waitpid(-1)`, say).
    Unknown,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {}", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
            Exit::Unknown => f.write_str("an exit status someone else collected"),
        }
    }
}

/// Something that happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Start: pools without dependencies start.
    Begin,
    /// A [`Action::Spawn`] succeeded.
    Spawned(WorkerId),
    /// A [`Action::Spawn`] failed before the program ran.
    SpawnFailed(WorkerId, String),
    /// The worker reported readiness (`READY=1`, a probe).
    Ready(WorkerId),
    /// The worker sent `WATCHDOG=1`.
    Heartbeat(WorkerId),
    /// The worker's process ended.
    Exited(WorkerId, Exit),
    /// A timer set by [`Action::SetTimer`] fired.
    Timer(TimerKey),
    /// Graceful shutdown requested (TERM, INT).
    Shutdown,
    /// Immediate shutdown requested (a second INT).
    Kill,
}

/// What a timer is for; setting a key again moves its timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    /// Restart the worker after its backoff.
    Restart(WorkerId),
    /// The worker was asked to stop; kill it now.
    StopDeadline(WorkerId),
    /// The worker did not become ready in time.
    ReadyDeadline(WorkerId),
    /// The worker's watchdog ran out.
    Watchdog(WorkerId),
    /// The whole shutdown ran out of time.
    Shutdown,
}

/// Something to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start the worker's process; answer with [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn(WorkerId),
    /// Send the signal to the worker's process group.
    Signal(WorkerId, Signal),
    /// SIGKILL the worker's process group.
    Kill(WorkerId),
    /// Fire [`Event::Timer`] with this key at this instant.
    SetTimer(TimerKey, Instant),
    /// Forget this timer.
    CancelTimer(TimerKey),
    /// Tell the operator (reloads, pools that cannot start, the shutdown).
    Log(String),
    /// Tell the operator about one worker (ready, exited, restarting and after what delay,
    /// given up, missed deadlines); the event loop names it with its pid.
    Report(WorkerId, String),
    /// Something in a worker's life that the control plane streams (`procwire events`).
    Lifecycle(WorkerId, Lifecycle),
    /// The supervisor is done: exit with this code.
    Exit(i32),
}

/// A step in a worker's life, for those following the supervisor's events.
#[derive(Clone, Debug, PartialEq)]
pub enum Lifecycle {
    /// It became ready.
    Ready,
    /// Its process ended.
    Exited(Exit),
    /// It is started again after this delay (zero: at once).
    Restarting(Duration),
    /// It is given up; why.
    GaveUp(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not started yet: its pool waits for dependencies.
    Pending,
    /// Waiting out its backoff before a restart.
    Backoff,
    /// Asked to spawn, not yet answered.
    Spawning,
    /// Running, not ready yet.
    Starting,
    /// Running and ready.
    Running,
    /// Asked to stop; restarted afterwards if `restart` is set.
    Stopping { restart: bool },
    /// Exited for good (no restart due).
    Done { success: bool },
    /// Its pool gave up, or the supervisor is shutting down.
    Down,
}

impl State {
    fn is_alive(self) -> bool {
        matches!(
            self,
            State::Spawning | State::Starting | State::Running | State::Stopping { .. }
        )
    }
}

#[derive(Clone, Debug)]
struct Worker {
    state: State,
    /// When the current process became ready, if it did.
    ready_at: Option<Instant>,
    /// Consecutive failed starts, for the backoff and the give-up.
    failures: u32,
    /// Its restarts in the limit's window.
    intensity: Intensity,
    /// Its last few exits, for the give-up message.
    recent: VecDeque<Exit>,
    /// Spawned at least once.
    ever_spawned: bool,
    /// Being stopped only because a sibling failed (one-for-all) or for a rolling restart:
    /// its exit is not a failure of its own.
    sibling_stop: bool,
    /// What the operator wants of it: stopped by hand, it stays down until started.
    desired: Desired,
    /// Starts after its first, for `procwire status`.
    restarts: u32,
    /// When its current (or last) process started.
    spawned_at: Option<Instant>,
}

impl Worker {
    fn new() -> Self {
        Worker {
            state: State::Pending,
            ready_at: None,
            failures: 0,
            intensity: Intensity::default(),
            recent: VecDeque::new(),
            ever_spawned: false,
            sibling_stop: false,
            desired: Desired::Running,
            restarts: 0,
            spawned_at: None,
        }
    }
}

#[derive(Clone, Debug)]
struct PoolState {
    spec: Pool,
    after: Vec<(PoolId, Condition)>,
    workers: Vec<Worker>,
    started: bool,
    /// Given up as a whole (a one-for-all pool past its limit).
    failed: bool,
    /// Can never start: a dependency failed.
    blocked: bool,
    /// Removed or replaced by a reload: its workers stop and it is never started again.
    retired: bool,
    /// The pool this one replaces after a reload; it starts once that one is down.
    replaces: Option<PoolId>,
    /// A rolling restart is under way: the index of the worker being restarted.
    rolling: Option<u32>,
}

/// The policy of a whole supervisor.
#[derive(Clone, Debug)]
pub struct Policy {
    pools: Vec<PoolState>,
    rng: Rng,
    shutting_down: bool,
    shutdown_timeout: Duration,
    /// The exit code a shutdown ends with.
    exit_code: i32,
    exited: bool,
}

const RECENT: usize = 5;

impl PoolState {
    /// A pool not started yet, its dependencies not linked yet.
    fn new(spec: &Pool, replaces: Option<PoolId>) -> Self {
        PoolState {
            after: Vec::new(),
            workers: (0..spec.workers).map(|_| Worker::new()).collect(),
            spec: spec.clone(),
            started: false,
            failed: false,
            blocked: false,
            retired: false,
            replaces,
            rolling: None,
        }
    }
}

impl Policy {
    /// A policy for `manifest`; `seed` drives the backoff jitter.
    pub fn new(manifest: &Manifest, seed: u64) -> Self {
        let index_of = |name: &str| manifest.pools.iter().position(|p| p.name == name);
        let pools = manifest
            .pools
            .iter()
            .map(|pool| {
                let mut state = PoolState::new(pool, None);
                state.after = pool
                    .after
                    .iter()
                    .filter_map(|(name, cond)| index_of(name).map(|i| (i, *cond)))
                    .collect();
                state
            })
            .collect();
        Policy {
            pools,
            rng: Rng::new(seed),
            shutting_down: false,
            shutdown_timeout: manifest.supervisor.shutdown_timeout,
            exit_code: 0,
            exited: false,
        }
    }

    /// The pool's name.
    pub fn pool_name(&self, pool: PoolId) -> &str {
        &self.pools[pool].spec.name
    }

    /// The pool's settings (those of the manifest it came from, which a reload may have
    /// replaced since).
    pub fn pool(&self, pool: PoolId) -> &Pool {
        &self.pools[pool].spec
    }

    /// Stops every running worker of `pool` for good and cancels pending restarts.
    fn take_down(&mut self, now: Instant, pool: PoolId, out: &mut Vec<Action>) {
        for w in self.ids(pool).collect::<Vec<_>>() {
            match self.worker(w).state {
                State::Backoff => {
                    out.push(Action::CancelTimer(TimerKey::Restart(w)));
                    self.worker_mut(w).state = State::Down;
                }
                State::Starting | State::Running => self.stop(now, w, false, out),
                State::Spawning | State::Stopping { .. } => {}
                _ => self.worker_mut(w).state = State::Down,
            }
        }
    }

    /// True while the worker's process should be running or starting.
    pub fn is_alive(&self, worker: WorkerId) -> bool {
        self.worker(worker).state.is_alive()
    }

    fn worker(&self, w: WorkerId) -> &Worker {
        &self.pools[w.pool].workers[w.index as usize]
    }

    fn worker_mut(&mut self, w: WorkerId) -> &mut Worker {
        &mut self.pools[w.pool].workers[w.index as usize]
    }

    fn ids(&self, pool: PoolId) -> impl Iterator<Item = WorkerId> {
        (0..self.pools[pool].workers.len() as u32).map(move |index| WorkerId { pool, index })
    }

    /// Feeds one event at `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.exited || !self.knows(&event) {
            return out;
        }
        match event {
            Event::Begin => {}
            Event::Spawned(w) => self.on_spawned(now, w, &mut out),
            Event::SpawnFailed(w, error) => {
                out.push(Action::Report(w, format!("cannot start: {error}")));
                // A program that cannot even start fails like one that exits at once.
                self.worker_mut(w).state = State::Starting;
                self.on_exit(now, w, Exit::Code(127), &mut out);
            }
            Event::Ready(w) => {
                if self.worker(w).state == State::Starting {
                    self.worker_mut(w).state = State::Running;
                    self.worker_mut(w).ready_at = Some(now);
                    out.push(Action::CancelTimer(TimerKey::ReadyDeadline(w)));
                    out.push(Action::Report(w, "is ready".into()));
                    out.push(Action::Lifecycle(w, Lifecycle::Ready));
                    self.rolled(now, w, &mut out);
                }
            }
            Event::Heartbeat(w) => {
                if let (Some(period), true) = (self.pools[w.pool].spec.watchdog, self.worker(w).state.is_alive()) {
                    out.push(Action::SetTimer(TimerKey::Watchdog(w), now + period));
                }
            }
            Event::Exited(w, exit) => self.on_exit(now, w, exit, &mut out),
            Event::Timer(key) => self.on_timer(now, key, &mut out),
            Event::Shutdown => self.begin_shutdown(now, &mut out),
            Event::Kill => {
                self.shutting_down = true;
                for pool in 0..self.pools.len() {
                    for w in self.ids(pool).collect::<Vec<_>>() {
                        if self.worker(w).state.is_alive() {
                            self.worker_mut(w).state = State::Stopping { restart: false };
                            out.push(Action::Kill(w));
                        } else if self.worker(w).state == State::Backoff {
                            out.push(Action::CancelTimer(TimerKey::Restart(w)));
                            self.worker_mut(w).state = State::Down;
                        }
                    }
                }
            }
        }
        self.settle(now, &mut out);
        out
    }

    fn on_spawned(&mut self, now: Instant, w: WorkerId, out: &mut Vec<Action>) {
        let spec = &self.pools[w.pool].spec;
        let (ready, ready_timeout, watchdog) = (spec.ready.clone(), spec.ready_timeout, spec.watchdog);
        if self.worker(w).state != State::Spawning {
            return;
        }
        if self.pools[w.pool].failed || self.pools[w.pool].retired {
            // Its pool gave up or was removed while it was being started.
            self.worker_mut(w).state = State::Stopping { restart: false };
            out.push(Action::Kill(w));
            return;
        }
        let worker = self.worker_mut(w);
        worker.ever_spawned = true;
        worker.spawned_at = Some(now);
        if ready == Ready::Spawned {
            worker.state = State::Running;
            worker.ready_at = Some(now);
            out.push(Action::Lifecycle(w, Lifecycle::Ready));
            self.rolled(now, w, out);
        } else {
            worker.state = State::Starting;
            out.push(Action::SetTimer(TimerKey::ReadyDeadline(w), now + ready_timeout));
        }
        if let Some(period) = watchdog {
            out.push(Action::SetTimer(TimerKey::Watchdog(w), now + period));
        }
    }

    fn spawn(&mut self, w: WorkerId, out: &mut Vec<Action>) {
        // A failed spawn must not count the previous run's time as this one's.
        self.worker_mut(w).ready_at = None;
        self.worker_mut(w).state = State::Spawning;
        if self.worker(w).ever_spawned {
            self.worker_mut(w).restarts += 1;
        }
        out.push(Action::Spawn(w));
    }

    fn stop(&mut self, now: Instant, w: WorkerId, restart: bool, out: &mut Vec<Action>) {
        let spec = &self.pools[w.pool].spec;
        let (signal, timeout) = (spec.stop_signal, spec.stop_timeout);
        self.worker_mut(w).state = State::Stopping { restart };
        out.push(Action::Signal(w, signal));
        out.push(Action::SetTimer(TimerKey::StopDeadline(w), now + timeout));
    }

    fn on_timer(&mut self, now: Instant, key: TimerKey, out: &mut Vec<Action>) {
        match key {
            TimerKey::Restart(w) => {
                if self.worker(w).state == State::Backoff && !self.shutting_down {
                    self.spawn(w, out);
                }
            }
            TimerKey::StopDeadline(w) => {
                if matches!(self.worker(w).state, State::Stopping { .. }) {
                    out.push(Action::Report(w, "did not stop in time; killing it".into()));
                    out.push(Action::Kill(w));
                }
            }
            TimerKey::ReadyDeadline(w) => {
                if self.worker(w).state == State::Starting {
                    let timeout = self.pools[w.pool].spec.ready_timeout;
                    out.push(Action::Report(w, format!("not ready after {timeout:?}; killing it")));
                    self.worker_mut(w).state = State::Stopping {
                        restart: !self.shutting_down,
                    };
                    out.push(Action::Kill(w));
                }
            }
            TimerKey::Watchdog(w) => {
                if matches!(self.worker(w).state, State::Starting | State::Running) {
                    out.push(Action::Report(w, "missed its watchdog; killing it".into()));
                    self.worker_mut(w).state = State::Stopping {
                        restart: !self.shutting_down,
                    };
                    out.push(Action::Kill(w));
                }
            }
            TimerKey::Shutdown => {
                out.push(Action::Log("shutdown timed out; killing what is left".into()));
                for pool in 0..self.pools.len() {
                    for w in self.ids(pool).collect::<Vec<_>>() {
                        if self.worker(w).state.is_alive() {
                            out.push(Action::Kill(w));
                        }
                    }
                }
            }
        }
        let _ = now;
    }

    fn begin_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        let timeout = self.shutdown_timeout;
        out.push(Action::SetTimer(TimerKey::Shutdown, now + timeout));
        for pool in 0..self.pools.len() {
            for w in self.ids(pool).collect::<Vec<_>>() {
                match self.worker(w).state {
                    State::Backoff => {
                        out.push(Action::CancelTimer(TimerKey::Restart(w)));
                        self.worker_mut(w).state = State::Down;
                    }
                    State::Pending => self.worker_mut(w).state = State::Down,
                    _ => {}
                }
            }
        }
    }

    /// True if every pool that depends on `pool` has no live worker left.
    fn dependents_down(&self, pool: PoolId) -> bool {
        self.pools.iter().enumerate().all(|(i, p)| {
            !p.after.iter().any(|(dep, _)| *dep == pool) || self.ids(i).all(|w| !self.worker(w).state.is_alive())
        })
    }

    fn condition_holds(&self, pool: PoolId, cond: Condition) -> Option<bool> {
        let p = &self.pools[pool];
        let states = || p.workers.iter().map(|w| w.state);
        match cond {
            Condition::Started => {
                if p.workers.iter().all(|w| w.ever_spawned) {
                    Some(true)
                } else if p.failed
                    || p.blocked
                    || p.workers
                        .iter()
                        .any(|w| !w.ever_spawned && matches!(w.state, State::Done { .. } | State::Down))
                {
                    None
                } else {
                    Some(false)
                }
            }
            Condition::Ready => {
                if p.started && states().all(|s| s == State::Running) {
                    Some(true)
                } else if p.failed || p.blocked || states().any(|s| matches!(s, State::Done { .. } | State::Down)) {
                    None
                } else {
                    Some(false)
                }
            }
            Condition::Completed => {
                if p.started && states().all(|s| s == State::Done { success: true }) {
                    Some(true)
                } else if p.failed || p.blocked || states().any(|s| s == State::Done { success: false }) {
                    None
                } else {
                    Some(false)
                }
            }
        }
    }

    /// After every event: start what may start, advance the shutdown, decide to exit.
    fn settle(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.prune_removed();
        if self.shutting_down {
            // Stop pools in reverse dependency order: a pool once all its dependents are down.
            for pool in (0..self.pools.len()).rev() {
                if !self.dependents_down(pool) {
                    continue;
                }
                for w in self.ids(pool).collect::<Vec<_>>() {
                    if matches!(self.worker(w).state, State::Starting | State::Running) {
                        self.stop(now, w, false, out);
                    }
                }
            }
            if self.pools.iter().all(|p| p.workers.iter().all(|w| !w.state.is_alive())) {
                out.push(Action::CancelTimer(TimerKey::Shutdown));
                out.push(Action::Exit(self.exit_code));
                self.exited = true;
            }
            return;
        }
        // Start pools whose conditions hold, until nothing changes.
        loop {
            let mut changed = false;
            for pool in 0..self.pools.len() {
                if self.pools[pool].started || self.pools[pool].blocked || self.pools[pool].retired {
                    continue;
                }
                // A replacement waits until the pool it replaces is down.
                if let Some(old) = self.pools[pool].replaces {
                    if self.ids(old).any(|w| self.worker(w).state.is_alive()) {
                        continue;
                    }
                }
                let conditions: Vec<_> = self.pools[pool].after.clone();
                let mut ready = true;
                for (dep, cond) in conditions {
                    match self.condition_holds(dep, cond) {
                        Some(true) => {}
                        Some(false) => ready = false,
                        None => {
                            let (name, dep_name) =
                                (self.pools[pool].spec.name.clone(), self.pools[dep].spec.name.clone());
                            out.push(Action::Log(format!(
                                "pool {name} will not start: {dep_name} can no longer become {}",
                                match cond {
                                    Condition::Started => "started",
                                    Condition::Ready => "ready",
                                    Condition::Completed => "completed",
                                }
                            )));
                            self.pools[pool].blocked = true;
                            for w in self.ids(pool).collect::<Vec<_>>() {
                                self.worker_mut(w).state = State::Down;
                            }
                            ready = false;
                            changed = true;
                            break;
                        }
                    }
                }
                if ready && !self.pools[pool].blocked {
                    self.pools[pool].started = true;
                    for w in self.ids(pool).collect::<Vec<_>>() {
                        if self.worker(w).desired == Desired::Stopped {
                            // Stopped by hand before its pool started.
                            self.worker_mut(w).state = State::Down;
                        } else {
                            self.spawn(w, out);
                        }
                    }
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // Nothing running, nothing scheduled, nothing left to start: done. A worker stopped
        // by hand waits to be started again.
        let idle = self.pools.iter().all(|p| {
            (p.started || p.blocked || p.retired)
                && p.workers.iter().all(|w| {
                    matches!(w.state, State::Done { .. } | State::Down) && (w.desired == Desired::Running || p.retired)
                })
        });
        if idle {
            let clean =
                self.pools.iter().filter(|p| !p.retired).all(|p| {
                    !p.failed && !p.blocked && p.workers.iter().all(|w| w.state == State::Done { success: true })
                });
            out.push(Action::Exit(if clean { self.exit_code } else { 1 }));
            self.exited = true;
        }
    }
}

#[cfg(test)]
mod tests;

//! What an operator asks for by hand (`procwire stop|start|restart`), and the policy as the
//! control plane reports it.
//!
//! Each worker has a desired state besides its state: a worker stopped by hand is
//! [`Desired::Stopped`] and stays down (its pool's restarts, a one-for-all sibling's failure
//! and a rolling restart leave it alone, and the supervisor does not count it as finished)
//! until it is started again. A command acts on the worker's state as the event loop holds
//! it between two events, so commands on one worker are serialised: a second `restart` of a
//! worker that is already restarting does nothing.

use std::time::Instant;

use super::backoff::Intensity;
use super::{Action, Event, Exit, Policy, PoolId, State, TimerKey, Worker, WorkerId};
use crate::control::WorkerState;

/// What the operator wants of a worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Desired {
    /// Running, restarted by its policy: the default.
    #[default]
    Running,
    /// Stopped by hand: no restarts until started by hand.
    Stopped,
    /// Scaled away: stopped, and dropped from its pool once down.
    Removed,
}

/// A command by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manual {
    /// Stop, and keep stopped.
    Stop,
    /// Start what is not running (reviving a pool that gave up).
    Start,
    /// Stop and start at once; start what is not running.
    Restart,
}

/// One worker, as `procwire status` shows it.
#[derive(Clone, Debug)]
pub struct WorkerView {
    /// The worker.
    pub id: WorkerId,
    /// What it is doing.
    pub state: WorkerState,
    /// Starts after its first.
    pub restarts: u32,
    /// When its current process started, while it runs.
    pub since: Option<Instant>,
    /// How its last process ended.
    pub last_exit: Option<Exit>,
}

/// One pool, as `procwire status` shows it.
#[derive(Clone, Debug)]
pub struct PoolView {
    /// The pool.
    pub id: PoolId,
    /// Its name.
    pub name: String,
    /// It gave up as a whole, or can never start.
    pub failed: bool,
    /// Its workers.
    pub workers: Vec<WorkerView>,
}

impl Policy {
    /// The current pool named `name` (not one a reload replaced).
    pub fn find_pool(&self, name: &str) -> Option<PoolId> {
        (0..self.pools.len()).rfind(|&p| !self.pools[p].retired && self.pools[p].spec.name == name)
    }

    /// The current pools' names, in order.
    pub fn pool_names(&self) -> Vec<String> {
        self.pools
            .iter()
            .filter(|p| !p.retired)
            .map(|p| p.spec.name.clone())
            .collect()
    }

    /// How many workers `pool` has (not counting those scaled away and still stopping).
    pub fn worker_count(&self, pool: PoolId) -> u32 {
        self.pools[pool]
            .workers
            .iter()
            .take_while(|w| w.desired != Desired::Removed)
            .count() as u32
    }

    /// `procwire scale`: grows `pool` to `workers` (the new ones start if the pool has) or
    /// shrinks it (the last ones stop and are dropped once down); the other workers are left
    /// alone. The manifest's `workers` stays what it was, so that a reload that does not
    /// change it keeps the scale. Returns the actions and a line per worker added or removed.
    pub fn scale(&mut self, now: Instant, pool: PoolId, workers: u32) -> (Vec<Action>, Vec<(WorkerId, String)>) {
        let mut out = Vec::new();
        let mut done = Vec::new();
        if self.is_shutting_down() {
            return (out, done);
        }
        let live = self.pools[pool].started && !self.pools[pool].failed && !self.pools[pool].blocked;
        for index in 0..workers.max(self.pools[pool].workers.len() as u32) {
            let w = WorkerId { pool, index };
            if index >= workers {
                if self.worker(w).desired == Desired::Removed {
                    continue;
                }
                self.worker_mut(w).desired = Desired::Removed;
                let line = self.stop_for_good(now, w, &mut out);
                done.push((w, format!("removed; {line}")));
            } else if index as usize >= self.pools[pool].workers.len() {
                self.pools[pool].workers.push(Worker::new());
                if live {
                    self.spawn(w, &mut out);
                    done.push((w, "added; starting".to_owned()));
                } else {
                    done.push((w, "added; starts with its pool".to_owned()));
                }
            } else if self.worker(w).desired == Desired::Removed {
                // Scaled away and back before it was down: it stays.
                self.worker_mut(w).desired = Desired::Running;
                let line = self.start_by_hand(w, &mut out);
                done.push((w, format!("kept; {line}")));
            }
        }
        self.settle(now, &mut out);
        (out, done)
    }

    /// `procwire restart POOL --rolling`: restarts the pool's running workers one at a time,
    /// each once the one before is ready again (as a reload of a changed pool does), so that
    /// the pool keeps serving. Workers stopped by hand are passed by. Refused (`None`) while
    /// one is under way already, so that two never interleave.
    pub fn roll_by_hand(&mut self, now: Instant, pool: PoolId) -> Option<Vec<Action>> {
        let p = &self.pools[pool];
        if self.is_shutting_down() || p.rolling.is_some() {
            return None;
        }
        let mut out = Vec::new();
        if p.started && !p.failed && !p.blocked {
            self.pools[pool].rolling = Some(0);
            self.roll(now, pool, &mut out);
        }
        self.settle(now, &mut out);
        Some(out)
    }

    /// False for an event about a worker that is no longer there (scaled away, and dropped):
    /// a late timer or notification for it is ignored.
    pub(super) fn knows(&self, event: &Event) -> bool {
        let worker = match event {
            Event::Spawned(w)
            | Event::SpawnFailed(w, _)
            | Event::Ready(w)
            | Event::Heartbeat(w)
            | Event::Exited(w, _) => w,
            Event::Timer(
                TimerKey::Restart(w) | TimerKey::StopDeadline(w) | TimerKey::ReadyDeadline(w) | TimerKey::Watchdog(w),
            ) => w,
            Event::Begin | Event::Timer(TimerKey::Shutdown) | Event::Shutdown | Event::Kill => return true,
        };
        self.pools
            .get(worker.pool)
            .is_some_and(|p| (worker.index as usize) < p.workers.len())
    }

    /// Drops the workers scaled away once they are down (from the end: indices stay dense).
    pub(super) fn prune_removed(&mut self) {
        for pool in &mut self.pools {
            while pool
                .workers
                .last()
                .is_some_and(|w| w.desired == Desired::Removed && !w.state.is_alive())
            {
                pool.workers.pop();
            }
        }
    }

    /// True once a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down || self.exited
    }

    /// Every current pool and its workers.
    pub fn views(&self) -> Vec<PoolView> {
        (0..self.pools.len())
            .filter(|&p| !self.pools[p].retired)
            .map(|p| PoolView {
                id: p,
                name: self.pools[p].spec.name.clone(),
                failed: self.pools[p].failed || self.pools[p].blocked,
                workers: self
                    .ids(p)
                    .map(|w| {
                        let worker = self.worker(w);
                        WorkerView {
                            id: w,
                            state: self.worker_state(w),
                            restarts: worker.restarts,
                            since: worker.state.is_alive().then_some(worker.spawned_at).flatten(),
                            last_exit: worker.recent.back().copied(),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    fn worker_state(&self, w: WorkerId) -> WorkerState {
        let worker = self.worker(w);
        let stopped = worker.desired == Desired::Stopped;
        match worker.state {
            State::Pending if stopped => WorkerState::Stopped,
            State::Pending => WorkerState::Pending,
            State::Backoff => WorkerState::Backoff,
            State::Spawning | State::Starting => WorkerState::Starting,
            State::Running => WorkerState::Ready,
            State::Stopping { .. } => WorkerState::Stopping,
            State::Done { .. } | State::Down if stopped => WorkerState::Stopped,
            State::Done { .. } | State::Down if worker.desired == Desired::Removed => WorkerState::Exited,
            State::Done { .. } => WorkerState::Exited,
            State::Down if self.shutting_down => WorkerState::Exited,
            State::Down => WorkerState::Failed,
        }
    }

    /// Carries out `what` on worker `index` of `pool`, or on each of its workers; returns
    /// the actions, and a line per worker saying what was done.
    pub fn manual(
        &mut self,
        now: Instant,
        what: Manual,
        pool: PoolId,
        index: Option<u32>,
    ) -> (Vec<Action>, Vec<(WorkerId, String)>) {
        let mut out = Vec::new();
        let mut done = Vec::new();
        if self.is_shutting_down() {
            return (out, done);
        }
        let targets: Vec<WorkerId> = match index {
            Some(index) => vec![WorkerId { pool, index }],
            None => self.ids(pool).collect(),
        };
        if what != Manual::Stop {
            // A pool that gave up, or could not start, gets another chance.
            let p = &mut self.pools[pool];
            p.failed = false;
            if p.blocked {
                p.blocked = false;
                p.started = true;
            }
        }
        for w in targets {
            let line = match what {
                Manual::Stop => self.stop_by_hand(now, w, &mut out),
                Manual::Start => self.start_by_hand(w, &mut out),
                Manual::Restart => self.restart_by_hand(now, w, &mut out),
            };
            done.push((w, line.to_owned()));
        }
        self.settle(now, &mut out);
        (out, done)
    }

    fn stop_by_hand(&mut self, now: Instant, w: WorkerId, out: &mut Vec<Action>) -> &'static str {
        self.worker_mut(w).desired = Desired::Stopped;
        self.stop_for_good(now, w, out)
    }

    /// Stops `w`, whose desired state says it is not to run, with no restart after.
    fn stop_for_good(&mut self, now: Instant, w: WorkerId, out: &mut Vec<Action>) -> &'static str {
        match self.worker(w).state {
            State::Starting | State::Running => {
                self.stop(now, w, false, out);
                "stopping"
            }
            State::Stopping { .. } => {
                self.worker_mut(w).state = State::Stopping { restart: false };
                self.worker_mut(w).sibling_stop = false;
                "stopping"
            }
            State::Backoff => {
                out.push(Action::CancelTimer(TimerKey::Restart(w)));
                self.worker_mut(w).state = State::Down;
                "stopped (its restart is cancelled)"
            }
            // Its pool starts it only once started by hand.
            State::Pending => "stopped (its pool had not started)",
            State::Spawning | State::Done { .. } | State::Down => "stopped (it was not running)",
        }
    }

    fn start_by_hand(&mut self, w: WorkerId, out: &mut Vec<Action>) -> &'static str {
        self.worker_mut(w).desired = Desired::Running;
        match self.worker(w).state {
            State::Pending => "waits for its pool's dependencies",
            State::Backoff => {
                out.push(Action::CancelTimer(TimerKey::Restart(w)));
                self.spawn(w, out);
                "starting (its backoff cut short)"
            }
            State::Done { .. } | State::Down => {
                // A fresh start: the failures that made it give up are forgiven.
                let worker = self.worker_mut(w);
                worker.failures = 0;
                worker.intensity = Intensity::default();
                self.spawn(w, out);
                "starting"
            }
            State::Stopping { restart: false } => {
                self.worker_mut(w).state = State::Stopping { restart: true };
                self.worker_mut(w).sibling_stop = true;
                "starting again once stopped"
            }
            State::Spawning | State::Starting | State::Running | State::Stopping { restart: true } => "already running",
        }
    }

    fn restart_by_hand(&mut self, now: Instant, w: WorkerId, out: &mut Vec<Action>) -> &'static str {
        match self.worker(w).state {
            State::Starting | State::Running => {
                self.worker_mut(w).desired = Desired::Running;
                self.stop(now, w, true, out);
                // Restarted by hand, not for failing: back at once, costing no restart.
                self.worker_mut(w).sibling_stop = true;
                "restarting"
            }
            State::Stopping { restart: true } | State::Spawning => "already restarting",
            _ => self.start_by_hand(w, out),
        }
    }
}

//! The event loop's side of the control plane: [`Request`]s from the control socket,
//! answered from the policy's state and the loop's own (pids, `STATUS=` texts, timers).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use nix::sys::signal::{killpg, Signal};

use super::Runner;
use crate::control::feed::{Feeds, LogLine};
use crate::control::server::Request;
use crate::control::{ControlError, Event, LastExit, PoolState, PoolStatus, Target, What, WorkerStatus};
use crate::manifest::Manifest;
use crate::policy::{Action, Exit, Lifecycle, PoolId, TimerKey, WorkerId};

/// What the loop keeps for the control plane only.
#[derive(Debug)]
pub(super) struct Observed {
    /// Each worker's last `STATUS=` text.
    status: HashMap<WorkerId, String>,
    /// Each worker's recent output lines, across its restarts.
    tails: HashMap<WorkerId, Tail>,
    /// What followers read: every output line and lifecycle event.
    pub(super) feeds: Arc<Feeds>,
}

impl Observed {
    pub(super) fn new(feeds: Arc<Feeds>) -> Self {
        Observed {
            status: HashMap::new(),
            tails: HashMap::new(),
            feeds,
        }
    }

    /// Worker `w` sent `STATUS=text`.
    pub(super) fn status(&mut self, w: WorkerId, text: &str) {
        self.status.insert(w, text.to_owned());
    }

    /// Where worker `w` (of the pool named `pool`) has its output lines kept.
    pub(super) fn tail(&mut self, w: WorkerId, pool: &str) -> Tail {
        let feeds = &self.feeds;
        self.tails
            .entry(w)
            .or_insert_with(|| Tail::new(Arc::clone(feeds), pool, w.index))
            .clone()
    }
}

/// How many recent lines are kept per worker (stdout and stderr together).
pub(crate) const TAIL_LINES: usize = 500;

/// The longest line kept whole in a tail; longer ones are cut there.
const TAIL_LINE_BYTES: usize = 4096;

/// A worker's recent output lines, bounded ([`TAIL_LINES`]), shared by its log pipes; each
/// line also goes to the log feed, for followers.
#[derive(Clone, Debug)]
pub(crate) struct Tail(Rc<TailLines>);

#[derive(Debug)]
struct TailLines {
    lines: RefCell<VecDeque<String>>,
    feeds: Arc<Feeds>,
    pool: String,
    index: u32,
}

impl Tail {
    fn new(feeds: Arc<Feeds>, pool: &str, index: u32) -> Tail {
        Tail(Rc::new(TailLines {
            lines: RefCell::default(),
            feeds,
            pool: pool.to_owned(),
            index,
        }))
    }

    /// Keeps `line`, dropping the oldest past the bound.
    pub(crate) fn push(&self, line: &str) {
        let mut end = line.len().min(TAIL_LINE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = &line[..end];
        {
            let mut lines = self.0.lines.borrow_mut();
            if lines.len() == TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(line.to_owned());
        }
        self.0.feeds.logs.push(|_| LogLine {
            pool: self.0.pool.clone(),
            index: self.0.index,
            text: line.to_owned(),
        });
    }

    /// The last `n` lines, oldest first.
    fn last(&self, n: usize) -> Vec<String> {
        let lines = self.0.lines.borrow();
        lines.iter().skip(lines.len().saturating_sub(n)).cloned().collect()
    }
}

impl Runner {
    pub(super) fn on_control(&mut self, request: Request) {
        match request {
            Request::Status { pool, reply } => {
                let _ = reply.send(self.pool_statuses(pool.as_deref()));
            }
            Request::Manual { what, target, reply } => {
                let answer = self.resolve(&target).map(|(pool, index)| {
                    let (actions, done) = self.policy.manual(Instant::now(), what, pool, index);
                    for (w, line) in &done {
                        self.report(*w, &format!("{line} (by hand)"));
                    }
                    self.apply(actions);
                    self.lines(&done)
                });
                let _ = reply.send(answer);
            }
            Request::Signal { target, signal, reply } => {
                let answer = self.signal(&target, signal);
                let _ = reply.send(answer);
            }
            Request::Logs { target, lines, reply } => {
                let answer = self.logs(target.as_ref(), lines);
                let _ = reply.send(answer);
            }
            Request::Roll { pool, reply } => {
                let answer = self.roll(&pool);
                let _ = reply.send(answer);
            }
            Request::Scale { pool, workers, reply } => {
                let answer = self.scale(&pool, workers);
                let _ = reply.send(answer);
            }
            Request::Reload { dry_run, reply } => {
                let answer = self.reload_by_hand(dry_run);
                let _ = reply.send(answer);
            }
            Request::Endpoints { pool, reply } => {
                let answer = self.find(&pool).map(|pool| self.client_endpoints(pool));
                let _ = reply.send(answer);
            }
            Request::Refused { pid, uid } => self.say(&format!(
                "refused a control connection from pid {pid} (uid {uid}): only uid {} and root are served",
                nix::unistd::geteuid()
            )),
        }
    }

    /// The pool and worker `target` names; refused while shutting down.
    fn resolve(&self, target: &Target) -> Result<(PoolId, Option<u32>), ControlError> {
        if self.policy.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        self.resolve_any(target)
    }

    /// The pool and worker `target` names.
    fn resolve_any(&self, target: &Target) -> Result<(PoolId, Option<u32>), ControlError> {
        let pool = self.find(&target.pool)?;
        if let Some(index) = target.index {
            let workers = self.policy.worker_count(pool);
            if index >= workers {
                return Err(ControlError::NoSuchWorker {
                    pool: target.pool.clone(),
                    index,
                    workers,
                });
            }
        }
        Ok((pool, target.index))
    }

    fn find(&self, name: &str) -> Result<PoolId, ControlError> {
        self.policy.find_pool(name).ok_or_else(|| ControlError::NoSuchPool {
            pool: name.to_owned(),
            known: self.policy.pool_names(),
        })
    }

    /// `web.0 (pid 12): stopping`.
    fn lines(&self, done: &[(WorkerId, String)]) -> Vec<String> {
        done.iter()
            .map(|(w, line)| {
                let pid = self
                    .last_pid
                    .get(w)
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                format!("{}.{}{pid}: {line}", self.policy.pool_name(w.pool), w.index)
            })
            .collect()
    }

    /// `procwire logs [TARGET] [-n N]`: each worker's last `lines` lines, `pool.index | line`,
    /// and the log feed's cursor past them.
    fn logs(&self, target: Option<&Target>, lines: u32) -> Result<(Vec<String>, u64), ControlError> {
        let workers: Vec<WorkerId> = match target {
            Some(target) => {
                let (pool, index) = self.resolve_any(target)?;
                match index {
                    Some(index) => vec![WorkerId { pool, index }],
                    None => (0..self.policy.worker_count(pool))
                        .map(|index| WorkerId { pool, index })
                        .collect(),
                }
            }
            None => self
                .policy
                .views()
                .into_iter()
                .flat_map(|pool| pool.workers.into_iter().map(|w| w.id))
                .collect(),
        };
        let mut out = Vec::new();
        for w in workers {
            if let Some(tail) = self.observed.tails.get(&w) {
                let name = format!("{}.{}", self.policy.pool_name(w.pool), w.index);
                out.extend(
                    tail.last(lines as usize)
                        .into_iter()
                        .map(|line| format!("{name} | {line}")),
                );
            }
        }
        Ok((out, self.observed.feeds.logs.head()))
    }

    /// `procwire restart POOL --rolling`.
    fn roll(&mut self, name: &str) -> Result<Vec<String>, ControlError> {
        let (pool, _) = self.resolve(&Target {
            pool: name.to_owned(),
            index: None,
        })?;
        let actions = self
            .policy
            .roll_by_hand(Instant::now(), pool)
            .ok_or_else(|| ControlError::Rolling(name.to_owned()))?;
        self.say(&format!("pool {name}: restarting its workers one at a time (by hand)"));
        self.apply(actions);
        Ok(vec![format!(
            "pool {name}: restarting its workers one at a time; `procwire status` shows the progress"
        )])
    }

    /// `procwire scale POOL N`.
    fn scale(&mut self, name: &str, workers: u32) -> Result<Vec<String>, ControlError> {
        let (pool, _) = self.resolve(&Target {
            pool: name.to_owned(),
            index: None,
        })?;
        let refuse = |reason: &str| ControlError::CannotScale {
            pool: name.to_owned(),
            reason: reason.to_owned(),
        };
        if !(1..=1024).contains(&workers) {
            return Err(refuse("a pool has 1 to 1024 workers (stop it to have none running)"));
        }
        let from = self.policy.worker_count(pool);
        if let Some(index) = self.still_stopping(pool, workers) {
            return Err(refuse(&format!(
                "worker {index}, removed by the last scale, is still stopping; scale again once it has ended"
            )));
        }
        // The new workers' own sockets (`{index}` in listen) exist before they start.
        self.bind_worker_sockets(pool, workers).map_err(|e| refuse(&e))?;
        let (actions, done) = self.policy.scale(Instant::now(), pool, workers);
        self.close_worker_sockets(pool, workers, from);
        for (w, line) in &done {
            self.report(*w, &format!("{line} (by hand)"));
        }
        if from != workers {
            self.event(Some(pool), None, What::Scaled { from, to: workers });
        }
        self.apply(actions);
        Ok(self.lines(&done))
    }

    /// `procwire reload [--dry-run]`: what the reloaded manifest changes, found by applying it
    /// to a copy of the policy, then (unless `dry_run`) applied for real.
    fn reload_by_hand(&mut self, dry_run: bool) -> Result<Vec<String>, ControlError> {
        if self.policy.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        let manifest = Manifest::load_validated(&self.manifest.path, self.host)
            .map_err(|e| ControlError::ReloadRefused(e.to_string()))?;
        let mut preview = self.policy.clone();
        let mut lines: Vec<String> = preview
            .reload(Instant::now(), &manifest)
            .into_iter()
            .filter_map(|action| match action {
                Action::Log(line) => Some(line.strip_prefix("reload: ").unwrap_or(&line).to_owned()),
                _ => None,
            })
            .collect();
        if lines.is_empty() {
            lines.push("nothing changed".to_owned());
        }
        if !dry_run {
            self.reload_with(manifest).map_err(ControlError::ReloadRefused)?;
        }
        Ok(lines)
    }

    fn signal(&mut self, target: &Target, number: i32) -> Result<Vec<String>, ControlError> {
        let signal = Signal::try_from(number).map_err(|_| ControlError::BadSignal(number))?;
        let (pool, index) = self.resolve(target)?;
        let workers: Vec<WorkerId> = match index {
            Some(index) => vec![WorkerId { pool, index }],
            None => (0..self.policy.worker_count(pool))
                .map(|index| WorkerId { pool, index })
                .collect(),
        };
        let mut done = Vec::new();
        for w in workers {
            let line = match self.workers.get(&w) {
                Some(pid) => match killpg(*pid, signal) {
                    Ok(()) => format!("sent {}", signal.as_str()),
                    Err(e) => format!("cannot send {}: {e}", signal.as_str()),
                },
                None => "not running; nothing sent".to_owned(),
            };
            self.report(w, &format!("{line} (by hand)"));
            done.push((w, line));
        }
        Ok(self.lines(&done))
    }

    /// Something happened to worker `w`: followers of the events hear of it.
    pub(super) fn happened(&self, w: WorkerId, what: What) {
        self.event(Some(w.pool), Some(w.index), what);
    }

    /// The policy's news of a worker's life, as an event.
    pub(super) fn lifecycle(&self, w: WorkerId, step: Lifecycle) {
        let millis = |d: std::time::Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        self.happened(
            w,
            match step {
                Lifecycle::Ready => What::Ready,
                Lifecycle::Exited(exit) => What::Exited(match exit {
                    Exit::Code(code) => Some(LastExit::Code(code)),
                    Exit::Signal(signal) => Some(LastExit::Signal(signal)),
                    Exit::Unknown => None,
                }),
                Lifecycle::Restarting(delay) => What::Restarting(millis(delay)),
                Lifecycle::GaveUp(why) => What::GaveUp(why),
            },
        );
    }

    /// A reload's `actions` are being applied: its changes, as an event.
    pub(super) fn reloaded(&self, actions: &[Action]) {
        let changes = actions
            .iter()
            .filter_map(|action| match action {
                Action::Log(line) => line.strip_prefix("reload: ").map(str::to_owned),
                _ => None,
            })
            .collect();
        self.event(None, None, What::Reloaded(changes));
    }

    fn event(&self, pool: Option<PoolId>, index: Option<u32>, what: What) {
        let worker = index.zip(pool).map(|(index, pool)| WorkerId { pool, index });
        let event = |seq| Event {
            seq,
            time: super::logs::rfc3339(SystemTime::now()),
            pool: pool.map(|p| self.policy.pool_name(p).to_owned()),
            index,
            pid: worker.and_then(|w| self.last_pid.get(&w)).map(|pid| pid.as_raw()),
            what,
        };
        self.observed.feeds.events.push(event);
    }

    fn pool_statuses(&self, only: Option<&str>) -> Result<Vec<PoolStatus>, ControlError> {
        if let Some(name) = only {
            self.find(name)?;
        }
        let now = Instant::now();
        let millis = |d: std::time::Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        Ok(self
            .policy
            .views()
            .into_iter()
            .filter(|pool| only.is_none_or(|name| pool.name == name))
            .map(|pool| {
                let workers: Vec<WorkerStatus> = pool
                    .workers
                    .iter()
                    .map(|worker| WorkerStatus {
                        index: worker.id.index,
                        pid: self.workers.get(&worker.id).map(|pid| pid.as_raw()),
                        state: worker.state,
                        restarts: worker.restarts,
                        uptime_ms: worker.since.map(|since| millis(now.saturating_duration_since(since))),
                        last_exit: match worker.last_exit {
                            Some(Exit::Code(code)) => Some(LastExit::Code(code)),
                            Some(Exit::Signal(signal)) => Some(LastExit::Signal(signal)),
                            Some(Exit::Unknown) | None => None,
                        },
                        status: self.observed.status.get(&worker.id).cloned(),
                        next_restart_ms: self
                            .timers
                            .get(&TimerKey::Restart(worker.id))
                            .map(|at| millis(at.saturating_duration_since(now))),
                    })
                    .collect();
                let states: Vec<_> = workers.iter().map(|w| w.state).collect();
                PoolStatus {
                    name: pool.name,
                    state: PoolState::of(&states, pool.failed),
                    workers,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_lines_and_cuts_long_ones_on_a_character_boundary() {
        let feeds = Arc::new(Feeds::default());
        let tail = Tail::new(Arc::clone(&feeds), "web", 0);
        for i in 0..TAIL_LINES + 3 {
            tail.push(&format!("line {i}"));
        }
        assert_eq!(tail.0.lines.borrow().len(), TAIL_LINES);
        assert_eq!(
            feeds.logs.head(),
            TAIL_LINES as u64 + 3,
            "every line is in the feed too"
        );
        assert_eq!(
            tail.last(2),
            [format!("line {}", TAIL_LINES + 1), format!("line {}", TAIL_LINES + 2)]
        );
        assert_eq!(tail.last(TAIL_LINES * 2).len(), TAIL_LINES);
        tail.push(&"é".repeat(TAIL_LINE_BYTES));
        let long = tail.last(1).remove(0);
        assert!(
            long.len() <= TAIL_LINE_BYTES && long.chars().all(|c| c == 'é'),
            "{}",
            long.len()
        );
    }
}

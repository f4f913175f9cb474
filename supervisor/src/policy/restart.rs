//! What follows a worker's exit: a restart at once after a run that counts as started, after
//! a backoff over consecutive failed starts, or none; and giving a worker up past its limits.

use std::time::{Duration, Instant};

use super::backoff::{base_delay, jittered};
use super::{Action, Exit, Lifecycle, Policy, State, TimerKey, WorkerId, RECENT};
use crate::manifest::{LimitAction, Restart, Strategy};

/// Why a worker is given up.
#[derive(Clone, Copy, Debug)]
enum GiveUp {
    /// This many consecutive failed starts.
    NeverStarted(u32),
    /// More restarts within the window than the limit allows.
    Intensity,
}

impl Policy {
    /// Worker `w` exited with `exit`: restart it (at once or after a backoff), leave it
    /// done, or give it up.
    pub(super) fn on_exit(&mut self, now: Instant, w: WorkerId, exit: Exit, out: &mut Vec<Action>) {
        let state = self.worker(w).state;
        if !state.is_alive() {
            return;
        }
        for key in [
            TimerKey::StopDeadline(w),
            TimerKey::ReadyDeadline(w),
            TimerKey::Watchdog(w),
        ] {
            out.push(Action::CancelTimer(key));
        }
        out.push(Action::Lifecycle(w, Lifecycle::Exited(exit)));
        let worker = self.worker_mut(w);
        worker.recent.push_back(exit);
        if worker.recent.len() > RECENT {
            worker.recent.pop_front();
        }
        let up = worker.ready_at.map(|t| now.saturating_duration_since(t));
        if self.shutting_down || self.pools[w.pool].failed || self.pools[w.pool].retired {
            self.worker_mut(w).state = State::Down;
            out.push(Action::Report(w, format!("ended with {exit}")));
            return;
        }
        let spec = &self.pools[w.pool].spec;
        let (backoff, limit) = (spec.backoff.clone(), spec.limit.clone());
        let success = matches!(exit, Exit::Code(c) if spec.success_codes.contains(&c));
        let restart = match state {
            // Stopped on purpose (one-for-all, a missed deadline): restart as planned.
            State::Stopping { restart } => restart,
            _ => match spec.restart {
                Restart::Always => true,
                Restart::OnFailure => !success,
                Restart::Never => false,
            },
        };
        if !restart {
            self.worker_mut(w).state = State::Done { success };
            let line = if success || matches!(state, State::Stopping { .. }) {
                format!("ended with {exit}")
            } else {
                format!("ended with {exit}; its restart policy says no restart")
            };
            out.push(Action::Report(w, line));
            return;
        }
        if std::mem::take(&mut self.worker_mut(w).sibling_stop) {
            // Brought down with a failed sibling or for a rolling restart: back at once,
            // costing no restart of its own.
            out.push(Action::Report(w, format!("ended with {exit}; restarting at once")));
            out.push(Action::Lifecycle(w, Lifecycle::Restarting(Duration::ZERO)));
            self.spawn(w, out);
            return;
        }
        // Ready for long enough: it had started, and comes back at once. Anything shorter is
        // one more failed start in a row, and backs off.
        let started = up.is_some_and(|up| up >= backoff.reset_after);
        let unit = self.rng.unit();
        let worker = self.worker_mut(w);
        let delay = if started {
            worker.failures = 0;
            Duration::ZERO
        } else {
            worker.failures = worker.failures.saturating_add(1);
            let failures = worker.failures;
            if limit.start_attempts > 0 && failures >= limit.start_attempts {
                self.give_up(now, w, GiveUp::NeverStarted(failures), out);
                return;
            }
            jittered(base_delay(&backoff, failures - 1), backoff.jitter, unit)
        };
        if !self.worker_mut(w).intensity.allow(&limit, now) {
            self.give_up(now, w, GiveUp::Intensity, out);
            return;
        }
        let when = if delay.is_zero() {
            "at once".to_owned()
        } else {
            format!("in {}", human(delay))
        };
        out.push(Action::Report(w, format!("ended with {exit}; restarting {when}")));
        out.push(Action::Lifecycle(w, Lifecycle::Restarting(delay)));
        let strategy = self.pools[w.pool].spec.strategy;
        if strategy == Strategy::OneForAll {
            // Every other worker of the pool goes down and comes back with this one.
            for other in self.ids(w.pool).collect::<Vec<_>>() {
                if other != w && matches!(self.worker(other).state, State::Starting | State::Running) {
                    self.stop(now, other, true, out);
                    self.worker_mut(other).sibling_stop = true;
                }
            }
        }
        if delay.is_zero() {
            self.spawn(w, out);
        } else {
            self.worker_mut(w).state = State::Backoff;
            out.push(Action::SetTimer(TimerKey::Restart(w), now + delay));
        }
    }

    /// Worker `w`, just exited, is not restarted: it stays down (in a one-for-all pool, the
    /// whole pool does), or the supervisor shuts down, as the limit's `then` says.
    fn give_up(&mut self, now: Instant, w: WorkerId, why: GiveUp, out: &mut Vec<Action>) {
        self.worker_mut(w).state = State::Down;
        let spec = &self.pools[w.pool].spec;
        let (limit, strategy) = (spec.limit.clone(), spec.strategy);
        let reason = match why {
            GiveUp::NeverStarted(n) => format!(
                "never got started after {n} attempt{} (none was ready for {})",
                if n == 1 { "" } else { "s" },
                human(spec.backoff.reset_after)
            ),
            GiveUp::Intensity => format!("more than {} restarts within {}", limit.restarts, human(limit.within)),
        };
        let recent: Vec<String> = self.worker(w).recent.iter().map(Exit::to_string).collect();
        let whole_pool = strategy == Strategy::OneForAll;
        let then = match (limit.then, whole_pool) {
            (LimitAction::Shutdown, _) => "shutting the supervisor down",
            (LimitAction::Stop, true) => "its pool (one-for-all) stays down",
            (LimitAction::Stop, false) => "it stays down",
        };
        let why = format!("{reason}; last exits: {}; {then}", recent.join(", "));
        out.push(Action::Report(w, format!("gave up: {why}")));
        out.push(Action::Lifecycle(w, Lifecycle::GaveUp(why)));
        if whole_pool {
            self.pools[w.pool].failed = true;
            self.take_down(now, w.pool, out);
        }
        if limit.then == LimitAction::Shutdown {
            self.exit_code = 1;
            self.begin_shutdown(now, out);
        }
    }
}

/// A delay as an operator reads it: `95 ms`, `1.6 s`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

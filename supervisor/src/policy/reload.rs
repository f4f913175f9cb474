//! Applying a reloaded manifest: added pools start, removed pools stop, changed pools are
//! replaced, or restarted one worker at a time when their workers and sockets stay the same.

use std::time::Instant;

use super::{Action, Desired, Policy, PoolId, PoolState, State, Worker, WorkerId};
use crate::manifest::{Manifest, Pool, Strategy};

impl Policy {
    /// Applies a reloaded manifest: added pools start (once their conditions hold), removed
    /// pools stop, changed pools stop and start afresh with their new settings (once the old
    /// workers are down), and unchanged pools are left alone.
    pub fn reload(&mut self, now: Instant, manifest: &Manifest) -> Vec<Action> {
        let mut out = Vec::new();
        if self.exited || self.shutting_down {
            return out;
        }
        self.shutdown_timeout = manifest.supervisor.shutdown_timeout;
        let live: Vec<PoolId> = (0..self.pools.len()).filter(|&p| !self.pools[p].retired).collect();
        for &id in &live {
            let name = self.pools[id].spec.name.clone();
            match manifest.pools.iter().find(|p| p.name == name) {
                None => {
                    out.push(Action::Log(format!("reload: pool {name} was removed; stopping it")));
                    self.retire(now, id, &mut out);
                }
                Some(new) if *new != self.pools[id].spec => {
                    let old = &self.pools[id].spec;
                    // Same workers on the same sockets: restart them one at a time, each
                    // after the previous one is ready again, so that the pool keeps serving.
                    let rolling = new.workers == old.workers
                        && new.listen == old.listen
                        && new.strategy == Strategy::OneForOne
                        && self.pools[id].started
                        && !self.pools[id].failed;
                    if rolling {
                        out.push(Action::Log(format!(
                            "reload: pool {name} changed; restarting its workers one at a time"
                        )));
                        self.pools[id].spec = new.clone();
                        self.pools[id].rolling = Some(0);
                        self.roll(now, id, &mut out);
                    } else {
                        out.push(Action::Log(format!("reload: pool {name} changed; restarting it")));
                        self.retire(now, id, &mut out);
                        self.add(new, Some(id));
                    }
                }
                Some(_) => {}
            }
        }
        for new in &manifest.pools {
            if !live.iter().any(|&id| self.pools[id].spec.name == new.name) {
                out.push(Action::Log(format!("reload: pool {} was added", new.name)));
                self.add(new, None);
            }
        }
        // A pool blocked by a dependency gets another chance with the new manifest.
        for id in 0..self.pools.len() {
            if self.pools[id].blocked && !self.pools[id].retired && !self.pools[id].started {
                self.pools[id].blocked = false;
                for w in self.ids(id).collect::<Vec<_>>() {
                    self.worker_mut(w).state = State::Pending;
                }
            }
        }
        // Dependencies now point at the current pools of those names.
        for id in 0..self.pools.len() {
            if self.pools[id].retired {
                continue;
            }
            let after = self.pools[id]
                .spec
                .after
                .iter()
                .filter_map(|(name, cond)| {
                    let dep =
                        (0..self.pools.len()).find(|&d| !self.pools[d].retired && self.pools[d].spec.name == *name)?;
                    Some((dep, *cond))
                })
                .collect();
            self.pools[id].after = after;
        }
        self.settle(now, &mut out);
        out
    }

    /// Restarts the next worker of a rolling restart, or ends it.
    pub(super) fn roll(&mut self, now: Instant, pool: PoolId, out: &mut Vec<Action>) {
        let Some(index) = self.pools[pool].rolling else { return };
        if index >= self.pools[pool].workers.len() as u32 {
            self.pools[pool].rolling = None;
            out.push(Action::Log(format!(
                "pool {} restarted, one worker at a time",
                self.pools[pool].spec.name
            )));
            return;
        }
        let w = WorkerId { pool, index };
        match self.worker(w).state {
            State::Starting | State::Running => {
                self.stop(now, w, true, out);
                // Restarted for the new settings, not for failing.
                self.worker_mut(w).sibling_stop = true;
            }
            // Finished (a batch job, say): it runs again with the new settings, unless it
            // was stopped by hand.
            State::Done { .. } | State::Down if self.worker(w).desired == Desired::Running => self.spawn(w, out),
            // Backing off, or starting right now: it starts with the new settings anyway.
            _ => {
                self.pools[pool].rolling = Some(index + 1);
                self.roll(now, pool, out);
            }
        }
    }

    /// A worker became ready: if a rolling restart waited for it, on to the next.
    pub(super) fn rolled(&mut self, now: Instant, w: WorkerId, out: &mut Vec<Action>) {
        if self.pools[w.pool].rolling == Some(w.index) {
            self.pools[w.pool].rolling = Some(w.index + 1);
            self.roll(now, w.pool, out);
        }
    }

    fn add(&mut self, spec: &Pool, replaces: Option<PoolId>) {
        let mut pool = PoolState::new(spec, replaces);
        // Workers stopped by hand stay stopped in the pool that replaces theirs, and a pool
        // scaled by hand keeps its size unless the manifest's `workers` changed.
        if let Some(old) = replaces {
            if self.pools[old].spec.workers == spec.workers {
                pool.workers.resize_with(self.worker_count(old) as usize, Worker::new);
            }
            for (new, old) in pool.workers.iter_mut().zip(&self.pools[old].workers) {
                if old.desired == Desired::Stopped {
                    new.desired = Desired::Stopped;
                }
            }
        }
        self.pools.push(pool);
    }

    fn retire(&mut self, now: Instant, pool: PoolId, out: &mut Vec<Action>) {
        self.pools[pool].retired = true;
        self.pools[pool].after.clear();
        self.take_down(now, pool, out);
    }
}

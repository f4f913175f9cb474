//! The policy, driven by a fake clock: no processes, no sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::manifest::{Limit, LimitAction, Restart, Strategy, SupervisorConfig};

fn pool(name: &str, workers: u32) -> Pool {
    Pool {
        workers,
        ..Pool::new(name, vec!["true".into()])
    }
}

fn manifest(pools: Vec<Pool>) -> Manifest {
    Manifest {
        path: PathBuf::from("test.toml"),
        supervisor: SupervisorConfig {
            name: "test".into(),
            shutdown_timeout: Duration::from_secs(30),
        },
        pools,
        shared: Vec::new(),
        queues: Vec::new(),
        topics: Vec::new(),
    }
}

fn w(pool: PoolId, index: u32) -> WorkerId {
    WorkerId { pool, index }
}

/// The policy with a fake clock and the timers it asked for.
struct Harness {
    policy: Policy,
    now: Instant,
    timers: BTreeMap<TimerKey, Instant>,
    log: Vec<String>,
}

impl Harness {
    fn new(pools: Vec<Pool>) -> Self {
        Harness {
            policy: Policy::new(&manifest(pools), 42),
            now: Instant::now(),
            timers: BTreeMap::new(),
            log: vec![],
        }
    }

    /// Feeds an event; answers every Spawn with Spawned; returns the other actions.
    fn step(&mut self, event: Event) -> Vec<Action> {
        let mut pending = vec![event];
        let mut seen = Vec::new();
        while let Some(event) = pending.pop() {
            for action in self.policy.handle(self.now, event) {
                match &action {
                    Action::SetTimer(k, at) => {
                        self.timers.insert(*k, *at);
                    }
                    Action::CancelTimer(k) => {
                        self.timers.remove(k);
                    }
                    Action::Spawn(id) => pending.push(Event::Spawned(*id)),
                    Action::Log(line) => self.log.push(line.clone()),
                    Action::Report(w, line) => {
                        self.log
                            .push(format!("{}.{} {line}", self.policy.pool_name(w.pool), w.index))
                    }
                    _ => {}
                }
                seen.push(action);
            }
        }
        seen
    }

    /// Moves the clock to the earliest timer and fires it.
    fn fire_next(&mut self) -> (TimerKey, Vec<Action>) {
        let (&key, &at) = self.timers.iter().min_by_key(|(_, at)| **at).expect("a timer is set");
        self.timers.remove(&key);
        self.now = self.now.max(at);
        (key, self.step(Event::Timer(key)))
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }
}

fn spawns(actions: &[Action]) -> BTreeSet<WorkerId> {
    actions
        .iter()
        .filter_map(|a| if let Action::Spawn(w) = a { Some(*w) } else { None })
        .collect()
}

fn signalled(actions: &[Action]) -> BTreeSet<WorkerId> {
    actions
        .iter()
        .filter_map(|a| if let Action::Signal(w, _) = a { Some(*w) } else { None })
        .collect()
}

fn exit_code(actions: &[Action]) -> Option<i32> {
    actions
        .iter()
        .find_map(|a| if let Action::Exit(c) = a { Some(*c) } else { None })
}

#[test]
fn pools_without_dependencies_start_at_once() {
    let mut h = Harness::new(vec![pool("a", 2), pool("b", 1)]);
    let actions = h.step(Event::Begin);
    assert_eq!(spawns(&actions), [w(0, 0), w(0, 1), w(1, 0)].into());
}

#[test]
fn z_starts_only_after_x_and_y_both_completed() {
    let (mut x, mut y, mut z) = (pool("x", 1), pool("y", 1), pool("z", 1));
    x.restart = Restart::Never;
    y.restart = Restart::Never;
    z.restart = Restart::Never;
    z.after = vec![("x".into(), Condition::Completed), ("y".into(), Condition::Completed)];
    let mut h = Harness::new(vec![x, y, z]);
    assert_eq!(
        spawns(&h.step(Event::Begin)),
        [w(0, 0), w(1, 0)].into(),
        "x and y in parallel"
    );
    assert!(
        spawns(&h.step(Event::Exited(w(0, 0), Exit::Code(0)))).is_empty(),
        "y still runs"
    );
    assert_eq!(spawns(&h.step(Event::Exited(w(1, 0), Exit::Code(0)))), [w(2, 0)].into());
    assert_eq!(exit_code(&h.step(Event::Exited(w(2, 0), Exit::Code(0)))), Some(0));
}

#[test]
fn a_failed_dependency_blocks_its_dependents_and_the_supervisor_exits_non_zero() {
    let (mut x, mut z) = (pool("x", 1), pool("z", 1));
    x.restart = Restart::Never;
    z.after = vec![("x".into(), Condition::Completed)];
    let mut h = Harness::new(vec![x, z]);
    h.step(Event::Begin);
    let actions = h.step(Event::Exited(w(0, 0), Exit::Code(3)));
    assert!(spawns(&actions).is_empty());
    assert!(
        h.log
            .iter()
            .any(|l| l.contains("pool z will not start: x can no longer become completed")),
        "{:?}",
        h.log
    );
    assert_eq!(exit_code(&actions), Some(1));
}

#[test]
fn a_dependent_waits_for_readiness() {
    let (mut db, mut web) = (pool("db", 1), pool("web", 2));
    db.ready = Ready::Notify;
    web.after = vec![("db".into(), Condition::Ready)];
    let mut h = Harness::new(vec![db, web]);
    assert_eq!(spawns(&h.step(Event::Begin)), [w(0, 0)].into());
    assert!(h.timers.contains_key(&TimerKey::ReadyDeadline(w(0, 0))));
    assert_eq!(spawns(&h.step(Event::Ready(w(0, 0)))), [w(1, 0), w(1, 1)].into());
    assert!(!h.timers.contains_key(&TimerKey::ReadyDeadline(w(0, 0))));
}

#[test]
fn restart_policies_decide_on_exit_codes() {
    let (mut always, mut never, mut on_failure) = (pool("always", 1), pool("never", 1), pool("onfail", 1));
    always.restart = Restart::Always;
    never.restart = Restart::Never;
    on_failure.success_codes = vec![0, 3];
    let mut h = Harness::new(vec![always, never, on_failure]);
    h.step(Event::Begin);
    h.step(Event::Exited(w(0, 0), Exit::Code(0)));
    assert!(
        h.timers.contains_key(&TimerKey::Restart(w(0, 0))),
        "always restarts even on success"
    );
    h.step(Event::Exited(w(1, 0), Exit::Code(1)));
    assert!(
        !h.timers.contains_key(&TimerKey::Restart(w(1, 0))),
        "never never restarts"
    );
    h.step(Event::Exited(w(2, 0), Exit::Code(3)));
    assert!(
        !h.timers.contains_key(&TimerKey::Restart(w(2, 0))),
        "3 is a success code"
    );
}

#[test]
fn one_for_all_restarts_the_whole_pool() {
    let mut p = pool("web", 3);
    p.strategy = Strategy::OneForAll;
    p.backoff.initial = Duration::ZERO;
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    let actions = h.step(Event::Exited(w(0, 1), Exit::Code(1)));
    assert_eq!(signalled(&actions), [w(0, 0), w(0, 2)].into());
    assert_eq!(spawns(&actions), [w(0, 1)].into());
    assert_eq!(
        spawns(&h.step(Event::Exited(w(0, 0), Exit::Signal(15)))),
        [w(0, 0)].into()
    );
    assert_eq!(
        spawns(&h.step(Event::Exited(w(0, 2), Exit::Signal(15)))),
        [w(0, 2)].into()
    );
}

#[test]
fn shutdown_stops_pools_in_reverse_dependency_order() {
    let (db, mut web) = (pool("db", 1), pool("web", 2));
    web.after = vec![("db".into(), Condition::Started)];
    let mut h = Harness::new(vec![db, web]);
    h.step(Event::Begin);
    let actions = h.step(Event::Shutdown);
    assert_eq!(signalled(&actions), [w(1, 0), w(1, 1)].into(), "dependents first");
    assert!(signalled(&h.step(Event::Exited(w(1, 0), Exit::Signal(15)))).is_empty());
    assert_eq!(
        signalled(&h.step(Event::Exited(w(1, 1), Exit::Signal(15)))),
        [w(0, 0)].into()
    );
    assert_eq!(exit_code(&h.step(Event::Exited(w(0, 0), Exit::Code(0)))), Some(0));
}

#[test]
fn a_worker_that_ignores_its_stop_signal_is_killed_after_stop_timeout() {
    let mut h = Harness::new(vec![pool("web", 1)]);
    h.step(Event::Begin);
    h.step(Event::Shutdown);
    let (key, actions) = h.fire_next();
    assert_eq!(key, TimerKey::StopDeadline(w(0, 0)));
    assert!(actions.contains(&Action::Kill(w(0, 0))));
    assert_eq!(exit_code(&h.step(Event::Exited(w(0, 0), Exit::Signal(9)))), Some(0));
}

#[test]
fn a_second_interrupt_kills_at_once() {
    let mut h = Harness::new(vec![pool("a", 2)]);
    h.step(Event::Begin);
    h.step(Event::Shutdown);
    let actions = h.step(Event::Kill);
    assert!(actions.contains(&Action::Kill(w(0, 0))) && actions.contains(&Action::Kill(w(0, 1))));
}

#[test]
fn a_worker_that_is_not_ready_in_time_is_killed_and_restarted() {
    let mut p = pool("db", 1);
    p.ready = Ready::Notify;
    p.backoff.initial = Duration::ZERO;
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    let (key, actions) = h.fire_next();
    assert_eq!(key, TimerKey::ReadyDeadline(w(0, 0)));
    assert!(actions.contains(&Action::Kill(w(0, 0))));
    assert_eq!(
        spawns(&h.step(Event::Exited(w(0, 0), Exit::Signal(9)))),
        [w(0, 0)].into()
    );
}

#[test]
fn heartbeats_hold_the_watchdog_off_and_silence_kills() {
    let mut p = pool("web", 1);
    p.watchdog = Some(Duration::from_secs(10));
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    h.advance(Duration::from_secs(8));
    h.step(Event::Heartbeat(w(0, 0)));
    assert_eq!(h.timers[&TimerKey::Watchdog(w(0, 0))], h.now + Duration::from_secs(10));
    let (key, actions) = h.fire_next();
    assert_eq!(key, TimerKey::Watchdog(w(0, 0)));
    assert!(actions.contains(&Action::Kill(w(0, 0))));
    assert!(h.log.iter().any(|l| l.contains("web.0 missed its watchdog")));
    assert_eq!(
        spawns(&h.step(Event::Exited(w(0, 0), Exit::Signal(9)))),
        [w(0, 0)].into(),
        "up for 18 s: restarted at once"
    );
}

#[test]
fn a_program_that_cannot_start_counts_as_a_failure() {
    let mut h = Harness::new(vec![pool("web", 1)]);
    let actions = h.policy.handle(h.now, Event::Begin);
    assert_eq!(spawns(&actions), [w(0, 0)].into());
    h.step(Event::SpawnFailed(w(0, 0), "No such file or directory".into()));
    assert!(h
        .log
        .iter()
        .any(|l| l.contains("web.0 cannot start: No such file or directory")));
    assert!(h.timers.contains_key(&TimerKey::Restart(w(0, 0))));
}

#[test]
fn a_reload_adds_removes_and_restarts_only_what_changed() {
    let (a, b, c) = (pool("a", 1), pool("b", 1), pool("c", 1));
    let mut h = Harness::new(vec![a.clone(), b.clone(), c]);
    h.step(Event::Begin);
    let mut b2 = b;
    b2.workers = 2;
    let actions = h.policy.reload(h.now, &manifest(vec![a, b2, pool("d", 1)]));
    // c was removed and b changed: both stop; a is left alone; d (the fifth pool) starts.
    assert_eq!(signalled(&actions), [w(1, 0), w(2, 0)].into());
    assert_eq!(spawns(&actions), [w(4, 0)].into());
    h.step(Event::Spawned(w(4, 0)));
    assert!(
        spawns(&h.step(Event::Exited(w(2, 0), Exit::Signal(15)))).is_empty(),
        "c just goes"
    );
    // The new b starts once the old b is down.
    assert_eq!(
        spawns(&h.step(Event::Exited(w(1, 0), Exit::Signal(15)))),
        [w(3, 0), w(3, 1)].into()
    );
    assert_eq!(h.policy.pool(3).workers, 2);
}

#[test]
fn after_a_reload_dependencies_follow_the_new_pool() {
    let (db, mut web) = (pool("db", 1), pool("web", 1));
    web.after = vec![("db".into(), Condition::Started)];
    let mut h = Harness::new(vec![db.clone(), web.clone()]);
    h.step(Event::Begin);
    // Two workers instead of one: replaced as a whole, not restarted one by one.
    let mut db2 = db;
    db2.workers = 2;
    h.policy.reload(h.now, &manifest(vec![db2, web]));
    // The new db (pool 2) starts once the old one is down; web is untouched.
    assert_eq!(
        spawns(&h.step(Event::Exited(w(0, 0), Exit::Signal(15)))),
        [w(2, 0), w(2, 1)].into()
    );
    // Shutting down stops web before the new db.
    assert_eq!(signalled(&h.step(Event::Shutdown)), [w(1, 0)].into());
    assert_eq!(
        signalled(&h.step(Event::Exited(w(1, 0), Exit::Signal(15)))),
        [w(2, 0), w(2, 1)].into()
    );
}

#[test]
fn one_for_all_counts_one_restart_per_incident() {
    let mut p = pool("web", 3);
    p.strategy = Strategy::OneForAll;
    p.limit = Limit {
        restarts: 1,
        within: Duration::from_secs(60),
        start_attempts: 0,
        then: LimitAction::Stop,
    };
    p.backoff.initial = Duration::ZERO;
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    h.step(Event::Exited(w(0, 1), Exit::Code(1)));
    h.step(Event::Exited(w(0, 0), Exit::Signal(15)));
    h.step(Event::Exited(w(0, 2), Exit::Signal(15)));
    assert!(
        !h.log.iter().any(|l| l.contains("gave up")),
        "one crash is one restart: {:?}",
        h.log
    );
}

#[test]
fn a_pool_that_exits_before_it_is_ready_blocks_its_dependents_with_a_message() {
    let (mut db, mut web) = (pool("db", 1), pool("web", 1));
    db.ready = Ready::Notify;
    db.restart = Restart::Never;
    web.after = vec![("db".into(), Condition::Ready)];
    let mut h = Harness::new(vec![db, web]);
    h.step(Event::Begin);
    let actions = h.step(Event::Exited(w(0, 0), Exit::Code(0)));
    assert!(
        h.log
            .iter()
            .any(|l| l.contains("pool web will not start: db can no longer become ready")),
        "{:?}",
        h.log
    );
    assert_eq!(exit_code(&actions), Some(1));
}

#[test]
fn a_worker_spawned_as_its_one_for_all_pool_gives_up_is_killed_not_kept() {
    let mut p = pool("web", 2);
    p.strategy = Strategy::OneForAll;
    p.limit = Limit {
        restarts: 0,
        within: Duration::from_secs(60),
        start_attempts: 0,
        then: LimitAction::Stop,
    };
    let mut h = Harness::new(vec![p, pool("other", 1)]);
    // Spawn answers arrive one at a time: web.0 fails to start before web.1 is answered.
    let actions = h.policy.handle(h.now, Event::Begin);
    assert_eq!(spawns(&actions).len(), 3);
    h.step(Event::SpawnFailed(w(0, 0), "missing".into()));
    assert!(
        h.log
            .iter()
            .any(|l| l.contains("web.0 gave up") && l.ends_with("its pool (one-for-all) stays down")),
        "{:?}",
        h.log
    );
    let actions = h.step(Event::Spawned(w(0, 1)));
    assert!(actions.contains(&Action::Kill(w(0, 1))), "{actions:?}");
}

#[test]
fn a_reload_gives_a_blocked_pool_another_chance() {
    let (mut x, mut z) = (pool("x", 1), pool("z", 1));
    x.restart = Restart::Never;
    z.after = vec![("x".into(), Condition::Completed)];
    let mut h = Harness::new(vec![x.clone(), z.clone(), pool("keep", 1)]);
    h.step(Event::Begin);
    h.step(Event::Exited(w(0, 0), Exit::Code(3)));
    assert!(h.log.iter().any(|l| l.contains("pool z will not start")));
    let mut fixed = x;
    fixed.command = vec!["true".into(), "--fixed".into()];
    let actions = h.policy.reload(h.now, &manifest(vec![fixed, z, pool("keep", 1)]));
    assert_eq!(
        spawns(&actions),
        [w(0, 0)].into(),
        "x runs again, with its new settings"
    );
    h.step(Event::Spawned(w(0, 0)));
    assert_eq!(
        spawns(&h.step(Event::Exited(w(0, 0), Exit::Code(0)))),
        [w(1, 0)].into(),
        "z starts at last"
    );
}

#[test]
fn a_reload_restarts_a_changed_pool_one_worker_at_a_time_each_after_the_last_is_ready() {
    let mut p = pool("web", 3);
    p.ready = Ready::Notify;
    p.backoff.initial = Duration::ZERO;
    let mut h = Harness::new(vec![p.clone()]);
    h.step(Event::Begin);
    for i in 0..3 {
        h.step(Event::Ready(w(0, i)));
    }
    let mut p2 = p;
    p2.command = vec!["true".into(), "--v2".into()];
    let actions = h.policy.reload(h.now, &manifest(vec![p2]));
    assert_eq!(signalled(&actions), [w(0, 0)].into(), "only the first worker goes down");
    for i in 0..3 {
        assert_eq!(
            spawns(&h.step(Event::Exited(w(0, i), Exit::Signal(15)))),
            [w(0, i)].into(),
            "back at once"
        );
        assert_eq!(h.policy.pool(0).command[1], "--v2", "with the new settings");
        let next = h.step(Event::Ready(w(0, i)));
        if i < 2 {
            assert_eq!(
                signalled(&next),
                [w(0, i + 1)].into(),
                "the next one once this one is ready"
            );
        } else {
            assert!(signalled(&next).is_empty());
            assert!(
                h.log
                    .iter()
                    .any(|l| l.contains("pool web restarted, one worker at a time")),
                "{:?}",
                h.log
            );
        }
    }
    assert!(
        !h.log.iter().any(|l| l.contains("gave up")),
        "a rolling restart costs no restart budget"
    );
}

mod control;
mod restarts;

#[test]
fn a_workers_life_is_told_step_by_step_for_the_event_stream() {
    use crate::policy::Lifecycle;
    let mut spec = pool("web", 1);
    spec.backoff.jitter = 0.0;
    spec.limit.start_attempts = 2;
    let mut h = Harness::new(vec![spec]);
    let lifecycle = |actions: &[Action]| -> Vec<Lifecycle> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Lifecycle(_, step) => Some(step.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(lifecycle(&h.step(Event::Begin)), [Lifecycle::Ready]);
    let delay = h.policy.pool(0).backoff.initial;
    assert_eq!(
        lifecycle(&h.step(Event::Exited(w(0, 0), Exit::Code(3)))),
        [Lifecycle::Exited(Exit::Code(3)), Lifecycle::Restarting(delay)]
    );
    let (_, restarted) = h.fire_next();
    assert_eq!(lifecycle(&restarted), [Lifecycle::Ready]);
    let given_up = lifecycle(&h.step(Event::Exited(w(0, 0), Exit::Signal(9))));
    assert!(
        matches!(&given_up[..], [Lifecycle::Exited(Exit::Signal(9)), Lifecycle::GaveUp(why)] if why.contains("never got started after 2 attempts")),
        "{given_up:?}"
    );
}

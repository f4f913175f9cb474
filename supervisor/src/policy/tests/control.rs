//! Commands by hand: stopped workers stay stopped, commands on one worker are serialised,
//! and a pool that gave up starts again.

use super::*;
use crate::control::WorkerState;

/// Carries out a command by hand, answering its spawns as [`Harness::step`] does; returns
/// every action and the lines it answered with.
fn by_hand(h: &mut Harness, what: Manual, pool: PoolId, index: Option<u32>) -> (Vec<Action>, Vec<String>) {
    let (actions, done) = h.policy.manual(h.now, what, pool, index);
    let mut all = Vec::new();
    for action in actions {
        match &action {
            Action::SetTimer(k, at) => {
                h.timers.insert(*k, *at);
            }
            Action::CancelTimer(k) => {
                h.timers.remove(k);
            }
            Action::Spawn(id) => all.extend(h.step(Event::Spawned(*id))),
            _ => {}
        }
        all.push(action);
    }
    (all, done.into_iter().map(|(_, line)| line).collect())
}

fn state(h: &Harness, pool: PoolId, index: u32) -> WorkerState {
    h.policy
        .views()
        .into_iter()
        .find(|p| p.id == pool)
        .expect("the pool")
        .workers[index as usize]
        .state
}

#[test]
fn two_restarts_of_one_worker_in_a_row_spawn_one_replacement() {
    let mut h = Harness::new(vec![pool("web", 1)]);
    h.step(Event::Begin);
    let (first, said) = by_hand(&mut h, Manual::Restart, 0, Some(0));
    assert_eq!(signalled(&first), [w(0, 0)].into());
    assert_eq!(said, ["restarting"]);
    let (second, said) = by_hand(&mut h, Manual::Restart, 0, Some(0));
    assert!(
        signalled(&second).is_empty() && spawns(&second).is_empty(),
        "{second:?}"
    );
    assert_eq!(said, ["already restarting"]);
    let actions = h.step(Event::Exited(w(0, 0), Exit::Signal(15)));
    assert_eq!(spawns(&actions), [w(0, 0)].into(), "back at once, once");
    assert_eq!(state(&h, 0, 0), WorkerState::Ready);
}

#[test]
fn a_worker_stopped_by_hand_is_not_restarted_nor_counted_as_finished() {
    let mut h = Harness::new(vec![pool("web", 1)]);
    h.step(Event::Begin);
    by_hand(&mut h, Manual::Stop, 0, None);
    let actions = h.step(Event::Exited(w(0, 0), Exit::Signal(15)));
    assert!(spawns(&actions).is_empty(), "{actions:?}");
    assert_eq!(exit_code(&actions), None, "the supervisor waits to be told");
    assert_eq!(state(&h, 0, 0), WorkerState::Stopped);
    let (actions, _) = by_hand(&mut h, Manual::Start, 0, None);
    assert_eq!(spawns(&actions), [w(0, 0)].into());
}

#[test]
fn a_worker_stopped_by_hand_stays_stopped_across_a_reload_that_replaces_or_rolls_its_pool() {
    let mut h = Harness::new(vec![pool("web", 2)]);
    h.step(Event::Begin);
    by_hand(&mut h, Manual::Stop, 0, Some(1));
    h.step(Event::Exited(w(0, 1), Exit::Signal(15)));

    // Same workers, a changed command: a rolling restart, which passes the stopped one by.
    let mut changed = pool("web", 2);
    changed.command = vec!["false".into()];
    let actions = h.policy.reload(h.now, &manifest(vec![changed.clone()]));
    assert_eq!(signalled(&actions), [w(0, 0)].into());
    let actions = h.step(Event::Exited(w(0, 0), Exit::Signal(15)));
    assert_eq!(spawns(&actions), [w(0, 0)].into(), "{actions:?}");
    assert_eq!(state(&h, 0, 1), WorkerState::Stopped);

    // More workers: the pool is replaced, and the new one keeps the worker stopped.
    changed.workers = 3;
    let actions = h.policy.reload(h.now, &manifest(vec![changed]));
    assert_eq!(signalled(&actions), [w(0, 0)].into());
    let actions = h.step(Event::Exited(w(0, 0), Exit::Signal(15)));
    assert_eq!(spawns(&actions), [w(1, 0), w(1, 2)].into(), "{actions:?}");
    assert_eq!(state(&h, 1, 1), WorkerState::Stopped);
}

#[test]
fn start_revives_a_pool_that_gave_up() {
    let mut web = pool("web", 1);
    web.limit = Limit {
        start_attempts: 1,
        ..Limit::default()
    };
    let mut h = Harness::new(vec![web, pool("other", 1)]);
    h.step(Event::Begin);
    h.step(Event::Exited(w(0, 0), Exit::Code(1)));
    assert_eq!(state(&h, 0, 0), WorkerState::Failed, "{:?}", h.log);
    let (actions, said) = by_hand(&mut h, Manual::Start, 0, None);
    assert_eq!(spawns(&actions), [w(0, 0)].into());
    assert_eq!(said, ["starting"]);
    assert_eq!(state(&h, 0, 0), WorkerState::Ready);
}

/// A policy whose pool `web` of 2 was scaled to 4 by hand, all of them running.
fn scaled_to_4() -> Harness {
    let mut h = Harness::new(vec![pool("web", 2)]);
    h.step(Event::Begin);
    let (actions, _) = h.policy.scale(h.now, 0, 4);
    assert_eq!(spawns(&actions), [w(0, 2), w(0, 3)].into());
    assert!(signalled(&actions).is_empty(), "the others are left alone");
    for index in [2, 3] {
        h.step(Event::Spawned(w(0, index)));
    }
    assert_eq!(h.policy.worker_count(0), 4);
    h
}

#[test]
fn scaling_adds_and_removes_only_the_last_workers() {
    let mut h = scaled_to_4();
    let (actions, _) = h.policy.scale(h.now, 0, 1);
    assert!(spawns(&actions).is_empty());
    assert_eq!(signalled(&actions), [w(0, 1), w(0, 2), w(0, 3)].into(), "{actions:?}");
    assert_eq!(h.policy.worker_count(0), 1, "the removed ones no longer count");
    for index in [1, 2, 3] {
        let actions = h.step(Event::Exited(w(0, index), Exit::Signal(15)));
        assert!(spawns(&actions).is_empty(), "{actions:?}");
    }
    assert_eq!(h.policy.views()[0].workers.len(), 1, "dropped once down");
    // A late word about one of them is ignored, not a panic.
    assert!(h.step(Event::Ready(w(0, 3))).is_empty());
    assert!(h.step(Event::Timer(TimerKey::StopDeadline(w(0, 2)))).is_empty());
}

#[test]
fn a_pool_scaled_by_hand_keeps_its_size_across_reloads_that_leave_its_workers_alone() {
    let mut h = scaled_to_4();
    // A changed command: a rolling restart of all four.
    let mut changed = pool("web", 2);
    changed.command = vec!["false".into()];
    h.policy.reload(h.now, &manifest(vec![changed.clone()]));
    assert_eq!(h.policy.worker_count(0), 4);
    // Another strategy: the pool is replaced, by one of four.
    changed.strategy = Strategy::OneForAll;
    h.policy.reload(h.now, &manifest(vec![changed.clone()]));
    assert_eq!(h.policy.find_pool("web"), Some(1));
    assert_eq!(h.policy.worker_count(1), 4);
    // Another `workers`: the manifest's number wins.
    changed.workers = 3;
    h.policy.reload(h.now, &manifest(vec![changed]));
    assert_eq!(h.policy.worker_count(2), 3);
}

//! Restarts with the default settings: at once after a run that counts as started, backoff
//! over consecutive failed starts, and limits counted for each worker on its own.

use super::*;

/// Runs the crash loop of worker `w` (exits at once with code 1, spawns answered at once)
/// until no restart is due; returns how many times it ran.
fn crash_loop(h: &mut Harness, w: WorkerId) -> usize {
    let mut runs = 1;
    loop {
        h.step(Event::Exited(w, Exit::Code(1)));
        if !h.timers.contains_key(&TimerKey::Restart(w)) {
            return runs;
        }
        let (key, actions) = h.fire_next();
        assert_eq!(key, TimerKey::Restart(w));
        assert_eq!(spawns(&actions), [w].into());
        runs += 1;
    }
}

#[test]
fn a_worker_that_ran_3_s_and_is_killed_restarts_at_once_with_the_default_settings() {
    let mut h = Harness::new(vec![pool("web", 1)]);
    h.step(Event::Begin);
    h.advance(Duration::from_secs(3));
    let actions = h.step(Event::Exited(w(0, 0), Exit::Signal(9)));
    assert_eq!(spawns(&actions), [w(0, 0)].into(), "no backoff");
    assert!(!h.timers.contains_key(&TimerKey::Restart(w(0, 0))));
    assert!(
        h.log
            .contains(&"web.0 ended with killed by SIGKILL; restarting at once".to_owned()),
        "{:?}",
        h.log
    );
}

#[test]
fn the_up_for_a_while_threshold_is_one_second_by_default() {
    let mut h = Harness::new(vec![pool("web", 1)]);
    h.step(Event::Begin);
    h.advance(Duration::from_millis(999));
    assert!(spawns(&h.step(Event::Exited(w(0, 0), Exit::Signal(9)))).is_empty());
    h.fire_next();
    h.advance(Duration::from_secs(1));
    assert_eq!(
        spawns(&h.step(Event::Exited(w(0, 0), Exit::Signal(9)))),
        [w(0, 0)].into()
    );
}

#[test]
fn a_worker_that_never_became_ready_backs_off_however_long_it_ran() {
    let mut p = pool("db", 1);
    p.ready = Ready::Notify;
    p.backoff.jitter = 0.0;
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    h.advance(Duration::from_secs(5));
    assert!(spawns(&h.step(Event::Exited(w(0, 0), Exit::Code(1)))).is_empty());
    assert_eq!(
        h.timers[&TimerKey::Restart(w(0, 0))] - h.now,
        Duration::from_millis(100)
    );
    // Ready for 2 s this time: a start that succeeded, so its exit restarts at once.
    h.fire_next();
    h.step(Event::Ready(w(0, 0)));
    h.advance(Duration::from_secs(2));
    assert_eq!(spawns(&h.step(Event::Exited(w(0, 0), Exit::Code(1)))), [w(0, 0)].into());
}

#[test]
fn backoff_grows_only_over_failures_in_a_row_and_a_good_run_between_resets_it() {
    let mut p = pool("web", 1);
    p.backoff.jitter = 0.0;
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    let mut delays = Vec::new();
    for run_for in [0, 0, 2000, 0, 0] {
        h.advance(Duration::from_millis(run_for));
        h.step(Event::Exited(w(0, 0), Exit::Code(1)));
        match h.timers.get(&TimerKey::Restart(w(0, 0))) {
            Some(at) => {
                delays.push(*at - h.now);
                h.fire_next();
            }
            None => delays.push(Duration::ZERO),
        }
    }
    assert_eq!(delays, [100, 200, 0, 100, 200].map(Duration::from_millis));
}

#[test]
fn eleven_kills_of_different_workers_of_a_pool_of_50_within_60_s_stop_nothing() {
    let mut h = Harness::new(vec![pool("web", 50)]);
    h.step(Event::Begin);
    h.advance(Duration::from_secs(5));
    for i in 0..11 {
        h.advance(Duration::from_secs(1));
        let actions = h.step(Event::Exited(w(0, i), Exit::Signal(9)));
        assert_eq!(spawns(&actions), [w(0, i)].into(), "worker {i} comes back");
    }
    assert!(!h.log.iter().any(|l| l.contains("gave up")), "{:?}", h.log);
    assert!(h.policy.is_alive(w(0, 20)), "the rest of the pool runs on");
}

#[test]
fn a_crash_looping_worker_gives_up_after_10_failed_starts_by_default() {
    let mut h = Harness::new(vec![pool("web", 1)]);
    h.step(Event::Begin);
    assert_eq!(crash_loop(&mut h, w(0, 0)), 10, "{:?}", h.log);
    let gave_up = h.log.iter().find(|l| l.contains("gave up")).expect("a give-up line");
    assert!(
        gave_up.starts_with(
            "web.0 gave up: never got started after 10 attempts (none was ready for 1 s); last exits: exit code 1,"
        ),
        "{gave_up}"
    );
    assert!(gave_up.ends_with("; it stays down"), "{gave_up}");
    // Each restart said how long it waited first.
    let waits: Vec<&String> = h.log.iter().filter(|l| l.contains("; restarting in ")).collect();
    assert_eq!(waits.len(), 9, "{:?}", h.log);
}

#[test]
fn a_given_up_worker_of_a_one_for_one_pool_leaves_its_siblings_running() {
    let mut h = Harness::new(vec![pool("web", 3)]);
    h.step(Event::Begin);
    crash_loop(&mut h, w(0, 1));
    assert!(!h.policy.is_alive(w(0, 1)));
    assert!(h.policy.is_alive(w(0, 0)) && h.policy.is_alive(w(0, 2)));
    // And when those finish, the supervisor exits 1: one of them was given up.
    h.step(Event::Exited(w(0, 0), Exit::Code(0)));
    assert_eq!(exit_code(&h.step(Event::Exited(w(0, 2), Exit::Code(0)))), Some(1));
}

#[test]
fn zero_start_attempts_never_gives_up() {
    let mut p = pool("web", 1);
    p.limit.start_attempts = 0;
    p.limit.restarts = u32::MAX;
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    for _ in 0..50 {
        h.step(Event::Exited(w(0, 0), Exit::Code(1)));
        h.fire_next();
    }
    assert!(h.policy.is_alive(w(0, 0)), "{:?}", h.log);
}

#[test]
fn a_dependent_of_a_pool_whose_worker_never_spawned_is_blocked_not_left_waiting() {
    let (db, mut web) = (pool("db", 1), pool("web", 1));
    web.after = vec![("db".into(), Condition::Started)];
    let mut h = Harness::new(vec![db, web]);
    h.policy.handle(h.now, Event::Begin);
    for _ in 0..10 {
        h.step(Event::SpawnFailed(w(0, 0), "missing".into()));
        if h.timers.contains_key(&TimerKey::Restart(w(0, 0))) {
            h.timers.remove(&TimerKey::Restart(w(0, 0)));
            h.policy.handle(h.now, Event::Timer(TimerKey::Restart(w(0, 0))));
        }
    }
    assert!(
        h.log
            .iter()
            .any(|l| l.contains("pool web will not start: db can no longer become started")),
        "{:?}",
        h.log
    );
}

#[test]
fn a_crash_soon_after_the_start_restarts_after_the_backoff() {
    let mut h = Harness::new(vec![pool("web", 1)]);
    h.step(Event::Begin);
    h.advance(Duration::from_millis(900));
    let actions = h.step(Event::Exited(w(0, 0), Exit::Signal(9)));
    assert!(spawns(&actions).is_empty(), "not at once");
    let at = h.timers[&TimerKey::Restart(w(0, 0))];
    let delay = at - h.now;
    assert!(
        delay >= Duration::from_millis(90) && delay <= Duration::from_millis(110),
        "{delay:?}"
    );
    let (key, actions) = h.fire_next();
    assert_eq!(key, TimerKey::Restart(w(0, 0)));
    assert_eq!(spawns(&actions), [w(0, 0)].into());
    assert!(
        h.log
            .iter()
            .any(|l| l.starts_with("web.0 ended with killed by SIGKILL; restarting in ") && l.ends_with(" ms")),
        "{:?}",
        h.log
    );
}

#[test]
fn backoff_grows_with_consecutive_failures_and_resets_after_a_long_run() {
    let mut p = pool("web", 1);
    p.backoff.jitter = 0.0;
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    let mut delays = Vec::new();
    for _ in 0..4 {
        h.step(Event::Exited(w(0, 0), Exit::Code(1)));
        delays.push(h.timers[&TimerKey::Restart(w(0, 0))] - h.now);
        h.fire_next();
    }
    assert_eq!(delays, [100, 200, 400, 800].map(Duration::from_millis));
    h.advance(Duration::from_secs(61));
    assert_eq!(
        spawns(&h.step(Event::Exited(w(0, 0), Exit::Code(1)))),
        [w(0, 0)].into(),
        "after a long run: at once"
    );
    h.step(Event::Exited(w(0, 0), Exit::Code(1)));
    assert_eq!(
        h.timers[&TimerKey::Restart(w(0, 0))] - h.now,
        Duration::from_millis(100),
        "reset"
    );
}

#[test]
fn zero_initial_backoff_restarts_at_once() {
    let mut p = pool("web", 1);
    p.backoff.initial = Duration::ZERO;
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    assert_eq!(spawns(&h.step(Event::Exited(w(0, 0), Exit::Code(1)))), [w(0, 0)].into());
}

#[test]
fn a_crash_loop_gives_up_after_the_limit_naming_the_last_exits() {
    let mut p = pool("web", 1);
    // Each run counts as started (ready for 1 s), so only the intensity limit applies.
    p.limit = Limit {
        restarts: 3,
        within: Duration::from_secs(60),
        start_attempts: 0,
        then: LimitAction::Stop,
    };
    let mut h = Harness::new(vec![p, pool("other", 1)]);
    h.step(Event::Begin);
    for i in 0..3 {
        h.advance(Duration::from_secs(1));
        assert_eq!(
            spawns(&h.step(Event::Exited(w(0, 0), Exit::Code(10 + i)))),
            [w(0, 0)].into()
        );
    }
    h.advance(Duration::from_secs(1));
    let actions = h.step(Event::Exited(w(0, 0), Exit::Code(13)));
    assert!(spawns(&actions).is_empty() && !h.timers.contains_key(&TimerKey::Restart(w(0, 0))));
    let gave_up = h.log.iter().find(|l| l.contains("gave up")).expect("a give-up message");
    assert!(
        gave_up.contains("web.0 gave up: more than 3 restarts within 60 s"),
        "{gave_up}"
    );
    assert!(gave_up.contains("exit code 12, exit code 13"), "{gave_up}");
    assert!(gave_up.ends_with("; it stays down"), "{gave_up}");
    assert_eq!(exit_code(&actions), None, "the other pool still runs");
}

#[test]
fn past_the_limit_with_then_shutdown_the_supervisor_exits_non_zero() {
    let mut p = pool("web", 1);
    p.limit = Limit {
        restarts: 1,
        within: Duration::from_secs(60),
        start_attempts: 0,
        then: LimitAction::Shutdown,
    };
    let mut h = Harness::new(vec![p, pool("other", 1)]);
    h.step(Event::Begin);
    h.step(Event::Exited(w(0, 0), Exit::Code(1)));
    h.fire_next();
    let actions = h.step(Event::Exited(w(0, 0), Exit::Code(1)));
    assert_eq!(signalled(&actions), [w(1, 0)].into(), "everything else is stopped");
    assert_eq!(exit_code(&h.step(Event::Exited(w(1, 0), Exit::Signal(15)))), Some(1));
}

#[test]
fn repeated_spawn_failures_keep_backing_off_after_a_long_run() {
    let mut p = pool("web", 1);
    p.backoff.jitter = 0.0;
    let mut h = Harness::new(vec![p]);
    h.step(Event::Begin);
    h.advance(Duration::from_secs(120));
    // Restarted at once after the long run; that spawn fails, and so do the next ones.
    let actions = h.policy.handle(h.now, Event::Exited(w(0, 0), Exit::Code(1)));
    assert_eq!(spawns(&actions), [w(0, 0)].into());
    h.step(Event::SpawnFailed(w(0, 0), "missing".into()));
    let mut delays = Vec::new();
    for _ in 0..3 {
        let at = h.timers[&TimerKey::Restart(w(0, 0))];
        delays.push(at - h.now);
        h.now = at;
        h.timers.remove(&TimerKey::Restart(w(0, 0)));
        h.policy.handle(h.now, Event::Timer(TimerKey::Restart(w(0, 0))));
        h.step(Event::SpawnFailed(w(0, 0), "missing".into()));
    }
    assert_eq!(delays, [100, 200, 400].map(Duration::from_millis));
}

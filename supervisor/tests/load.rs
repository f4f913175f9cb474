//! The control plane under load: `procwire up` runs this test binary as a pool of RPC
//! workers behind supervisor-owned sockets, client threads call it through a pool client
//! without pause, and the real `procwire` verbs restart and scale the pool meanwhile.
//! Every wait is for an event (a line, a number of answered calls) with a deadline.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use support::control::*;
use support::*;

/// Set for the test binary run as a worker.
const WORKER_ENV: &str = "PROCWIRE_LOAD_WORKER";

#[procwire_macros::service]
pub trait Calc {
    /// Not idempotent on purpose: a call that ran on a worker that went away is never
    /// retried, so it would fail. The answer names the worker's pid.
    fn add(&self, a: i64, b: i64) -> (i64, u32);
}

struct Worker;

impl Calc for Worker {
    fn add(&self, a: i64, b: i64) -> (i64, u32) {
        (a + b, std::process::id())
    }
}

/// A pool of `workers` of this binary serving `Calc` on `listen`, ready once serving.
fn manifest(listen: &Path, workers: u32) -> String {
    format!(
        r#"
[pool.calc]
workers = {workers}
ready = "notify"
listen = ["unix:{listen}"]
command = [{exe:?}]
env = {{ {WORKER_ENV} = "1" }}
"#,
        listen = listen.display(),
        exe = std::env::current_exe()
            .expect("the test binary")
            .to_str()
            .expect("a UTF-8 path"),
    )
}

/// What the calling threads saw.
#[derive(Default)]
struct Calls {
    answered: AtomicU64,
    failures: Mutex<Vec<String>>,
    pids: Mutex<BTreeSet<u32>>,
    /// Notified every few answers, for [`Calls::wait_for`].
    progress: Condvar,
    lock: Mutex<()>,
}

impl Calls {
    /// Waits until `more` calls beyond those answered now are answered.
    fn wait_for_more(&self, more: u64) {
        let target = self.answered.load(Ordering::SeqCst) + more;
        self.wait_until(&format!("{more} more answered calls"), |calls| {
            calls.answered.load(Ordering::SeqCst) >= target
        });
    }

    /// Waits, as calls are answered, until `done` holds.
    fn wait_until(&self, what: &str, done: impl Fn(&Calls) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut guard = self.lock.lock().unwrap();
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: not seen in time; answered by {:?}; failures: {:?}",
                self.pids.lock().unwrap(),
                self.failures.lock().unwrap()
            );
            guard = self.progress.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// The workers that answered since the last call of this.
    fn take_pids(&self) -> BTreeSet<u32> {
        std::mem::take(&mut *self.pids.lock().unwrap())
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// Runs `during` while `threads` threads call `pool` without pause; what they saw.
fn under_load(pool: &CalcPool, threads: i64, during: impl FnOnce(&Calls)) -> Calls {
    let calls = Calls::default();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (calls, done) = (&calls, &done);
            s.spawn(move || {
                for i in 0.. {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    match pool.add(t, i) {
                        Ok((sum, pid)) => {
                            assert_eq!(sum, t + i, "a right answer or none");
                            calls.pids.lock().unwrap().insert(pid);
                            if calls.answered.fetch_add(1, Ordering::SeqCst) % 16 == 0 {
                                let _guard = calls.lock.lock().unwrap();
                                calls.progress.notify_all();
                            }
                        }
                        Err(e) => calls.failures.lock().unwrap().push(e.to_string()),
                    }
                }
            });
        }
        // Stop the callers even if `during` panics, so that the scope can end.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = Stop(&done);
        during(&calls);
    });
    calls
}

/// Waits for the supervisor's line saying that worker `which` (`calc.2`) is ready; its pid.
fn wait_ready(sup: &Supervisor, which: &str, n: usize) -> i64 {
    let about = format!("{which} (pid ");
    let line = sup.wait_until(&format!("{which} ready #{n}"), |seen| {
        seen.lines
            .iter()
            .filter(|l| l.text.contains(&about) && l.text.ends_with(") is ready"))
            .nth(n - 1)
            .map(|l| l.text.clone())
    });
    number_after(&line, "(pid ")
}

fn pids(status: &Value) -> Vec<Value> {
    status["pools"][0]["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["pid"].clone())
        .collect()
}

fn a_rolling_restart_under_load_fails_no_call_and_replaces_every_worker() -> Result<(), Failed> {
    let dir = temp_dir();
    let socket = dir.path().join("calc-{index}.sock");
    let sup = Supervisor::start(dir.path(), "rolling", &manifest(&socket, 3));
    let before: Vec<i64> = (0..3).map(|i| wait_ready(&sup, &format!("calc.{i}"), 1)).collect();
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("unix:{}", dir.path().join(format!("calc-{i}.sock")).display()))
        .collect();
    let pool = CalcPool::new(endpoints);

    let calls = under_load(&pool, 6, |calls| {
        calls.wait_for_more(200);
        ok(dir.path(), &["restart", "calc", "--rolling"]);
        sup.wait_for_containing("pool calc restarted, one worker at a time");
        // And the pool is served by the new workers.
        calls.wait_for_more(200);
    });

    let failures = calls.failures();
    assert!(failures.is_empty(), "{} calls failed: {failures:#?}", failures.len());
    let status = status_json(dir.path());
    for (index, old) in before.iter().enumerate() {
        let w = worker(&status, "calc", index as u64);
        assert_ne!(w["pid"], *old, "calc.{index} was restarted: {status:#}");
        assert_eq!(w["state"], "ready");
    }
    let answered_by = calls.pids.lock().unwrap().clone();
    let new: BTreeSet<u32> = pids(&status).iter().map(|p| p.as_u64().unwrap() as u32).collect();
    assert!(
        answered_by.intersection(&new).count() > 0 && answered_by.iter().any(|p| before.contains(&i64::from(*p))),
        "calls were answered by old and new workers: {answered_by:?}, new {new:?}"
    );
    println!(
        "{} calls answered across the rolling restart, none failed",
        calls.answered.load(Ordering::SeqCst)
    );
    Ok(())
}

fn scaling_up_and_down_under_load_keeps_the_other_workers_and_fails_no_call() -> Result<(), Failed> {
    let dir = temp_dir();
    // One socket shared by the pool's workers: the pool client connects to it eight times.
    let socket = dir.path().join("calc.sock");
    let sup = Supervisor::start(dir.path(), "scaling", &manifest(&socket, 2));
    wait_ready(&sup, "calc.0", 1);
    wait_ready(&sup, "calc.1", 1);
    let kept = pids(&status_json(dir.path()));
    let endpoint = format!("unix:{}", socket.display());
    let pool = CalcPool::new(vec![endpoint.clone(); 8]);

    let calls = under_load(&pool, 6, |calls| {
        calls.wait_for_more(200);
        ok(dir.path(), &["scale", "calc", "4"]);
        wait_ready(&sup, "calc.2", 1);
        wait_ready(&sup, "calc.3", 1);
        let status = status_json(dir.path());
        assert_eq!(pids(&status)[..2], kept[..], "{status:#}");
        assert_eq!(pids(&status).len(), 4, "{status:#}");
        calls.wait_for_more(200);
        // A second client, connected now, may also reach the new workers (the kernel picks
        // which worker accepts on a shared socket): its calls must not fail either when
        // the two go.
        let spread = CalcPool::new(vec![endpoint.clone(); 8]);
        let spread_calls = under_load(&spread, 4, |spread_calls| {
            spread_calls.wait_for_more(200);
            ok(dir.path(), &["scale", "calc", "2"]);
            wait_ended(&sup, "calc.2");
            wait_ended(&sup, "calc.3");
            spread_calls.wait_for_more(200);
        });
        let failures = spread_calls.failures();
        assert!(
            failures.is_empty(),
            "{} calls of the second client failed: {failures:#?}",
            failures.len()
        );
        println!(
            "the second client was answered by {} workers",
            spread_calls.pids.lock().unwrap().len()
        );
        calls.wait_for_more(200);
    });

    let failures = calls.failures();
    assert!(failures.is_empty(), "{} calls failed: {failures:#?}", failures.len());
    let status = status_json(dir.path());
    assert_eq!(pids(&status), kept, "two workers, the same two: {status:#}");
    println!(
        "{} calls answered while the pool grew to 4 and shrank to 2, none failed",
        calls.answered.load(Ordering::SeqCst)
    );
    Ok(())
}

/// A pool client kept following the pool by `follow` (through the control socket at
/// `control`, or in process) is scaled from 2 to 4 workers and back under load: it calls the
/// new workers, then only the two that stay, and no call fails.
fn a_following_pool_client_calls_the_workers_the_pool_has(
    dir: &Path,
    control: &Path,
    follow: impl FnOnce(&procwire_rpc::pool::Pool) -> std::thread::JoinHandle<()>,
) -> std::thread::JoinHandle<()> {
    let pool = CalcPool::new(Vec::<String>::new());
    let follower = follow(pool.pool());
    assert_eq!(pool.pool().len(), 2, "the pool's endpoints are set at once");
    let scale = |n: &str| {
        ok(dir, &["scale", "calc", n, "--control", control.to_str().unwrap()]);
    };
    let calls = under_load(&pool, 6, |calls| {
        calls.wait_until("both first workers answering", |c| c.pids.lock().unwrap().len() == 2);
        let first = calls.take_pids();
        scale("4");
        calls.wait_until("four workers answering", |c| c.pids.lock().unwrap().len() == 4);
        let grown = calls.take_pids();
        assert!(
            grown.is_superset(&first),
            "the first two still answer: {first:?} {grown:?}"
        );
        assert_eq!(pool.pool().len(), 4);

        scale("2");
        let left = Instant::now() + Duration::from_secs(60);
        while pool.pool().len() != 2 {
            assert!(Instant::now() < left, "the pool client never heard of the scale down");
            std::thread::yield_now();
        }
        // Calls sent before the change may still be answered by the removed workers as they
        // drain; those made from now on are not sent to them.
        calls.wait_for_more(50);
        calls.take_pids();
        calls.wait_for_more(300);
        let last = calls.take_pids();
        assert!(
            last.is_subset(&first),
            "only the two kept answer: {last:?}, kept {first:?}"
        );
    });
    let failures = calls.failures();
    assert!(failures.is_empty(), "{} calls failed: {failures:#?}", failures.len());
    follower
}

/// Waits, with a deadline, for the follower's thread to end (with its supervisor).
fn ended(follower: std::thread::JoinHandle<()>) {
    let (done, joined) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(follower.join().is_ok());
    });
    assert_eq!(
        joined.recv_timeout(Duration::from_secs(30)),
        Ok(true),
        "the follower ends with the supervisor"
    );
}

fn a_pool_client_following_over_the_control_socket_calls_new_workers_after_scale_and_not_removed_ones(
) -> Result<(), Failed> {
    let dir = temp_dir();
    let socket = dir.path().join("calc-{index}.sock");
    let sup = Supervisor::start(dir.path(), "following", &manifest(&socket, 2));
    wait_ready(&sup, "calc.0", 1);
    wait_ready(&sup, "calc.1", 1);
    let control = dir.path().join("procwire/following.sock");
    let follower = a_following_pool_client_calls_the_workers_the_pool_has(dir.path(), &control, |pool| {
        procwire_supervisor::control::follow::follow_pool(&control, "calc", pool).expect("follow the pool")
    });
    ok(dir.path(), &["down"]);
    ended(follower);
    let mut sup = sup;
    sup.expect_exit(0);
    Ok(())
}

fn a_pool_client_following_over_the_control_socket_outlives_a_killed_supervisor_and_follows_the_next(
) -> Result<(), Failed> {
    let dir = temp_dir();
    let socket = dir.path().join("calc-{index}.sock");
    let mut first = Supervisor::start(dir.path(), "phoenix", &manifest(&socket, 2));
    wait_ready(&first, "calc.0", 1);
    wait_ready(&first, "calc.1", 1);
    let control = dir.path().join("procwire/phoenix.sock");
    let pool = CalcPool::new(Vec::<String>::new());
    let follower = procwire_supervisor::control::follow::follow_pool(&control, "calc", pool.pool())?;
    assert_eq!(pool.pool().len(), 2);

    // The supervisor dies without a word (its workers with it); the next one runs three.
    first.kill();
    let next = Supervisor::start(dir.path(), "phoenix", &manifest(&socket, 3));
    for i in 0..3 {
        wait_ready(&next, &format!("calc.{i}"), 1);
    }
    let left = Instant::now() + Duration::from_secs(60);
    while pool.pool().len() != 3 {
        assert!(
            Instant::now() < left,
            "the follower never followed the new supervisor (the pool has {} workers)",
            pool.pool().len()
        );
        std::thread::yield_now();
    }
    // And the pool client calls all three of the new workers.
    let mut pids = BTreeSet::new();
    while pids.len() < 3 {
        assert!(Instant::now() < left, "only {pids:?} of the three new workers answered");
        let (sum, pid) = pool
            .add(2, 3)
            .map_err(|e| format!("a call after the new supervisor: {e}"))?;
        assert_eq!(sum, 5);
        pids.insert(pid);
    }
    // Once no one holds the pool client, its follower ends, though the supervisor runs on.
    drop(pool);
    ended(follower);
    ok(dir.path(), &["down"]);
    let mut next = next;
    next.expect_exit(0);
    Ok(())
}

fn an_embedded_supervisors_pool_client_follows_the_pool_it_scales() -> Result<(), Failed> {
    use procwire_supervisor::manifest::{Endpoint, Manifest, Pool, Ready};
    let dir = temp_dir();
    let exe = std::env::current_exe()?.to_str().expect("a UTF-8 path").to_owned();
    let calc = Pool {
        workers: 2,
        ready: Ready::Notify,
        listen: vec![Endpoint::Unix(dir.path().join("calc-{index}.sock"))],
        env: [(WORKER_ENV.to_owned(), "1".to_owned())].into(),
        ..Pool::new("calc", vec![exe])
    };
    let control = dir.path().join("ctl.sock");
    let supervisor =
        procwire_supervisor::Supervisor::start_with_control(Manifest::new("embedded-follow").pool(calc), &control)?;
    let follower = a_following_pool_client_calls_the_workers_the_pool_has(dir.path(), &control, |pool| {
        supervisor.follow("calc", pool).expect("follow the pool")
    });
    assert_eq!(
        supervisor.endpoints("calc").len(),
        2,
        "the endpoints of the workers there are"
    );
    assert_eq!(supervisor.stop()?, 0);
    ended(follower);
    Ok(())
}

fn main() {
    if std::env::var_os(WORKER_ENV).is_some() {
        if let Err(e) = procwire_workers::Worker::new().serve(CalcServer::new(Worker)) {
            eprintln!("calc worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    let tests = vec![
        Trial::test(
            "a_rolling_restart_under_load_fails_no_call_and_replaces_every_worker",
            a_rolling_restart_under_load_fails_no_call_and_replaces_every_worker,
        ),
        Trial::test(
            "scaling_up_and_down_under_load_keeps_the_other_workers_and_fails_no_call",
            scaling_up_and_down_under_load_keeps_the_other_workers_and_fails_no_call,
        ),
        Trial::test(
            "a_pool_client_following_over_the_control_socket_calls_new_workers_after_scale_and_not_removed_ones",
            a_pool_client_following_over_the_control_socket_calls_new_workers_after_scale_and_not_removed_ones,
        ),
        Trial::test(
            "a_pool_client_following_over_the_control_socket_outlives_a_killed_supervisor_and_follows_the_next",
            a_pool_client_following_over_the_control_socket_outlives_a_killed_supervisor_and_follows_the_next,
        ),
        Trial::test(
            "an_embedded_supervisors_pool_client_follows_the_pool_it_scales",
            an_embedded_supervisors_pool_client_follows_the_pool_it_scales,
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), tests).exit();
}

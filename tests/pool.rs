//! A supervised pool end to end: this test binary is the supervisor (embedded) and, started
//! by it in the role "calc", each worker. Calls come from many threads through the pool
//! client while workers die and while the supervisor shuts down.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire::rpc::{ClientConfig, Delivery, Ending, RpcError};
use procwire::supervisor::manifest::{Endpoint, Manifest, Pool, Ready, Restart, SupervisorConfig};

#[path = "pool/awaited.rs"]
mod awaited;
#[path = "pool/rolling.rs"]
mod rolling;

use awaited::the_async_pool_routes_tokio_tasks_over_the_workers_and_retries_around_a_killed_one;

use rolling::{
    a_rolling_restart_through_supervisor_owned_sockets_fails_no_call,
    a_rolling_upgrade_that_adds_a_method_fails_no_call_of_old_clients,
};

#[procwire::service]
pub trait Calc {
    /// Not idempotent here on purpose: a call on a dying worker must say so, not be retried.
    fn add(&self, a: i64, b: i64) -> i64;
    #[procwire(idempotent)]
    fn pid(&self) -> u32;
    /// The `VERSION` the worker was started with.
    #[procwire(idempotent)]
    fn version(&self) -> String;
}

struct MyCalc;

impl Calc for MyCalc {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    fn version(&self) -> String {
        std::env::var("VERSION").unwrap_or_default()
    }
}

fn manifest(dir: &std::path::Path) -> Manifest {
    let calc = Pool {
        role: Some("calc".into()),
        workers: 4,
        ready: Ready::Notify,
        listen: vec![Endpoint::Unix(dir.join("calc-{index}.sock"))],
        ..Pool::new("calc", Vec::new())
    };
    let mut calc = calc;
    calc.backoff.initial = Duration::ZERO;
    Manifest {
        path: dir.join("pool.toml"),
        supervisor: SupervisorConfig {
            name: "pool-test".into(),
            shutdown_timeout: Duration::from_secs(20),
        },
        pools: vec![calc],
        shared: Vec::new(),
        queues: Vec::new(),
        topics: Vec::new(),
    }
}

/// The pid serving each worker's own socket, asked directly.
fn pids(endpoints: &[procwire::rpc::Endpoint]) -> Vec<u32> {
    endpoints
        .iter()
        .map(|e| CalcClient::connect(e.connect().unwrap()).unwrap().pid().unwrap())
        .collect()
}

fn a_pool_of_four_under_eight_threads_survives_a_killed_worker_and_comes_back_to_four() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = procwire::Supervisor::start(manifest(dir.path()))?;
    let endpoints = supervisor.endpoints("calc");
    let before = pids(&endpoints);
    assert_eq!(
        before.iter().collect::<BTreeSet<_>>().len(),
        4,
        "four workers, one per socket"
    );
    let pool = CalcPool::new(endpoints.clone());
    let killed = std::sync::atomic::AtomicBool::new(false);
    let done = std::sync::atomic::AtomicBool::new(false);
    let answered_after_kill = AtomicUsize::new(0);
    let (busy_tx, busy_rx) = mpsc::channel();
    let replacement = std::thread::scope(|s| {
        for t in 0..8i64 {
            let (pool, killed, done, answered_after_kill, busy_tx, endpoints) =
                (&pool, &killed, &done, &answered_after_kill, busy_tx.clone(), &endpoints);
            s.spawn(move || {
                let mut died_here = 0;
                for i in 0.. {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    let after_kill = killed.load(Ordering::SeqCst);
                    match pool.add(t, i) {
                        Ok(sum) => {
                            assert_eq!(sum, t + i, "a right answer or none");
                            if after_kill {
                                answered_after_kill.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            // Only a call in flight on the killed worker fails, and it says
                            // which worker died. A caller has one call in flight at a time,
                            // and the dead connection is dropped: one failure per caller at
                            // most.
                            let text = e.to_string();
                            assert!(
                                text.contains(&endpoints[1].to_string()) && text.contains("died"),
                                "the error names the killed worker: {text}"
                            );
                            died_here += 1;
                            assert_eq!(died_here, 1, "a caller lost a call besides the one in flight: {text}");
                        }
                    }
                    if t == 0 && i == 100 {
                        let _ = busy_tx.send(());
                    }
                }
            });
        }
        busy_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the callers got going");
        killed.store(true, Ordering::SeqCst);
        kill(Pid::from_raw(before[1] as i32), Signal::SIGKILL).unwrap();
        // The replacement answers on worker 1's socket (a connection made now waits in the
        // backlog until it serves), and the pool, still under load, reaches it too.
        let replacement = pids(&endpoints[1..2])[0];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pool.pid().expect("an idempotent call is answered") != replacement {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool never called the restarted worker"
            );
        }
        done.store(true, Ordering::SeqCst);
        replacement
    });
    assert!(
        answered_after_kill.load(Ordering::Relaxed) > 0,
        "calls were answered after the kill"
    );
    // Back to four: the killed worker's socket is served by its replacement.
    let after = pids(&endpoints);
    assert_eq!(after.iter().collect::<BTreeSet<_>>().len(), 4);
    assert_ne!(after[1], before[1], "worker 1 was replaced");
    assert_eq!(after[1], replacement, "by the worker the pool called");
    assert_eq!(
        [after[0], after[2], after[3]],
        [before[0], before[2], before[3]],
        "the others were untouched"
    );
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

fn a_graceful_shutdown_under_load_answers_every_call_it_took_correctly() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = procwire::Supervisor::start(manifest(dir.path()))?;
    let pool = CalcPool::new(supervisor.endpoints("calc"));
    let answered = AtomicUsize::new(0);
    let (busy_tx, busy_rx) = mpsc::channel();
    let code = std::thread::scope(|s| {
        for t in 0..8i64 {
            let (pool, answered, busy_tx) = (&pool, &answered, busy_tx.clone());
            s.spawn(move || {
                for i in 0.. {
                    match pool.add(t, i) {
                        Ok(sum) => {
                            assert_eq!(sum, t + i, "an answered call is answered right");
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        // The pool is going away: calls stop with a clear error, never hang.
                        Err(RpcError::Disconnected { .. }) => return,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                    if t == 0 && i == 100 {
                        let _ = busy_tx.send(());
                    }
                }
            });
        }
        busy_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the callers got going");
        supervisor.stop()
    })?;
    assert_eq!(code, 0, "a clean shutdown");
    assert!(answered.load(Ordering::Relaxed) >= 100);
    Ok(())
}

/// Continues a SIGSTOPped worker when dropped, so that a failing test leaves none frozen.
struct Frozen(Pid);

impl Frozen {
    fn freeze(pid: u32) -> Self {
        let pid = Pid::from_raw(pid as i32);
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP the worker");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Eight callers of `add` on `pool` until `until` passes; the number of calls answered, and
/// the longest call.
fn load(pool: &CalcPool, until: Instant) -> (usize, Duration) {
    let (answered, longest) = (AtomicUsize::new(0), Mutex::new(Duration::ZERO));
    std::thread::scope(|s| {
        for t in 0..8i64 {
            let (answered, longest) = (&answered, &longest);
            s.spawn(move || {
                let mut i = 0;
                while Instant::now() < until {
                    let start = Instant::now();
                    match pool.add(t, i) {
                        Ok(sum) => {
                            assert_eq!(sum, t + i);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(RpcError::DeadlineExceeded { .. }) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                    let took = start.elapsed();
                    let mut longest = longest.lock().unwrap();
                    *longest = (*longest).max(took);
                    i += 1;
                }
            });
        }
    });
    (answered.into_inner(), longest.into_inner().unwrap())
}

fn a_frozen_worker_holds_no_call_past_its_deadline_and_the_pool_keeps_half_its_throughput() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = procwire::Supervisor::start(manifest(dir.path()))?;
    let endpoints = supervisor.endpoints("calc");
    let before = pids(&endpoints);
    let deadline = Duration::from_secs(1);
    let pool = CalcPool::new(endpoints).with_timeout(deadline);
    let window = Duration::from_secs(3);
    let (healthy_before, _) = load(&pool, Instant::now() + window);
    let frozen = Frozen::freeze(before[1]);
    let (degraded, longest) = load(&pool, Instant::now() + window);
    drop(frozen);
    // Healthy again once it runs; the lesser healthy window is the reference, so that a
    // machine busier before or after than during the freeze does not fail the test.
    let (healthy_after, _) = load(&pool, Instant::now() + window);
    let healthy = healthy_before.min(healthy_after);
    eprintln!(
        "healthy: {healthy_before} then {healthy_after} calls, one frozen: {degraded} calls, longest call {longest:?}"
    );
    // The target is the deadline plus 100 ms; the margin is for a loaded machine. Without
    // deadlines on the pool every caller stays stuck on the frozen worker.
    assert!(
        longest <= deadline + Duration::from_millis(400),
        "no call lasts past its deadline: the longest took {longest:?}"
    );
    assert!(
        degraded * 2 >= healthy,
        "at least half the healthy throughput: {degraded} calls against {healthy}"
    );
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

/// Calls answered by many callers, counted, so that a test can wait for the next ones.
struct Progress {
    total: AtomicUsize,
    tick_tx: mpsc::Sender<()>,
    tick_rx: Mutex<mpsc::Receiver<()>>,
}

impl Progress {
    fn new() -> Self {
        let (tick_tx, tick_rx) = mpsc::channel();
        Progress {
            total: AtomicUsize::new(0),
            tick_tx,
            tick_rx: Mutex::new(tick_rx),
        }
    }

    /// One more call answered.
    fn answered(&self) {
        if self.total.fetch_add(1, Ordering::Relaxed) % 100 == 0 {
            let _ = self.tick_tx.send(());
        }
    }

    /// Waits until about `calls` more calls are answered (in hundreds).
    fn wait_for(&self, calls: usize) {
        let ticks = self.tick_rx.lock().unwrap();
        for _ in 0..calls / 100 {
            ticks
                .recv_timeout(Duration::from_secs(30))
                .expect("the pool keeps answering");
        }
    }
}

fn without_a_deadline_most_callers_keep_going_past_a_frozen_worker() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = procwire::Supervisor::start(manifest(dir.path()))?;
    let endpoints = supervisor.endpoints("calc");
    let before = pids(&endpoints);
    // No call timeout at all: only the routing keeps callers off the frozen worker.
    let pool = CalcPool::with_config(endpoints, ClientConfig::default());
    let counts: Vec<AtomicUsize> = (0..8).map(|_| AtomicUsize::new(0)).collect();
    let (progress, done) = (Progress::new(), AtomicBool::new(false));
    let going = std::thread::scope(|s| -> Result<usize, Failed> {
        for (t, count) in counts.iter().enumerate() {
            let (pool, progress, done) = (&pool, &progress, &done);
            s.spawn(move || {
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    assert_eq!(pool.add(t as i64, i).expect("a call"), t as i64 + i);
                    count.fetch_add(1, Ordering::Relaxed);
                    progress.answered();
                    i += 1;
                }
            });
        }
        progress.wait_for(2000);
        let frozen = Frozen::freeze(before[1]);
        // Callers that were going to be caught by the frozen worker are caught by now.
        progress.wait_for(2000);
        let snapshot: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        progress.wait_for(2000);
        let going = counts
            .iter()
            .zip(&snapshot)
            .filter(|(c, before)| c.load(Ordering::Relaxed) > **before)
            .count();
        done.store(true, Ordering::Relaxed);
        // The callers caught by the frozen worker are answered once it runs again.
        drop(frozen);
        Ok(going)
    })?;
    eprintln!("{going} of 8 callers kept going past the frozen worker");
    assert!(going >= 5, "at least 5 of 8 callers keep going; {going} did");
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

fn a_dead_worker_whose_socket_still_accepts_costs_the_callers_nothing() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mut manifest = manifest(dir.path());
    manifest.pools[0].workers = 3;
    manifest.pools[0].restart = Restart::Never;
    let supervisor = procwire::Supervisor::start(manifest)?;
    let endpoints = supervisor.endpoints("calc");
    let before = pids(&endpoints);
    let pool = CalcPool::new(endpoints);
    for _ in 0..30 {
        pool.pid()?;
    }
    // Not restarted: its socket, the supervisor's, still accepts into the backlog, and nobody
    // will ever answer there.
    let dead = before[1];
    kill(Pid::from_raw(dead as i32), Signal::SIGKILL)?;
    let latencies = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (pool, latencies) = (&pool, &latencies);
            s.spawn(move || {
                let mut mine = Vec::new();
                for _ in 0..500 {
                    let start = Instant::now();
                    let pid = pool.pid().expect("an idempotent call finds a live worker");
                    mine.push(start.elapsed());
                    assert_ne!(pid, dead, "the dead worker answers nothing");
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
    });
    let mut latencies = latencies.into_inner().unwrap();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("p99 {p99:?}, slowest {:?}", latencies.last().unwrap());
    // The target is 10 ms; the margin is for a loaded machine. Waiting out the handshake
    // with the dead worker's backlog costs 10 s.
    assert!(p99 < Duration::from_millis(50), "calls p99 {p99:?}");
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

fn a_worker_stopped_gracefully_under_load_fails_no_call_its_unsent_calls_go_elsewhere() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = procwire::Supervisor::start(manifest(dir.path()))?;
    let endpoints = supervisor.endpoints("calc");
    let before = pids(&endpoints);
    let pool = CalcPool::new(endpoints);
    let (failures, done, progress) = (AtomicUsize::new(0), AtomicBool::new(false), Progress::new());
    std::thread::scope(|s| {
        for t in 0..8i64 {
            let (pool, failures, done, progress) = (&pool, &failures, &done, &progress);
            s.spawn(move || {
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    // `add` is not idempotent: only a call that did not run may be retried.
                    match pool.add(t, i) {
                        Ok(sum) => assert_eq!(sum, t + i),
                        Err(e) => {
                            eprintln!("a call failed while one worker stopped: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    progress.answered();
                    i += 1;
                }
            });
        }
        progress.wait_for(1000);
        // A graceful stop of one worker: it drains, says goodbye, exits 0 (and is not
        // restarted). Calls it had not read must go to the others.
        kill(Pid::from_raw(before[2] as i32), Signal::SIGTERM).unwrap();
        progress.wait_for(2000);
        done.store(true, Ordering::Relaxed);
    });
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no call failed");
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

fn a_graceful_stop_of_the_whole_pool_under_load_says_stopped_never_died() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = procwire::Supervisor::start(manifest(dir.path()))?;
    let pool = CalcPool::new(supervisor.endpoints("calc"));
    let (busy_tx, busy_rx) = mpsc::channel();
    let errors = Mutex::new(Vec::new());
    let code = std::thread::scope(|s| {
        for t in 0..8i64 {
            let (pool, busy_tx, errors) = (&pool, busy_tx.clone(), &errors);
            s.spawn(move || {
                for i in 0.. {
                    match pool.add(t, i) {
                        Ok(sum) => assert_eq!(sum, t + i),
                        Err(e) => {
                            errors.lock().unwrap().push(e);
                            return;
                        }
                    }
                    if i == 100 {
                        let _ = busy_tx.send(());
                    }
                }
            });
        }
        for _ in 0..8 {
            busy_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the callers got going");
        }
        supervisor.stop()
    })?;
    assert_eq!(code, 0, "a clean shutdown");
    for e in errors.into_inner().unwrap() {
        match &e {
            RpcError::Disconnected {
                delivery: Delivery::NotSent,
                ending: Ending::Stopped | Ending::Unreachable,
                reason,
                ..
            } => assert!(!reason.contains("died"), "{e}"),
            other => panic!("a non-idempotent call during a graceful stop failed otherwise than unsent: {other}"),
        }
    }
    Ok(())
}

fn the_pool_client_starts_calls_and_keeps_deadlines_as_the_single_client_does() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = procwire::Supervisor::start(manifest(dir.path()))?;
    let pool = CalcPool::new(supervisor.endpoints("calc"));
    // Started calls return before their replies, on whichever workers are least busy.
    let started: Vec<_> = (0..8i64).map(|i| pool.start().add(i, 1)).collect::<Result<_, _>>()?;
    let sums: Vec<i64> = started.into_iter().map(|c| c.wait()).collect::<Result<_, _>>()?;
    assert_eq!(sums, (1..=8).collect::<Vec<i64>>());
    let mut polled = pool.try_start().add(2, 2)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let four = loop {
        if let Some(sum) = polled.try_wait()? {
            break sum;
        }
        assert!(Instant::now() < deadline, "the started call is answered");
        std::thread::yield_now();
    };
    assert_eq!(four, 4);
    // A deadline already past sends nothing.
    let late = pool.with_deadline(Instant::now()).add(1, 1).unwrap_err();
    assert!(matches!(late, RpcError::DeadlineExceeded { .. }), "{late}");
    assert_eq!(pool.with_timeout(Duration::from_secs(30)).add(1, 1)?, 2);
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

fn a_pool_over_shm_is_one_line_of_change_and_survives_a_killed_worker() -> Result<(), Failed> {
    a_pool_over_another_transport_survives_a_killed_worker(Endpoint::Shm, "shm:")
}

fn a_pool_over_message_queues_is_one_line_of_change_and_survives_a_killed_worker() -> Result<(), Failed> {
    a_pool_over_another_transport_survives_a_killed_worker(Endpoint::Mq, "mq:")
}

fn a_pool_over_another_transport_survives_a_killed_worker(
    endpoint: fn(std::path::PathBuf) -> Endpoint,
    prefix: &str,
) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mut manifest = manifest(dir.path());
    manifest.pools[0].listen = vec![endpoint(dir.path().join("calc-{index}.sock"))];
    let supervisor = procwire::Supervisor::start(manifest)?;
    let endpoints = supervisor.endpoints("calc");
    assert!(
        endpoints.iter().all(|e| e.to_string().starts_with(prefix)),
        "{endpoints:?}"
    );
    let pool = CalcPool::new(endpoints.clone());
    let before = pids(&endpoints);
    assert_eq!(before.iter().collect::<BTreeSet<_>>().len(), 4);
    let killed = endpoints[1].to_string();
    let lost = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4i64 {
            let (pool, killed, lost) = (&pool, &killed, &lost);
            s.spawn(move || {
                for i in 0..500i64 {
                    match pool.add(t, i) {
                        Ok(sum) => assert_eq!(sum, t + i),
                        // `add` is not idempotent: the call that was on the killed worker
                        // says so, and is not retried. Any other failure is a bug.
                        Err(RpcError::Disconnected {
                            peer,
                            delivery: Delivery::Unknown,
                            ending: Ending::Died,
                            ..
                        }) if peer == *killed => {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("call {t}+{i}: {e}"),
                    }
                }
            });
        }
        kill(Pid::from_raw(before[1] as i32), Signal::SIGKILL).expect("kill a worker");
    });
    // At most the one call each thread had on the killed worker when it died.
    assert!(
        lost.load(Ordering::Relaxed) <= 4,
        "{} calls lost",
        lost.load(Ordering::Relaxed)
    );
    // The supervisor restarts it on the same socket; the pool reaches it again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids(&endpoints)[1] == before[1] {
        assert!(Instant::now() < deadline, "the killed worker came back");
        std::thread::yield_now();
    }
    assert_eq!(pool.add(20, 22)?, 42);
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

fn main() {
    if procwire::role().as_deref() == Some("calc") {
        let version = std::env::var("VERSION").unwrap_or_default();
        if version != "1" {
            if let Ok(report) = std::env::var("REPORT") {
                let socket = std::os::unix::net::UnixDatagram::unbound().expect("a socket");
                let _ = socket.send_to(b"up", report);
            }
        }
        // `next` is the build with one more method.
        let served = match version.as_str() {
            "next" => procwire::workers::Worker::new().serve(rolling::next::CalcServer::new(MyCalc)),
            _ => procwire::workers::Worker::new().serve(CalcServer::new(MyCalc)),
        };
        served.expect("serve");
        return;
    }
    let mut args = Arguments::from_args();
    // One supervisor at a time: each takes the process's HUP.
    args.test_threads = Some(1);
    let trials = vec![
        Trial::test(
            "a_rolling_restart_through_supervisor_owned_sockets_fails_no_call",
            a_rolling_restart_through_supervisor_owned_sockets_fails_no_call,
        ),
        Trial::test(
            "the_async_pool_routes_tokio_tasks_over_the_workers_and_retries_around_a_killed_one",
            the_async_pool_routes_tokio_tasks_over_the_workers_and_retries_around_a_killed_one,
        ),
        Trial::test(
            "a_rolling_upgrade_that_adds_a_method_fails_no_call_of_old_clients",
            a_rolling_upgrade_that_adds_a_method_fails_no_call_of_old_clients,
        ),
        Trial::test(
            "a_pool_of_four_under_eight_threads_survives_a_killed_worker_and_comes_back_to_four",
            a_pool_of_four_under_eight_threads_survives_a_killed_worker_and_comes_back_to_four,
        ),
        Trial::test(
            "a_graceful_shutdown_under_load_answers_every_call_it_took_correctly",
            a_graceful_shutdown_under_load_answers_every_call_it_took_correctly,
        ),
        Trial::test(
            "the_pool_client_starts_calls_and_keeps_deadlines_as_the_single_client_does",
            the_pool_client_starts_calls_and_keeps_deadlines_as_the_single_client_does,
        ),
        Trial::test(
            "a_frozen_worker_holds_no_call_past_its_deadline_and_the_pool_keeps_half_its_throughput",
            a_frozen_worker_holds_no_call_past_its_deadline_and_the_pool_keeps_half_its_throughput,
        ),
        Trial::test(
            "without_a_deadline_most_callers_keep_going_past_a_frozen_worker",
            without_a_deadline_most_callers_keep_going_past_a_frozen_worker,
        ),
        Trial::test(
            "a_dead_worker_whose_socket_still_accepts_costs_the_callers_nothing",
            a_dead_worker_whose_socket_still_accepts_costs_the_callers_nothing,
        ),
        Trial::test(
            "a_worker_stopped_gracefully_under_load_fails_no_call_its_unsent_calls_go_elsewhere",
            a_worker_stopped_gracefully_under_load_fails_no_call_its_unsent_calls_go_elsewhere,
        ),
        Trial::test(
            "a_graceful_stop_of_the_whole_pool_under_load_says_stopped_never_died",
            a_graceful_stop_of_the_whole_pool_under_load_says_stopped_never_died,
        ),
        Trial::test(
            "a_pool_over_shm_is_one_line_of_change_and_survives_a_killed_worker",
            a_pool_over_shm_is_one_line_of_change_and_survives_a_killed_worker,
        ),
        Trial::test(
            "a_pool_over_message_queues_is_one_line_of_change_and_survives_a_killed_worker",
            a_pool_over_message_queues_is_one_line_of_change_and_survives_a_killed_worker,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// Sets its flag when dropped, also while unwinding.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

//! A supervised pool end to end: this test binary is the supervisor (embedded) and, started
//! by it in the role "calc", each worker. Calls come from many threads through the pool
//! client while workers die and while the supervisor shuts down.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire::rpc::transport::unix;
use procwire::rpc::RpcError;
use procwire::supervisor::manifest::{Endpoint, Manifest, Pool, Ready, SupervisorConfig};

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
    }
}

/// The pid serving each worker's own socket, asked directly.
fn pids(endpoints: &[String]) -> Vec<u32> {
    endpoints
        .iter()
        .map(|e| {
            let client = CalcClient::connect(unix::connect(e.strip_prefix("unix:").unwrap()).unwrap()).unwrap();
            client.pid().unwrap()
        })
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
                                text.contains(&endpoints[1]) && text.contains("died"),
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

fn a_rolling_restart_through_supervisor_owned_sockets_fails_no_call() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let report = std::os::unix::net::UnixDatagram::bind(dir.path().join("report"))?;
    report.set_read_timeout(Some(Duration::from_secs(30)))?;
    let manifest_text = |version: u32| {
        format!(
            r#"
[supervisor]
name = "rolling"

[pool.calc]
role = "calc"
workers = 4
ready = "notify"
listen = ["unix:calc-{{index}}.sock"]
backoff = {{ initial = "0s", max = "1s", factor = 2.0, jitter = 0.0, reset_after = "60s" }}
env = {{ VERSION = "{version}", REPORT = "{}" }}
"#,
            dir.path().join("report").display()
        )
    };
    let path = dir.path().join("rolling.toml");
    std::fs::write(&path, manifest_text(1))?;
    let supervisor = procwire::Supervisor::start(Manifest::load(&path)?)?;
    let pool = CalcPool::new(supervisor.endpoints("calc"));
    assert_eq!(pool.version()?, "1");
    let (answers, failures) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (first_tx, first_rx) = mpsc::channel::<()>();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| -> Result<(), Failed> {
        for _ in 0..8 {
            let (pool, answers, failures, done, first_tx) = (&pool, &answers, &failures, &done, first_tx.clone());
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    match pool.version() {
                        Ok(v) => {
                            assert!(v == "1" || v == "2", "{v}");
                            answers.fetch_add(1, Ordering::Relaxed);
                            let _ = first_tx.send(());
                        }
                        Err(e) => {
                            eprintln!("a call failed during the rolling restart: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        // Every caller is under way before the restart begins.
        for _ in 0..8 {
            first_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("every caller gets going");
        }
        // The new version, applied by HUP: the workers restart one at a time.
        std::fs::write(&path, manifest_text(2))?;
        kill(Pid::this(), Signal::SIGHUP)?;
        let mut buf = [0u8; 16];
        for _ in 0..4 {
            report
                .recv(&mut buf)
                .expect("each new worker reports within the deadline");
        }
        done.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no call failed during the rolling restart"
    );
    assert!(
        answers.load(Ordering::Relaxed) >= 8,
        "every caller was answered before the restart began"
    );
    let versions: BTreeSet<String> = (0..8).map(|_| pool.version()).collect::<Result<_, _>>()?;
    assert_eq!(
        versions,
        BTreeSet::from(["2".to_owned()]),
        "every worker runs the new version"
    );
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

fn main() {
    if procwire::role().as_deref() == Some("calc") {
        if std::env::var("VERSION").as_deref() == Ok("2") {
            if let Ok(report) = std::env::var("REPORT") {
                let socket = std::os::unix::net::UnixDatagram::unbound().expect("a socket");
                let _ = socket.send_to(b"up", report);
            }
        }
        procwire::workers::Worker::new()
            .serve(CalcServer::new(MyCalc))
            .expect("serve");
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
            "a_pool_of_four_under_eight_threads_survives_a_killed_worker_and_comes_back_to_four",
            a_pool_of_four_under_eight_threads_survives_a_killed_worker_and_comes_back_to_four,
        ),
        Trial::test(
            "a_graceful_shutdown_under_load_answers_every_call_it_took_correctly",
            a_graceful_shutdown_under_load_answers_every_call_it_took_correctly,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

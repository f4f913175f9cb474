//! Chaos under load, bounded in time: `procwire up` runs a pool of 4 workers (this test
//! binary, in the worker role) while 8 client threads call it through the pool client and a
//! random worker is SIGKILLed every 200 ms for 10 s. Every call must return the right answer
//! or an explicit error that says whether the call was sent; afterwards the pool is back to 4
//! ready workers, the supervisor has no zombie child, and it holds no more descriptors than
//! before the chaos.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire_rpc::{Delivery, Endpoint, RpcError};

use support::control::status_json;
use support::*;

/// Set in the workers' environment by the manifest.
const ROLE_ENV: &str = "PROCWIRE_CHAOS_ROLE";
const WORKERS: usize = 4;
const CALLERS: u64 = 8;
const CHAOS_FOR: Duration = Duration::from_secs(10);
const KILL_EVERY: Duration = Duration::from_millis(200);

#[procwire_macros::service]
pub trait Calc {
    /// Not idempotent on purpose: a call on a dying worker must say what became of it.
    fn add(&self, a: u64, b: u64) -> u64;
}

struct MyCalc;

impl Calc for MyCalc {
    fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// The supervisor's open descriptors.
fn descriptors(pid: Pid) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the supervisor's fds")
        .count()
}

/// The supervisor's children that are still running (not zombies), and its zombies.
fn children_by_state(pid: Pid) -> (Vec<i64>, Vec<i64>) {
    let (mut running, mut zombies) = (Vec::new(), Vec::new());
    for kid in children(pid).expect("the supervisor's children") {
        match proc_stat(kid).map(|stat| stat.state) {
            Some('Z') => zombies.push(kid),
            Some(_) => running.push(kid),
            None => {}
        }
    }
    (running, zombies)
}

/// Waits until every worker of the pool is ready (by `status --json`, asked again each time
/// the supervisor writes a line, as it does when a worker becomes ready).
fn wait_all_ready(sup: &Supervisor, dir: &std::path::Path) {
    let deadline = Instant::now() + DEADLINE * 3;
    loop {
        let status = status_json(dir);
        let workers = status["pools"][0]["workers"].as_array().expect("workers").clone();
        let ready = workers.iter().filter(|w| w["state"] == "ready").count();
        if ready == WORKERS && workers.len() == WORKERS {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the pool is not back to {WORKERS} ready workers: {status:#}"
        );
        sup.wait_for_more_lines(sup.lines().len(), deadline);
    }
}

/// A small xorshift: which worker to kill next.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn a_pool_of_four_under_eight_callers_survives_a_worker_killed_every_200_ms_for_10_s() -> Result<(), Failed> {
    let dir = temp_dir();
    let d = dir.path().display();
    let exe = std::env::current_exe()?;
    let mut sup = Supervisor::start(
        dir.path(),
        "chaos",
        &format!(
            r#"
[pool.calc]
command = ["{exe}"]
workers = {WORKERS}
ready = "notify"
listen = ["unix:{d}/calc-{{index}}.sock"]
env = {{ {ROLE_ENV} = "worker" }}
backoff = {{ initial = "1ms", max = "50ms" }}
limit = {{ restarts = 100000, within = "60s", start_attempts = 0 }}
"#,
            exe = exe.display()
        ),
    );
    // The control socket is up before any worker starts.
    sup.wait_until("every worker ready", |seen| {
        (0..WORKERS)
            .all(|i| {
                let worker = format!("calc.{i} (pid ");
                seen.lines
                    .iter()
                    .any(|l| l.text.contains(&worker) && l.text.ends_with("is ready"))
            })
            .then_some(())
    });
    wait_all_ready(&sup, dir.path());
    let supervisor = sup.pid();
    let fds_before = descriptors(supervisor);
    let endpoints: Vec<Endpoint> = (0..WORKERS)
        .map(|i| Endpoint::Unix(dir.path().join(format!("calc-{i}.sock"))))
        .collect();
    let pool = CalcPool::new(endpoints);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    println!("chaos seed {seed:#x}");
    let done = AtomicBool::new(false);
    let (answered, not_sent, unknown) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let killed = std::thread::scope(|s| {
        for t in 0..CALLERS {
            let (pool, done, answered, not_sent, unknown) = (&pool, &done, &answered, &not_sent, &unknown);
            s.spawn(move || {
                let _stop = StopOnDrop(done);
                let mut i = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let a = t << 40 | i;
                    match pool.add(a, 7) {
                        Ok(sum) => {
                            assert_eq!(sum, a + 7, "a wrong answer");
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(RpcError::Disconnected {
                            delivery: Delivery::NotSent,
                            ..
                        }) => {
                            not_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(RpcError::Disconnected {
                            delivery: Delivery::Unknown,
                            ..
                        }) => {
                            unknown.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("an error that does not say whether the call was sent: {other}"),
                    }
                    i += 1;
                }
            });
        }
        // The killer: a random running worker every 200 ms, for 10 s.
        let mut dice = Dice(seed);
        let mut killed = 0;
        let until = Instant::now() + CHAOS_FOR;
        while Instant::now() < until && !done.load(Ordering::SeqCst) {
            let (running, _) = children_by_state(supervisor);
            if !running.is_empty() {
                let victim = running[dice.roll(running.len())];
                if kill(Pid::from_raw(victim as i32), Signal::SIGKILL).is_ok() {
                    killed += 1;
                }
            }
            // The rhythm of the chaos, not a synchronisation: nothing waits for it.
            std::thread::sleep(KILL_EVERY);
        }
        done.store(true, Ordering::SeqCst);
        killed
    });
    let (answered, not_sent, unknown) = (answered.into_inner(), not_sent.into_inner(), unknown.into_inner());
    println!("{killed} workers killed; {answered} calls answered, {not_sent} not sent, {unknown} of unknown fate");
    assert!(killed >= 20, "the chaos killed only {killed} workers");
    assert!(answered > 0, "no call was answered");
    drop(pool);
    wait_all_ready(&sup, dir.path());
    let (running, zombies) = children_by_state(supervisor);
    assert_eq!(running.len(), WORKERS, "the supervisor's running children: {running:?}");
    assert_eq!(zombies, Vec::<i64>::new(), "zombie children of the supervisor");
    let fds_after = descriptors(supervisor);
    assert!(
        fds_after <= fds_before,
        "the supervisor holds {fds_after} descriptors after the chaos, {fds_before} before"
    );
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    Ok(())
}

/// Sets its flag when dropped, also while unwinding: a failed caller ends the chaos.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("worker") {
        procwire_workers::Worker::new()
            .serve(CalcServer::new(MyCalc))
            .expect("serve");
        return;
    }
    let args = Arguments::from_args();
    let trials = vec![Trial::test(
        "a_pool_of_four_under_eight_callers_survives_a_worker_killed_every_200_ms_for_10_s",
        a_pool_of_four_under_eight_callers_survives_a_worker_killed_every_200_ms_for_10_s,
    )];
    libtest_mimic::run(&args, trials).exit();
}

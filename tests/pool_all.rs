//! Calls to a whole pool end to end: this test binary is the supervisor (embedded) and, in
//! the role "worker", each of four workers. `pool.all()` calls every worker at once: the
//! replies come by worker index, a worker that dies during the call is reported as dead
//! (not waited for), and a stopped one as silent at the deadline while the others answer.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire::rpc::{Ending, RpcError};
use procwire::supervisor::manifest::{Endpoint, Manifest, Pool, Ready};

#[procwire::service]
pub trait Worker {
    /// This worker's pid and index.
    fn whoami(&self) -> (u32, u32);
    /// Exits at once if this worker's index is `index`; otherwise answers its pid.
    fn die_if(&self, index: u32) -> u32;
    /// Counts a reload; returns how many this process has seen.
    fn reload(&self) -> u64;
    /// Fire and forget: counts a reload too.
    #[procwire(oneway)]
    fn poke(&self);
    /// How many reloads this process has seen, without counting one.
    fn reloads(&self) -> u64;
}

static RELOADS: AtomicU64 = AtomicU64::new(0);

struct Me;

impl Worker for Me {
    fn whoami(&self) -> (u32, u32) {
        (std::process::id(), index())
    }
    fn die_if(&self, dying: u32) -> u32 {
        if index() == dying {
            std::process::exit(9);
        }
        std::process::id()
    }
    fn reload(&self) -> u64 {
        RELOADS.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn poke(&self) {
        RELOADS.fetch_add(1, Ordering::SeqCst);
    }
    fn reloads(&self) -> u64 {
        RELOADS.load(Ordering::SeqCst)
    }
}

fn index() -> u32 {
    std::env::var("PROCWIRE_INDEX")
        .ok()
        .and_then(|i| i.parse().ok())
        .unwrap_or(u32::MAX)
}

fn start(dir: &std::path::Path) -> Result<procwire::Supervisor, Failed> {
    let mut workers = Pool::new("workers", Vec::new());
    workers.role = Some("worker".into());
    workers.workers = 4;
    workers.ready = Ready::Notify;
    workers.listen = vec![Endpoint::Unix(dir.join("w-{index}.sock"))];
    workers.backoff.initial = Duration::from_secs(5);
    let mut manifest = Manifest::new("pool-all-test").pool(workers);
    manifest.path = dir.join("pool-all.toml");
    Ok(procwire::Supervisor::start(manifest)?)
}

fn every_worker_answers_by_its_index_and_a_reload_reaches_them_all() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = start(dir.path())?;
    let pool = WorkerPool::new(supervisor.endpoints("workers"));
    let replies = pool.all().whoami();
    assert_eq!(replies.len(), 4);
    let mut pids = BTreeSet::new();
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.index, i);
        let (pid, index) = reply.result?;
        assert_eq!(index as usize, i, "worker {i}'s reply is at its index");
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 4, "four different processes answered");
    // Every worker reloads once per call: none is skipped, none called twice.
    for round in 1..=3u64 {
        let counts: Vec<u64> = pool.all().reload().into_iter().map(|r| r.result.unwrap()).collect();
        assert_eq!(counts, [round; 4]);
    }
    let sent = pool.all().poke();
    assert!(sent.iter().all(|r| r.result.is_ok()), "{sent:?}");
    // A one-way call is not waited for: a call sent after it may run before it, on another
    // of the server's threads. Wait for its effect, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut counts: Vec<u64>;
    loop {
        counts = pool.all().reloads().into_iter().map(|r| r.result.unwrap()).collect();
        if counts == [4; 4] || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::yield_now();
    }
    assert_eq!(counts, [4; 4], "the one-way poke reached every worker once");
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

fn a_worker_dying_in_the_call_is_reported_dead_and_a_stopped_one_silent_at_the_deadline() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = start(dir.path())?;
    let pool = WorkerPool::new(supervisor.endpoints("workers"));
    let pids: Vec<u32> = pool.all().whoami().into_iter().map(|r| r.result.unwrap().0).collect();
    // Worker 1 exits inside the call. With a deadline a minute away, a report that came
    // back at all was not a wait for the deadline; the kind of error says which it was.
    let replies = pool.with_timeout(Duration::from_secs(60)).all().die_if(1);
    for reply in &replies {
        match (reply.index, &reply.result) {
            (
                1,
                Err(RpcError::Disconnected {
                    ending: Ending::Died,
                    reason,
                    ..
                }),
            ) => {
                assert!(reason.contains(&reply.endpoint), "{reason}")
            }
            (1, other) => panic!("worker 1 died in the call, not {other:?}"),
            (i, Ok(pid)) => assert_eq!(*pid, pids[i]),
            (i, Err(e)) => panic!("worker {i} should have answered: {e}"),
        }
    }
    // Worker 2 stopped: it takes the call and says nothing until the deadline; the others
    // answer, and worker 1 (dead, its restart 5 s away) is reported unreachable.
    kill(Pid::from_raw(pids[2] as i32), Signal::SIGSTOP)?;
    wait_stopped(pids[2]);
    let replies = pool.with_timeout(Duration::from_millis(500)).all().whoami();
    kill(Pid::from_raw(pids[2] as i32), Signal::SIGCONT)?;
    for reply in replies {
        match (reply.index, reply.result) {
            (2, Err(RpcError::DeadlineExceeded { .. })) => {}
            (2, other) => panic!("the stopped worker answered {other:?}"),
            (1, Err(RpcError::Disconnected { .. } | RpcError::DeadlineExceeded { .. })) => {}
            (1, Ok((pid, _))) => assert_ne!(pid, pids[1], "a restarted worker 1, if any"),
            (i, result) => assert_eq!(result?.0, pids[i], "worker {i} answered"),
        }
    }
    drop(pool);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

/// Waits until every thread of `pid` is stopped: kill(2) only queues the signal.
fn wait_stopped(pid: u32) {
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks.flatten().all(|task| {
                    let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                    // The state follows the command name, which ends at the last ')'.
                    stat.rfind(')')
                        .and_then(|at| stat[at + 1..].trim_start().chars().next())
                        == Some('T')
                })
            })
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !stopped() {
        assert!(std::time::Instant::now() < deadline, "worker {pid} did not stop");
        std::thread::yield_now();
    }
}

fn main() {
    if procwire::role().as_deref() == Some("worker") {
        procwire::workers::Worker::new()
            .serve(WorkerServer::new(Me))
            .expect("serve");
        return;
    }
    let mut args = Arguments::from_args();
    // One supervisor at a time: each takes the process's signals.
    args.test_threads = Some(1);
    let trials = vec![
        Trial::test(
            "every_worker_answers_by_its_index_and_a_reload_reaches_them_all",
            every_worker_answers_by_its_index_and_a_reload_reaches_them_all,
        ),
        Trial::test(
            "a_worker_dying_in_the_call_is_reported_dead_and_a_stopped_one_silent_at_the_deadline",
            a_worker_dying_in_the_call_is_reported_dead_and_a_stopped_one_silent_at_the_deadline,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

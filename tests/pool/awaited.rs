//! The async pool client on tokio, against a supervised pool.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire::rpc::RpcError;

use super::{manifest, pids, CalcAsyncPool};

pub fn the_async_pool_routes_tokio_tasks_over_the_workers_and_retries_around_a_killed_one() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let supervisor = procwire::Supervisor::start(manifest(dir.path()))?;
    let endpoints = supervisor.endpoints("calc");
    let before = pids(&endpoints);
    let pool = CalcAsyncPool::new(endpoints.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()?;
    let answered_by = runtime.block_on(async {
        // Sums are right, from every task at once.
        let tasks: Vec<_> = (0..8i64)
            .map(|t| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for i in 0..50i64 {
                        assert_eq!(pool.add(t, i).await.expect("add"), t + i);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a task");
        }
        // An idempotent call loses nothing to a killed worker: it is tried elsewhere.
        let stop = Arc::new(AtomicBool::new(false));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (pool, stop) = (pool.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut seen = BTreeSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        seen.insert(pool.pid().await.expect("an idempotent call is answered"));
                    }
                    seen
                })
            })
            .collect();
        kill(Pid::from_raw(before[1] as i32), Signal::SIGKILL).expect("kill a worker");
        let replacement = pids(&endpoints[1..2])[0];
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.pid().await.expect("answered") != replacement {
            assert!(Instant::now() < deadline, "the pool never called the restarted worker");
        }
        stop.store(true, Ordering::Relaxed);
        let mut answered_by = BTreeSet::new();
        for caller in callers {
            answered_by.extend(caller.await.expect("a caller"));
        }
        // A deadline bounds an awaited pool call as a blocking one.
        let err = pool.with_timeout(Duration::ZERO).add(1, 2).await.unwrap_err();
        assert!(matches!(err, RpcError::DeadlineExceeded { .. }), "{err}");
        answered_by
    });
    assert!(answered_by.len() > 1, "calls went to several workers: {answered_by:?}");
    drop(pool);
    drop(runtime);
    assert_eq!(supervisor.stop()?, 0);
    Ok(())
}

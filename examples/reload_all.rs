//! One call to every worker of a pool at once: tell each to reload, collect each one's
//! statistics, and see a worker that died reported by its index instead of waited for.
//!
//! The program is an embedded supervisor and, in the role "stats", each of its three
//! workers. Routed calls (`pool.work(..)`) spread over the workers; `pool.all().reload()`
//! and `pool.all().stats()` reach every one, with one deadline for all.
//!
//! Run it with `cargo run --example reload_all`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire::supervisor::manifest::{Endpoint, Manifest, Pool, Ready};

/// What one worker says about itself.
#[derive(Debug, serde::Serialize, serde::Deserialize, procwire::Schema)]
pub struct WorkerStats {
    pid: u32,
    calls: u64,
    generation: u64,
    up_ms: u64,
}

#[procwire::service]
pub trait Stats {
    /// Some work: routed to the least loaded worker.
    fn work(&self, n: u64) -> u64;
    /// Re-reads the configuration; returns the new generation.
    fn reload(&self) -> u64;
    /// This worker's statistics.
    #[procwire(idempotent)]
    fn stats(&self) -> WorkerStats;
}

struct Worker {
    started: Instant,
    calls: AtomicU64,
    generation: AtomicU64,
}

impl Stats for Worker {
    fn work(&self, n: u64) -> u64 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        (1..=n).sum()
    }
    fn reload(&self) -> u64 {
        // A real worker would re-read its files here.
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn stats(&self) -> WorkerStats {
        WorkerStats {
            pid: std::process::id(),
            calls: self.calls.load(Ordering::Relaxed),
            generation: self.generation.load(Ordering::SeqCst),
            up_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

fn main() -> Result<()> {
    if procwire::role().as_deref() == Some("stats") {
        let worker = Worker {
            started: Instant::now(),
            calls: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        };
        procwire::workers::Worker::new().serve(StatsServer::new(worker))?;
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut pool = Pool::new("stats", Vec::new());
    pool.role = Some("stats".into());
    pool.workers = 3;
    pool.ready = Ready::Notify;
    pool.listen = vec![Endpoint::Unix(dir.path().join("stats-{index}.sock"))];
    // Slow restarts, so that the killed worker below is still gone when it is called.
    pool.backoff.initial = Duration::from_secs(5);
    let mut manifest = Manifest::new("reload-all").pool(pool);
    manifest.path = dir.path().join("reload-all.toml");
    let supervisor = procwire::Supervisor::start(manifest)?;
    let pool = StatsPool::new(supervisor.endpoints("stats"));

    for i in 0..300 {
        pool.work(i % 50)?;
    }
    println!("\n== pool.all().reload()");
    for reply in pool.all().reload() {
        println!(
            "worker {} ({}): generation {}",
            reply.index, reply.endpoint, reply.result?
        );
    }
    println!("\n== pool.all().stats()");
    let mut total = 0;
    let mut pids = Vec::new();
    for reply in pool.all().stats() {
        let stats = reply.result?;
        println!(
            "worker {}: pid {}, {} calls, generation {}, up {} ms",
            reply.index, stats.pid, stats.calls, stats.generation, stats.up_ms
        );
        total += stats.calls;
        pids.push(stats.pid);
    }
    println!("{total} calls in all, every one counted by the worker that ran it");

    println!("\n== worker 1 is killed; pool.all().stats() reports it, and waits for no one");
    kill(Pid::from_raw(pids[1] as i32), Signal::SIGKILL)?;
    let asked = Instant::now();
    for reply in pool.with_timeout(Duration::from_secs(2)).all().stats() {
        match reply.result {
            Ok(stats) => println!("worker {}: pid {}, {} calls", reply.index, stats.pid, stats.calls),
            Err(e) => println!("worker {}: {e}", reply.index),
        }
    }
    println!("answered in {:?}", asked.elapsed());
    drop(pool);
    supervisor.stop()?;
    Ok(())
}

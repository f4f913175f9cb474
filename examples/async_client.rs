//! An async program calling a supervised pool: a tokio runtime, many tasks, the generated
//! `CalcAsyncPool`, and the same pool of four workers as the quickstart
//! (`examples/quickstart.toml`), one worker killed while the tasks call.
//!
//! Run it with `cargo run --example async_client`. The examples build with the `tokio`
//! feature (a dev-dependency turns it on), so the calls wait on tokio's reactor; without it
//! they run the same, woken by procwire's own reactor thread.
//!
//! One binary plays both parts: the supervisor with its async callers, and (started by it
//! in the role "calc") each worker.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use procwire::supervisor::manifest::{Endpoint, Manifest};

/// The service, as in the quickstart: the blocking and the async clients come from it alike.
#[procwire::service]
trait Calc {
    /// Safe to repeat: if its worker dies, the pool client retries it on another.
    #[procwire(idempotent)]
    fn add(&self, a: i64, b: i64) -> i64;
    /// Which worker answered.
    #[procwire(idempotent)]
    fn pid(&self) -> u32;
    /// Takes `ms` milliseconds to answer (simulated slow work).
    #[procwire(idempotent)]
    fn slow(&self, ms: u64) -> u64;
}

struct Worker;

impl Calc for Worker {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    fn slow(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

fn main() -> Result<()> {
    if procwire::role().as_deref() == Some("calc") {
        procwire::workers::Worker::new().serve(CalcServer::new(Worker))?;
        return Ok(());
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.toml");
    let mut manifest = Manifest::load(path)?;
    let dir = tempfile::tempdir()?;
    manifest.pools[0].listen = vec![Endpoint::Unix(dir.path().join("calc-{index}.sock"))];
    let supervisor = procwire::Supervisor::start(manifest)?;
    println!("== procwire async client: a tokio program calling a supervised pool of 4 workers");

    // A runtime with its I/O driver: with the `tokio` feature, calls wait on it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()?;
    let pool = CalcAsyncPool::new(supervisor.endpoints("calc"));
    runtime.block_on(async {
        println!("   add(2, 3) = {}", pool.add(2, 3).await?);

        println!("== 100 tasks, 100 calls each, on 2 runtime threads; one worker is killed meanwhile");
        let tasks: Vec<_> = (0..100i64)
            .map(|t| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut seen = BTreeSet::new();
                    for i in 0..100i64 {
                        assert_eq!(pool.add(t, i).await?, t + i);
                        if i % 25 == 0 {
                            seen.insert(pool.pid().await?);
                        }
                    }
                    Ok::<_, procwire::rpc::RpcError>(seen)
                })
            })
            .collect();
        let victim = pool.pid().await?;
        println!("   killing worker {victim}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .context("kill the worker")?;
        let mut seen = BTreeSet::new();
        for task in tasks {
            seen.extend(task.await??);
        }
        println!("   10000 calls answered correctly, by workers {seen:?}");

        println!("== a deadline: slow(2000 ms) with a 100 ms timeout");
        match pool.with_timeout(Duration::from_millis(100)).slow(2_000).await {
            Err(e @ procwire::rpc::RpcError::DeadlineExceeded { .. }) => println!("   {e}"),
            other => anyhow::bail!("expected a missed deadline, got {other:?}"),
        }
        anyhow::Ok(())
    })?;
    drop(pool);
    drop(runtime);
    println!("== graceful shutdown");
    let code = supervisor.stop()?;
    println!("== done: the supervisor exited with code {code}");
    Ok(())
}

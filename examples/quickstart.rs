//! The quickstart: a pool of four workers from `examples/quickstart.toml`, typed calls from
//! eight threads through a pool client, a worker killed mid-flight and restarted while the
//! calls go on, and a graceful shutdown.
//!
//! Run it with `cargo run --example quickstart`.
//!
//! One binary plays both parts: the supervisor, and (started by it in the role "calc") each
//! worker.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use procwire::supervisor::manifest::{Endpoint, Manifest};

/// The service: defined once, as a plain trait.
#[procwire::service]
trait Calc {
    /// Safe to repeat: if its worker dies, the pool client retries it on another.
    #[procwire(idempotent)]
    fn add(&self, a: i64, b: i64) -> i64;
    /// Which worker answered.
    #[procwire(idempotent)]
    fn pid(&self) -> u32;
}

struct Worker;

impl Calc for Worker {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
}

fn main() -> Result<()> {
    // A worker started by the supervisor: serve, until the supervisor says stop.
    if procwire::role().as_deref() == Some("calc") {
        procwire::workers::Worker::new().serve(CalcServer::new(Worker))?;
        return Ok(());
    }

    println!("== procwire quickstart: a pool of 4 calc workers, supervised by this program");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.toml");
    let mut manifest = Manifest::load(path)?;
    // Keep the sockets in a private temporary directory rather than next to the manifest.
    let dir = tempfile::tempdir()?;
    manifest.pools[0].listen = vec![Endpoint::Unix(dir.path().join("calc-{index}.sock"))];
    let supervisor = procwire::Supervisor::start(manifest)?;
    // One socket per worker, owned by the supervisor: they exist from the start and survive
    // restarts, and a connection waits in the backlog until its worker serves.
    let pool = CalcPool::new(supervisor.endpoints("calc"));
    println!("   workers listen on {}", dir.path().join("calc-{0..3}.sock").display());
    println!("== typed calls: add(2, 3) = {}", pool.add(2, 3)?);

    println!(
        "== 8 threads call the pool (each call to the least busy worker); meanwhile one worker is killed with SIGKILL"
    );
    let calls = AtomicUsize::new(0);
    let seen = Mutex::new(BTreeSet::new());
    let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| -> Result<()> {
        for t in 0..8i64 {
            let (pool, calls, seen, busy_tx) = (&pool, &calls, &seen, busy_tx.clone());
            s.spawn(move || -> Result<()> {
                for i in 0..2_000i64 {
                    // No error handling needed for the kill: `add` is idempotent, so a call
                    // on the dying worker is retried on another one.
                    assert_eq!(pool.add(t, i)?, t + i);
                    calls.fetch_add(1, Ordering::Relaxed);
                    if i % 500 == 0 {
                        seen.lock().unwrap().insert(pool.pid()?);
                    }
                    if t == 0 && i == 200 {
                        let _ = busy_tx.send(());
                    }
                }
                Ok(())
            });
        }
        busy_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the callers got busy")?;
        let victim = pool.pid()?;
        println!("   killing worker {victim}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .context("kill the worker")?;
        Ok(())
    })?;
    println!(
        "   {} calls answered correctly, by workers {:?}",
        calls.load(Ordering::Relaxed),
        seen.lock().unwrap()
    );
    let now: BTreeSet<u32> = (0..4).map(|_| pool.pid()).collect::<Result<_, _>>()?;
    println!("   the pool after the restart: workers {now:?}");

    println!("== graceful shutdown: every worker gets SIGTERM, finishes its calls and exits");
    drop(pool);
    let code = supervisor.stop()?;
    println!("== done: the supervisor exited with code {code}");
    Ok(())
}

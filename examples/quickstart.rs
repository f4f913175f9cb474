//! The quickstart: a pool of four workers from `examples/quickstart.toml`, typed calls from
//! eight threads, a worker killed mid-flight and restarted while the calls go on, and a
//! graceful shutdown.
//!
//! Run it with `cargo run --example quickstart`.
//!
//! One binary plays both parts: the supervisor, and (started by it in the role "calc") each
//! worker.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use procwire::rpc::transport::unix;
use procwire::rpc::RpcError;
use procwire::supervisor::manifest::{Endpoint, Manifest};

/// The service: defined once, as a plain trait.
#[procwire::service]
trait Calc {
    fn add(&self, a: i64, b: i64) -> i64;
    /// Which worker answered.
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
    // Keep the socket in a private temporary directory rather than next to the manifest.
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("calc.sock");
    manifest.pools[0].listen = vec![Endpoint::Unix(socket.clone())];
    let supervisor = procwire::Supervisor::start(manifest)?;
    println!("   the supervisor binds {} and starts the workers", socket.display());

    // The socket exists from the start; a connection waits in its backlog until a worker
    // takes it, so the first call simply waits for the pool to come up.
    let connect = || -> Result<CalcClient> { Ok(CalcClient::connect(unix::connect(&socket)?)?) };
    let first = connect()?;
    println!("== typed calls: add(2, 3) = {}", first.add(2, 3)?);

    println!("== 8 threads call the pool; then one worker is killed with SIGKILL");
    let calls = Arc::new(AtomicUsize::new(0));
    let reconnects = Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Mutex::new(BTreeSet::new());
    // Thread 0 names its worker once it is busy; that worker is the one killed.
    let (victim_tx, victim_rx) = std::sync::mpsc::channel::<u32>();
    std::thread::scope(|s| -> Result<()> {
        for t in 0..8i64 {
            let (calls, reconnects, seen) = (Arc::clone(&calls), Arc::clone(&reconnects), &seen);
            let connect = &connect;
            let victim_tx = victim_tx.clone();
            s.spawn(move || -> Result<()> {
                let mut calc = connect()?;
                let pid = calc.pid()?;
                seen.lock().unwrap().insert(pid);
                for i in 0..2_000i64 {
                    if t == 0 && i == 200 {
                        let _ = victim_tx.send(pid);
                    }
                    let sum = match calc.add(t, i) {
                        Ok(sum) => sum,
                        // Its worker died: connect again (another worker takes the
                        // connection) and retry; `add` is safe to repeat.
                        Err(RpcError::Disconnected { .. }) => {
                            reconnects.fetch_add(1, Ordering::Relaxed);
                            calc = connect()?;
                            seen.lock().unwrap().insert(calc.pid()?);
                            calc.add(t, i)?
                        }
                        Err(e) => return Err(e.into()),
                    };
                    assert_eq!(sum, t + i);
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
        }
        // Kill one worker while the calls run.
        let victim = victim_rx
            .recv_timeout(Duration::from_secs(30))
            .context("thread 0 got busy")?;
        println!("   killing worker {victim}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .context("kill the worker")?;
        Ok(())
    })?;
    println!(
        "   {} calls answered correctly by workers {:?}; {} connections moved to another worker",
        calls.load(Ordering::Relaxed),
        seen.lock().unwrap(),
        reconnects.load(Ordering::Relaxed)
    );
    // The replacement answers too.
    let after = connect()?;
    println!(
        "   after the restart, a new connection is answered by worker {}",
        after.pid()?
    );
    drop((first, after));

    println!("== graceful shutdown: every worker gets SIGTERM, finishes its calls and exits");
    let code = supervisor.stop()?;
    println!("== done: the supervisor exited with code {code}");
    Ok(())
}

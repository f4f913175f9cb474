//! An awaited call beside a blocking call, over the same transport, in the same run.
//!
//! The server is a child process (this binary re-executed with `PROCWIRE_BENCH_CHILD` set)
//! serving the `Bench` service on a Unix socket. The parent makes `add(i64, i64) -> i64`
//! calls through the generated clients and prints calls per second and the ratio of each
//! async form to the blocking one:
//!
//! - one caller: `BenchClient` (blocking), `BenchAsyncClient` on a bare executor (`Runner::Local`,
//!   woken by procwire's reactor thread), and, with the `tokio` feature, on a current-thread tokio
//!   runtime (woken by tokio's reactor);
//! - eight callers sharing one connection: eight threads of `BenchClient`, and, with the
//!   `tokio` feature, eight tasks of `BenchAsyncClient` on a two-thread runtime.
//!
//! Environment: `PROCWIRE_BENCH_QUICK=1` for a tenth of the calls.
//!
//! Run with `cargo bench -p procwire-rpc --bench async_call --features tokio`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use procwire_rpc::transport::unix;
use procwire_rpc::{Runner, Server};

const CHILD_ENV: &str = "PROCWIRE_BENCH_CHILD";

#[procwire_macros::service]
trait Bench {
    fn add(&self, a: i64, b: i64) -> i64;
}

struct Adder;

impl Bench for Adder {
    fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
}

fn main() -> Result<()> {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let handle = Server::new(BenchServer::new(Adder)).spawn(unix::Listener::bind(&path)?)?;
        println!("ready");
        // Until the parent closes stdin.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        handle.stopper().stop();
        return Ok(handle.wait()?);
    }
    let quick = std::env::var("PROCWIRE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let calls: i64 = if quick { 2_000 } else { 20_000 };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.sock");
    let _child = ChildServer::start(&path)?;
    let connect = || -> Result<BenchClient> { Ok(BenchClient::connect(unix::connect(&path)?)?) };

    let mut rows = Vec::new();
    let blocking = connect()?;
    let base = rate(calls, || {
        for i in 0..calls {
            assert_eq!(blocking.add(i, 1).expect("add"), i + 1);
        }
    });
    rows.push(("1 caller, blocking", base, base));
    let awaited = BenchAsyncClient::from(connect()?);
    let bare = rate(calls, || {
        Runner::Local.block_on(async {
            for i in 0..calls {
                assert_eq!(awaited.add(i, 1).await.expect("add"), i + 1);
            }
        })
    });
    rows.push(("1 caller, async, bare executor", bare, base));
    #[cfg(feature = "tokio")]
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        let on_tokio = rate(calls, || {
            runtime.block_on(async {
                for i in 0..calls {
                    assert_eq!(awaited.add(i, 1).await.expect("add"), i + 1);
                }
            })
        });
        rows.push(("1 caller, async, tokio current-thread", on_tokio, base));
    }
    let shared = connect()?;
    let threads = rate(calls, || {
        std::thread::scope(|s| {
            for t in 0..8 {
                let shared = &shared;
                s.spawn(move || {
                    for i in 0..calls / 8 {
                        assert_eq!(shared.add(t, i).expect("add"), t + i);
                    }
                });
            }
        })
    });
    rows.push(("8 threads, blocking, one connection", threads, threads));
    #[cfg(feature = "tokio")]
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build()?;
        let shared = BenchAsyncClient::from(connect()?);
        let tasks = rate(calls, || {
            runtime.block_on(async {
                let tasks: Vec<_> = (0..8)
                    .map(|t| {
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            for i in 0..calls / 8 {
                                assert_eq!(shared.add(t, i).await.expect("add"), t + i);
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("a task");
                }
            })
        });
        rows.push(("8 tokio tasks, async, one connection", tasks, threads));
    }
    println!(
        "{:<40} {:>12} {:>10}",
        "unix socket, add(i64, i64)", "calls/s", "vs blocking"
    );
    for (name, rate, against) in rows {
        println!("{name:<40} {rate:>12.0} {:>9.2}x", rate / against);
    }
    Ok(())
}

/// Calls per second of `run`, which makes `calls` calls.
fn rate(calls: i64, run: impl FnOnce()) -> f64 {
    let started = Instant::now();
    run();
    calls as f64 / started.elapsed().as_secs_f64()
}

/// The server child, killed when dropped.
struct ChildServer(Child);

impl ChildServer {
    fn start(path: &std::path::Path) -> Result<ChildServer> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the server child")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        ensure!(line.trim() == "ready", "the server child did not start");
        Ok(ChildServer(child))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

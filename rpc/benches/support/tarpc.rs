//! tarpc, the peer the concurrency figures are measured beside: its counterpart of
//! `Bench::add`, its server child, and its tasks on one client. Shared by the scaling part
//! of `roundtrip.rs` and by `async_call.rs`.

use std::io::{self, Write as _};
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use futures_util::StreamExt as _;
use tarpc::tokio_serde::formats::Bincode;

/// tarpc's counterpart of `Bench::add`, as its users write it.
#[tarpc::service]
trait TarpcBench {
    async fn add(a: i64, b: i64) -> i64;
}

#[derive(Clone)]
struct TarpcAdder;

impl TarpcBench for TarpcAdder {
    async fn add(self, _: tarpc::context::Context, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
}

/// The tarpc server child: serves on the Unix socket `path` on a current-thread runtime (the
/// child has one CPU in every placement) that runs every request as its own task, as tarpc's
/// examples do. Prints `ready CPU` once listening, and exits when its stdin closes.
pub fn serve(path: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(|| {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        std::process::exit(0);
    });
    runtime.block_on(async {
        let mut incoming = tarpc::serde_transport::unix::listen(path, Bincode::default).await?;
        println!("ready {}", nix::sched::sched_getcpu()?);
        io::stdout().flush()?;
        while let Some(transport) = incoming.next().await {
            let channel = tarpc::server::BaseChannel::with_defaults(transport?);
            tokio::spawn(
                tarpc::server::Channel::execute(channel, TarpcAdder.serve()).for_each(|call| async {
                    tokio::spawn(call);
                }),
            );
        }
        Ok(())
    })
}

/// Calls per second of `tasks` tasks on one tarpc client connected to `path`, on `runtime`,
/// making `calls` calls in all (after a warm-up).
pub fn rate(runtime: &tokio::runtime::Runtime, path: &Path, tasks: usize, calls: usize) -> Result<f64> {
    runtime.block_on(async {
        let transport = tarpc::serde_transport::unix::connect(path, Bincode::default).await?;
        let client = TarpcBenchClient::new(tarpc::client::Config::default(), transport).spawn();
        // Warm up: the connection, the dispatch task.
        for i in 0..200 {
            ensure!(client.add(tarpc::context::current(), i, 1).await? == i + 1);
        }
        let per = (calls / tasks) as i64;
        let started = Instant::now();
        let running: Vec<_> = (0..tasks as i64)
            .map(|t| {
                let client = client.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        let sum = client.add(tarpc::context::current(), t, i).await?;
                        ensure!(sum == t + i, "tarpc add returned another sum");
                    }
                    Ok(())
                })
            })
            .collect();
        for task in running {
            task.await??;
        }
        Ok((per * tasks as i64) as f64 / started.elapsed().as_secs_f64())
    })
}

//! An awaited call beside a blocking call and beside tarpc, over Unix sockets, in the same
//! run, with both processes on one CPU and on two.
//!
//! The servers are child processes (this binary re-executed with `PROCWIRE_ASYNC_BENCH_CHILD`
//! set): procwire serving the `Bench` service (`support/mod.rs`), and tarpc serving its
//! counterpart of `add` (`support/tarpc.rs`, shared with `roundtrip.rs`). The parent makes
//! `add(i64, i64) -> i64` calls and prints calls per second with ratios:
//!
//! - one caller: `BenchClient` (blocking), `BenchAsyncClient` on a bare executor
//!   (`Runner::Local`) and on a current-thread tokio runtime, and one task on a tarpc client;
//! - eight callers sharing one connection: eight threads of `BenchClient`, eight tasks of
//!   `BenchAsyncClient` on the bare executor (joined in one future), on a current-thread and
//!   on a two-worker tokio runtime, and eight tasks on one tarpc client on the same runtimes;
//!   each against its one-caller figure and against tarpc's eight tasks (the better of its
//!   two runtimes), with the client's context switches per call (`getrusage`).
//!
//! Placement: this process pins itself to CPU 0; each child pins itself to CPU 0 ("one CPU")
//! or CPU 1 ("two CPUs") and reports where it runs. Each case runs [`ROUNDS`] times, the cases
//! interleaved, and the median round is printed. With the `tokio` feature, awaited calls on
//! tokio wait on tokio's reactor; without it, on procwire's reactor thread.
//!
//! Environment: `PROCWIRE_BENCH_QUICK=1` for a fifth of the calls;
//! `PROCWIRE_ASYNC_BENCH_ONLY=<part of a case's name>` runs only the cases named so, five
//! times longer, in both placements, without the table: to profile them.
//!
//! Run with `cargo bench -p procwire-rpc --bench async_call --features tokio`.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use nix::sched::sched_getcpu;
use procwire_rpc::transport::unix;
use procwire_rpc::Runner;
use support::{context_switches, on_threads, pin, BenchAsyncClient, BenchClient, Proc, CPU_ENV};

// Its pinning, child and `Bench` service.
#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
#[path = "support/tarpc.rs"]
mod tarpc_peer;

const CHILD_ENV: &str = "PROCWIRE_ASYNC_BENCH_CHILD";
/// The socket a child serves on.
const ADDR_ENV: &str = "PROCWIRE_ASYNC_BENCH_ADDR";
/// Callers sharing one connection.
const N: usize = 8;
const ROUNDS: usize = 3;

fn main() -> Result<()> {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let cpu: usize = std::env::var(CPU_ENV)?.parse()?;
        pin(cpu)?;
        let path = std::path::PathBuf::from(std::env::var_os(ADDR_ENV).context("no socket path")?);
        return match role.as_str() {
            "procwire" => support::serve(unix::Listener::bind(&path)?),
            "tarpc" => tarpc_peer::serve(&path),
            other => anyhow::bail!("unknown role {other:?}"),
        };
    }
    let quick = std::env::var("PROCWIRE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let calls = if quick { 4_000 } else { 20_000 };
    pin(0)?;
    println!(
        "add(i64, i64) over Unix sockets, calls/s, median of {ROUNDS} interleaved rounds of {calls} calls per case{}",
        if quick { " (quick)" } else { "" }
    );
    println!(
        "procwire's tokio integration: {}",
        if cfg!(feature = "tokio") {
            "on (awaited calls on tokio wait on its reactor)"
        } else {
            "off (awaited calls wait on procwire's reactor thread)"
        }
    );
    let mut met = true;
    for (name, cpu) in [("one CPU", 0), ("two CPUs", 1)] {
        met &= placement(name, cpu, calls).with_context(|| name)?;
    }
    println!();
    if std::env::var_os("PROCWIRE_ASYNC_BENCH_ONLY").is_some() {
        println!("async targets: not judged (PROCWIRE_ASYNC_BENCH_ONLY runs cases alone)");
        return Ok(());
    }
    println!(
        "async targets, every placement: {}",
        if met { "MET" } else { "NOT MET" }
    );
    Ok(())
}

/// One row's figure in each round.
#[derive(Clone, Copy, Default)]
struct Figure {
    rate: f64,
    /// The client's context switches per call (not counted for tarpc's, which connects
    /// and warms up inside its measurement).
    switches: Option<f64>,
}

/// The cases, in the order they run in a round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Blocking,
    AsyncBare,
    AsyncCurrent,
    TarpcOne,
    Threads,
    TasksBare,
    TasksCurrent,
    TasksMulti,
    TarpcCurrent,
    TarpcMulti,
}

impl Case {
    const ALL: [Case; 10] = [
        Case::Blocking,
        Case::AsyncBare,
        Case::AsyncCurrent,
        Case::TarpcOne,
        Case::Threads,
        Case::TasksBare,
        Case::TasksCurrent,
        Case::TasksMulti,
        Case::TarpcCurrent,
        Case::TarpcMulti,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Blocking => "1 caller, blocking",
            Case::AsyncBare => "1 caller, async, bare executor",
            Case::AsyncCurrent => "1 caller, async, tokio current-thread",
            Case::TarpcOne => "1 task, tarpc, tokio current-thread",
            Case::Threads => "8 threads, blocking",
            Case::TasksBare => "8 tasks, async, bare executor",
            Case::TasksCurrent => "8 tasks, async, tokio current-thread",
            Case::TasksMulti => "8 tasks, async, tokio 2 workers",
            Case::TarpcCurrent => "8 tasks, tarpc, tokio current-thread",
            Case::TarpcMulti => "8 tasks, tarpc, tokio 2 workers",
        }
    }

    /// The one-caller case of the same kind, for an eight-caller one.
    fn alone(self) -> Option<Case> {
        match self {
            Case::Threads => Some(Case::Blocking),
            Case::TasksBare => Some(Case::AsyncBare),
            Case::TasksCurrent | Case::TasksMulti => Some(Case::AsyncCurrent),
            Case::TarpcCurrent | Case::TarpcMulti => Some(Case::TarpcOne),
            _ => None,
        }
    }
}

/// What one placement's cases run on.
struct Setup {
    blocking: BenchClient,
    awaited: BenchAsyncClient,
    shared: BenchClient,
    shared_async: BenchAsyncClient,
    /// The same for the two-worker runtime: a client's awaited calls wait on the reactor
    /// of the runtime they first ran in.
    multi_async: BenchAsyncClient,
    tarpc: std::path::PathBuf,
    current: tokio::runtime::Runtime,
    multi: tokio::runtime::Runtime,
}

fn placement(name: &str, child_cpu: usize, calls: usize) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let spawn = |role: &str| {
        let path = dir.path().join(format!("{role}.sock"));
        let child = Proc::spawn(CHILD_ENV, role, child_cpu, |cmd| {
            cmd.env(ADDR_ENV, &path);
            Ok(())
        })?;
        anyhow::Ok((child, path))
    };
    let (procwire, path) = spawn("procwire")?;
    let (tarpc, tarpc_path) = spawn("tarpc")?;
    let connect = || -> Result<BenchClient> { Ok(BenchClient::connect(unix::connect(&path)?)?) };
    let setup = Setup {
        blocking: connect()?,
        awaited: BenchAsyncClient::from(connect()?),
        shared: connect()?,
        shared_async: BenchAsyncClient::from(connect()?),
        multi_async: BenchAsyncClient::from(connect()?),
        tarpc: tarpc_path,
        current: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        multi: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
    };
    println!();
    println!(
        "{name}: this process on CPU {} (pinned to 0), procwire server on CPU {}, tarpc server on CPU {} \
         (each pinned to {child_cpu})",
        sched_getcpu()?,
        procwire.cpu,
        tarpc.cpu
    );
    if let Ok(only) = std::env::var("PROCWIRE_ASYNC_BENCH_ONLY") {
        // To profile one case (`perf`, `strace -f -c`): it alone, longer, without the table.
        for case in Case::ALL.into_iter().filter(|case| case.name().contains(&only)) {
            run(&setup, case, calls / 10)?;
            let f = run(&setup, case, calls * 5)?;
            println!("  {:<40} {:>10.0}", case.name(), f.rate);
        }
        return Ok(true);
    }
    // Warm up every path once.
    for case in Case::ALL {
        run(&setup, case, calls / 10)?;
    }
    let mut rounds: Vec<Vec<Figure>> = Vec::new();
    for _ in 0..ROUNDS {
        rounds.push(
            Case::ALL
                .iter()
                .map(|&case| run(&setup, case, calls))
                .collect::<Result<_>>()?,
        );
    }
    let median = |case: Case| -> Figure {
        let i = Case::ALL.iter().position(|&c| c == case).expect("a case");
        let mut figures: Vec<Figure> = rounds.iter().map(|round| round[i]).collect();
        figures.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        figures[figures.len() / 2]
    };
    let tarpc_best = median(Case::TarpcCurrent).rate.max(median(Case::TarpcMulti).rate);
    let base = median(Case::Blocking).rate;
    println!(
        "  {:<40} {:>10} {:>12} {:>10} {:>10} {:>8}",
        "", "calls/s", "vs blocking", "vs 1 alone", "vs tarpc 8", "cs/call"
    );
    for case in Case::ALL {
        let f = median(case);
        let (alone, tarpc) = match case.alone() {
            Some(alone) => (
                format!("{:.2}x", f.rate / median(alone).rate),
                format!("{:.2}x", f.rate / tarpc_best),
            ),
            None => (String::new(), String::new()),
        };
        println!(
            "  {:<40} {:>10.0} {:>11.2}x {alone:>10} {tarpc:>10} {:>8}",
            case.name(),
            f.rate,
            f.rate / base,
            f.switches.map_or_else(String::new, |s| format!("{s:.2}"))
        );
    }
    let mut met = true;
    for case in [Case::TasksBare, Case::TasksCurrent] {
        let f = median(case).rate;
        let alone = median(case.alone().expect("an eight-caller case")).rate;
        for (what, got, want) in [
            ("1 caller", f / alone, 1.0),
            ("1.5x tarpc 8 tasks", f / tarpc_best, 1.5),
        ] {
            met &= got >= want;
            println!(
                "  target {} >= {what}: {got:.2}x -> {}",
                case.name(),
                if got >= want { "MET" } else { "NOT MET" }
            );
        }
    }
    drop(setup);
    drop((procwire, tarpc));
    Ok(met)
}

/// Runs `case` for about `calls` calls.
fn run(setup: &Setup, case: Case, calls: usize) -> Result<Figure> {
    let per = (calls / N) as i64;
    let total = match case.alone() {
        Some(_) => per * N as i64,
        None => calls as i64,
    };
    let switches = context_switches()?;
    let started = Instant::now();
    match case {
        Case::Blocking => {
            for i in 0..total {
                ensure!(setup.blocking.add(i, 1)? == i + 1, "add returned another sum");
            }
        }
        Case::AsyncBare => Runner::Local.block_on(serial(&setup.awaited, total))?,
        Case::AsyncCurrent => setup.current.block_on(serial(&setup.awaited, total))?,
        Case::TarpcOne => {
            // Its own figure, from its own clock (it connects and warms up first).
            let rate = tarpc_peer::rate(&setup.current, &setup.tarpc, 1, calls)?;
            return Ok(Figure { rate, switches: None });
        }
        Case::Threads => on_threads(N, per, |t, i| Ok(setup.shared.add(t, i)?))?,
        Case::TasksBare => Runner::Local.block_on(join_all(
            (0..N as i64)
                .map(|t| Box::pin(task(setup.shared_async.clone(), t, per)) as Pin<Box<dyn Future<Output = _>>>)
                .collect(),
        ))?,
        Case::TasksCurrent => setup.current.block_on(spawned(&setup.shared_async, per))?,
        Case::TasksMulti => setup.multi.block_on(spawned(&setup.multi_async, per))?,
        Case::TarpcCurrent | Case::TarpcMulti => {
            let runtime = if case == Case::TarpcCurrent {
                &setup.current
            } else {
                &setup.multi
            };
            let rate = tarpc_peer::rate(runtime, &setup.tarpc, N, calls)?;
            return Ok(Figure { rate, switches: None });
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Figure {
        rate: total as f64 / secs,
        switches: Some((context_switches()? - switches) as f64 / total as f64),
    })
}

/// One caller's `calls` awaited calls, one after another.
async fn serial(client: &BenchAsyncClient, calls: i64) -> Result<()> {
    for i in 0..calls {
        ensure!(client.add(i, 1).await? == i + 1, "add returned another sum");
    }
    Ok(())
}

/// Task `t`'s `calls` awaited calls.
async fn task(client: BenchAsyncClient, t: i64, calls: i64) -> Result<()> {
    for i in 0..calls {
        ensure!(client.add(t, i).await? == t + i, "add returned another sum");
    }
    Ok(())
}

/// `N` tokio tasks on `client`, `per` calls each.
async fn spawned(client: &BenchAsyncClient, per: i64) -> Result<()> {
    let tasks: Vec<_> = (0..N as i64)
        .map(|t| tokio::spawn(task(client.clone(), t, per)))
        .collect();
    for handle in tasks {
        handle.await??;
    }
    Ok(())
}

/// Polls every future whenever woken, until all are done; the first error wins.
async fn join_all(mut futures: Vec<Pin<Box<dyn Future<Output = Result<()>>>>>) -> Result<()> {
    let mut done = vec![false; futures.len()];
    std::future::poll_fn(move |cx| {
        for (future, done) in futures.iter_mut().zip(done.iter_mut()) {
            if !*done {
                if let Poll::Ready(result) = future.as_mut().poll(cx) {
                    result?;
                    *done = true;
                }
            }
        }
        match done.iter().all(|&d| d) {
            true => Poll::Ready(Ok(())),
            false => Poll::Pending,
        }
    })
    .await
}

//! Concurrency and bulk in both placements, in one run: one thread against eight threads on
//! one `BenchClient` (one connection), eight tokio tasks on one tarpc client over a Unix
//! socket, and the 1 MiB echo against the same bytes over a raw socketpair.
//!
//! Placements: "one CPU" puts this process, its threads and every child on one CPU; "two
//! CPUs" keeps this process on the first and puts every child (the servers, the raw echo)
//! on the second. A child inherits the affinity of the thread that starts it, so each is
//! started while this thread is pinned to the child's CPU.
//!
//! Each case runs [`ROUNDS`] times, the cases interleaved, and the median round is printed,
//! so that a burst of load from elsewhere on the machine moves one round, not a figure.
//!
//! For profiling: `PROCWIRE_BENCH_SCALING=echo` runs only the 1 MiB echoes (no calls/s
//! cases, no tarpc), `PROCWIRE_BENCH_PLACEMENT=one` (or `two`) only that placement, and
//! `PROCWIRE_BENCH_ECHOES=N` makes each round N echoes of each kind.

use std::path::Path;

use super::support::{context_switches, on_threads};
use super::*;

/// The child role serving tarpc's `add` (`support/tarpc.rs`) on the socket in `ADDR_ENV`.
pub(crate) const TARPC_ROLE: &str = "tarpc-unix";
/// Threads or tasks sharing one client.
const N: usize = 8;
const ROUNDS: usize = 3;

/// Where the processes run.
#[derive(Clone, Copy)]
struct Placement {
    name: &'static str,
    parent: usize,
    child: usize,
}

/// The figures of one placement, one round.
#[derive(Clone, Copy, Default)]
struct Figures {
    one_thread: f64,
    /// The client's context switches per call.
    one_switches: f64,
    n_threads: f64,
    n_switches: f64,
    tarpc_current: f64,
    tarpc_multi: f64,
    echo_rpc: f64,
    echo_owned: f64,
    echo_raw: f64,
}

impl Figures {
    fn tarpc(&self) -> f64 {
        self.tarpc_current.max(self.tarpc_multi)
    }
}

/// The children of one placement; no tarpc server when only the echoes run.
struct Children {
    rpc: Rpc,
    tarpc: Option<(ChildProc, tempfile::TempDir)>,
    raw: Raw,
}

/// What the environment asks of the run (see the module's docs).
#[derive(Clone, Copy)]
struct Choice {
    echo_only: bool,
    echoes: Option<usize>,
}

impl Choice {
    fn from_env() -> Result<Choice> {
        let echoes = match std::env::var("PROCWIRE_BENCH_ECHOES") {
            Ok(n) => Some(n.parse().with_context(|| format!("PROCWIRE_BENCH_ECHOES={n:?}"))?),
            Err(_) => None,
        };
        Ok(Choice {
            echo_only: std::env::var("PROCWIRE_BENCH_SCALING").is_ok_and(|v| v == "echo"),
            echoes,
        })
    }
}

fn spawn_tarpc() -> Result<(ChildProc, tempfile::TempDir)> {
    let dir = tempfile::TempDir::new()?;
    let path = dir.path().join("tarpc.sock");
    let mut cmd = child_command(TARPC_ROLE)?;
    cmd.env(ADDR_ENV, &path).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = ChildProc::spawn(TARPC_ROLE, cmd)?;
    child.ready()?;
    Ok((child, dir))
}

/// Calls per second of `N` threads (or one) making `calls` calls in all on `client`, and the
/// client's context switches per call.
fn threads_rate(client: &BenchClient, threads: usize, calls: usize) -> Result<(f64, f64)> {
    let per = (calls / threads) as i64;
    let switches = context_switches()?;
    let started = Instant::now();
    on_threads(threads, per, |t, i| Ok(client.add(t, i)?))?;
    let rate = (per * threads as i64) as f64 / started.elapsed().as_secs_f64();
    let done = (per * threads as i64) as f64;
    Ok((rate, (context_switches()? - switches) as f64 / done))
}

/// Calls per second of `N` tasks on one tarpc client, on `runtime`.
fn tarpc_rate(runtime: &tokio::runtime::Runtime, path: &Path, calls: usize) -> Result<f64> {
    tarpc_peer::rate(runtime, path, N, calls)
}

/// 1 MiB echoes per second through `client`.
fn echo_rate(client: &BenchClient, payload: &[u8], calls: usize) -> Result<f64> {
    let started = Instant::now();
    for _ in 0..calls {
        ensure!(client.echo(payload)?.len() == payload.len(), "the echo came back short");
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

/// 1 MiB echoes per second through `client`, the bytes passed by value and the reply fed
/// back in: no copy but the kernel's, as the raw echo.
fn echo_owned_rate(client: &BenchClient, payload: &[u8], calls: usize) -> Result<f64> {
    let mut data = payload.to_vec();
    let started = Instant::now();
    for _ in 0..calls {
        data = client.echo_owned(data)?;
        ensure!(data.len() == payload.len(), "the echo came back short");
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    ensure!(data == payload, "the owned echo came back different");
    Ok(rate)
}

/// 1 MiB written and read back per second over the raw socketpair.
fn raw_echo_rate(raw: &mut Raw, message: &[u8], back: &mut [u8], calls: usize) -> Result<f64> {
    let started = Instant::now();
    for _ in 0..calls {
        raw.writer.write_all(message)?;
        raw.reader.read_exact(back)?;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

fn round(children: &mut Children, choice: Choice, quick: bool, payload: &[u8], message: &[u8]) -> Result<Figures> {
    let scale = if quick { 4 } else { 1 };
    let calls = 40_000 / scale;
    let echoes = choice.echoes.unwrap_or(400 / scale);
    let client = &children.rpc.client;
    let mut back = vec![0; payload.len()];
    let mut f = Figures::default();
    if let Some((_, dir)) = &children.tarpc {
        let tarpc_path = dir.path().join("tarpc.sock");
        let current = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        (f.one_thread, f.one_switches) = threads_rate(client, 1, calls)?;
        (f.n_threads, f.n_switches) = threads_rate(client, N, calls)?;
        f.tarpc_current = tarpc_rate(&current, &tarpc_path, calls)?;
        f.tarpc_multi = tarpc_rate(&multi, &tarpc_path, calls)?;
    }
    f.echo_rpc = echo_rate(client, payload, echoes)?;
    f.echo_owned = echo_owned_rate(client, payload, echoes)?;
    f.echo_raw = raw_echo_rate(&mut children.raw, message, &mut back, echoes)?;
    ensure!(back == payload, "the raw echo returned other bytes");
    // Bytes per second of payload, both directions.
    f.echo_rpc *= 2.0 * payload.len() as f64;
    f.echo_owned *= 2.0 * payload.len() as f64;
    f.echo_raw *= 2.0 * payload.len() as f64;
    Ok(f)
}

fn median_of(rounds: &[Figures], pick: impl Fn(&Figures) -> f64) -> f64 {
    let mut values: Vec<f64> = rounds.iter().map(pick).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The CPUs a process may run on, as the kernel says (`Cpus_allowed_list`).
fn allowed_cpus(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("Cpus_allowed_list:")
                    .map(|cpus| cpus.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "?".into())
}

fn placement(place: Placement, choice: Choice, quick: bool, payload: &[u8]) -> Result<Vec<Figures>> {
    // Children inherit the affinity of the thread that starts them.
    support_pin(place.child)?;
    let children = (|| -> Result<Children> {
        Ok(Children {
            rpc: Rpc::spawn(Kind::Unix)?,
            tarpc: (!choice.echo_only).then(spawn_tarpc).transpose()?,
            raw: Raw::spawn(Kind::Unix, "raw-large")?,
        })
    })();
    support_pin(place.parent)?;
    let mut children = children?;
    println!();
    println!(
        "{}: client threads on CPU {} (this process may run on {}); procwire server on {}, tarpc server on {}, \
         raw echo on {}",
        place.name,
        place.parent,
        allowed_cpus(std::process::id()),
        allowed_cpus(children.rpc.child.child.id()),
        children
            .tarpc
            .as_ref()
            .map_or_else(|| "-".to_owned(), |(child, _)| allowed_cpus(child.child.id())),
        allowed_cpus(children.raw.child.child.id()),
    );
    let mut message = (payload.len() as u32).to_le_bytes().to_vec();
    message.extend_from_slice(payload);
    // Warm up every path once.
    ensure!(children.rpc.client.echo(payload)? == payload);
    ensure!(children.rpc.client.echo_owned(payload.to_vec())? == payload);
    if !choice.echo_only {
        threads_rate(&children.rpc.client, N, 2_000)?;
    }
    let rounds = (0..ROUNDS)
        .map(|_| round(&mut children, choice, quick, payload, &message))
        .collect::<Result<Vec<_>>>()?;
    let Children { rpc, tarpc, raw } = children;
    rpc.finish()?;
    drop(tarpc);
    raw.finish()?;
    Ok(rounds)
}

fn support_pin(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))
}

/// Measures and prints every placement the affinity mask `allowed` offers.
pub(crate) fn report(allowed: &CpuSet, quick: bool, payload: &[u8]) -> Result<()> {
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    let choice = Choice::from_env()?;
    let mut places = vec![Placement {
        name: "one CPU",
        parent: cpus[0],
        child: cpus[0],
    }];
    match cpus.get(1) {
        Some(&second) => places.push(Placement {
            name: "two CPUs",
            parent: cpus[0],
            child: second,
        }),
        None => println!("only one CPU allowed: the two-CPU placement is skipped"),
    }
    match std::env::var("PROCWIRE_BENCH_PLACEMENT").as_deref() {
        Ok("one") => places.truncate(1),
        Ok("two") => drop(places.drain(..1)),
        _ => {}
    }
    println!();
    println!(
        "concurrency and bulk over a Unix socket: median of {ROUNDS} interleaved rounds{}",
        if quick { " (quick: a quarter of the calls)" } else { "" }
    );
    println!(
        "ours: BenchClient::add from 1 thread, then {N} threads on the same client (one connection); \
         tarpc {N} tasks on one client (serde transport, bincode), best of a current-thread and a \
         2-worker runtime; 1 MiB echo: BenchClient::echo_owned (bytes by value, the reply fed back in: no copy \
         but the kernel's, as the raw echo) and BenchClient::echo (bytes borrowed: the handler copies them) vs \
         1 MiB written and read back over a socketpair"
    );
    let verdict = |met: bool| if met { "MET" } else { "NOT MET" };
    let mut met = true;
    let count = places.len();
    for place in places {
        let rounds = placement(place, choice, quick, payload).with_context(|| place.name)?;
        let m = |pick: fn(&Figures) -> f64| median_of(&rounds, pick);
        let (one, many) = (m(|f| f.one_thread), m(|f| f.n_threads));
        let (current, multi, tarpc) = (m(|f| f.tarpc_current), m(|f| f.tarpc_multi), m(Figures::tarpc));
        let (echo, owned, raw) = (m(|f| f.echo_rpc), m(|f| f.echo_owned), m(|f| f.echo_raw));
        let (one_cs, many_cs) = (m(|f| f.one_switches), m(|f| f.n_switches));
        if !choice.echo_only {
            println!("  ours, 1 thread           {one:>10.0} calls/s   ({one_cs:.2} client context switches per call)");
            println!(
                "  ours, {N} threads          {many:>10.0} calls/s   {:.2}x of 1 thread ({many_cs:.2} client context \
                 switches per call)",
                many / one
            );
            println!("  tarpc, {N} tasks, current {current:>10.0} calls/s");
            println!("  tarpc, {N} tasks, 2 worker{multi:>10.0} calls/s");
            println!("  ours {N} threads / tarpc {N} tasks (its best): {:.2}x", many / tarpc);
        }
        println!(
            "  1 MiB echo: ours {:.2} GB/s by value, {:.2} GB/s borrowed; raw socketpair {:.2} GB/s: {:.2}x by \
             value, {:.2}x borrowed",
            owned / 1e9,
            echo / 1e9,
            raw / 1e9,
            owned / raw,
            echo / raw
        );
        let targets = [
            ("N threads >= 1 thread", many / one, 1.0),
            ("N threads >= 1.5x tarpc N tasks", many / tarpc, 1.5),
            ("1 MiB echo (by value, as the raw echo) >= 0.7x raw", owned / raw, 0.7),
        ];
        // Only the echo's target when only the echo ran.
        let skip = if choice.echo_only { 2 } else { 0 };
        for (what, got, want) in targets.into_iter().skip(skip) {
            met &= got >= want;
            println!("  target {what}: {got:.2}x -> {}", verdict(got >= want));
        }
    }
    println!();
    let which = match (count, choice.echo_only) {
        (2, false) => "every placement",
        (2, true) => "every placement, the echo's only",
        (_, false) => "this placement only",
        (_, true) => "this placement only, the echo's only",
    };
    println!("concurrency and bulk targets, {which}: {}", verdict(met));
    Ok(())
}

//! What the benches that run a server in a pinned child share: pinning, the child process,
//! and the median of batch means.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use nix::sched::{sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use procwire_rpc::transport::Listener;
use procwire_rpc::Server;

/// The environment variable that tells a child the CPU to pin itself to.
pub const CPU_ENV: &str = "PROCWIRE_BENCH_CPU";

/// Pins this process to `cpu`.
pub fn pin(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))
}

/// A child process (this bench, re-executed with `role` in `child_env`), killed if still
/// running when dropped. It pins itself to the CPU in [`CPU_ENV`] and prints `ready CPU`.
pub struct Proc {
    child: Child,
    /// The CPU the child said it runs on.
    pub cpu: usize,
}

impl Proc {
    /// Starts the child and waits for its `ready` line.
    pub fn spawn(
        child_env: &str,
        role: &str,
        cpu: usize,
        setup: impl FnOnce(&mut Command) -> Result<()>,
    ) -> Result<Proc> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(child_env, role)
            .env(CPU_ENV, cpu.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        setup(&mut cmd)?;
        let mut child = cmd.spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let Some(cpu) = line.trim().strip_prefix("ready ") else {
            bail!("the {role} child did not start");
        };
        Ok(Proc {
            cpu: cpu.parse()?,
            child,
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Median over `batches` of the mean seconds per `op`, after `warmup` runs.
pub fn median(warmup: usize, calls: usize, batches: usize, mut op: impl FnMut(u32) -> Result<()>) -> Result<f64> {
    for i in 0..warmup {
        op(i as u32)?;
    }
    let per = (calls / batches).max(1);
    let mut samples = Vec::new();
    let mut i = warmup as u32;
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..per {
            op(i)?;
            i += 1;
        }
        samples.push(start.elapsed().as_secs_f64() / per as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[batches / 2])
}

/// Context switches of this process so far (all its threads), voluntary and not.
#[allow(dead_code)] // Not every bench counts them.
pub fn context_switches() -> Result<i64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    Ok(usage.voluntary_context_switches() + usage.involuntary_context_switches())
}

/// Makes `per` calls of `add(t, i)` on each of `threads` threads at once (`t` the thread's
/// number), checking each sum.
#[allow(dead_code)] // Not every bench shares a client between threads.
pub fn on_threads(threads: usize, per: i64, add: impl Fn(i64, i64) -> Result<i64> + Sync) -> Result<()> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads as i64)
            .map(|t| {
                let add = &add;
                s.spawn(move || -> Result<()> {
                    for i in 0..per {
                        ensure!(add(t, i)? == t + i, "add returned another sum");
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a caller thread panicked"))
    })
}

/// The service the benches measure, as a user would write it.
#[procwire_macros::service]
pub trait Bench {
    /// A small call: two integers in, one out.
    fn add(&self, a: i64, b: i64) -> i64;
    /// A large call: bytes in, the same bytes out.
    fn echo(&self, data: &[u8]) -> Vec<u8>;
}

/// The implementation the child serves.
pub struct Echo;

impl Bench for Echo {
    fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    fn echo(&self, data: &[u8]) -> Vec<u8> {
        data.to_vec()
    }
}

/// The child's side of a procwire measurement: serves [`Echo`] on `listener`, says it is
/// ready and where it runs, and stops when the parent closes its stdin.
pub fn serve(listener: impl Listener) -> Result<()> {
    use std::io::Write;
    let handle = Server::new(BenchServer::new(Echo)).spawn(listener)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", sched_getcpu()?)?;
    out.flush()?;
    drop(out);
    let stopper = handle.stopper();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        stopper.stop();
    });
    handle.wait()?;
    Ok(())
}

/// Seconds per small call and per echo of `payload` (`echo_calls` of them), medians.
pub fn measure_calls(client: &BenchClient, scale: usize, payload: &[u8], echo_calls: usize) -> Result<(f64, f64)> {
    let small = median(2000, 50_000 / scale, 10, |i| {
        ensure!(client.add(i as i64, 1)? == i as i64 + 1);
        Ok(())
    })?;
    ensure!(client.echo(payload)? == payload, "the echo came back different");
    let large = median(echo_calls / 10, echo_calls / scale, 10, |_| {
        ensure!(client.echo(payload)?.len() == payload.len());
        Ok(())
    })?;
    Ok((small, large))
}

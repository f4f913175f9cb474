//! Several worker processes increment one counter in a shared region under a robust mutex;
//! one of them is killed (SIGKILL) while it holds the lock, in the middle of an update. The
//! next worker to lock is told the holder died, rolls the half-done update back, marks the
//! mutex consistent, and the final count is exact.
//!
//! The region is an unnamed memfd the parent creates and hands to each child it spawns
//! (`Region::pass_to`, `Region::from_env`): nothing is named in /dev/shm, so nothing is left
//! behind whatever dies.
//!
//! Run it with `cargo run --example shared_counter`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use procwire::rpc::shm::{Locked, Region, RobustMutex};

/// The counter and a one-entry journal: `before` is the count when an update began, and
/// `updating` says one is in progress, so a locker after a death can undo it.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Counter {
    count: u64,
    before: u64,
    updating: u64,
}

const WORKERS: u64 = 4;
const INCREMENTS: u64 = 5_000;
const ROLE: &str = "SHARED_COUNTER_ROLE";
const REGION: &str = "counter";

fn main() -> Result<()> {
    match std::env::var(ROLE).as_deref() {
        Ok("worker") => worker(),
        Ok("victim") => victim(),
        _ => parent(),
    }
}

fn parent() -> Result<()> {
    let region = Region::create(4096)?;
    let counter = RobustMutex::create(
        &region,
        0,
        Counter {
            count: 0,
            before: 0,
            updating: 0,
        },
    )?;
    let spawn = |role: &str| -> Result<std::process::Child> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(ROLE, role).stdin(Stdio::piped()).stdout(Stdio::piped());
        region.pass_to(&mut cmd, REGION)?;
        Ok(cmd.spawn()?)
    };

    // The victim takes the lock, starts an update and says so; then it is killed.
    let mut victim = spawn("victim")?;
    let mut line = String::new();
    BufReader::new(victim.stdout.take().context("victim stdout")?).read_line(&mut line)?;
    if line.trim() != "holding" {
        bail!("the victim did not take the lock: {line:?}");
    }
    println!("victim {} holds the lock in the middle of an update", victim.id());

    // The workers start, and wait for the lock the victim holds.
    let mut workers = (0..WORKERS).map(|_| spawn("worker")).collect::<Result<Vec<_>>>()?;
    victim.kill()?; // SIGKILL: no destructor, no unlock
    victim.wait()?;
    println!("victim killed while holding the lock");

    for worker in &mut workers {
        let mut out = String::new();
        worker
            .stdout
            .take()
            .context("worker stdout")?
            .read_to_string(&mut out)?;
        print!("{out}");
        let status = worker.wait()?;
        if !status.success() {
            bail!("worker {} failed: {status}", worker.id());
        }
    }
    let guard = match counter.lock()? {
        Locked::Held(guard) => guard,
        Locked::OwnerDied(_) => bail!("a worker died holding the lock"),
    };
    let final_count = guard.load().count;
    println!("final count: {final_count} ({WORKERS} workers x {INCREMENTS} increments)");
    if final_count != WORKERS * INCREMENTS {
        bail!("the count is {final_count}, not {}", WORKERS * INCREMENTS);
    }
    Ok(())
}

fn open() -> Result<(Region, u32)> {
    Ok((Region::from_env(REGION)?, std::process::id()))
}

/// Takes the lock, starts an update and never finishes it.
fn victim() -> Result<()> {
    let (region, _) = open()?;
    let counter = RobustMutex::<Counter>::open(&region, 0)?;
    let guard = counter.lock()?.recover(|_| {})?;
    guard.update(|c| {
        c.before = c.count;
        c.updating = 1;
        c.count += 1_000; // a wrong value, half-way through an update
    });
    println!("holding");
    // Wait to be killed (the parent never writes to our stdin).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

fn worker() -> Result<()> {
    let (region, pid) = open()?;
    let counter = RobustMutex::<Counter>::open(&region, 0)?;
    for _ in 0..INCREMENTS {
        let guard = match counter.lock()? {
            Locked::Held(guard) => guard,
            Locked::OwnerDied(recovery) => {
                let mut c = recovery.load();
                if c.updating == 1 {
                    println!(
                        "worker {pid}: the last holder died mid-update; count {} rolled back to {}",
                        c.count, c.before
                    );
                    c.count = c.before;
                    c.updating = 0;
                }
                recovery.store(&c);
                recovery.consistent()?
            }
        };
        guard.update(|c| {
            c.before = c.count;
            c.updating = 1;
            c.count += 1;
            c.updating = 0;
        });
    }
    println!("worker {pid}: done");
    Ok(())
}

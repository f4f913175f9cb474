//! A pipeline of jobs: Z starts only after X and Y, which run in parallel, have both
//! completed successfully. One program is the supervisor and, in their roles, the jobs.
//!
//! Run it with `cargo run --example pipeline`.

use std::time::Instant;

use anyhow::Result;
use procwire::supervisor::manifest::{Condition, Manifest, Pool, Restart};

fn job(name: &str) -> Pool {
    Pool {
        role: Some(name.to_owned()),
        // A batch job: it runs once, and success is what its dependents wait for.
        restart: Restart::Never,
        ..Pool::new(name, Vec::new())
    }
}

fn main() -> Result<()> {
    if let Some(role) = procwire::role() {
        // The jobs. Each prints when it starts and ends; their output reaches the supervisor's.
        let started = Instant::now();
        println!("{role}: started");
        let work: u64 = (0..2_000_000u64).map(|i| i % 7).sum();
        println!("{role}: done in {:.0?} (result {work})", started.elapsed());
        return Ok(());
    }
    let (x, y) = (job("x"), job("y"));
    let mut z = job("z");
    z.after = vec![("x".into(), Condition::Completed), ("y".into(), Condition::Completed)];
    let manifest = Manifest::new("pipeline").pool(x).pool(y).pool(z);
    println!(
        "== the plan: {:?}",
        manifest
            .plan()
            .iter()
            .map(|w| w.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    // With every job done, the supervisor ends by itself; 0 means they all succeeded.
    let code = procwire::Supervisor::start(manifest)?.wait()?;
    println!("== all jobs done; the supervisor exited with code {code}");
    anyhow::ensure!(code == 0, "a job failed");
    Ok(())
}

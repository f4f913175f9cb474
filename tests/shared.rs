//! `[shared.NAME]` regions end to end: this test binary is an embedded supervisor and, in
//! roles, its workers. The workers of one pool add to a counter under a robust mutex in a
//! region the supervisor created; each fails its first run, so it is restarted and adds
//! again; a last pool, after them, writes the count to a file. The count is exact only if
//! every run, before and after the restarts, mapped the same memory. The last pool also
//! listens on a socket, so its region is handed over after the socket.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use procwire::rpc::shm::RobustMutex;
use procwire::supervisor::manifest::{Condition, Endpoint, Manifest, Pool, Restart};

const LIMIT: Duration = Duration::from_secs(60);
const REGION: &str = "counter";
const ADDERS: u32 = 3;
const ADDS: u64 = 1_000;
/// Where each adder counts its runs: one u64 per worker index.
const RUNS: usize = 512;
const REPORT_ENV: &str = "SHARED_TEST_REPORT";

fn role_pool(name: &str, role: &str) -> Pool {
    let mut pool = Pool::new(name, Vec::new());
    pool.role = Some(role.into());
    pool.shared = vec![REGION.into()];
    pool.backoff.initial = Duration::ZERO;
    pool
}

fn workers_share_a_manifest_region_across_their_restarts() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let report = dir.path().join("count");
    let mut adders = role_pool("adders", "adder");
    adders.workers = ADDERS;
    adders.restart = Restart::OnFailure;
    let mut check = role_pool("check", "check");
    check.restart = Restart::Never;
    check.after = vec![("adders".into(), Condition::Completed)];
    check.env.insert(REPORT_ENV.into(), report.display().to_string());
    // With a socket as well, the region comes after it (fd 4, LISTEN_FDS=1).
    check.listen = vec![Endpoint::Unix(dir.path().join("check.sock"))];
    let mut manifest = Manifest::new("shared-test")
        .shared_region(REGION, 4096)
        .pool(adders)
        .pool(check);
    manifest.path = dir.path().join("shared-test.toml");
    let supervisor = procwire::Supervisor::start(manifest)?;
    // With every pool done, the supervisor ends by itself.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(supervisor.wait());
    });
    let code = rx
        .recv_timeout(LIMIT)
        .map_err(|_| "the supervisor did not finish in time")??;
    assert_eq!(code, 0, "the supervisor's exit code");
    let count = std::fs::read_to_string(&report)?;
    assert_eq!(
        count.trim(),
        (u64::from(ADDERS) * 2 * ADDS).to_string(),
        "two runs of each adder counted"
    );
    Ok(())
}

fn adder() -> Result<(), Box<dyn std::error::Error>> {
    let region = procwire::workers::shared(REGION)?;
    let counter = RobustMutex::<u64>::open_or_create(region, 0, 0)?;
    let index: usize = std::env::var("PROCWIRE_INDEX")?.parse()?;
    let runs = region
        .atomic::<AtomicU64>(RUNS + 8 * index)?
        .fetch_add(1, Ordering::AcqRel);
    for _ in 0..ADDS {
        counter
            .lock()?
            .recover(|_| panic!("nobody dies holding it"))?
            .update(|n| *n += 1);
    }
    if runs == 0 {
        // A failed first run: the supervisor restarts this worker, with the same region.
        std::process::exit(1);
    }
    Ok(())
}

fn check() -> Result<(), Box<dyn std::error::Error>> {
    assert_eq!(std::env::var("LISTEN_FDS")?, "1");
    let region = procwire::workers::shared(REGION)?;
    let count = RobustMutex::<u64>::open(region, 0)?.lock()?.recover(|_| {})?.load();
    std::fs::write(PathBuf::from(std::env::var(REPORT_ENV)?), count.to_string())?;
    Ok(())
}

fn main() {
    let role = procwire::role();
    let outcome = match role.as_deref() {
        Some("adder") => adder(),
        Some("check") => check(),
        _ => {
            let trials = vec![Trial::test(
                "workers_share_a_manifest_region_across_their_restarts",
                workers_share_a_manifest_region_across_their_restarts,
            )];
            libtest_mimic::run(&Arguments::from_args(), trials).exit();
        }
    };
    if let Err(e) = outcome {
        eprintln!("{}: {e}", role.unwrap_or_default());
        std::process::exit(2);
    }
}

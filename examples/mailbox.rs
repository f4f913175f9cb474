//! Producers and consumers that never name each other, through a message queue the
//! manifest declares (`[queue.jobs]`): the supervisor creates the queue, hands it to both
//! pools, keeps it across restarts and removes it at the end.
//!
//! Two producer workers each send 50 jobs; one of them fails halfway and is restarted, and
//! no job is lost, because the queue is the supervisor's, not the worker's. Three consumer
//! workers take jobs as they come (each job reaches exactly one of them) and report what
//! they did on a Unix datagram socket the parent reads.
//!
//! Run it with `cargo run --example mailbox`.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use procwire::rpc::Wait;
use procwire::supervisor::manifest::{Manifest, Pool, QueueDecl, Restart};

const JOBS_PER_PRODUCER: u32 = 50;
const REPORT_ENV: &str = "MAILBOX_REPORT";
/// A job: who made it and its number.
type Job = (u32, u32);

fn main() -> Result<()> {
    match procwire::role().as_deref() {
        Some("producer") => producer(),
        Some("consumer") => consumer(),
        _ => supervise(),
    }
}

fn index() -> Result<u32> {
    Ok(std::env::var("PROCWIRE_INDEX")?.parse()?)
}

fn producer() -> Result<()> {
    let jobs = procwire::workers::queue("jobs")?;
    let me = index()?;
    // Producer 0's first run fails halfway, leaving a note; its restarted run goes on
    // from there. The jobs it sent before failing wait in the queue meanwhile.
    let note = std::path::PathBuf::from(std::env::var(REPORT_ENV)?).with_extension("failed");
    let restarted = me == 0 && note.exists();
    let from = if restarted { JOBS_PER_PRODUCER / 2 } else { 0 };
    for n in from..JOBS_PER_PRODUCER {
        jobs.send_value(&(me, n), Wait::timeout(Duration::from_secs(30)))?;
        if me == 0 && !restarted && n + 1 == JOBS_PER_PRODUCER / 2 {
            std::fs::write(&note, "")?;
            eprintln!("producer 0 fails after {} jobs", n + 1);
            std::process::exit(1);
        }
    }
    Ok(())
}

fn consumer() -> Result<()> {
    let jobs = procwire::workers::queue("jobs")?;
    let report = UnixDatagram::unbound()?;
    let to = std::env::var(REPORT_ENV)?;
    loop {
        // Until the supervisor stops this worker (SIGTERM), when the demonstration is over.
        let (producer, n): Job = jobs.recv_value(Wait::Block)?;
        report.send_to(format!("{} {producer} {n}", index()?).as_bytes(), &to)?;
    }
}

fn supervise() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let report_path = dir.path().join("report.sock");
    let report = UnixDatagram::bind(&report_path)?;
    report.set_read_timeout(Some(Duration::from_secs(30)))?;
    let role = |name: &str, workers: u32| {
        let mut pool = Pool::new(name, Vec::new());
        pool.role = Some(name.into());
        pool.workers = workers;
        pool.queues = vec!["jobs".into()];
        pool.restart = Restart::OnFailure;
        pool.backoff.initial = Duration::ZERO;
        pool.env.insert(REPORT_ENV.into(), report_path.display().to_string());
        pool
    };
    let mut jobs = QueueDecl::new("jobs");
    jobs.messages = 8;
    jobs.message_size = 64;
    let mut manifest = Manifest::new("mailbox")
        .queue(jobs)
        .pool(role("producer", 2))
        .pool(role("consumer", 3));
    manifest.path = dir.path().join("mailbox.toml");
    let supervisor = procwire::Supervisor::start(manifest)?;

    let total = 2 * JOBS_PER_PRODUCER as usize;
    let mut done: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    let mut per_consumer = [0u32; 3];
    let mut buf = [0; 64];
    while done.len() < total {
        let n = report.recv(&mut buf).context("a consumer report in time")?;
        let text = std::str::from_utf8(&buf[..n])?;
        let fields: Vec<u32> = text.split(' ').map(str::parse).collect::<Result<_, _>>()?;
        let [consumer, producer, job] = fields[..] else {
            bail!("a bad report {text:?}");
        };
        if let Some(first) = done.insert((producer, job), consumer) {
            bail!("job {producer}/{job} was done twice (by {first} and {consumer})");
        }
        per_consumer[consumer as usize] += 1;
    }
    println!("{total} jobs from 2 producers (one restarted halfway), each done once:");
    for (consumer, count) in per_consumer.iter().enumerate() {
        println!("  consumer {consumer} did {count}");
    }
    supervisor.stop()?;
    Ok(())
}

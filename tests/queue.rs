//! `[queue.NAME]` message queues end to end: this test binary is an embedded supervisor and,
//! in roles, its workers. A producer pool and a consumer pool share a queue and never name
//! each other; the producer fails after its first half and is restarted, and the consumer
//! still gets every message, once: the queue is the supervisor's, not the worker's. The
//! queue is gone when the supervisor exits, and a supervisor that crashed (aborted, so no
//! clean-up ran) has its queue removed by the next one that starts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use procwire::rpc::transport::mq::Queue;
use procwire::rpc::Wait;
use procwire::supervisor::manifest::{Manifest, Pool, QueueDecl, Restart};

const LIMIT: Duration = Duration::from_secs(60);
const MESSAGES: u64 = 20;
const REPORT_ENV: &str = "QUEUE_TEST_REPORT";
const DOOMED_ENV: &str = "QUEUE_TEST_DOOMED";

fn role_pool(name: &str, role: &str, report: &Path) -> Pool {
    let mut pool = Pool::new(name, Vec::new());
    pool.role = Some(role.into());
    pool.queues = vec!["jobs".into()];
    pool.backoff.initial = Duration::ZERO;
    pool.restart = Restart::OnFailure;
    pool.env.insert(REPORT_ENV.into(), report.display().to_string());
    pool
}

fn manifest(dir: &Path, name: &str, pools: Vec<Pool>) -> Manifest {
    let mut jobs = QueueDecl::new("jobs");
    jobs.messages = 4;
    jobs.message_size = 64;
    let mut manifest = pools.into_iter().fold(Manifest::new(name).queue(jobs), Manifest::pool);
    manifest.path = dir.join(format!("{name}.toml"));
    manifest
}

fn run_to_the_end(manifest: Manifest) -> Result<i32, Failed> {
    let supervisor = procwire::Supervisor::start(manifest)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(supervisor.wait());
    });
    Ok(rx
        .recv_timeout(LIMIT)
        .map_err(|_| "the supervisor did not finish in time")??)
}

/// The system name of the queue handed over as fd `fd`: its /proc link.
fn system_name(queue: &Queue) -> String {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = queue.as_fd().as_raw_fd();
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
}

fn producers_and_consumers_share_a_queue_that_outlives_a_producer_restart() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let report = dir.path().join("received");
    let manifest = manifest(
        dir.path(),
        "queue-test",
        vec![
            role_pool("producer", "producer", &report),
            role_pool("consumer", "consumer", &report),
        ],
    );
    assert_eq!(run_to_the_end(manifest)?, 0, "the supervisor's exit code");
    let report = std::fs::read_to_string(&report)?;
    let (name, received) = report.split_once('\n').ok_or("a name line")?;
    let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    assert_eq!(
        received.lines().collect::<Vec<_>>(),
        expected,
        "every message, once, in order"
    );
    assert!(name.starts_with("/procwire."), "{name}");
    assert!(
        Queue::open(name).is_err(),
        "{name} was removed when the supervisor exited"
    );
    Ok(())
}

fn a_crashed_supervisors_queue_is_removed_by_the_next_one() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let status = Command::new(std::env::current_exe()?)
        .env(DOOMED_ENV, dir.path())
        // Queues are the point here, not containment: an embedded supervisor that aborts
        // would leave its (empty) cgroup subtree behind for good, since it records none for
        // a successor.
        .env("PROCWIRE_CGROUP", "off")
        .status()?;
    assert!(!status.success(), "the doomed supervisor aborts");
    let name = std::fs::read_to_string(dir.path().join("name"))?;
    let name = name.trim();
    assert!(Queue::open(name).is_ok(), "{name} outlives the crash");
    // Any supervisor of this user that starts cleans up after the dead one.
    let mut idle = Pool::new("idle", vec!["/bin/true".into()]);
    idle.restart = Restart::Never;
    let mut next = Manifest::new("queue-next").pool(idle);
    next.path = dir.path().join("next.toml");
    assert_eq!(run_to_the_end(next)?, 0);
    assert!(Queue::open(name).is_err(), "{name} was removed by the next supervisor");
    Ok(())
}

fn a_queue_above_the_kernels_limit_stops_the_start_naming_the_knob() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mut big = QueueDecl::new("big");
    big.messages = 1000;
    big.message_size = 64;
    let mut idle = Pool::new("idle", vec!["/bin/true".into()]);
    idle.queues = vec!["big".into()];
    let mut manifest = Manifest::new("queue-limit").queue(big).pool(idle);
    manifest.path = dir.path().join("limit.toml");
    match procwire::Supervisor::start(manifest) {
        Ok(supervisor) => {
            // A supervisor with CAP_SYS_RESOURCE is not held to msg_max.
            println!("skipped: this process may create queues above fs.mqueue.msg_max");
            supervisor.stop()?;
        }
        Err(e) => {
            let text = procwire::rpc::ErrorChain(&e).to_string();
            assert!(
                text.contains("queue big")
                    && text.contains("1000 messages asked for, above /proc/sys/fs/mqueue/msg_max = "),
                "{text}"
            );
        }
    }
    Ok(())
}

/// Starts a supervisor whose worker reports the queue's name (in a datagram), writes it
/// down, then aborts: no destructor runs, as after a crash. Its workers die with it (their
/// parent-death signal).
fn doomed(dir: &Path) -> ! {
    let socket_path = dir.join("name.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut namer = role_pool("namer", "namer", &socket_path);
    namer.restart = Restart::Never;
    let manifest = manifest(dir, "queue-doomed", vec![namer]);
    let _supervisor = procwire::Supervisor::start(manifest).expect("start");
    let mut name = [0; 512];
    // A signal interrupts a read with a timeout whatever its handler: read again.
    let n = loop {
        match socket.recv(&mut name) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other.expect("the namer reports in time"),
        }
    };
    std::fs::write(dir.join("name"), &name[..n]).expect("write the name");
    std::process::abort();
}

fn report_path() -> Result<PathBuf, Box<dyn std::error::Error>> {
    Ok(PathBuf::from(std::env::var(REPORT_ENV)?))
}

fn producer() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = procwire::workers::queue("jobs")?;
    // The first run sends half and fails; the restarted run finds how far it got from the
    // file it keeps, and sends the rest into the same queue.
    let progress = report_path()?.with_extension("sent");
    let from: u64 = std::fs::read_to_string(&progress).map_or(0, |s| s.trim().parse().unwrap_or(0));
    for i in from..MESSAGES {
        jobs.send_value(&i, Wait::timeout(LIMIT))?;
        std::fs::write(&progress, (i + 1).to_string())?;
        if i + 1 == MESSAGES / 2 && from == 0 {
            std::process::exit(1);
        }
    }
    Ok(())
}

fn consumer() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = procwire::workers::queue("jobs")?;
    let mut lines = format!("{}\n", system_name(&jobs));
    for _ in 0..MESSAGES {
        let i: u64 = jobs.recv_value(Wait::timeout(LIMIT))?;
        lines.push_str(&format!("{i}\n"));
    }
    std::fs::write(report_path()?, lines)?;
    Ok(())
}

fn namer() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = procwire::workers::queue("jobs")?;
    std::os::unix::net::UnixDatagram::unbound()?.send_to(system_name(&jobs).as_bytes(), report_path()?)?;
    // Stay until the supervisor dies (PDEATHSIG ends this).
    std::thread::park();
    Ok(())
}

fn main() {
    let role = procwire::role();
    let outcome = match role.as_deref() {
        Some("producer") => producer(),
        Some("consumer") => consumer(),
        Some("namer") => namer(),
        // Workers inherit the variable: the role comes first.
        _ if std::env::var_os(DOOMED_ENV).is_some() => {
            doomed(Path::new(&std::env::var_os(DOOMED_ENV).unwrap_or_default()))
        }
        _ => {
            let trials = vec![
                Trial::test(
                    "producers_and_consumers_share_a_queue_that_outlives_a_producer_restart",
                    producers_and_consumers_share_a_queue_that_outlives_a_producer_restart,
                ),
                Trial::test(
                    "a_crashed_supervisors_queue_is_removed_by_the_next_one",
                    a_crashed_supervisors_queue_is_removed_by_the_next_one,
                ),
                Trial::test(
                    "a_queue_above_the_kernels_limit_stops_the_start_naming_the_knob",
                    a_queue_above_the_kernels_limit_stops_the_start_naming_the_knob,
                ),
            ];
            libtest_mimic::run(&Arguments::from_args(), trials).exit();
        }
    };
    if let Err(e) = outcome {
        eprintln!("{}: {e}", role.unwrap_or_default());
        std::process::exit(2);
    }
}

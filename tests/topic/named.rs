//! A topic by name: `[topic.ticks]`, a publishing pool and a subscribing pool that never name
//! each other's endpoints; the publisher crashes once and the supervisor restarts it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use procwire::rpc::topic::named::Transport;
use procwire::rpc::topic::{Event, Overflow};
use procwire::rpc::Wait;
use procwire::supervisor::manifest::{Manifest, Pool, Restart, TopicDecl};

use super::{FIRST_RUN, LIMIT, MARK_ENV};

/// Where the watcher reports: `path PATH` (the topic's socket, as it was told), then one
/// line per event: `m SEQ VALUE`, `end`, `run EPOCH`.
const REPORT_ENV: &str = "TOPIC_TEST_REPORT";
/// Which transport the topic travels over (`unix` or `shm`), for the roles.
const TRANSPORT_ENV: &str = "TOPIC_TEST_TRANSPORT";

/// Either publisher, by name.
enum AnyPublisher {
    Unix(procwire::rpc::topic::Publisher<u64>),
    Shm(procwire::rpc::topic::shm::Publisher<u64>),
}

impl AnyPublisher {
    fn subscribers(&self) -> usize {
        match self {
            AnyPublisher::Unix(p) => p.subscribers(),
            AnyPublisher::Shm(p) => p.subscribers(),
        }
    }

    fn publish(&self, value: u64) -> Result<u64, procwire::rpc::topic::TopicError> {
        match self {
            AnyPublisher::Unix(p) => p.publish(&value, Wait::timeout(LIMIT)),
            AnyPublisher::Shm(p) => p.publish(&value, Wait::timeout(LIMIT)),
        }
    }
}

fn shm() -> bool {
    std::env::var(TRANSPORT_ENV).as_deref() == Ok("shm")
}

/// The publishing pool's worker: publishes 1, 2, 3, ... by name; its first run crashes after
/// [`FIRST_RUN`] messages.
pub fn ticker() -> Result<(), Box<dyn std::error::Error>> {
    let publisher = if shm() {
        AnyPublisher::Shm(procwire::workers::topic::shm_publisher("ticks")?)
    } else {
        AnyPublisher::Unix(procwire::workers::topic::publisher("ticks")?)
    };
    let mark = std::path::PathBuf::from(std::env::var(MARK_ENV)?);
    let first_run = !mark.exists();
    let deadline = Instant::now() + LIMIT;
    while publisher.subscribers() == 0 {
        if Instant::now() > deadline {
            return Err("no subscriber came".into());
        }
        std::thread::yield_now();
    }
    for i in 1.. {
        publisher.publish(i)?;
        if first_run && i == FIRST_RUN {
            std::fs::write(&mark, "")?;
            std::process::abort();
        }
    }
    Ok(())
}

/// Either subscriber, by name.
trait Subscription {
    fn next(&mut self) -> Result<Event<u64>, procwire::rpc::topic::TopicError>;
    fn again(&mut self) -> Result<(), procwire::rpc::topic::TopicError>;
    fn run(&self) -> u64;
}

impl Subscription for procwire::rpc::topic::Subscriber<u64> {
    fn next(&mut self) -> Result<Event<u64>, procwire::rpc::topic::TopicError> {
        self.recv(Wait::Block)
    }
    fn again(&mut self) -> Result<(), procwire::rpc::topic::TopicError> {
        self.reconnect()
    }
    fn run(&self) -> u64 {
        self.epoch()
    }
}

impl Subscription for procwire::rpc::topic::shm::Subscriber<u64> {
    fn next(&mut self) -> Result<Event<u64>, procwire::rpc::topic::TopicError> {
        self.recv(Wait::Block)
    }
    fn again(&mut self) -> Result<(), procwire::rpc::topic::TopicError> {
        self.reconnect()
    }
    fn run(&self) -> u64 {
        self.epoch()
    }
}

/// The subscribing pool's worker: reports every event to the test, and reconnects when a
/// run ends.
pub fn watcher() -> Result<(), Box<dyn std::error::Error>> {
    let mut report = UnixStream::connect(std::env::var(REPORT_ENV)?)?;
    let transport = if shm() { Transport::Shm } else { Transport::Unix };
    let handed = procwire::rpc::topic::named::Handed::from_env("ticks", transport)?;
    writeln!(report, "path {}", handed.path().display())?;
    let mut subscriber: Box<dyn Subscription> = if shm() {
        Box::new(procwire::workers::topic::shm_subscriber::<u64>("ticks", false)?)
    } else {
        Box::new(procwire::workers::topic::subscriber::<u64>("ticks")?)
    };
    writeln!(report, "run {}", subscriber.run())?;
    loop {
        match subscriber.next()? {
            Event::Message { seq, value } => writeln!(report, "m {seq} {value}")?,
            Event::Gap { missed, .. } => writeln!(report, "gap {missed}")?,
            Event::Ended { .. } => {
                writeln!(report, "end")?;
                subscriber.again()?;
                writeln!(report, "run {}", subscriber.run())?;
            }
        }
    }
}

pub fn a_topic_by_name_survives_its_publishers_restart(transport: Transport) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let report = dir.path().join("report.sock");
    let listener = UnixListener::bind(&report)?;
    let mut topic = TopicDecl::new("ticks");
    topic.transport = transport;
    // Block with a queue of one: the ticker goes at its subscriber's pace, so nothing is
    // dropped within a run.
    topic.capacity = 1;
    topic.overflow = Overflow::Block;
    let mut ticker = Pool::new("ticker", Vec::new());
    ticker.role = Some("named-ticker".into());
    ticker.publishes = vec!["ticks".into()];
    ticker.restart = Restart::Always;
    ticker.backoff.initial = Duration::ZERO;
    ticker
        .env
        .insert(MARK_ENV.into(), dir.path().join("crashed").display().to_string());
    let mut watcher = Pool::new("watcher", Vec::new());
    watcher.role = Some("watcher".into());
    watcher.subscribes = vec!["ticks".into()];
    watcher.env.insert(REPORT_ENV.into(), report.display().to_string());
    for pool in [&mut ticker, &mut watcher] {
        pool.env.insert(TRANSPORT_ENV.into(), transport.name().into());
    }
    let mut manifest = Manifest::new("named-topic-test")
        .topic(topic)
        .pool(ticker)
        .pool(watcher);
    manifest.path = dir.path().join("named-topic-test.toml");
    let supervisor = procwire::Supervisor::start(manifest)?;

    let (stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(LIMIT))?;
    let mut lines = BufReader::new(stream).lines();
    let mut line = || -> Result<String, Failed> { Ok(lines.next().ok_or("the watcher stopped reporting")??) };
    let socket = std::path::PathBuf::from(line()?.strip_prefix("path ").ok_or("no path first")?);
    assert!(socket.exists(), "the supervisor's socket for the topic");
    let first = line()?;
    assert!(first.starts_with("run "), "{first}");
    // The first run's messages in order, then its end (what it had queued but not written
    // is gone with it).
    let mut seq = 0;
    loop {
        let got = line()?;
        if got == "end" {
            break;
        }
        seq += 1;
        assert_eq!(got, format!("m {seq} {seq}"), "in order, no gap");
    }
    assert!((1..=FIRST_RUN).contains(&seq), "{seq} messages in the first run");
    // Reconnected by name to the restarted publisher: a new run, numbered from 1.
    let second = line()?;
    assert!(second.starts_with("run ") && second != first, "{second} after {first}");
    assert_eq!(line()?, "m 1 1");
    assert_eq!(line()?, "m 2 2");
    supervisor.stop()?;
    assert!(
        !socket.exists(),
        "the topic's socket is removed when the supervisor exits"
    );
    Ok(())
}

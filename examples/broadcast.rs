//! Broadcast two ways: a call to every worker of a pool at once, and a topic with three
//! subscribers, one of them slow, that shows the overflow policy and the gap report.
//!
//! The program is an embedded supervisor whose manifest declares the topic by name,
//! `[topic.ticks]` (a queue of 64 per subscriber, drop-oldest), published by the pool
//! "ticker" (`publishes = ["ticks"]`) and subscribed to by the three workers of the pool
//! "listeners" (`subscribes = ["ticks"]`): neither names the other's endpoint; the
//! supervisor owns the topic's socket and tells each side what it needs. The ticker
//! publishes a tick every 100 us; listener 2 takes a millisecond per message, ten times too
//! slow, so it loses messages, and is told how many at each gap, while the fast ones get
//! every message (on a quiet machine). At the end one `pool.all().report()` collects what
//! each listener saw.
//!
//! Run it with `cargo run --example broadcast`; with `-- --shm` the topic travels over
//! shared memory (`transport = "shm"`): the ticker writes each tick once into a ring that
//! every listener reads with a cursor of its own, and the slow one, lapped, sees the gaps.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use procwire::rpc::topic::named::Transport;
use procwire::rpc::topic::{shm, Event, Overflow, Publisher, Subscriber, TopicError};
use procwire::rpc::Wait;
use procwire::supervisor::manifest::{Endpoint, Manifest, Pool, Ready, Restart, TopicDecl};

const TICKS: u64 = 2_000;
/// `shm` when the topic travels over shared memory.
const TRANSPORT_ENV: &str = "BROADCAST_TRANSPORT";

fn over_shm() -> bool {
    std::env::var(TRANSPORT_ENV).as_deref() == Ok("shm")
}

/// The topic's subscriber, over either transport.
enum Feed {
    Unix(Subscriber<u64>),
    Shm(shm::Subscriber<u64>),
}

impl Feed {
    fn recv(&mut self) -> Result<Event<u64>, TopicError> {
        match self {
            Feed::Unix(s) => s.recv(Wait::Block),
            Feed::Shm(s) => s.recv(Wait::Block),
        }
    }
}

/// What one subscriber saw.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, procwire::Schema)]
pub struct Report {
    received: u64,
    missed: u64,
    gaps: u64,
    last_seq: u64,
    ended: Option<String>,
}

#[procwire::service]
pub trait Listener {
    /// What this worker's subscriber saw, once the topic has ended (or after 30 s).
    fn report(&self) -> Report;
}

/// The subscriber's report, once it has one.
#[derive(Default)]
struct Seen {
    report: Mutex<Option<Report>>,
    done: Condvar,
}

struct Worker(std::sync::Arc<Seen>);

impl Listener for Worker {
    fn report(&self) -> Report {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut report = self.0.report.lock().unwrap();
        while report.is_none() && Instant::now() < deadline {
            report = self.0.done.wait_timeout(report, Duration::from_secs(30)).unwrap().0;
        }
        report.clone().unwrap_or_default()
    }
}

fn listener() -> Result<()> {
    let index: u32 = std::env::var("PROCWIRE_INDEX")?.parse()?;
    let seen = std::sync::Arc::new(Seen::default());
    // By name: the supervisor told this worker where the topic is.
    let mut subscriber = if over_shm() {
        Feed::Shm(procwire::workers::topic::shm_subscriber("ticks", false)?)
    } else {
        Feed::Unix(procwire::workers::topic::subscriber("ticks")?)
    };
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut report = Report::default();
            loop {
                match subscriber.recv() {
                    Ok(Event::Message { seq, .. }) => {
                        report.received += 1;
                        report.last_seq = seq;
                        if index == 2 {
                            // The slow one: a millisecond of work per message.
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    Ok(Event::Gap { missed, .. }) => {
                        report.missed += missed;
                        report.gaps += 1;
                    }
                    Ok(Event::Ended { reason }) => {
                        report.ended = reason;
                        break;
                    }
                    Err(e) => {
                        report.ended = Some(e.to_string());
                        break;
                    }
                }
            }
            *seen.report.lock().unwrap() = Some(report);
            seen.done.notify_all();
        });
    }
    procwire::workers::Worker::new().serve(ListenerServer::new(Worker(seen)))?;
    Ok(())
}

/// The pool "ticker": publishes the ticks by name, once the three listeners are there.
fn ticker() -> Result<()> {
    let started = Instant::now();
    let waiting = |subscribers: usize| {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the subscribers did not come"
        );
        std::thread::yield_now();
        Ok(subscribers < 3)
    };
    // A feed of a tick every 100 us: fast subscribers keep up, the slow one cannot.
    let pace = || std::thread::sleep(Duration::from_micros(100));
    if over_shm() {
        let publisher = procwire::workers::topic::shm_publisher::<u64>("ticks")?;
        while waiting(publisher.subscribers())? {}
        for tick in 1..=TICKS {
            publisher.publish(&tick, Wait::Block)?;
            pace();
        }
        publisher.stop("no more ticks");
    } else {
        let publisher: Publisher<u64> = procwire::workers::topic::publisher("ticks")?;
        while waiting(publisher.subscribers())? {}
        for tick in 1..=TICKS {
            publisher.publish(&tick, Wait::Block)?;
            pace();
        }
        publisher.stop("no more ticks");
    }
    Ok(())
}

fn main() -> Result<()> {
    match procwire::role().as_deref() {
        Some("listener") => return listener(),
        Some("ticker") => return ticker(),
        _ => {}
    }
    let transport = if std::env::args().any(|a| a == "--shm") {
        Transport::Shm
    } else {
        Transport::Unix
    };
    let dir = tempfile::tempdir()?;
    let mut topic = TopicDecl::new("ticks");
    topic.transport = transport;
    topic.capacity = 64;
    topic.overflow = Overflow::DropOldest;
    let mut ticker = Pool::new("ticker", Vec::new());
    ticker.role = Some("ticker".into());
    ticker.publishes = vec!["ticks".into()];
    ticker.restart = Restart::OnFailure;
    let mut pool = Pool::new("listeners", Vec::new());
    pool.role = Some("listener".into());
    pool.workers = 3;
    pool.ready = Ready::Notify;
    pool.listen = vec![Endpoint::Unix(dir.path().join("listener-{index}.sock"))];
    pool.subscribes = vec!["ticks".into()];
    for pool in [&mut ticker, &mut pool] {
        pool.env.insert(TRANSPORT_ENV.into(), transport.name().into());
    }
    let mut manifest = Manifest::new("broadcast").topic(topic).pool(ticker).pool(pool);
    manifest.path = dir.path().join("broadcast.toml");
    let supervisor = procwire::Supervisor::start(manifest)?;
    let listeners = ListenerPool::new(supervisor.endpoints("listeners"));

    // Each listener reports once its stream has ended.
    println!(
        "{TICKS} ticks published over {}; queue of 64 per subscriber, overflow: drop oldest\n",
        transport.name()
    );
    for reply in listeners.with_timeout(Duration::from_secs(60)).all().report() {
        let r = reply.result?;
        println!(
            "listener {}{}: received {:>4}, missed {:>4} in {:>3} gap reports, last #{}, end: {}",
            reply.index,
            if reply.index == 2 { " (slow)" } else { "       " },
            r.received,
            r.missed,
            r.gaps,
            r.last_seq,
            r.ended.as_deref().unwrap_or("-")
        );
    }
    drop(listeners);
    supervisor.stop()?;
    Ok(())
}

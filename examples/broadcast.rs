//! Broadcast two ways: a call to every worker of a pool at once, and a topic with three
//! subscribers, one of them slow, that shows the overflow policy and the gap report.
//!
//! The program is an embedded supervisor, the topic's publisher, and, in the role
//! "listener", each of three workers. Each worker subscribes to the topic, which gets a
//! tick every 100 us; worker 2 takes a millisecond per message, ten times too slow. Each
//! subscriber's queue in the publisher holds 64 messages and the policy is drop-oldest, so
//! the slow subscriber loses messages, and is told how many at each gap, while the fast ones
//! get every message (on a quiet machine). At the end one `pool.all().report()` collects
//! what each worker saw.
//!
//! Run it with `cargo run --example broadcast`.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use procwire::rpc::topic::{Event, Options, Overflow, Publisher, Subscriber};
use procwire::rpc::Wait;
use procwire::supervisor::manifest::{Endpoint, Manifest, Pool, Ready};

const TICKS: u64 = 2_000;
const TOPIC_ENV: &str = "BROADCAST_TOPIC";

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
    let topic = std::env::var(TOPIC_ENV)?;
    let seen = std::sync::Arc::new(Seen::default());
    let mut subscriber = Subscriber::<u64>::connect(&topic, "ticks")?;
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut report = Report::default();
            loop {
                match subscriber.recv(Wait::Block) {
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

fn main() -> Result<()> {
    if procwire::role().as_deref() == Some("listener") {
        return listener();
    }
    let dir = tempfile::tempdir()?;
    let topic = dir.path().join("ticks.sock");
    let publisher = Publisher::<u64>::bind(
        &topic,
        "ticks",
        Options::default().capacity(64).overflow(Overflow::DropOldest),
    )?;
    let mut pool = Pool::new("listeners", Vec::new());
    pool.role = Some("listener".into());
    pool.workers = 3;
    pool.ready = Ready::Notify;
    pool.listen = vec![Endpoint::Unix(dir.path().join("listener-{index}.sock"))];
    pool.env.insert(TOPIC_ENV.into(), topic.display().to_string());
    let mut manifest = Manifest::new("broadcast").pool(pool);
    manifest.path = dir.path().join("broadcast.toml");
    let supervisor = procwire::Supervisor::start(manifest)?;
    let listeners = ListenerPool::new(supervisor.endpoints("listeners"));

    // Every worker is ready (readiness comes after it subscribed): all three subscribers
    // are there before the first tick.
    let started = Instant::now();
    while publisher.subscribers() < 3 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the subscribers did not come"
        );
        std::thread::yield_now();
    }
    // A feed of a tick every 100 us: fast subscribers keep up, the slow one cannot.
    for tick in 1..=TICKS {
        publisher.publish(&tick, Wait::Block)?;
        std::thread::sleep(Duration::from_micros(100));
    }
    publisher.stop("no more ticks");

    println!("{TICKS} ticks published; queue of 64 per subscriber, overflow: drop oldest\n");
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

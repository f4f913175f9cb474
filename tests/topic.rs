//! A topic's publisher restarted by the supervisor: this test binary is an embedded
//! supervisor and, in the role "ticker", the publisher, which publishes on the Unix socket
//! the supervisor owns and hands it. Its first run crashes after 20 messages; the supervisor
//! restarts it on the same socket. The subscriber sees the end of the first run, connects
//! again (the socket never went away), and sees a new epoch whose numbering starts at 1.
//!
//! The same by name: a `[topic.ticks]` published by one pool ("named-ticker", which crashes
//! once) and subscribed to by another ("watcher", which reports what it sees on a socket of
//! this test), neither naming the other's endpoint; over Unix sockets and over shared memory.

use std::os::unix::net::UnixListener;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use procwire::rpc::topic::named::Transport;
use procwire::rpc::topic::{Event, Options, Overflow, Publisher, Subscriber};
use procwire::rpc::transport::unix;
use procwire::rpc::Wait;
use procwire::supervisor::manifest::{Endpoint, Manifest, Pool, Restart};

#[path = "topic/named.rs"]
mod named;

const LIMIT: Duration = Duration::from_secs(30);
const FIRST_RUN: u64 = 20;
const MARK_ENV: &str = "TOPIC_TEST_MARK";

fn ticker() -> Result<(), Box<dyn std::error::Error>> {
    let fd = procwire::workers::activation::listen_fds()?
        .pop()
        .ok_or("no socket handed over")?
        .fd;
    let listener = unix::Listener::from_std(UnixListener::from(fd))?;
    // Block with a queue of one: the ticker goes at its subscriber's pace.
    let publisher = Publisher::<u64>::from_listener(
        listener,
        "ticks",
        Options::default().capacity(1).overflow(Overflow::Block),
    )?;
    let mark = std::path::PathBuf::from(std::env::var(MARK_ENV)?);
    let first_run = !mark.exists();
    while publisher.subscribers() == 0 {
        std::thread::yield_now();
    }
    for i in 1.. {
        publisher.publish(&i, Wait::timeout(LIMIT))?;
        if first_run && i == FIRST_RUN {
            std::fs::write(&mark, "")?;
            // A crash: no goodbye to the subscribers.
            std::process::abort();
        }
    }
    Ok(())
}

fn a_publisher_restarted_by_the_supervisor_is_seen_as_a_new_run() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("ticks.sock");
    let mut pool = Pool::new("ticker", Vec::new());
    pool.role = Some("ticker".into());
    pool.listen = vec![Endpoint::Unix(socket.clone())];
    pool.restart = Restart::Always;
    pool.backoff.initial = Duration::ZERO;
    pool.env
        .insert(MARK_ENV.into(), dir.path().join("crashed").display().to_string());
    let mut manifest = Manifest::new("topic-test").pool(pool);
    manifest.path = dir.path().join("topic-test.toml");
    let supervisor = procwire::Supervisor::start(manifest)?;

    let mut first = Subscriber::<u64>::connect(&socket, "ticks")?;
    // Messages in order until the crash, which ends the stream with no reason given; what
    // the crashed run had queued but not written is gone with it.
    let mut seq = 0;
    loop {
        match first.recv(Wait::timeout(LIMIT))? {
            Event::Message { seq: got, value } => {
                seq += 1;
                assert_eq!((got, value), (seq, seq), "in order, no gap");
            }
            Event::Ended { reason } => {
                assert_eq!(reason, None, "a crash says nothing");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seq <= FIRST_RUN);
    // The supervisor kept the socket: connecting waits in its backlog for the new run.
    let mut second = Subscriber::<u64>::connect(&socket, "ticks")?;
    assert_ne!(second.epoch(), first.epoch(), "a new publisher run");
    assert_eq!(second.recv(Wait::timeout(LIMIT))?, Event::Message { seq: 1, value: 1 });
    assert_eq!(second.recv(Wait::timeout(LIMIT))?, Event::Message { seq: 2, value: 2 });
    drop(second);
    supervisor.stop()?;
    Ok(())
}

fn main() {
    let role = procwire::role();
    let run = match role.as_deref() {
        Some("ticker") => Some(ticker()),
        Some("named-ticker") => Some(named::ticker()),
        Some("watcher") => Some(named::watcher()),
        _ => None,
    };
    if let Some(result) = run {
        if let Err(e) = result {
            eprintln!("{}: {e}", role.unwrap_or_default());
            std::process::exit(2);
        }
        return;
    }
    let trials = vec![
        Trial::test(
            "a_publisher_restarted_by_the_supervisor_is_seen_as_a_new_run",
            a_publisher_restarted_by_the_supervisor_is_seen_as_a_new_run,
        ),
        Trial::test(
            "a_topic_by_name_survives_its_publishers_restart_over_unix_sockets",
            || named::a_topic_by_name_survives_its_publishers_restart(Transport::Unix),
        ),
        Trial::test(
            "a_topic_by_name_survives_its_publishers_restart_over_shared_memory",
            || named::a_topic_by_name_survives_its_publishers_restart(Transport::Shm),
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}

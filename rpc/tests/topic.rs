//! Topics across real processes: subscriber children of a publisher in this process, one of
//! them SIGKILLed mid-stream, and a publisher child that stops while a subscriber never
//! reads; over shared memory (topic/shm.rs) each policy with a full
//! ring, a late joiner and a subscriber that scribbles on the region.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire_rpc::topic::{Event, Options, Overflow, Publisher, Subscriber};
use procwire_rpc::Wait;

#[path = "support/children.rs"]
mod children;
#[path = "topic/shm.rs"]
mod shm;

const LIMIT: Duration = Duration::from_secs(30);
const ROLE_ENV: &str = "PROCWIRE_TOPIC_TEST_SOCKET";
/// Set (to the socket's path) in the publisher child of the stalled-subscriber test.
const PUBLISHER_ENV: &str = "PROCWIRE_TOPIC_TEST_PUBLISHER";

/// This process's threads whose name starts with `prefix` (as /proc shows it: 15 bytes).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|task| {
                    std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The publisher child: binds, waits for one subscriber, publishes far more than a socket
/// holds, stops, and says whether the subscriber's writer thread ended (`writers gone`) or
/// is still there when `LIMIT` has passed (`writer still running`).
fn publisher_child(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let publisher = Publisher::<Vec<u8>>::bind(path, "bulk", Options::default().capacity(4))?;
    println!("bound");
    let deadline = Instant::now() + LIMIT;
    while publisher.subscribers() < 1 {
        if Instant::now() > deadline {
            return Err("no subscriber came".into());
        }
        std::thread::yield_now();
    }
    for _ in 0..400 {
        publisher.publish(&vec![7; 64 << 10], Wait::timeout(LIMIT))?;
    }
    publisher.stop("bye");
    println!("stopped");
    let deadline = Instant::now() + LIMIT;
    while threads_named("procwire-topic-") > 0 {
        if Instant::now() > deadline {
            println!("writer still running");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("writers gone");
    Ok(())
}

/// The subscriber child: one line per event on stdout (`ready`, `m SEQ VALUE`, `gap N`,
/// `end`).
fn child(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut subscriber = Subscriber::<u64>::connect(path, "ticks")?;
    println!("ready");
    loop {
        match subscriber.recv(Wait::Block)? {
            Event::Message { seq, value } => println!("m {seq} {value}"),
            Event::Gap { missed, .. } => println!("gap {missed}"),
            Event::Ended { .. } => {
                println!("end");
                return Ok(());
            }
        }
    }
}

struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Sub {
    fn spawn(path: &std::path::Path) -> Sub {
        Sub::try_spawn(path).expect("the subscriber connects")
    }

    /// A subscriber child, once it has connected; `None` if it could not.
    fn try_spawn(path: &std::path::Path) -> Option<Sub> {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a subscriber");
        let lines: Lines<BufReader<ChildStdout>> = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let sub = Sub { child, lines: rx };
        // A child that could not connect exits at once, its output ending.
        (sub.lines.recv_timeout(LIMIT).ok()? == "ready").then_some(sub)
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(LIMIT)
            .expect("a line from the subscriber in time")
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn a_subscriber_killed_mid_stream_costs_only_itself() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ticks.sock");
    // Block: nothing may be dropped for the survivor, and a dead subscriber must not hold
    // the publisher up.
    let publisher = Publisher::<u64>::bind(&path, "ticks", Options::default().capacity(8).overflow(Overflow::Block))?;
    let survivor = Sub::spawn(&path);
    let victim = Sub::spawn(&path);
    let deadline = Instant::now() + LIMIT;
    while publisher.subscribers() < 2 {
        assert!(Instant::now() < deadline, "both subscribers registered");
        std::thread::yield_now();
    }
    for i in 1..=100u64 {
        publisher.publish(&(i * 10), Wait::timeout(LIMIT))?;
    }
    // The victim is mid-stream: it has read some of the first hundred.
    assert!(victim.line().starts_with("m 1 "));
    kill(Pid::from_raw(victim.child.id() as i32), Signal::SIGKILL)?;
    for i in 101..=300u64 {
        publisher.publish(&(i * 10), Wait::timeout(LIMIT))?;
    }
    for seq in 1..=300u64 {
        assert_eq!(
            survivor.line(),
            format!("m {seq} {}", seq * 10),
            "every message, no gap"
        );
    }
    let deadline = Instant::now() + LIMIT;
    while publisher.subscribers() > 1 {
        assert!(Instant::now() < deadline, "the dead subscriber was dropped");
        publisher.publish(&0, Wait::timeout(LIMIT))?;
        assert!(survivor.line().starts_with("m "));
    }
    publisher.stop("the test is over");
    loop {
        let line = survivor.line();
        if line == "end" {
            break;
        }
        assert!(line.starts_with("m "), "{line}");
    }
    Ok(())
}

fn stopping_cuts_a_subscriber_that_does_not_read_instead_of_keeping_its_writer_forever() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bulk.sock");
    let mut publisher = Command::new(std::env::current_exe()?)
        .env(PUBLISHER_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(publisher.stdout.take().expect("piped")).lines();
    let mut line = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(line(), "bound");
    // Subscribed, and then never reading: the publisher's queue for it overflows (dropping
    // the oldest) and its writer blocks on the full socket.
    let mut stalled = Subscriber::<Vec<u8>>::connect(&path, "bulk")?;
    assert_eq!(line(), "stopped");
    let gone = line();
    let _ = publisher.wait();
    assert_eq!(gone, "writers gone", "the stalled subscriber's writer ended after stop");
    // What reached the socket can still be read; then the stream ends (cut: no reason).
    while !matches!(stalled.recv(Wait::timeout(LIMIT))?, Event::Ended { .. }) {}
    Ok(())
}

fn a_block_publisher_that_times_out_on_a_stopped_subscriber_delivers_that_message_to_no_one() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ticks.sock");
    let publisher = Publisher::<u64>::bind(&path, "ticks", Options::default().capacity(2).overflow(Overflow::Block))?;
    // The one that reads comes first in the publisher's list, the stopped one after it.
    let reader = Sub::spawn(&path);
    let stopped = Sub::spawn(&path);
    let stopped_pid = Pid::from_raw(stopped.child.id() as i32);
    kill(stopped_pid, Signal::SIGSTOP)?;
    // Fill the stopped one's socket and queue: every message until one times out.
    let mut published = 0u64;
    let refused = loop {
        match publisher.publish(&(published + 1), Wait::timeout(Duration::from_millis(200))) {
            Ok(seq) => {
                assert_eq!(seq, published + 1);
                published = seq;
            }
            Err(e) => break e,
        }
        assert!(published < 10_000_000, "the stopped subscriber never filled up");
    };
    assert!(
        matches!(refused, procwire_rpc::topic::TopicError::Full { .. }),
        "{refused}"
    );
    kill(stopped_pid, Signal::SIGCONT)?;
    // The next message takes the number the refused one did not use, and is what the reader
    // sees right after the last published one.
    let next = publisher.publish(&424_242, Wait::timeout(LIMIT))?;
    assert_eq!(next, published + 1, "the refused message used up a number");
    for seq in 1..=published {
        assert_eq!(reader.line(), format!("m {seq} {seq}"));
    }
    assert_eq!(
        reader.line(),
        format!("m {next} 424242"),
        "the reader got the refused message"
    );
    drop(stopped);
    publisher.stop("done");
    assert_eq!(reader.line(), "end");
    Ok(())
}

fn connections_past_max_subscribers_are_closed_at_once_and_the_slots_come_back() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ticks.sock");
    let publisher = Publisher::<u64>::bind(&path, "ticks", Options::default().max_subscribers(2))?;
    // Two peers that connect and never say hello hold both slots (each for up to the 10 s
    // a setup may take).
    let silent = [
        std::os::unix::net::UnixStream::connect(&path)?,
        std::os::unix::net::UnixStream::connect(&path)?,
    ];
    let deadline = Instant::now() + LIMIT;
    let refused = loop {
        // The silent ones are counted once the publisher has accepted them.
        match Subscriber::<u64>::connect(&path, "ticks") {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "a third connection was never refused"),
        }
    };
    assert!(
        refused
            .to_string()
            .contains("has 2 subscribers already (its max_subscribers)"),
        "{refused}"
    );
    drop(silent);
    // Their slots come back: a subscriber in another process joins and gets messages.
    let sub = loop {
        // Refused while the silent ones' threads have yet to notice they left.
        if let Some(sub) = Sub::try_spawn(&path) {
            break sub;
        }
        assert!(Instant::now() < deadline, "the slots never came back");
    };
    while publisher.subscribers() < 1 {
        assert!(Instant::now() < deadline, "the subscriber never joined");
        std::thread::yield_now();
    }
    let seq = publisher.publish(&5, Wait::timeout(LIMIT))?;
    assert_eq!(sub.line(), format!("m {seq} 5"));
    Ok(())
}

fn main() {
    if let Some(args) = children::role() {
        if let Err(e) = shm::child(&args) {
            eprintln!("shm subscriber: {e}");
            std::process::exit(2);
        }
        return;
    }
    if let Some(path) = std::env::var_os(PUBLISHER_ENV) {
        if let Err(e) = publisher_child(&path.to_string_lossy()) {
            eprintln!("publisher: {e}");
            std::process::exit(2);
        }
        return;
    }
    if let Some(path) = std::env::var_os(ROLE_ENV) {
        if let Err(e) = child(&path.to_string_lossy()) {
            eprintln!("subscriber: {e}");
            std::process::exit(2);
        }
        return;
    }
    let trials = vec![
        Trial::test(
            "connections_past_max_subscribers_are_closed_at_once_and_the_slots_come_back",
            connections_past_max_subscribers_are_closed_at_once_and_the_slots_come_back,
        ),
        Trial::test(
            "a_block_publisher_that_times_out_on_a_stopped_subscriber_delivers_that_message_to_no_one",
            a_block_publisher_that_times_out_on_a_stopped_subscriber_delivers_that_message_to_no_one,
        ),
        Trial::test(
            "stopping_cuts_a_subscriber_that_does_not_read_instead_of_keeping_its_writer_forever",
            stopping_cuts_a_subscriber_that_does_not_read_instead_of_keeping_its_writer_forever,
        ),
        Trial::test(
            "a_subscriber_killed_mid_stream_costs_only_itself",
            a_subscriber_killed_mid_stream_costs_only_itself,
        ),
        Trial::test(
            "a_shm_subscriber_killed_mid_stream_costs_only_itself",
            shm::a_shm_subscriber_killed_mid_stream_costs_only_itself,
        ),
        Trial::test(
            "a_full_shm_ring_under_drop_oldest_reports_the_gap_and_keeps_the_newest",
            shm::a_full_shm_ring_under_drop_oldest_reports_the_gap_and_keeps_the_newest,
        ),
        Trial::test(
            "a_full_shm_ring_under_block_holds_the_publisher_until_the_slow_reader_reads",
            shm::a_full_shm_ring_under_block_holds_the_publisher_until_the_slow_reader_reads,
        ),
        Trial::test(
            "a_full_shm_ring_under_disconnect_cuts_the_slow_reader_and_tells_it_why",
            shm::a_full_shm_ring_under_disconnect_cuts_the_slow_reader_and_tells_it_why,
        ),
        Trial::test(
            "an_idle_shm_subscriber_sleeps_on_its_doorbell_using_no_cpu",
            shm::an_idle_shm_subscriber_sleeps_on_its_doorbell_using_no_cpu,
        ),
        Trial::test(
            "a_late_shm_joiner_gets_the_last_value_first",
            shm::a_late_shm_joiner_gets_the_last_value_first,
        ),
        Trial::test(
            "a_scribbling_shm_subscriber_crashes_neither_the_publisher_nor_the_others",
            shm::a_scribbling_shm_subscriber_crashes_neither_the_publisher_nor_the_others,
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit();
}

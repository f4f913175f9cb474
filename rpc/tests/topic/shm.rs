//! Shared-memory topics across processes: subscriber children of a publisher in this test
//! process, reading its ring with cursors of their own.

use std::time::Duration;

use libtest_mimic::Failed;
use procwire_rpc::topic::shm::{Options, Publisher, Subscriber};
use procwire_rpc::topic::{Event, Overflow};
use procwire_rpc::Wait;

use crate::children::{Kid, LIMIT};

const TOPIC: &str = "ticks";

/// A child's role: `shm-sub PATH MODE [UNTIL]`. MODE `read` reads at once, `stall` after its
/// stdin closes, `last` asks for the last value, `scribble` writes garbage all over the
/// region until killed. One line per event: `m SEQ VALUE`, `gap N`, `err TEXT`, `end
/// REASON`; a reader exits after the message whose value is UNTIL, or after the end.
pub fn child(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (path, mode) = (&args[1], args[2].as_str());
    let until: Option<u64> = args.get(3).map(|u| u.parse()).transpose()?;
    let mut subscriber = if mode == "last" {
        Subscriber::<u64>::connect_with_last(path, TOPIC)?
    } else {
        Subscriber::<u64>::connect(path, TOPIC)?
    };
    println!("ready");
    match mode {
        "stall" => Kid::park_until_released(),
        "scribble" => scribble(procwire_rpc::fuzz::shm_topic_region(&subscriber)),
        _ => {}
    }
    let mut errors = 0;
    loop {
        match subscriber.recv(Wait::Block) {
            Ok(Event::Message { seq, value }) => {
                println!("m {seq} {value}");
                if Some(value) == until {
                    return Ok(());
                }
            }
            Ok(Event::Gap { missed, .. }) => println!("gap {missed}"),
            Ok(Event::Ended { reason }) => {
                println!("end {}", reason.as_deref().unwrap_or("-"));
                return Ok(());
            }
            // Garbage a hostile subscriber wrote is reported, and reading goes on.
            Err(e) => {
                println!("err {e}");
                errors += 1;
                if errors > 100_000 {
                    return Err("too many errors".into());
                }
            }
        }
    }
}

/// Writes pseudo-random bytes at pseudo-random places of the whole region, forever.
fn scribble(region: &procwire_rpc::shm::Region) -> ! {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    loop {
        let at = (next() % region.len() as u64) as usize;
        let len = ((next() % 64) as usize).min(region.len() - at);
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = region.write_bytes(at, &bytes);
        // Now and then a whole word of all ones, the worst number to meet.
        if next() % 4 == 0 {
            let _ = region.write_bytes(at & !7, &u64::MAX.to_ne_bytes());
        }
        std::thread::yield_now();
    }
}

fn publisher(capacity: usize, overflow: Overflow) -> (tempfile::TempDir, std::path::PathBuf, Publisher<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticks.sock");
    let options = Options::new(
        procwire_rpc::topic::Options::default()
            .capacity(capacity)
            .overflow(overflow),
    );
    let publisher = Publisher::bind(&path, TOPIC, options).unwrap();
    (dir, path, publisher)
}

fn spawn(path: &std::path::Path, mode: &str, until: Option<u64>) -> Kid {
    let until = until.map(|u| format!(" {u}")).unwrap_or_default();
    let kid = Kid::spawn(&format!("shm-sub {} {mode}{until}", path.display()), |_| {});
    kid.expect_line("ready");
    kid
}

pub fn a_shm_subscriber_killed_mid_stream_costs_only_itself() -> Result<(), Failed> {
    // Block: nothing may be lost for the survivor, and the dead one must not hold it up.
    let (_dir, path, publisher) = publisher(8, Overflow::Block);
    let survivor = spawn(&path, "read", Some(3000));
    let victim = spawn(&path, "read", None);
    for i in 1..=100u64 {
        publisher.publish(&(i * 10), Wait::timeout(LIMIT))?;
    }
    assert!(victim.next_line().starts_with("m 1 "), "the victim is mid-stream");
    victim.kill();
    for i in 101..=300u64 {
        publisher.publish(&(i * 10), Wait::timeout(LIMIT))?;
    }
    for seq in 1..=300u64 {
        assert_eq!(
            survivor.next_line(),
            format!("m {seq} {}", seq * 10),
            "every message, no gap"
        );
    }
    // Had the dead one been kept, a publish above would have waited for it until LIMIT.
    survivor.succeed();
    Ok(())
}

pub fn a_full_shm_ring_under_drop_oldest_reports_the_gap_and_keeps_the_newest() -> Result<(), Failed> {
    let (_dir, path, publisher) = publisher(8, Overflow::DropOldest);
    let mut slow = spawn(&path, "stall", Some(1000));
    for i in 1..=1000u64 {
        publisher.publish(&i, Wait::NonBlock)?;
    }
    slow.release();
    assert_eq!(
        slow.next_line(),
        "gap 992",
        "the missed messages counted, none silently"
    );
    for seq in 993..=1000u64 {
        assert_eq!(slow.next_line(), format!("m {seq} {seq}"));
    }
    slow.succeed();
    Ok(())
}

pub fn a_full_shm_ring_under_block_holds_the_publisher_until_the_slow_reader_reads() -> Result<(), Failed> {
    let (_dir, path, publisher) = publisher(4, Overflow::Block);
    let mut slow = spawn(&path, "stall", Some(50));
    for i in 1..=4u64 {
        publisher.publish(&i, Wait::NonBlock)?;
    }
    let full = publisher.publish(&5, Wait::timeout(Duration::from_millis(200)));
    assert!(
        matches!(full, Err(procwire_rpc::topic::TopicError::Full { .. })),
        "{full:?}"
    );
    slow.release();
    for i in 5..=50u64 {
        publisher.publish(&i, Wait::timeout(LIMIT))?;
    }
    for seq in 1..=50u64 {
        assert_eq!(slow.next_line(), format!("m {seq} {seq}"), "nothing dropped");
    }
    slow.succeed();
    Ok(())
}

pub fn a_full_shm_ring_under_disconnect_cuts_the_slow_reader_and_tells_it_why() -> Result<(), Failed> {
    let (_dir, path, publisher) = publisher(4, Overflow::Disconnect);
    let mut slow = spawn(&path, "stall", None);
    let quick = spawn(&path, "read", None);
    for i in 1..=10u64 {
        publisher.publish(&i, Wait::NonBlock)?;
        // The quick one keeps up, so only the slow one falls a ring behind.
        assert_eq!(quick.next_line(), format!("m {i} {i}"));
    }
    assert_eq!(publisher.subscribers(), 1, "only the quick one reads on");
    slow.release();
    let end = slow.next_line();
    assert!(end.starts_with("end too slow"), "{end}");
    slow.succeed();
    publisher.stop("the test is over");
    quick.expect_line("end the test is over");
    quick.succeed();
    Ok(())
}

pub fn a_late_shm_joiner_gets_the_last_value_first() -> Result<(), Failed> {
    let (_dir, path, publisher) = publisher(8, Overflow::DropOldest);
    for value in [10u64, 20, 30] {
        publisher.publish(&value, Wait::NonBlock)?;
    }
    let late = spawn(&path, "last", Some(40));
    assert_eq!(late.next_line(), "m 3 30");
    publisher.publish(&40, Wait::NonBlock)?;
    assert_eq!(late.next_line(), "m 4 40");
    late.succeed();
    Ok(())
}

pub fn a_scribbling_shm_subscriber_crashes_neither_the_publisher_nor_the_others() -> Result<(), Failed> {
    let (_dir, path, publisher) = publisher(16, Overflow::Disconnect);
    let good = spawn(&path, "read", None);
    let scribbler = spawn(&path, "scribble", None);
    for i in 1..=2000u64 {
        publisher.publish(&i, Wait::timeout(LIMIT))?;
    }
    scribbler.kill();
    // The publisher still works: a subscriber joining now reads clean messages.
    let mut fresh = Subscriber::<u64>::connect(&path, TOPIC)?;
    for i in 2001..=2005u64 {
        let seq = publisher.publish(&i, Wait::timeout(LIMIT))?;
        assert_eq!(seq, i, "the publisher's numbering is its own");
    }
    for i in 2001..=2005u64 {
        assert_eq!(fresh.recv(Wait::timeout(LIMIT))?, Event::Message { seq: i, value: i });
    }
    publisher.stop("the test is over");
    // The good subscriber saw messages, gaps or garbage reported as errors, then the end,
    // and exited normally: no crash.
    loop {
        let line = good.next_line();
        assert!(
            ["m ", "gap ", "err ", "end "].iter().any(|p| line.starts_with(p)),
            "{line}"
        );
        if line.starts_with("end ") {
            break;
        }
    }
    good.succeed();
    Ok(())
}

/// The CPU time a process has used, in clock ticks (user + system, all its threads).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the child's stat");
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Whether every thread of `pid` is asleep.
fn asleep(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .is_ok_and(|stat| stat[stat.rfind(')').unwrap() + 2..].starts_with('S'))
        })
    })
}

pub fn an_idle_shm_subscriber_sleeps_on_its_doorbell_using_no_cpu() -> Result<(), Failed> {
    let (_dir, path, publisher) = publisher(8, Overflow::DropOldest);
    let idle = spawn(&path, "read", Some(2));
    publisher.publish(&1, Wait::NonBlock)?;
    assert_eq!(idle.next_line(), "m 1 1");
    let deadline = std::time::Instant::now() + LIMIT;
    while !asleep(idle.pid()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber never went to sleep"
        );
        std::thread::yield_now();
    }
    let before = cpu_ticks(idle.pid());
    // Not a synchronisation: the window over which an idle subscriber must use no CPU (one
    // that spun would use all of it, 30 ticks).
    std::thread::sleep(Duration::from_millis(300));
    let used = cpu_ticks(idle.pid()) - before;
    assert!(used <= 3, "an idle subscriber used {used} ticks of CPU in 300 ms");
    // And it wakes for the next message.
    publisher.publish(&2, Wait::NonBlock)?;
    assert_eq!(idle.next_line(), "m 2 2");
    idle.succeed();
    Ok(())
}

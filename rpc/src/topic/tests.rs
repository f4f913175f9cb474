//! Topics within one process; across processes in `rpc/tests/topic.rs`.

use std::time::Duration;

use super::*;
use crate::Wait;

fn soon() -> Wait {
    Wait::timeout(Duration::from_secs(30))
}

fn setup(options: Options) -> (tempfile::TempDir, std::path::PathBuf, Publisher<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sock");
    let publisher = Publisher::bind(&path, "numbers", options).unwrap();
    (dir, path, publisher)
}

/// Waits until the publisher has `n` subscribers registered (they register on their own
/// thread after the welcome is sent).
fn wait_subscribers(publisher: &Publisher<u64>, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while publisher.subscribers() < n {
        assert!(std::time::Instant::now() < deadline, "subscribers did not register");
        std::thread::yield_now();
    }
}

fn messages(sub: &mut Subscriber<u64>, n: usize) -> Vec<Event<u64>> {
    (0..n).map(|_| sub.recv(soon()).unwrap()).collect()
}

#[test]
fn a_late_joiner_gets_the_last_value_and_then_every_message_numbered() {
    let (_dir, path, publisher) = setup(Options::default());
    assert_eq!(publisher.publish(&7, Wait::Block).unwrap(), 1);
    assert_eq!(publisher.publish(&8, Wait::Block).unwrap(), 2);
    let mut late = Subscriber::<u64>::connect_with_last(&path, "numbers").unwrap();
    let mut plain = Subscriber::<u64>::connect(&path, "numbers").unwrap();
    wait_subscribers(&publisher, 2);
    publisher.publish(&9, Wait::Block).unwrap();
    assert_eq!(
        messages(&mut late, 2),
        [Event::Message { seq: 2, value: 8 }, Event::Message { seq: 3, value: 9 }]
    );
    assert_eq!(messages(&mut plain, 1), [Event::Message { seq: 3, value: 9 }]);
    assert_eq!(late.epoch(), publisher.epoch());
    publisher.stop("done for today");
    assert_eq!(
        late.recv(soon()).unwrap(),
        Event::Ended {
            reason: Some("done for today".into())
        }
    );
}

#[test]
fn the_wrong_topic_or_type_is_refused_naming_both() {
    let (_dir, path, _publisher) = setup(Options::default());
    let err = Subscriber::<u64>::connect(&path, "letters").unwrap_err();
    assert!(
        err.to_string().contains("this is topic \"numbers\", not \"letters\""),
        "{err}"
    );
    let err = Subscriber::<String>::connect(&path, "numbers").unwrap_err();
    assert!(
        err.to_string()
            .contains("its messages are u64, not alloc::string::String"),
        "{err}"
    );
}

/// A subscriber that reads nothing while `count` messages are published, then reads.
fn flood(overflow: Overflow, count: u64) -> (Vec<Event<u64>>, Result<(), TopicError>) {
    let (_dir, path, publisher) = setup(Options::default().capacity(4).overflow(overflow));
    let mut slow = Subscriber::<u64>::connect(&path, "numbers").unwrap();
    wait_subscribers(&publisher, 1);
    let mut outcome = Ok(());
    for i in 1..=count {
        if let Err(e) = publisher.publish(&i, Wait::timeout(Duration::from_millis(200))) {
            outcome = Err(e);
            break;
        }
    }
    drop(publisher);
    let mut events = Vec::new();
    loop {
        let event = slow.recv(soon()).unwrap();
        let end = matches!(event, Event::Ended { .. });
        events.push(event);
        if end {
            return (events, outcome);
        }
    }
}

#[test]
fn a_full_queue_under_each_policy_drops_blocks_or_disconnects_and_says_so() {
    // 100 000 messages: far more than the queue of 4 and the socket buffers hold.
    const N: u64 = 100_000;
    let (events, outcome) = flood(Overflow::DropOldest, N);
    assert!(outcome.is_ok());
    let gaps: u64 = events
        .iter()
        .map(|e| match e {
            Event::Gap { missed, .. } => *missed,
            _ => 0,
        })
        .sum();
    let got = events.iter().filter(|e| matches!(e, Event::Message { .. })).count() as u64;
    assert!(gaps > 0, "the slow subscriber was told of its gaps");
    assert_eq!(gaps + got, N, "every message is either received or reported missing");
    assert!(
        matches!(events.iter().rev().nth(1), Some(Event::Message { seq: N, .. })),
        "the newest is kept"
    );

    let (events, _) = flood(Overflow::DropNewest, N);
    let got = events.iter().filter(|e| matches!(e, Event::Message { .. })).count() as u64;
    let gaps: u64 = events
        .iter()
        .map(|e| match e {
            Event::Gap { missed, .. } => *missed,
            _ => 0,
        })
        .sum();
    assert!(matches!(events[0], Event::Message { seq: 1, .. }), "the oldest is kept");
    // What was dropped after the last message received is not a gap: nothing came after it.
    assert!(got + gaps <= N && got < N, "{got} received, {gaps} reported");

    let (events, outcome) = flood(Overflow::Block, N);
    assert!(
        matches!(outcome, Err(TopicError::Full { .. })),
        "a blocked publisher's deadline ran out: {outcome:?}"
    );
    let got: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "nothing dropped under Block"
    );

    let (events, outcome) = flood(Overflow::Disconnect, N);
    assert!(outcome.is_ok());
    assert!(
        matches!(events.last(), Some(Event::Ended { .. })),
        "{:?}",
        events.last()
    );
    let got = events.iter().filter(|e| matches!(e, Event::Message { .. })).count() as u64;
    assert!(got < N, "the slow subscriber was cut off");
}

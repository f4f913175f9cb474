//! Shared-memory topics within one process; across processes in `rpc/tests/topic.rs`.

use std::time::Duration;

use super::*;
use crate::topic::{Event, Overflow};
use crate::Wait;

fn soon() -> Wait {
    Wait::timeout(Duration::from_secs(30))
}

fn setup(capacity: usize, overflow: Overflow) -> (tempfile::TempDir, std::path::PathBuf, Publisher<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sock");
    let options = Options::new(crate::topic::Options::default().capacity(capacity).overflow(overflow));
    let publisher = Publisher::bind(&path, "numbers", options).unwrap();
    (dir, path, publisher)
}

#[test]
fn a_late_joiner_gets_the_last_value_then_every_message_and_the_reason_it_ended() {
    let (_dir, path, publisher) = setup(8, Overflow::DropOldest);
    publisher.publish(&7, Wait::Block).unwrap();
    publisher.publish(&8, Wait::Block).unwrap();
    let mut late = Subscriber::<u64>::connect_with_last(&path, "numbers").unwrap();
    let mut plain = Subscriber::<u64>::connect(&path, "numbers").unwrap();
    assert_eq!(publisher.subscribers(), 2);
    publisher.publish(&9, Wait::Block).unwrap();
    assert_eq!(late.recv(soon()).unwrap(), Event::Message { seq: 2, value: 8 });
    assert_eq!(late.recv(soon()).unwrap(), Event::Message { seq: 3, value: 9 });
    assert_eq!(plain.recv(soon()).unwrap(), Event::Message { seq: 3, value: 9 });
    assert!(matches!(
        plain.recv(Wait::NonBlock),
        Err(TopicError::Transport {
            source: crate::TransportError::WouldBlock { .. },
            ..
        })
    ));
    assert_eq!(late.epoch(), publisher.epoch());
    publisher.stop("done for today");
    let ended = Event::Ended {
        reason: Some("done for today".into()),
    };
    assert_eq!(late.recv(soon()).unwrap(), ended);
    assert_eq!(plain.recv(soon()).unwrap(), ended);
}

#[test]
fn the_wrong_topic_or_type_and_drop_newest_and_a_message_too_large_are_refused() {
    let (_dir, path, publisher) = setup(4, Overflow::DropOldest);
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
    let dir = tempfile::tempdir().unwrap();
    let options = Options::new(crate::topic::Options::default().overflow(Overflow::DropNewest));
    let err = Publisher::<u64>::bind(dir.path().join("n.sock"), "n", options).unwrap_err();
    assert!(err.to_string().contains("drop-newest is not possible"), "{err}");
    let small = Options::default().message_size(4);
    let big = Publisher::<Vec<u8>>::bind(dir.path().join("b.sock"), "b", small).unwrap();
    let err = big.publish(&vec![0; 10], Wait::Block).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a message of 11 bytes does not fit topic \"b\"'s slots of 4 bytes"
    );
    drop(publisher);
}

#[test]
fn a_lapped_reader_under_drop_oldest_is_told_the_gap_and_keeps_the_newest() {
    let (_dir, path, publisher) = setup(8, Overflow::DropOldest);
    let mut sub = Subscriber::<u64>::connect(&path, "numbers").unwrap();
    for i in 1..=100_000u64 {
        publisher.publish(&i, Wait::Block).unwrap();
    }
    let mut seen = Vec::new();
    let mut missed = 0;
    loop {
        match sub.recv(Wait::NonBlock) {
            Ok(Event::Message { seq, value }) => {
                assert_eq!(seq, value);
                seen.push(seq);
            }
            Ok(Event::Gap { missed: m, .. }) => missed += m,
            Ok(Event::Ended { .. }) => panic!("ended"),
            Err(_) => break,
        }
    }
    assert_eq!(missed + seen.len() as u64, 100_000, "every message seen or reported");
    assert_eq!(seen, (99_993..=100_000).collect::<Vec<_>>(), "the newest 8 kept");
}

#[test]
fn block_waits_for_the_slowest_cursor_until_its_deadline_and_then_goes_on_when_it_reads() {
    let (_dir, path, publisher) = setup(4, Overflow::Block);
    let mut sub = Subscriber::<u64>::connect(&path, "numbers").unwrap();
    for i in 1..=4 {
        publisher.publish(&i, Wait::Block).unwrap();
    }
    let err = publisher
        .publish(&5, Wait::timeout(Duration::from_millis(50)))
        .unwrap_err();
    assert!(matches!(err, TopicError::Full { .. }), "{err}");
    std::thread::scope(|scope| {
        let publishing = scope.spawn(|| {
            for i in 5..=200 {
                publisher.publish(&i, soon()).unwrap();
            }
        });
        for seq in 1..=200 {
            assert_eq!(
                sub.recv(soon()).unwrap(),
                Event::Message { seq, value: seq },
                "nothing lost"
            );
        }
        publishing.join().unwrap();
    });
}

#[test]
fn disconnect_cuts_the_slow_subscriber_with_the_reason_and_spares_the_others() {
    let (_dir, path, publisher) = setup(4, Overflow::Disconnect);
    let mut slow = Subscriber::<u64>::connect(&path, "numbers").unwrap();
    let mut quick = Subscriber::<u64>::connect(&path, "numbers").unwrap();
    for i in 1..=10 {
        publisher.publish(&i, Wait::Block).unwrap();
        assert_eq!(quick.recv(soon()).unwrap(), Event::Message { seq: i, value: i });
    }
    match slow.recv(soon()).unwrap() {
        Event::Ended { reason: Some(reason) } => assert!(reason.contains("too slow"), "{reason}"),
        other => panic!("expected the end, got {other:?}"),
    }
    assert_eq!(publisher.subscribers(), 1);
}

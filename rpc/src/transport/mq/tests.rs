//! The message-queue transport's own cases (the conformance suite runs the rest across
//! processes).

use std::time::Duration;

use super::*;
use crate::transport::Listener as _;
use crate::Frame;

fn pair(attrs: Attrs) -> (Transport, Transport, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    let mut listener = Listener::bind_with(&path, Options::default().attrs(attrs)).unwrap();
    let client = std::thread::spawn(move || connect(&path));
    let server = listener.accept(Wait::timeout(Duration::from_secs(30))).unwrap();
    (client.join().unwrap().unwrap(), server, dir)
}

#[test]
fn a_frame_larger_than_a_message_is_split_and_joined_whole() {
    let (mut client, mut server, _dir) = pair(Attrs::new(4, 64));
    let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let sender = std::thread::spawn(move || {
        client.send(&mut Frame::from_payload(&big), Wait::Block).unwrap();
        client.send(&mut Frame::from_payload(b"after"), Wait::Block).unwrap();
        (client, big)
    });
    let first = server.recv(Wait::timeout(Duration::from_secs(30))).unwrap();
    let second = server.recv(Wait::timeout(Duration::from_secs(30))).unwrap();
    let (_client, big) = sender.join().unwrap();
    assert!(first == big, "the split frame came back different");
    assert_eq!(second, b"after");
}

#[test]
fn the_queue_names_are_gone_once_the_connection_is_set_up() {
    let (_client, server, _dir) = pair(Attrs::new(2, 64));
    // The listener created /procwire-mq.PID.N.{c2s,s2c}; the client removed both names.
    let names = [".c2s", ".s2c"].map(|end| {
        (0..64)
            .map(|n| format!("/procwire-mq.{}.{n}{end}", std::process::id()))
            .filter(|name| Queue::open(name).is_ok())
            .count()
    });
    assert_eq!(names, [0, 0]);
    drop(server);
}

#[test]
fn closing_the_sender_ends_the_peer_after_what_was_sent_and_a_death_mid_frame_is_truncated() {
    let (mut client, mut server, _dir) = pair(Attrs::new(8, 64));
    client.send(&mut Frame::from_payload(b"last"), Wait::Block).unwrap();
    client.sender.close();
    assert_eq!(server.recv(Wait::Block).unwrap(), b"last");
    assert!(matches!(server.recv(Wait::Block), Err(TransportError::Closed { .. })));
    // The other direction still works after a half-close.
    server.send(&mut Frame::from_payload(b"reply"), Wait::Block).unwrap();
    assert_eq!(client.recv(Wait::Block).unwrap(), b"reply");

    let (mut client, mut server, _dir) = pair(Attrs::new(2, 64));
    // 2 messages of room: a 1000-byte frame is left partly sent, then the client goes.
    let err = client
        .send(&mut Frame::from_payload(&[7; 1000]), Wait::NonBlock)
        .map(|()| client.sender.has_pending());
    assert!(matches!(err, Ok(true)), "{err:?}");
    drop(client);
    let err = server.recv(Wait::timeout(Duration::from_secs(30))).unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Truncated {
                got: 128,
                expected: 1004,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_sender_waiting_for_room_fails_when_the_peer_hangs_up() {
    let (mut client, server, _dir) = pair(Attrs::new(1, 64));
    client.send(&mut Frame::from_payload(b"fills it"), Wait::Block).unwrap();
    let waiting = std::thread::spawn(move || client.send(&mut Frame::from_payload(b"no room"), Wait::Block));
    drop(server);
    let err = waiting.join().unwrap().unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err}");
}

#[test]
fn a_listener_that_cannot_create_the_queues_refuses_the_client_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    // More messages than any kernel allows.
    let mut listener = Listener::bind_with(&path, Options::default().attrs(Attrs::new(1 << 20, 64))).unwrap();
    let client = std::thread::spawn(move || connect(&path));
    let accepted = listener.accept(Wait::timeout(Duration::from_millis(500)));
    assert!(accepted.is_err(), "no connection is made");
    let err = client.join().unwrap().unwrap_err();
    let text = crate::ErrorChain(&err).to_string();
    assert!(
        text.contains("1048576 messages asked for, above /proc/sys/fs/mqueue/msg_max = "),
        "{text}"
    );
}

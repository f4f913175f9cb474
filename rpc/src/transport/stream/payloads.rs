//! Tests of a stream receiving a large reply's byte string into a buffer of its own.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::gathered::pair;
use super::*;
use crate::protocol::{Envelope, Kind};

/// A reply of `len` bytes, whole, length prefix included.
fn reply(len: usize) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let envelope = Envelope {
        id: 1,
        kind: Kind::Reply,
        method: 2,
        timeout_us: None,
    };
    let mut frame = envelope.frame_with(serde_bytes::Bytes::new(&data)).unwrap();
    (frame.as_length_prefixed().to_vec(), data)
}

fn raw_pair() -> (UnixStream, StreamReceiver) {
    let (a, b) = UnixStream::pair().unwrap();
    (
        a,
        StreamReceiver::new(OwnedFd::from(b), FdKind::Socket, "test").unwrap(),
    )
}

#[test]
fn a_large_reply_of_bytes_arriving_in_pieces_is_split_before_its_bytes() {
    let (mut raw, mut rx) = raw_pair();
    let (bytes, data) = reply(300_000);
    // Pieces that end inside the prefix, the envelope, the window and the bytes.
    let cuts = [2, 5, 9, 30, 45, 70_000, 200_000, bytes.len()];
    let mut from = 0;
    for cut in cuts {
        raw.write_all(&bytes[from..cut]).unwrap();
        from = cut;
        if cut < bytes.len() {
            assert!(matches!(
                rx.recv_payload(Wait::NonBlock),
                Err(TransportError::WouldBlock { .. })
            ));
            assert!(rx.in_frame(), "after {cut} bytes");
        }
    }
    match rx.recv_payload(Wait::NonBlock).unwrap() {
        Payload::Split { head, bytes: got } => {
            assert_eq!(got, data);
            assert_eq!(head.len(), bytes.len() - 4 - data.len());
        }
        other => panic!("not split: {other:?}"),
    }
}

#[test]
fn a_receiver_asked_for_whole_frames_never_splits_and_small_replies_stay_whole() {
    let (mut tx, mut rx) = pair();
    let (bytes, data) = reply(200_000);
    let writer = std::thread::spawn(move || {
        for _ in 0..2 {
            let mut frame = Frame::from_payload(&bytes[4..]);
            tx.send(&mut frame, Wait::Block).unwrap();
        }
        let mut small = Frame::from_payload(&reply(100).0[4..]);
        tx.send(&mut small, Wait::Block).unwrap();
    });
    let whole = rx.recv(Wait::timeout(Duration::from_secs(30))).unwrap();
    assert!(whole.ends_with(&data));
    assert!(matches!(rx.recv_payload(Wait::Block).unwrap(), Payload::Split { .. }));
    assert!(matches!(rx.recv_payload(Wait::Block).unwrap(), Payload::Whole(_)));
    writer.join().unwrap();
}

#[test]
fn the_end_of_the_stream_inside_a_split_byte_string_is_truncated_with_the_frames_length() {
    let (mut raw, mut rx) = raw_pair();
    let (bytes, _) = reply(300_000);
    raw.write_all(&bytes[..100_000]).unwrap();
    drop(raw);
    match rx.recv_payload(Wait::timeout(Duration::from_secs(30))) {
        Err(TransportError::Truncated { got, expected, .. }) => {
            assert_eq!((got, expected), (100_000, bytes.len()));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(matches!(
        rx.recv_payload(Wait::Block),
        Err(TransportError::Closed { .. })
    ));
}

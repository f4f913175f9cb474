//! The shm transport within one process (threads on both ends); across processes it runs
//! the conformance suite.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::protocol::Frame;
use crate::transport::{Listener as _, Payload};

fn pair(options: Options) -> (tempfile::TempDir, Transport, Transport) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sock");
    let mut listener = Listener::bind_with(&path, options.clone()).unwrap();
    let client = std::thread::spawn(move || connect_with(&path, options).unwrap());
    let server = listener.accept(Wait::timeout(Duration::from_secs(30))).unwrap();
    (dir, client.join().unwrap(), server)
}

fn soon() -> Wait {
    Wait::timeout(Duration::from_secs(30))
}

#[test]
fn frames_of_every_size_cross_in_order_even_those_larger_than_the_ring() {
    for strategy in [Strategy::Adaptive, Strategy::Block, Strategy::Spin] {
        let (_dir, mut client, mut server) = pair(Options::default().ring_size(4096).strategy(strategy));
        let sizes = [0usize, 1, 4091, 4092, 4096, 100_000, 7, 1 << 20];
        let echo = std::thread::spawn(move || {
            for _ in sizes {
                let frame = server.recv(soon()).unwrap();
                server.send(&mut Frame::from_payload(&frame), soon()).unwrap();
            }
            server
        });
        for len in sizes {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            client.send(&mut Frame::from_payload(&payload), soon()).unwrap();
            assert!(client.recv(soon()).unwrap() == payload, "{len} bytes with {strategy:?}");
        }
        echo.join().unwrap();
    }
}

/// Both ends over heap memory and a socket pair, with the layout at hand to play a
/// hostile peer.
fn linked(capacity: usize) -> (Layout, Transport, Transport) {
    linked_with(capacity, Strategy::Adaptive)
}

fn linked_with(capacity: usize, strategy: Strategy) -> (Layout, Transport, Transport) {
    let layout = Layout::create(ring::testing::Heap::new(ring::region_len(capacity)), capacity);
    let (a, b) = UnixStream::pair().unwrap();
    let bells = Bells::new().unwrap();
    let client = assemble(
        a,
        layout.clone(),
        bells.try_clone().unwrap(),
        Direction::ToServer,
        "shm:c".into(),
        strategy,
    );
    let server = assemble(
        b,
        layout.clone(),
        bells.try_clone().unwrap(),
        Direction::ToClient,
        "shm:s".into(),
        strategy,
    );
    (layout, client, server)
}

#[test]
fn a_corrupt_tail_from_the_peer_is_a_clear_error() {
    let (layout, mut client, mut server) = linked(4096);
    client.send(&mut Frame::from_payload(b"fine"), soon()).unwrap();
    assert_eq!(server.recv(soon()).unwrap(), b"fine");
    // Play the hostile client: a tail far beyond anything the ring can hold.
    layout
        .ring(Direction::ToServer)
        .tail()
        .store(u64::MAX / 2, Ordering::Release);
    let err = server.recv(soon()).unwrap_err();
    let text = crate::ErrorChain(&err).to_string();
    assert!(text.contains("corrupt ring indices"), "{text}");
    assert!(server.recv(Wait::NonBlock).is_err(), "the connection stays failed");
}

#[test]
fn a_corrupt_head_from_the_peer_fails_the_first_send_that_looks_at_it() {
    let (layout, mut client, _server) = linked(4096);
    layout.ring(Direction::ToServer).head().store(12345, Ordering::Release);
    // The space known free from the last look (all of it) needs no look at the head.
    client.send(&mut Frame::from_payload(&[0; 4000]), soon()).unwrap();
    let err = client.send(&mut Frame::from_payload(&[0; 100]), soon()).unwrap_err();
    let text = crate::ErrorChain(&err).to_string();
    assert!(text.contains("corrupt ring indices"), "{text}");
}

#[test]
fn a_peer_that_goes_away_ends_a_blocked_receive_with_closed() {
    let (_dir, client, mut server) = pair(Options::default());
    let waiter = std::thread::spawn(move || server.recv(Wait::Block));
    drop(client);
    assert!(matches!(waiter.join().unwrap(), Err(TransportError::Closed { .. })));
}

#[test]
fn a_close_delivers_what_was_sent_then_says_closed() {
    let (_dir, mut client, mut server) = pair(Options::default());
    client.send(&mut Frame::from_payload(b"last"), soon()).unwrap();
    client.sender.close();
    assert_eq!(server.recv(soon()).unwrap(), b"last");
    assert!(matches!(server.recv(soon()), Err(TransportError::Closed { .. })));
    // The other direction still works: closing is per direction.
    server.send(&mut Frame::from_payload(b"reply"), soon()).unwrap();
    assert_eq!(client.recv(soon()).unwrap(), b"reply");
}

#[test]
fn an_interrupt_ends_a_blocked_receive_and_a_deadline_times_out() {
    let (_dir, _client, mut server) = pair(Options::default());
    let result = server.recv(Wait::timeout(Duration::from_millis(20)));
    assert!(matches!(result, Err(TransportError::TimedOut { .. })), "{result:?}");
    let interrupt = Interrupt::new().unwrap();
    server.receiver.set_interrupt(interrupt.clone());
    let waiter = std::thread::spawn(move || server.recv(Wait::Block));
    interrupt.fire();
    assert!(matches!(
        waiter.join().unwrap(),
        Err(TransportError::Interrupted { .. })
    ));
}

#[test]
fn a_nonblocking_send_into_a_full_ring_takes_all_or_nothing() {
    let (_dir, mut client, mut server) = pair(Options::default().ring_size(4096));
    let mut sent = 0usize;
    loop {
        match client.send(&mut Frame::from_payload(&[sent as u8; 1000]), Wait::NonBlock) {
            Ok(()) => sent += 1,
            Err(TransportError::WouldBlock { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        if client.sender.has_pending() {
            break;
        }
    }
    assert!(sent >= 3, "{sent} frames fit a 4 KiB ring");
    let drain = std::thread::spawn(move || (0..sent).map(|_| server.recv(soon()).unwrap()).collect::<Vec<_>>());
    client.sender.flush(Wait::Block).unwrap();
    for (i, frame) in drain.join().unwrap().iter().enumerate() {
        assert_eq!(frame, &vec![i as u8; 1000]);
    }
}

#[test]
fn an_oversized_length_prefix_is_refused_before_allocation() {
    let (_dir, mut client, mut server) = pair(Options::default());
    server.set_max_frame_len(1024);
    client.send(&mut Frame::from_payload(&[0; 1025]), soon()).unwrap();
    assert!(matches!(
        server.recv(soon()),
        Err(TransportError::FrameTooLarge {
            len: 1025,
            max: 1024,
            ..
        })
    ));
}

#[test]
fn thousands_of_ping_pongs_in_both_directions_never_lose_a_wake_up() {
    // A lost wake-up would leave one side parked with a frame waiting: the deadline says so.
    for strategy in [Strategy::Block, Strategy::Adaptive] {
        let (_dir, mut client, mut server) = pair(Options::default().ring_size(4096).strategy(strategy));
        let echo = std::thread::spawn(move || {
            while let Ok(frame) = server.recv(soon()) {
                server.send(&mut Frame::from_payload(&frame), soon()).unwrap();
            }
        });
        for i in 0..5_000u32 {
            // Sizes around the ring's, so that the space doorbell works too.
            let payload = vec![i as u8; (i as usize * 7) % 6000];
            client.send(&mut Frame::from_payload(&payload), soon()).unwrap();
            assert_eq!(
                client.recv(soon()).unwrap(),
                payload,
                "round trip {i} with {strategy:?}"
            );
        }
        drop(client);
        echo.join().unwrap();
    }
}

#[test]
fn a_server_thread_learns_of_a_peer_that_died_without_closing_and_does_not_spin_on_it() {
    let (layout, client, mut server) = linked(4096);
    // A peer that died closed nothing: its socket end goes, its ring says nothing.
    drop(client);
    layout.ring(Direction::ToServer).closed().store(0, Ordering::Relaxed);
    // The server's loop: prepare, sleep on the readiness descriptor, receive without waiting.
    for _ in 0..100 {
        if !server.receiver.prepare_wait() {
            let (data, liveness) = (server.receiver.readiness_fd(), server.receiver.liveness_fd());
            let mut fds = [data, liveness].map(|fd| nix::poll::PollFd::new(fd.unwrap(), nix::poll::PollFlags::POLLIN));
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(30_000u16)).unwrap();
        }
        match server.recv(Wait::NonBlock) {
            Err(TransportError::Closed { .. }) => return,
            Err(TransportError::WouldBlock { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    panic!("the server thread kept waking for a peer that is gone");
}

#[test]
fn a_server_thread_that_spun_for_a_request_stops_watching_only_in_the_receive_that_takes_it() {
    let (layout, mut client, mut server) = linked_with(4096, Strategy::Spin);
    let ring = layout.ring(Direction::ToServer);
    // Sends once the server watches the ring (its flag cleared), so that its spin finds it.
    let (watched, watch) = (ring.clone(), std::sync::mpsc::channel::<()>());
    let sender = std::thread::spawn(move || {
        for _ in watch.1 {
            while watched.consumer_parked().load(Ordering::Relaxed) != 0 {
                std::hint::spin_loop();
            }
            client.send(&mut Frame::from_payload(b"request"), soon()).unwrap();
        }
    });
    // A spin may run out on a busy machine before the sender runs: then try again.
    for _ in 0..100 {
        watch.0.send(()).unwrap();
        let spun = server.receiver.prepare_wait();
        if spun {
            // One fence per request: `prepare_wait` leaves the flag to the receive.
            assert_eq!(ring.consumer_parked().load(Ordering::Relaxed), 0, "still watching");
        }
        assert_eq!(server.recv(soon()).unwrap(), b"request");
        assert_eq!(ring.consumer_parked().load(Ordering::Relaxed), 1, "a frame kicks again");
        if spun {
            drop(watch.0);
            sender.join().unwrap();
            return;
        }
    }
    panic!("no spin of 10 ms found a request sent while it watched");
}

#[test]
fn a_recycled_small_payload_carries_the_next_small_frame() {
    let (_layout, mut client, mut server) = linked(4096);
    client.send(&mut Frame::from_payload(b"first"), soon()).unwrap();
    let first = server.recv(soon()).unwrap();
    let (ptr, capacity) = (first.as_ptr(), first.capacity());
    server.receiver.recycle(first);
    // Had the buffer been freed, this would take its block.
    let other = Vec::<u8>::with_capacity(capacity);
    client.send(&mut Frame::from_payload(b"again"), soon()).unwrap();
    let second = server.recv(soon()).unwrap();
    assert_eq!(second, b"again");
    assert_eq!(second.as_ptr(), ptr, "a fresh allocation");
    drop(other);
}

/// Sends `payload` encoded in place, as the client does: true if it went in place.
fn send_in_place(transport: &mut Transport, payload: &[u8]) -> bool {
    let len = crate::protocol::serialized_size(payload).unwrap();
    transport
        .sender
        .try_send_encoded(len, &mut |sink| postcard::serialize_with_flavor(payload, &mut *sink))
}

#[test]
fn frames_encoded_in_place_wrap_behind_padding_and_interleave_with_copied_ones() {
    let (_layout, mut client, mut server) = linked(4096);
    let mut in_place = 0;
    let mut expected = std::collections::VecDeque::new();
    for round in 0..200usize {
        // Sizes that leave every kind of remainder before the ring's end.
        let payload: Vec<u8> = (0..(round * 97) % 1500).map(|i| (i ^ round) as u8).collect();
        if round % 3 == 2 {
            client
                .send(
                    &mut Frame::from_payload(&postcard::to_allocvec(&payload[..]).unwrap()),
                    soon(),
                )
                .unwrap();
        } else if send_in_place(&mut client, &payload) {
            in_place += 1;
        } else {
            // No room in one piece: the caller falls back to a copied frame.
            client
                .send(
                    &mut Frame::from_payload(&postcard::to_allocvec(&payload[..]).unwrap()),
                    soon(),
                )
                .unwrap();
        }
        expected.push_back(payload);
        // Leave a frame in the ring (two never fill it), so that the free space is often
        // short of the ring's end.
        while expected.len() > 1 {
            let got = server.recv(soon()).unwrap();
            assert_eq!(
                postcard::from_bytes::<&[u8]>(&got).unwrap(),
                &expected.pop_front().unwrap()[..]
            );
        }
    }
    while let Some(want) = expected.pop_front() {
        let got = server.recv(soon()).unwrap();
        assert_eq!(postcard::from_bytes::<&[u8]>(&got).unwrap(), &want[..]);
    }
    assert!(in_place > 100, "most frames went in place ({in_place} of 134)");
}

#[test]
fn a_frame_too_large_for_the_ring_in_one_piece_is_left_to_the_copying_send() {
    let (_layout, mut client, mut server) = linked(4096);
    assert!(!send_in_place(&mut client, &[9; 5000]), "larger than the ring");
    client.set_max_frame_len(100);
    assert!(!send_in_place(&mut client, &[9; 200]), "larger than the maximum");
    assert!(send_in_place(&mut client, &[9; 50]));
    assert_eq!(server.recv(soon()).unwrap().len(), 51);
}

#[test]
fn a_padding_marker_split_across_the_end_of_the_ring_is_a_clear_error() {
    let (layout, mut client, mut server) = linked(4096);
    // A frame that leaves two bytes before the end: 4 + 4090.
    client.send(&mut Frame::from_payload(&[1; 4090]), soon()).unwrap();
    assert_eq!(server.recv(soon()).unwrap().len(), 4090);
    // Play the hostile client: a padding marker written across the end.
    let ring = layout.ring(Direction::ToServer);
    ring.tail().store(4094 + 8, Ordering::Release);
    ring.write_for_test(4094, &[0xFF, 0xFF]);
    ring.write_for_test(0, &[0xFF, 0xFF, 0, 0, 0, 0]);
    let err = crate::error::chain(&server.recv(soon()).unwrap_err());
    assert!(err.contains("padding marker 2 bytes before the ring's end"), "{err}");
}

/// A call's context whose replies go out through `sender`, as the server makes it.
fn context(
    sender: Box<dyn crate::transport::FrameSender>,
    id: u64,
) -> (crate::outbox::Outbox, crate::service::CallContext) {
    use crate::protocol::{Envelope, Kind};
    let outbox = crate::outbox::Outbox::new(
        sender,
        crate::outbox::Buffering::Unbounded,
        "peer".into(),
        crate::protocol::DEFAULT_MAX_FRAME_LEN,
        None,
    );
    let ctx = crate::service::CallContext {
        envelope: Envelope {
            id,
            kind: Kind::Call,
            method: 3,
            timeout_us: None,
        },
        deadline: None,
        peer: Arc::new(PeerInfo::named("peer")),
        key_name: None,
        cancelled: Arc::default(),
        replies: Some(outbox.replies()),
    };
    (outbox, ctx)
}

#[test]
fn a_generated_handler_s_reply_goes_into_the_ring_in_place_and_reads_back_whole() {
    use crate::protocol::{Envelope, Kind};
    let (_layout, client, server) = linked(1 << 16);
    let (_outbox, ctx) = context(server.sender, 42);
    let reply = ctx.__reply(&(7i64, "seven")).unwrap();
    assert!(reply.is_sent(), "nothing is left for the server to send");
    let mut receiver = client.receiver;
    let payload = receiver.recv(soon()).unwrap();
    let (envelope, body) = Envelope::decode(&payload).unwrap();
    assert_eq!((envelope.id, envelope.kind, envelope.method), (42, Kind::Reply, 3));
    assert_eq!(postcard::from_bytes::<(i64, &str)>(body).unwrap(), (7, "seven"));
}

#[test]
fn a_reply_that_does_not_fit_in_place_is_returned_as_a_frame_to_send() {
    let (_layout, _client, server) = linked(4096);
    let (_outbox, ctx) = context(server.sender, 1);
    let reply = ctx.__reply(&vec![1u8; 5000]).unwrap();
    assert!(!reply.is_sent());
    assert_eq!(
        reply.payload_len(),
        crate::protocol::serialized_size(&vec![1u8; 5000]).unwrap() + 4
    );
}

/// The payload of a reply whose body is `data` as a byte string.
fn reply_of_bytes(data: &[u8]) -> Vec<u8> {
    let envelope = crate::protocol::Envelope {
        id: 9,
        kind: crate::protocol::Kind::Reply,
        method: 1,
        timeout_us: None,
    };
    envelope
        .frame_with(serde_bytes::Bytes::new(data))
        .unwrap()
        .payload()
        .to_vec()
}

#[test]
fn a_large_reply_of_bytes_is_copied_out_of_the_ring_into_a_buffer_of_its_own() {
    // A ring smaller than the frame: it crosses in many pieces.
    let (_layout, mut client, mut server) = linked(4096);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let payload = reply_of_bytes(&data);
    let sent = payload.clone();
    let sender = std::thread::spawn(move || {
        server.send(&mut Frame::from_payload(&sent), soon()).unwrap();
        server.send(&mut Frame::from_payload(&sent), soon()).unwrap();
        server
    });
    match client.receiver.recv_payload(soon()).unwrap() {
        Payload::Split { head, bytes } => {
            assert!(bytes == data, "the bytes");
            assert_eq!(head, payload[..payload.len() - data.len()]);
        }
        other => panic!("not split: {} bytes whole", other.len()),
    }
    // `recv` (what a server uses) never splits.
    assert!(client.recv(soon()).unwrap() == payload);
    sender.join().unwrap();
}

#[test]
fn a_reply_of_bytes_the_peer_stops_sending_midway_is_truncated() {
    let (_layout, mut client, mut server) = linked(4096);
    let payload = reply_of_bytes(&[3; 100_000]);
    // The ring takes the first 4 KiB; the rest waits as the sender's pending tail, and
    // the sender closes instead of finishing it.
    let sent = server.send(&mut Frame::from_payload(&payload), Wait::NonBlock);
    assert!(sent.is_ok() && server.sender.has_pending(), "{sent:?}");
    server.sender.close();
    match client.receiver.recv_payload(soon()) {
        Err(TransportError::Truncated { got, expected, .. }) => {
            assert_eq!(expected, 4 + payload.len());
            assert!(got > 40 && got <= 4096, "got {got}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

/// A byte string of `len` bytes (counting modulo `m`), and the payload of it twice.
fn halves(len: u32, m: u32) -> (Vec<u8>, Vec<u8>) {
    let half: Vec<u8> = (0..len).map(|i| (i % m) as u8).collect();
    let one = postcard::to_allocvec(&half[..]).unwrap();
    let expected = [&one[..], &one[..]].concat();
    (half, expected)
}

/// A payload of two large byte strings, encoded in place as the client does; `between`
/// runs after the first is encoded, before the second.
fn send_two_halves(transport: &mut Transport, half: &[u8], mut between: impl FnMut()) -> Result<bool, TransportError> {
    let len = 2 * crate::protocol::serialized_size(half).unwrap();
    transport.sender.send_encoded(
        len,
        &mut |sink| {
            postcard::serialize_with_flavor(half, &mut *sink)?;
            between();
            postcard::serialize_with_flavor(half, &mut *sink)
        },
        soon(),
    )
}

#[test]
fn a_large_frame_for_a_consumer_on_another_cpu_is_published_as_it_is_encoded() {
    let (half, expected) = halves(512 * 1024, 251);
    // Spin: spinning pays whatever CPUs the threads run on (as for ends on two CPUs). Block:
    // it never does, and a frame is published whole.
    for (strategy, pipelined) in [(Strategy::Spin, true), (Strategy::Block, false)] {
        let (layout, mut client, mut server) = linked_with(4 << 20, strategy);
        let mut seen_midway = 0;
        let tail = || layout.ring(Direction::ToServer).tail().load(Ordering::Acquire);
        let sent = send_two_halves(&mut client, &half, || seen_midway = tail());
        assert!(sent.unwrap(), "in place");
        match pipelined {
            // All of the first half's whole pieces, and the prefix.
            true => assert!(
                seen_midway >= 512 * 1024,
                "{strategy:?}: {seen_midway} bytes out midway"
            ),
            false => assert_eq!(seen_midway, 0, "{strategy:?}: published before it was whole"),
        }
        assert_eq!(tail(), 4 + expected.len() as u64);
        assert!(
            server.recv(soon()).unwrap() == expected,
            "{strategy:?}: the frame as encoded"
        );
    }
}

#[test]
fn a_consumer_copies_out_a_pipelined_frame_while_it_is_written() {
    let (layout, mut client, mut server) = linked_with(4 << 20, Strategy::Spin);
    let (half, expected) = halves(512 * 1024, 253);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        // A receive that cannot finish yet moves the published part out of the ring.
        started_rx.recv().unwrap();
        assert!(matches!(
            server.recv(Wait::NonBlock),
            Err(TransportError::WouldBlock { .. })
        ));
        let freed = layout.ring(Direction::ToServer).head().load(Ordering::Acquire);
        go_tx.send(()).unwrap();
        (server.recv(soon()).unwrap(), freed)
    });
    let sent = send_two_halves(&mut client, &half, || {
        started_tx.send(()).unwrap();
        go_rx.recv().unwrap();
    });
    assert!(sent.unwrap());
    let (frame, freed) = reader.join().unwrap();
    assert!(
        freed >= 512 * 1024,
        "only {freed} bytes read out while the rest was encoded"
    );
    assert!(frame == expected);
}

#[test]
fn a_pipelined_payload_that_comes_out_shorter_than_measured_breaks_the_connection_clearly() {
    let (_layout, mut client, mut server) = linked_with(4 << 20, Strategy::Spin);
    let data = vec![7u8; 600 * 1024];
    // Announced as a megabyte, encoded as 600 KiB: part of it is out when that shows.
    let sent = client.sender.send_encoded(
        1 << 20,
        &mut |sink| postcard::serialize_with_flavor(&data[..], &mut *sink),
        soon(),
    );
    match sent {
        Err(TransportError::Io { ref source, .. }) => {
            assert!(source.to_string().contains("another size"), "{source}")
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    assert!(matches!(
        client.send(&mut Frame::from_payload(b"after"), soon()),
        Err(TransportError::Closed { .. })
    ));
    match server.recv(soon()) {
        Err(TransportError::Truncated { got, expected, .. }) => {
            assert_eq!(expected, 4 + (1 << 20));
            assert!(got < expected, "got {got}");
        }
        other => panic!("expected Truncated, got {:?}", other.map(|f| f.len())),
    }
}

#[test]
fn a_frame_published_as_it_is_encoded_behind_padding_is_buffered_only_once_whole() {
    let (layout, mut client, mut server) = linked_with(1 << 20, Strategy::Spin);
    let (half, expected) = halves(300 * 1024, 247);
    // The first frame leaves less than its size before the ring's end: the second goes to
    // the start, behind a padding marker.
    assert!(send_two_halves(&mut client, &half, || {}).unwrap());
    assert!(server.recv(soon()).unwrap() == expected);
    let tail = || layout.ring(Direction::ToServer).tail().load(Ordering::Acquire);
    let before = tail();
    let (mut midway, mut buffered_midway) = (0, true);
    let sent = send_two_halves(&mut client, &half, || {
        midway = tail();
        buffered_midway = server.receiver.has_buffered();
    });
    assert!(sent.unwrap());
    let end = (1 << 20) - before % (1 << 20);
    assert!(
        midway > before + end + 4,
        "the marker and part of the frame are out midway"
    );
    assert!(
        !buffered_midway,
        "a frame behind padding counted as buffered before it was whole"
    );
    assert!(server.receiver.has_buffered(), "whole now");
    assert!(server.recv(soon()).unwrap() == expected);
}

#[test]
fn a_pipelined_payload_longer_than_measured_never_passes_for_a_whole_frame() {
    let (_layout, mut client, mut server) = linked_with(4 << 20, Strategy::Spin);
    // 3 bytes of length and 524,285 of bytes: exactly the 512 KiB announced (a whole number
    // of pieces), and then one byte more.
    let data = vec![9u8; 524_285];
    let sent = client.sender.send_encoded(
        512 * 1024,
        &mut |sink| {
            postcard::serialize_with_flavor(&data[..], &mut *sink)?;
            postcard::serialize_with_flavor(&1u8, &mut *sink)
        },
        soon(),
    );
    assert!(matches!(sent, Err(TransportError::Io { .. })), "{sent:?}");
    match server.recv(soon()) {
        Err(TransportError::Truncated { got, expected, .. }) => {
            assert_eq!((got, expected), (4 + 512 * 1024 - 1, 4 + 512 * 1024))
        }
        other => panic!("expected Truncated, got {:?}", other.map(|f| f.len())),
    }
}

#[test]
fn an_encoder_that_fails_or_panics_before_any_piece_is_out_leaves_the_connection_as_it_was() {
    let (_layout, mut client, mut server) = linked_with(4 << 20, Strategy::Spin);
    let failed = client
        .sender
        .send_encoded(1 << 20, &mut |_| Err(postcard::Error::SerializeBufferFull), soon());
    assert!(!failed.unwrap(), "nothing sent");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client
            .sender
            .send_encoded(1 << 20, &mut |_| panic!("a Serialize that panics"), soon())
    }));
    assert!(panicked.is_err());
    client.send(&mut Frame::from_payload(b"still here"), soon()).unwrap();
    assert_eq!(server.recv(soon()).unwrap(), b"still here");
    // Midway, the side closes before the panic goes on: the peer sees the frame truncated.
    let data = vec![1u8; 300 * 1024];
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.sender.send_encoded(
            1 << 20,
            &mut |sink| {
                postcard::serialize_with_flavor(&data[..], &mut *sink)?;
                panic!("a Serialize that panics midway")
            },
            soon(),
        )
    }));
    assert!(panicked.is_err());
    assert!(matches!(server.recv(soon()), Err(TransportError::Truncated { .. })));
}

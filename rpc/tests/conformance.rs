//! The conformance suite: every transport must pass every case, with the server in a real
//! child process (this test binary, re-executed in a child role).

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use procwire_rpc::protocol::{Envelope, Hello, Kind as FrameKind, Welcome, MAGIC, PROTOCOL_VERSION};
use procwire_rpc::serde_bytes::ByteBuf;
use procwire_rpc::{
    Buffering, Client, ClientConfig, Delivery, Ending, FaultKind, HandshakeError, Method, MethodSignature, RpcError,
    ServiceInfo,
};
use support::*;

#[path = "conformance/awaited.rs"]
mod awaited;

use awaited::{
    a_blocked_local_runner_polls_its_calls_connection_itself, a_call_outliving_its_local_runner_is_still_woken,
    a_local_runner_inside_another_is_woken_for_its_calls, a_task_waiting_behind_a_busy_local_runners_watch_is_woken,
    an_awaited_call_to_a_peer_that_dies_fails_promptly, an_executor_inside_a_local_runner_is_woken_for_its_calls,
    awaited_calls_made_on_waking_leave_in_one_write, awaited_calls_share_a_connection_with_blocking_ones,
    blocking_calls_made_while_a_write_is_owed_write_it_before_waiting,
    tasks_that_end_do_not_strand_the_calls_deferred_behind_them,
};

#[path = "conformance/bytes.rs"]
mod bytes;

use bytes::{
    a_byte_string_cut_short_fails_the_call_as_truncated, a_byte_string_longer_than_its_frame_is_a_decode_error,
    a_byte_string_of_absurd_length_is_a_decode_error_without_allocating_it,
    a_byte_string_shorter_than_its_frame_is_a_decode_error, a_large_reply_of_bytes_is_the_buffer_it_was_received_into,
    a_server_that_dies_inside_a_byte_string_fails_the_call_as_truncated,
};

#[path = "conformance/sharing.rs"]
mod sharing;

use sharing::{
    a_server_apart_from_its_client_looks_for_the_next_request_before_sleeping,
    callers_that_time_out_while_reading_hand_the_reading_on, megabyte_echoes_between_two_cpus_come_back_intact,
    on_one_cpu_a_large_request_wakes_one_idle_thread,
    on_one_cpu_a_reply_held_back_is_not_held_up_by_a_call_that_blocks,
    on_one_cpu_a_request_behind_blocking_calls_is_read_by_a_reserve_thread,
    on_one_cpu_a_request_read_behind_a_blocking_call_is_served,
    on_one_cpu_replies_to_requests_read_together_leave_in_one_write,
};

type Outcome = Result<(), Failed>;

fn connect(peer: &mut Peer) -> Client {
    Client::connect(peer.transport(), info()).expect("connect and handshake")
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(30))
}

fn calls_round_trip(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let sum: i64 = client.call(ADD, &(40i64, 2i64), None)?;
    assert_eq!(sum, 42);
    let s: String = client.call(CONCAT, &("pro", "cwire"), None)?;
    assert_eq!(s, "procwire");
    let empty: ByteBuf = client.call(ECHO, &ByteBuf::new(), None)?;
    assert!(empty.is_empty());
    Ok(())
}

fn large_payloads_round_trip(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    for len in [1, 65_531, 65_532, 65_536, 1 << 20, 8 << 20] {
        let data = ByteBuf::from((0..len).map(|i| (i * 7 + len) as u8).collect::<Vec<u8>>());
        let back: ByteBuf = client.call(ECHO, &data, soon())?;
        assert!(back == data, "echo of {len} bytes came back different");
    }
    Ok(())
}

fn many_threads_share_one_client(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    std::thread::scope(|s| {
        for t in 0..8i64 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..300i64 {
                    let sum: i64 = client.call(ADD, &(t * 1000, i), soon()).expect("call");
                    assert_eq!(sum, t * 1000 + i);
                }
            });
        }
    });
    Ok(())
}

fn replies_are_matched_out_of_order(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    // The first call holds until the third releases it; if replies had to come in order,
    // the release could never be answered.
    let held = client.start::<_, bool>(HOLD, &7u64, soon())?;
    let seen: bool = client.call(WAIT_HELD, &7u64, soon())?;
    assert!(seen);
    client.call::<_, ()>(RELEASE, &7u64, soon())?;
    assert!(held.wait()?, "the held call was released");
    Ok(())
}

fn oneway_calls_arrive(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    for i in 0..100 {
        client.notify(LOG, &format!("line {i}"), procwire_rpc::Wait::Block)?;
    }
    let count: u64 = client.call(WAIT_LOGS, &100u64, soon())?;
    assert_eq!(count, 100);
    Ok(())
}

fn deadline_is_enforced_and_the_connection_survives(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    // A held call is answered only when released (or, if the deadline were ignored, after
    // the service's 30 s limit, with `false`): only the deadline can end it in between.
    let err = client
        .call::<_, bool>(HOLD, &5u64, Some(Instant::now() + Duration::from_millis(50)))
        .unwrap_err();
    assert!(
        matches!(err, RpcError::DeadlineExceeded { method: "hold", .. }),
        "{err}"
    );
    // The server still has the call: the deadline ended the wait, not the call.
    assert!(client.call::<_, bool>(WAIT_HELD, &5u64, soon())?);
    client.call::<_, ()>(RELEASE, &5u64, soon())?;
    // The late reply is dropped quietly and the connection goes on.
    let sum: i64 = client.call(ADD, &(1i64, 1i64), soon())?;
    assert_eq!(sum, 2);
    Ok(())
}

fn nonblocking_receive_reports_pending_then_delivers(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let mut held = client.try_start::<_, bool>(HOLD, &9u64, soon())?;
    assert!(client.call::<_, bool>(WAIT_HELD, &9u64, soon())?);
    assert!(held.try_wait()?.is_none(), "a held call has no reply yet");
    client.call::<_, ()>(RELEASE, &9u64, soon())?;
    assert!(held.wait()?);
    Ok(())
}

fn nonblocking_send_reports_would_block_when_the_queue_is_full(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = Client::connect_with(
        peer.transport(),
        info(),
        ClientConfig::default().buffering(Buffering::Bounded(1)),
    )?;
    // Nobody reads replies while we only send: the server's replies fill the pipe back to us,
    // its handlers stall, it stops reading, and our sends fill up; a non-blocking send then
    // reports WouldBlock instead of waiting.
    let payload = ByteBuf::from(vec![1u8; 256 * 1024]);
    let mut pending = Vec::new();
    let mut would_block = false;
    for _ in 0..200 {
        match client.try_start::<_, ByteBuf>(ECHO, &payload, soon()) {
            Ok(call) => pending.push(call),
            Err(RpcError::WouldBlock { method: "echo", .. }) => {
                would_block = true;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(would_block, "200 x 256 KiB never filled the transport");
    // Everything that was accepted is answered once we read.
    for call in pending {
        assert_eq!(call.wait()?.len(), payload.len());
    }
    Ok(())
}

fn unknown_method_is_answered_and_the_connection_survives(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let err = client
        .call::<_, ()>(Method::new(999, "missing"), &(), soon())
        .unwrap_err();
    match &err {
        RpcError::Remote {
            kind: FaultKind::UnknownMethod,
            method: "missing",
            message,
            ..
        } => {
            assert!(message.contains("999"), "{message}")
        }
        other => panic!("expected an unknown-method error, got {other}"),
    }
    let sum: i64 = client.call(ADD, &(2i64, 2i64), soon())?;
    assert_eq!(sum, 4);
    Ok(())
}

fn undecodable_arguments_are_a_bad_request(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let err = client.call::<_, i64>(ADD, &"not two numbers", soon()).unwrap_err();
    assert!(
        matches!(
            err,
            RpcError::Remote {
                kind: FaultKind::BadRequest,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(client.call::<_, i64>(ADD, &(1i64, 2i64), soon())?, 3);
    Ok(())
}

fn a_panicking_handler_answers_with_an_error_and_the_server_lives(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let err = client.call::<_, ()>(PANIC, &(), soon()).unwrap_err();
    match &err {
        RpcError::Remote {
            kind: FaultKind::Panicked,
            message,
            ..
        } => {
            assert!(message.contains("the panic method was called"), "{message}")
        }
        other => panic!("expected a panic error, got {other}"),
    }
    assert_eq!(client.call::<_, i64>(ADD, &(1i64, 2i64), soon())?, 3);
    Ok(())
}

fn a_peer_that_dies_mid_call_fails_every_pending_call_promptly(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let held = client.start::<_, bool>(HOLD, &1u64, None)?;
    assert!(client.call::<_, bool>(WAIT_HELD, &1u64, soon())?);
    let err = client.call::<_, ()>(DIE, &(), None).unwrap_err();
    assert!(matches!(err, RpcError::Disconnected { method: "die", .. }), "{err}");
    let err = held.wait().unwrap_err();
    assert!(matches!(err, RpcError::Disconnected { method: "hold", .. }), "{err}");
    let err = client.call::<_, i64>(ADD, &(1i64, 2i64), None).unwrap_err();
    assert!(matches!(err, RpcError::Disconnected { .. }), "{err}");
    assert_eq!(peer.wait_exit(), Some(17));
    Ok(())
}

fn a_call_the_server_lacks_or_has_changed_fails_unsent_naming_both_signatures(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    // This side was built with `add` on i32 and with a method the server never had.
    const MISSING: Method = Method::new(0xbeef, "missing");
    let mut ours = info();
    ours.methods.retain(|m| m.id != ADD.id);
    let ours = ours
        .with_method(MethodSignature::new(ADD, "fn add(i32, i32) -> i32"))
        .with_method(MethodSignature::new(MISSING, "fn missing() -> ()"));
    let client = Client::connect(peer.transport(), ours)?;
    let err = client.call::<_, i32>(ADD, &(1i32, 2i32), None).unwrap_err();
    match &err {
        RpcError::Incompatible {
            method, ours, theirs, ..
        } => {
            assert_eq!(*method, "add");
            assert_eq!(ours, "fn add(i32, i32) -> i32");
            assert_eq!(theirs.as_deref(), Some("fn add(i64, i64) -> i64"));
        }
        other => panic!("expected an incompatible method, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("`add`") && text.contains("fn add(i32, i32) -> i32") && text.contains("fn add(i64, i64) -> i64"),
        "{text}"
    );
    let err = client.start::<_, ()>(MISSING, &(), None).unwrap_err();
    assert!(
        matches!(
            &err,
            RpcError::Incompatible {
                method: "missing",
                theirs: None,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("has no such method"), "{err}");
    // Methods whose signatures match work on the same connection.
    assert_eq!(client.call::<_, String>(CONCAT, &("a", "b"), soon())?, "ab");
    Ok(())
}

fn a_client_of_another_service_is_refused_naming_both(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let err = Client::connect(peer.transport(), ServiceInfo::new("other")).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RpcError::Handshake(HandshakeError::Service { .. })),
        "{err}"
    );
    assert!(
        text.contains("`other`") && text.contains(&format!("`{SERVICE}`")),
        "{text}"
    );
    if !kind.has_listener() {
        // The server's only connection failed its handshake: it says so and exits.
        assert_eq!(peer.wait_exit(), Some(3));
        return Ok(());
    }
    // The server goes on serving correct clients.
    let client = connect(&mut peer);
    assert_eq!(client.call::<_, i64>(ADD, &(1i64, 2i64), soon())?, 3);
    Ok(())
}

fn graceful_stop_finishes_calls_in_flight(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let slow = client.start::<_, u64>(SLOW, &(3u64, 1_000u64), soon())?;
    assert!(
        client.call::<_, bool>(WAIT_HELD, &3u64, soon())?,
        "the slow call is running"
    );
    let peer_pid = peer.pid();
    let exit = std::thread::scope(|s| {
        let stopper = s.spawn(move || peer.stop());
        let answer = slow.wait();
        (answer, stopper.join().expect("stopper thread"))
    });
    assert_eq!(exit.0?, 1_000, "the call in flight during the stop was answered");
    assert_eq!(exit.1, Some(0), "server {peer_pid} exited cleanly");
    let err = client.call::<_, i64>(ADD, &(1i64, 2i64), soon()).unwrap_err();
    assert!(matches!(err, RpcError::Disconnected { .. }), "{err}");
    Ok(())
}

fn a_graceful_stop_says_stopped_and_that_unanswered_calls_did_not_run(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let slow = client.start::<_, u64>(SLOW, &(3u64, 1_000u64), soon())?;
    assert!(
        client.call::<_, bool>(WAIT_HELD, &3u64, soon())?,
        "the slow call is running"
    );
    let (exit, first_failure) = std::thread::scope(|s| {
        let stopper = s.spawn(move || peer.stop());
        // Calls read before the stop are answered; the first after it waits for the slow
        // call, then learns that it did not run.
        let failure = loop {
            match client.call::<_, i64>(ADD, &(1i64, 2i64), soon()) {
                Ok(sum) => assert_eq!(sum, 3),
                Err(e) => break e,
            }
        };
        assert_eq!(slow.wait().expect("the call in flight is answered"), 1_000);
        (stopper.join().expect("stopper thread"), failure)
    });
    assert_eq!(exit, Some(0));
    match &first_failure {
        RpcError::Disconnected {
            delivery: Delivery::NotSent,
            ending: Ending::Stopped,
            ..
        } => assert!(first_failure.is_safe_to_retry()),
        other => panic!("expected a call that did not run on a stopped server, got {other:?}"),
    }
    Ok(())
}

fn a_reply_above_the_maximum_is_answered_with_an_error(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = Client::connect_with(
        peer.transport(),
        info(),
        ClientConfig::default().max_frame_len(64 << 20),
    )?;
    let err = client.call::<_, ByteBuf>(GROW, &(17u64 << 20), soon()).unwrap_err();
    match &err {
        RpcError::Remote {
            kind: FaultKind::BadReply,
            message,
            ..
        } => {
            assert!(message.contains("exceeds the maximum of 16777216 bytes"), "{message}")
        }
        other => panic!("expected a bad-reply error, got {other}"),
    }
    assert_eq!(client.call::<_, ByteBuf>(GROW, &1024u64, soon())?.len(), 1024);
    Ok(())
}

fn dropping_a_client_still_delivers_what_it_accepted(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = Client::connect_with(
        peer.transport(),
        info(),
        ClientConfig::default().buffering(Buffering::Unbounded),
    )?;
    // 100 one-way calls of 64 KiB each fill the socket, so most are still queued in the
    // client when it is dropped.
    let line = "x".repeat(64 * 1024);
    for _ in 0..100 {
        client.notify(LOG, &line, procwire_rpc::Wait::NonBlock)?;
    }
    drop(client);
    let client = connect(&mut peer);
    assert_eq!(client.call::<_, u64>(WAIT_LOGS, &100u64, soon())?, 100);
    Ok(())
}

fn a_client_that_reads_nothing_cannot_hold_up_a_stop(kind: Kind) -> Outcome {
    let peer = Peer::spawn_with_write_timeout(kind, 300);
    let mut stream = raw_stream(&peer);
    raw_handshake(&mut *stream);
    // Ask for far more reply bytes than any socket buffer holds, and read almost none.
    for id in 1..=64u64 {
        let mut frame = Envelope {
            id,
            kind: FrameKind::Call,
            method: GROW.id,
            timeout_us: None,
        }
        .frame();
        frame.encode(&(1u64 << 20))?;
        write_frame(&mut *stream, frame.payload());
    }
    let first = read_frame(&mut *stream).expect("the first reply");
    assert!(first.len() > 1 << 20);
    let exit = peer.stop_within(Duration::from_secs(30));
    assert_eq!(
        exit,
        Some(Some(0)),
        "the server stopped cleanly despite the stuck client"
    );
    drop(stream);
    Ok(())
}

fn peer_credentials_are_known_on_unix_sockets(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let pid: Option<i32> = client.call(PEER_PID, &(), soon())?;
    assert_eq!(pid, Some(std::process::id() as i32));
    Ok(())
}

// ---- Shared memory only: what the other transports cannot promise. ----

fn a_64_mib_echo_goes_through_rings_of_2_mib(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn_with_max_frame_len(kind, 80 << 20);
    let client = Client::connect_with(
        peer.transport(),
        info(),
        ClientConfig::default().max_frame_len(80 << 20),
    )?;
    let data = ByteBuf::from((0..64u32 << 20).map(|i| (i ^ (i >> 13)) as u8).collect::<Vec<u8>>());
    let back: ByteBuf = client.call(ECHO, &data, soon())?;
    assert!(back == data, "the 64 MiB echo came back different");
    Ok(())
}

/// CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn an_idle_connection_costs_no_cpu_on_either_side(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    assert_eq!(client.call::<_, i64>(ADD, &(1i64, 2i64), soon())?, 3);
    // The server's threads wait for requests; this thread waits for a reply that comes
    // only when released. Over the observation window neither side may burn CPU, as it
    // would if either polled the ring.
    let held = client.start::<_, bool>(HOLD, &4u64, soon())?;
    assert!(client.call::<_, bool>(WAIT_HELD, &4u64, soon())?);
    let server_before = cpu_ticks(peer.pid());
    let thread_before = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)?;
    let window = Duration::from_millis(500);
    let err = client
        .call::<_, bool>(HOLD, &5u64, Some(Instant::now() + window))
        .unwrap_err();
    assert!(matches!(err, RpcError::DeadlineExceeded { .. }), "{err}");
    let thread_after = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)?;
    let server_ticks = cpu_ticks(peer.pid()) - server_before;
    let micros = |t: nix::sys::time::TimeVal| Duration::from_micros(t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64);
    let used = |r: &nix::sys::resource::Usage| micros(r.user_time()) + micros(r.system_time());
    let waited = used(&thread_after) - used(&thread_before);
    assert!(
        waited < Duration::from_millis(25),
        "the waiting client thread used {waited:?} of CPU in {window:?}"
    );
    // A clock tick is 10 ms: allow one for the wake-ups the held calls themselves cost.
    assert!(
        server_ticks <= 1,
        "the idle server used {server_ticks} ticks of CPU in {window:?}"
    );
    client.call::<_, ()>(RELEASE, &4u64, soon())?;
    assert!(held.wait()?);
    Ok(())
}

/// Connects to an shm server as a hostile client would: takes the region and plays with its
/// indices (offsets from the layout in ARCHITECTURE.md).
fn a_corrupt_ring_index_costs_one_connection(kind: Kind) -> Outcome {
    use std::sync::atomic::AtomicU64;
    let mut peer = Peer::spawn(kind);
    let bystander = connect(&mut peer);
    let mut socket = std::os::unix::net::UnixStream::connect(peer.addr())?;
    let mut marker = [0u8; 6];
    let (_, fds) = procwire_rpc::shm::recv_fds(std::os::fd::AsFd::as_fd(&socket), &mut marker)?;
    let region = procwire_rpc::shm::Region::from_fd(fds.into_iter().next().expect("the region"))?;
    // Ring 0 (client to server): a tail far beyond any ring, then a kick on the socket.
    let tail: &AtomicU64 = region.atomic(256)?;
    tail.store(u64::MAX / 2, std::sync::atomic::Ordering::Release);
    socket.write_all(&[0])?;
    // The server refuses the connection: it closes the socket, and nothing else.
    socket.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut rest = Vec::new();
    match socket.read_to_end(&mut rest) {
        // A close with our kick unread reaches us as a reset.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the corrupt connection: {e}"),
    }
    assert_still_serving(&mut peer);
    assert_eq!(bystander.call::<_, i64>(ADD, &(1i64, 1i64), soon())?, 2);
    Ok(())
}

// ---- Bad input: raw bytes at a real server; one bad connection never costs another. ----

fn raw_stream(peer: &Peer) -> Box<dyn ReadWrite> {
    match peer.kind {
        Kind::Unix => Box::new(std::os::unix::net::UnixStream::connect(peer.addr()).expect("connect")),
        Kind::Tcp => Box::new(std::net::TcpStream::connect(peer.addr()).expect("connect")),
        _ => unreachable!("bad-input cases run on listeners"),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn write_frame(stream: &mut dyn ReadWrite, payload: &[u8]) {
    stream.write_all(&(payload.len() as u32).to_le_bytes()).unwrap();
    stream.write_all(payload).unwrap();
}

fn raw_handshake(stream: &mut dyn ReadWrite) {
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        service: SERVICE.into(),
        methods: info().methods,
    };
    write_frame(stream, &postcard::to_stdvec(&hello).unwrap());
    let welcome: Welcome = postcard::from_bytes(&read_frame(stream).expect("welcome")).unwrap();
    assert!(welcome.accepted);
}

/// Reads one frame; `None` at the end of the stream.
fn read_frame(stream: &mut dyn ReadWrite) -> Option<Vec<u8>> {
    let mut len = [0; 4];
    stream.read_exact(&mut len).ok()?;
    let mut payload = vec![0; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// Reads what the server says before it closes: the protocol complaint (id 0), then EOF.
fn expect_complaint_then_close(stream: &mut dyn ReadWrite, needle: &str) {
    let payload = read_frame(stream).expect("the server explains before closing");
    let (envelope, body) = Envelope::decode(&payload).unwrap();
    assert_eq!((envelope.id, envelope.kind), (0, FrameKind::Error));
    let fault: procwire_rpc::Fault = postcard::from_bytes(body).unwrap();
    assert_eq!(fault.kind, FaultKind::Protocol);
    assert!(fault.message.contains(needle), "{fault}");
    assert!(read_frame(stream).is_none(), "the server closes the connection");
}

fn assert_still_serving(peer: &mut Peer) {
    let client = connect(peer);
    assert_eq!(
        client
            .call::<_, i64>(ADD, &(20i64, 22i64), soon())
            .expect("a good client is served"),
        42
    );
}

fn oversized_length_prefix_costs_one_connection(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let bystander = connect(&mut peer);
    let mut stream = raw_stream(&peer);
    raw_handshake(&mut *stream);
    // Claims 4 GiB - 16: refused from the prefix alone, before any allocation.
    stream.write_all(&(u32::MAX - 15).to_le_bytes())?;
    expect_complaint_then_close(&mut *stream, "exceeds the maximum of 16777216 bytes");
    assert_still_serving(&mut peer);
    assert_eq!(bystander.call::<_, i64>(ADD, &(1i64, 1i64), soon())?, 2);
    Ok(())
}

fn truncated_frame_costs_one_connection(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let bystander = connect(&mut peer);
    let mut stream = raw_stream(&peer);
    raw_handshake(&mut *stream);
    stream.write_all(&100u32.to_le_bytes())?;
    stream.write_all(&[1, 2, 3, 4, 5])?;
    drop(stream);
    assert_still_serving(&mut peer);
    assert_eq!(bystander.call::<_, i64>(ADD, &(1i64, 1i64), soon())?, 2);
    Ok(())
}

fn garbage_before_handshake_costs_one_connection(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let mut stream = raw_stream(&peer);
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    // The prefix "GET " reads as a 542 MB length: refused, connection closed.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let mut stream = raw_stream(&peer);
    write_frame(&mut *stream, b"\x00\x01garbage that is no hello");
    let _ = stream.read_to_end(&mut rest);
    assert_still_serving(&mut peer);
    Ok(())
}

fn garbage_frame_after_handshake_costs_one_connection(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let mut stream = raw_stream(&peer);
    raw_handshake(&mut *stream);
    write_frame(&mut *stream, &[0xff; 12]);
    expect_complaint_then_close(&mut *stream, "undecodable frame");
    assert_still_serving(&mut peer);
    Ok(())
}

fn client_frames_of_server_kinds_cost_one_connection(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let mut stream = raw_stream(&peer);
    raw_handshake(&mut *stream);
    let mut frame = Envelope {
        id: 5,
        kind: FrameKind::Reply,
        method: 1,
        timeout_us: None,
    }
    .frame();
    frame.encode(&1i64)?;
    write_frame(&mut *stream, frame.payload());
    expect_complaint_then_close(&mut *stream, "unexpected Reply frame");
    assert_still_serving(&mut peer);
    Ok(())
}

// ---- Bad input from a server: the client fails the connection with a clear error. ----

fn evil(mode: &str, config: ClientConfig, expect: &str) -> Outcome {
    let mut peer = Peer::spawn_evil(mode);
    let client = Client::connect_with(peer.transport(), info(), config)?;
    let err = client.call::<_, i64>(ADD, &(1i64, 2i64), soon()).unwrap_err();
    assert!(err.to_string().contains(expect), "expected {expect:?} in: {err}");
    Ok(())
}

fn main() {
    if support::child_main() {
        return;
    }
    let args = Arguments::from_args();
    type Case = fn(Kind) -> Outcome;
    macro_rules! cases {
        ($($case:ident),* $(,)?) => { &[$((stringify!($case), $case as Case)),*] };
    }
    let every: &[(&str, Case)] = cases![
        calls_round_trip,
        large_payloads_round_trip,
        a_large_reply_of_bytes_is_the_buffer_it_was_received_into,
        many_threads_share_one_client,
        replies_are_matched_out_of_order,
        oneway_calls_arrive,
        deadline_is_enforced_and_the_connection_survives,
        nonblocking_receive_reports_pending_then_delivers,
        nonblocking_send_reports_would_block_when_the_queue_is_full,
        unknown_method_is_answered_and_the_connection_survives,
        undecodable_arguments_are_a_bad_request,
        a_panicking_handler_answers_with_an_error_and_the_server_lives,
        a_peer_that_dies_mid_call_fails_every_pending_call_promptly,
        a_call_the_server_lacks_or_has_changed_fails_unsent_naming_both_signatures,
        awaited_calls_share_a_connection_with_blocking_ones,
        an_awaited_call_to_a_peer_that_dies_fails_promptly,
        tasks_that_end_do_not_strand_the_calls_deferred_behind_them,
        blocking_calls_made_while_a_write_is_owed_write_it_before_waiting,
        a_client_of_another_service_is_refused_naming_both,
        graceful_stop_finishes_calls_in_flight,
        a_graceful_stop_says_stopped_and_that_unanswered_calls_did_not_run,
        a_reply_above_the_maximum_is_answered_with_an_error,
    ];
    // Cases that open a second connection to the same server.
    let listeners: &[(&str, Case)] = cases![
        dropping_a_client_still_delivers_what_it_accepted,
        callers_that_time_out_while_reading_hand_the_reading_on,
        a_call_outliving_its_local_runner_is_still_woken,
        an_executor_inside_a_local_runner_is_woken_for_its_calls,
        a_local_runner_inside_another_is_woken_for_its_calls,
        a_task_waiting_behind_a_busy_local_runners_watch_is_woken,
    ];
    let raw_streams: &[(&str, Case)] = cases![
        oversized_length_prefix_costs_one_connection,
        truncated_frame_costs_one_connection,
        garbage_before_handshake_costs_one_connection,
        garbage_frame_after_handshake_costs_one_connection,
        client_frames_of_server_kinds_cost_one_connection,
        a_client_that_reads_nothing_cannot_hold_up_a_stop,
        awaited_calls_made_on_waking_leave_in_one_write,
    ];
    let mut trials = Vec::new();
    for kind in ALL {
        for &(name, case) in every {
            trials.push(Trial::test(format!("{}::{name}", kind.name()), move || case(kind)));
        }
        let extra = [(kind.has_listener(), listeners), (kind.has_raw_stream(), raw_streams)];
        for &(name, case) in extra.into_iter().filter(|(has, _)| *has).flat_map(|(_, cases)| cases) {
            trials.push(Trial::test(format!("{}::{name}", kind.name()), move || case(kind)));
        }
    }
    trials.push(Trial::test("shm::a_64_mib_echo_goes_through_rings_of_2_mib", || {
        a_64_mib_echo_goes_through_rings_of_2_mib(Kind::Shm)
    }));
    trials.push(Trial::test(
        "shm::megabyte_echoes_between_two_cpus_come_back_intact",
        || megabyte_echoes_between_two_cpus_come_back_intact(Kind::Shm),
    ));
    trials.push(Trial::test("shm::a_corrupt_ring_index_costs_one_connection", || {
        a_corrupt_ring_index_costs_one_connection(Kind::Shm)
    }));
    trials.push(Trial::test(
        "shm::an_idle_connection_costs_no_cpu_on_either_side",
        || an_idle_connection_costs_no_cpu_on_either_side(Kind::Shm),
    ));
    trials.push(Trial::test(
        "unix::on_one_cpu_a_request_read_behind_a_blocking_call_is_served",
        || on_one_cpu_a_request_read_behind_a_blocking_call_is_served(Kind::Unix),
    ));
    trials.push(Trial::test(
        "unix::a_blocked_local_runner_polls_its_calls_connection_itself",
        || a_blocked_local_runner_polls_its_calls_connection_itself(Kind::Unix),
    ));
    trials.push(Trial::test(
        "unix::on_one_cpu_replies_to_requests_read_together_leave_in_one_write",
        || on_one_cpu_replies_to_requests_read_together_leave_in_one_write(Kind::Unix),
    ));
    trials.push(Trial::test(
        "unix::on_one_cpu_a_reply_held_back_is_not_held_up_by_a_call_that_blocks",
        || on_one_cpu_a_reply_held_back_is_not_held_up_by_a_call_that_blocks(Kind::Unix),
    ));
    trials.push(Trial::test(
        "unix::on_one_cpu_a_large_request_wakes_one_idle_thread",
        || on_one_cpu_a_large_request_wakes_one_idle_thread(Kind::Unix),
    ));
    trials.push(Trial::test(
        "unix::on_one_cpu_a_request_behind_blocking_calls_is_read_by_a_reserve_thread",
        || on_one_cpu_a_request_behind_blocking_calls_is_read_by_a_reserve_thread(Kind::Unix),
    ));
    trials.push(Trial::test(
        "unix::a_server_apart_from_its_client_looks_for_the_next_request_before_sleeping",
        || a_server_apart_from_its_client_looks_for_the_next_request_before_sleeping(Kind::Unix),
    ));
    trials.push(Trial::test("unix::peer_credentials_are_known_on_unix_sockets", || {
        peer_credentials_are_known_on_unix_sockets(Kind::Unix)
    }));
    let small = || ClientConfig::default().max_frame_len(1024);
    trials.push(Trial::test(
        "client::reply_to_unknown_request_id_fails_the_connection",
        move || evil("unknown-id", small(), "reply to unknown request id"),
    ));
    trials.push(Trial::test(
        "client::garbage_from_the_server_fails_the_connection",
        move || evil("garbage", small(), "undecodable frame"),
    ));
    trials.push(Trial::test(
        "client::a_reply_of_the_wrong_type_is_a_decode_error",
        move || evil("wrong-type", small(), "cannot decode the reply of `add`"),
    ));
    trials.push(Trial::test(
        "client::an_oversized_reply_fails_the_connection",
        move || evil("oversized", small(), "exceeds the maximum of 1024 bytes"),
    ));
    // Bad replies of bytes from a server: one server, no transport to vary.
    type Plain = fn() -> Outcome;
    macro_rules! plain {
        ($($case:ident),* $(,)?) => { [$((stringify!($case), $case as Plain)),*] };
    }
    let bad_bytes = plain![
        a_byte_string_longer_than_its_frame_is_a_decode_error,
        a_byte_string_of_absurd_length_is_a_decode_error_without_allocating_it,
        a_byte_string_shorter_than_its_frame_is_a_decode_error,
        a_byte_string_cut_short_fails_the_call_as_truncated,
        a_server_that_dies_inside_a_byte_string_fails_the_call_as_truncated,
    ];
    for (name, case) in bad_bytes {
        trials.push(Trial::test(format!("client::{name}"), case));
    }
    libtest_mimic::run(&args, trials).exit();
}

//! Hostile peers: each limit of `ServerConfig` against the peer it is for, with the server in
//! a real child process and a well-behaved client that must keep being served throughout.

#[allow(dead_code)]
#[macro_use]
#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use procwire_rpc::protocol::{Envelope, Fault, Hello, Kind as FrameKind, Welcome, MAGIC, PROTOCOL_VERSION};
use procwire_rpc::{Client, Frame};
use support::*;

type Outcome = Result<(), Failed>;

/// How long something that must happen may take, on a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn soon() -> Option<Instant> {
    Some(Instant::now() + PATIENCE)
}

fn good_client(peer: &mut Peer) -> Client {
    Client::connect(peer.transport(), info()).expect("the good client connects")
}

/// The good client still gets right answers.
fn still_served(client: &Client, round: i64) -> Outcome {
    let sum: i64 = client.call(ADD, &(round, 1i64), soon())?;
    assert_eq!(sum, round + 1, "the good client got a wrong answer");
    Ok(())
}

/// Reads one length-prefixed frame; `None` at the end of the stream.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0; 4];
    stream.read_exact(&mut len).ok()?;
    let mut payload = vec![0; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// A raw TCP connection that has completed the procwire handshake and will misbehave.
fn raw_connection(peer: &Peer) -> TcpStream {
    let mut stream = TcpStream::connect(peer.addr()).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut hello = Frame::new();
    hello
        .encode(&Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            service: SERVICE.into(),
            methods: info().methods,
        })
        .unwrap();
    stream.write_all(hello.as_length_prefixed()).unwrap();
    let welcome = read_frame(&mut stream).expect("a welcome");
    let welcome: Welcome = postcard::from_bytes(&welcome).expect("decode the welcome");
    assert!(welcome.accepted, "the handshake was refused");
    stream
}

/// Reads until the server closes the connection; returns the fault it gave as its reason.
fn wait_for_cut(stream: &mut TcpStream) -> Result<String, Failed> {
    let mut said = None;
    while let Some(frame) = read_frame(stream) {
        let (envelope, body) = Envelope::decode(&frame)?;
        if envelope.kind == FrameKind::Error && envelope.id == 0 {
            let fault: Fault = postcard::from_bytes(body)?;
            said = Some(fault.message);
        }
    }
    said.ok_or_else(|| "the server closed the connection without saying why".into())
}

fn calls_frame(id: u64, method: procwire_rpc::Method, args: &impl serde::Serialize) -> Vec<u8> {
    let mut frame = Envelope {
        id,
        kind: FrameKind::Call,
        method: method.id,
        timeout_us: None,
    }
    .frame_with(args)
    .unwrap();
    frame.as_length_prefixed().to_vec()
}

fn a_connection_past_the_limit_is_refused_and_the_good_client_goes_on() -> Outcome {
    let mut peer = Peer::spawn_with_limits(Kind::Tcp, "max_connections=3");
    let client = good_client(&mut peer);
    // Two more fill the listener: connections that say nothing count too.
    let squatters: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(peer.addr()).unwrap()).collect();
    still_served(&client, 1)?;
    let refused = {
        let deadline = Instant::now() + PATIENCE;
        // The squatters take their slots as the server accepts them; until then one more
        // connection may still be let in.
        loop {
            match Client::connect(peer.transport(), info()) {
                Err(e) => break e.to_string(),
                Ok(extra) => {
                    drop(extra);
                    assert!(Instant::now() < deadline, "never refused past the limit");
                }
            }
        }
    };
    assert!(refused.contains("refused the connection"), "{refused}");
    still_served(&client, 2)?;
    drop(squatters);
    // Their slots come back once the server sees them close.
    let deadline = Instant::now() + PATIENCE;
    let again = loop {
        match Client::connect(peer.transport(), info()) {
            Ok(again) => break again,
            Err(e) => assert!(Instant::now() < deadline, "slots never came back: {e}"),
        }
    };
    still_served(&again, 3)?;
    still_served(&client, 4)?;
    Ok(())
}

fn a_peer_that_trickles_a_frame_is_cut_by_the_frame_timeout() -> Outcome {
    let mut peer = Peer::spawn_with_limits(Kind::Tcp, "frame_timeout_ms=500");
    let client = good_client(&mut peer);
    let mut attacker = raw_connection(&peer);
    // A 1000-byte frame at one byte per 50 ms would take 50 s: only the timeout ends it.
    let frame = calls_frame(1, ECHO, &procwire_rpc::serde_bytes::ByteBuf::from(vec![1u8; 990]));
    let mut writer = attacker.try_clone()?;
    let trickle = std::thread::spawn(move || {
        for byte in frame {
            if writer.write_all(&[byte]).is_err() {
                return true;
            }
            // Pacing the hostile peer, not synchronisation.
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    for round in 0..5 {
        still_served(&client, round)?;
    }
    let said = wait_for_cut(&mut attacker)?;
    assert!(said.contains("frame timeout"), "{said}");
    assert!(trickle.join().unwrap(), "the whole frame was sent before the cut");
    still_served(&client, 99)?;
    Ok(())
}

/// A frame begun after calls were served: the calls left a spare thread asleep with no
/// deadline, and the thread that read the frame's first bytes left (a thread woken for
/// nothing while another waits does), so nothing timed the frame.
fn a_peer_that_stalls_mid_frame_after_a_call_is_cut_by_the_frame_timeout() -> Outcome {
    let mut peer = Peer::spawn_with_limits(Kind::Tcp, "frame_timeout_ms=500");
    let client = good_client(&mut peer);
    let mut attacker = raw_connection(&peer);
    for id in 1..=3 {
        attacker.write_all(&calls_frame(id, ADD, &(id as i64, 1i64)))?;
        let reply = read_frame(&mut attacker).ok_or("no reply to a good call")?;
        let (envelope, _) = Envelope::decode(&reply)?;
        assert_eq!(
            (envelope.id, envelope.kind),
            (id, FrameKind::Reply),
            "a good call's reply"
        );
    }
    // Every connection thread asleep, none of them timing anything: what the half frame
    // below finds.
    wait_until_all_connection_threads_sleep(peer.pid())?;
    // Half a frame, then nothing: only the frame timeout ends it.
    let frame = calls_frame(9, ECHO, &procwire_rpc::serde_bytes::ByteBuf::from(vec![1u8; 990]));
    attacker.write_all(&frame[..500])?;
    let said = wait_for_cut(&mut attacker)?;
    assert!(said.contains("frame timeout"), "{said}");
    still_served(&client, 1)?;
    Ok(())
}

fn an_idle_connection_is_cut_by_the_idle_timeout() -> Outcome {
    let mut peer = Peer::spawn_with_limits(Kind::Tcp, "idle_timeout_ms=2000");
    let mut attacker = raw_connection(&peer);
    let said = wait_for_cut(&mut attacker)?;
    assert!(said.contains("idle timeout"), "{said}");
    // A client that keeps talking is not idle.
    let client = good_client(&mut peer);
    still_served(&client, 1)?;
    Ok(())
}

fn a_peer_that_never_says_hello_is_closed_after_the_handshake_timeout() -> Outcome {
    let mut peer = Peer::spawn_with_limits(Kind::Tcp, "handshake_timeout_ms=500");
    let client = good_client(&mut peer);
    let mut silent = TcpStream::connect(peer.addr())?;
    // Well past the 500 ms it is allowed, and short of the 10 s default, which must not be
    // what ends it.
    silent.set_read_timeout(Some(Duration::from_secs(8)))?;
    let mut byte = [0; 1];
    match silent.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => return Err("the server said something to a peer that never said hello".into()),
        Err(e) => return Err(format!("the silent peer was not closed within 8 s: {e}").into()),
    }
    still_served(&client, 1)?;
    Ok(())
}

fn a_connection_runs_no_more_calls_at_once_than_its_limit() -> Outcome {
    let mut peer = Peer::spawn_with_limits(Kind::Tcp, "max_calls=1");
    let pipeliner = good_client(&mut peer);
    let other = good_client(&mut peer);
    let holder = {
        let pipeliner = pipeliner.clone();
        std::thread::spawn(move || pipeliner.call::<_, bool>(HOLD, &1u64, soon()))
    };
    assert!(other.call::<_, bool>(WAIT_HELD, &1u64, soon())?, "the first call runs");
    // A second call on the same connection: with one call allowed, it waits for the first.
    let (tx, rx) = std::sync::mpsc::channel();
    let adder = {
        let pipeliner = pipeliner.clone();
        std::thread::spawn(move || {
            let _ = tx.send(
                pipeliner
                    .call::<_, i64>(ADD, &(1i64, 2i64), soon())
                    .map_err(|e| e.to_string()),
            );
        })
    };
    // It must not be answered while the first runs (however long we look); another
    // connection is served meanwhile.
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_err(),
        "a second call ran beside the first"
    );
    still_served(&other, 1)?;
    other.call::<_, ()>(RELEASE, &1u64, soon())?;
    assert_eq!(rx.recv_timeout(PATIENCE)??, 3, "then the second runs");
    assert!(holder.join().expect("the holder")?, "the first was released");
    adder.join().expect("the adder");
    Ok(())
}

fn stalled_large_frames_past_the_budget_are_refused() -> Outcome {
    let mut peer = Peer::spawn_with_limits(Kind::Tcp, "frame_budget=4194304");
    let client = good_client(&mut peer);
    // Three peers each start a 3 MiB frame and stall: the server reserves a frame's length
    // when its prefix arrives, and only one fits in 4 MiB.
    let attackers: Vec<TcpStream> = (0..3).map(|_| raw_connection(&peer)).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut readers = Vec::new();
    for attacker in &attackers {
        let mut bytes = (3u32 << 20).to_le_bytes().to_vec();
        bytes.resize(1000, 0);
        (&*attacker).write_all(&bytes)?;
        let mut reader = attacker.try_clone()?;
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let _ = tx.send(wait_for_cut(&mut reader).map_err(|e| format!("{e:?}")));
        }));
    }
    still_served(&client, 1)?;
    for _ in 0..2 {
        let said = rx
            .recv_timeout(PATIENCE)
            .map_err(|_| "fewer than two frames were refused")??;
        assert!(said.contains("partly received frames"), "{said}");
    }
    still_served(&client, 2)?;
    // The third is held, not refused: it ends only when we end it.
    for attacker in &attackers {
        let _ = attacker.shutdown(std::net::Shutdown::Both);
    }
    let third = rx.recv_timeout(PATIENCE).map_err(|_| "the third reader never ended")?;
    assert!(
        !third
            .as_deref()
            .is_ok_and(|said| said.contains("partly received frames")),
        "all three frames were refused"
    );
    for reader in readers {
        reader.join().unwrap();
    }
    Ok(())
}

/// The inode of the server's end of the TCP connection whose client end is `client`.
fn server_socket_inode(client: &TcpStream) -> Result<String, Failed> {
    let port = format!(":{:04X}", client.local_addr()?.port());
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.len() > 9 && fields[2].ends_with(&port))
        .map(|fields| fields[9].to_owned())
        .ok_or_else(|| format!("no server socket for client port {port} in /proc/net/tcp").into())
}

/// How many descriptors of process `pid` refer to socket `inode`.
/// Waits until every connection thread (`procwire-conn`) of server `pid` sleeps in
/// `epoll_wait`, as the kernel reports it: the state a request finds after earlier ones.
fn wait_until_all_connection_threads_sleep(pid: u32) -> Outcome {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut asleep = 0;
        let mut awake = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.filter_map(Result::ok) {
            let read = |name: &str| std::fs::read_to_string(task.path().join(name)).unwrap_or_default();
            if read("comm").trim() != "procwire-conn" {
                continue;
            }
            match read("wchan").contains("epoll_wait") {
                true => asleep += 1,
                false => awake += 1,
            }
        }
        if asleep > 0 && awake == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("connection threads never all slept ({awake} awake)").into());
        }
        // Polling /proc, which has no event to wait on.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The connection threads (`procwire-conn`) of server `pid`.
fn connection_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| {
        tasks
            .filter_map(Result::ok)
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == "procwire-conn")
            })
            .count()
    })
}

fn the_threads_a_burst_of_calls_started_end_after_the_spare_thread_timeout() -> Outcome {
    let mut peer = Peer::spawn_with_limits(Kind::Tcp, "spare_thread_timeout_ms=2000");
    let client = good_client(&mut peer);
    // Four slow calls at once: the connection runs each on a thread of its own.
    let slow: Vec<_> = (1..=4u64)
        .map(|token| {
            let client = client.clone();
            std::thread::spawn(move || client.call::<_, u64>(SLOW, &(token, 200u64), soon()))
        })
        .collect();
    for token in 1..=4u64 {
        assert!(client.call::<_, bool>(WAIT_HELD, &token, soon())?, "call {token} runs");
    }
    for call in slow {
        assert_eq!(call.join().unwrap()?, 200, "a slow call's reply");
    }
    // Nothing more arrives: the burst's threads all go to sleep, and only the spare thread
    // timeout ends them.
    wait_until_all_connection_threads_sleep(peer.pid())?;
    let burst = connection_threads(peer.pid());
    assert!(burst > 1, "{burst} connection threads after 4 calls at once");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = connection_threads(peer.pid());
        if left == 1 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{left} of the burst's {burst} connection threads still run").into());
        }
        // Polling /proc, which has no event to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its only connection keeps one thread, and still serves, several calls at once too.
    let again: Vec<_> = (0..4i64)
        .map(|round| {
            let client = client.clone();
            std::thread::spawn(move || client.call::<_, i64>(ADD, &(round, 1i64), soon()))
        })
        .collect();
    for (round, call) in again.into_iter().enumerate() {
        assert_eq!(call.join().unwrap()?, round as i64 + 1);
    }
    Ok(())
}

fn descriptors_of(pid: u32, inode: &str) -> usize {
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .filter(|entry| std::fs::read_link(entry.path()).is_ok_and(|link| link.to_string_lossy() == target))
            .count()
    })
}

fn a_peer_that_pipelines_and_never_reads_loses_its_connection_after_the_write_timeout() -> Outcome {
    let mut peer = Peer::spawn_with_limits(Kind::Tcp, "write_timeout_ms=300");
    let client = good_client(&mut peer);
    let attacker = raw_connection(&peer);
    let inode = server_socket_inode(&attacker)?;
    assert!(
        descriptors_of(peer.pid(), &inode) > 0,
        "the server holds the connection"
    );
    let mut writer = attacker.try_clone()?;
    // 64 calls each asking for 1 MiB back, and never a read: the replies fill the socket,
    // the connection's threads all wait to write, and the write timeout gives up on it.
    for id in 1..=64u64 {
        writer.write_all(&calls_frame(id, GROW, &(1u64 << 20)))?;
    }
    // The give-up closes the sending half's descriptor either way; the receiving half's
    // closes only once the connection's last thread has ended.
    let deadline = Instant::now() + PATIENCE;
    loop {
        still_served(&client, 1)?;
        let held = descriptors_of(peer.pid(), &inode);
        if held == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the server still holds {held} descriptor(s) of the connection").into());
        }
        // Polling /proc, which has no event to wait on.
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(attacker);
    still_served(&client, 2)?;
    Ok(())
}

test_main![
    a_connection_past_the_limit_is_refused_and_the_good_client_goes_on,
    a_peer_that_trickles_a_frame_is_cut_by_the_frame_timeout,
    a_peer_that_stalls_mid_frame_after_a_call_is_cut_by_the_frame_timeout,
    an_idle_connection_is_cut_by_the_idle_timeout,
    the_threads_a_burst_of_calls_started_end_after_the_spare_thread_timeout,
    a_peer_that_never_says_hello_is_closed_after_the_handshake_timeout,
    a_connection_runs_no_more_calls_at_once_than_its_limit,
    stalled_large_frames_past_the_budget_are_refused,
    a_peer_that_pipelines_and_never_reads_loses_its_connection_after_the_write_timeout,
];

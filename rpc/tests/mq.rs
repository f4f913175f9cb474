//! The kernel's message queue limits, hit across real processes: each error names the knob,
//! its value and what was asked for, where the kernel's own says only EINVAL, ENOSPC or
//! EMFILE. And the server's limits over `mq:` against hostile peers that speak to the queues
//! by hand: a frame begun and never finished, a connection that goes quiet.

#[allow(dead_code)]
#[macro_use]
#[path = "support/mod.rs"]
mod support;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use procwire_rpc::protocol::{Envelope, Fault, Hello, Kind as FrameKind, Welcome, MAGIC, PROTOCOL_VERSION};
use procwire_rpc::transport::mq::{self, Queue};
use procwire_rpc::{Client, ErrorChain, Frame, Wait};
use support::*;

/// How long something that must happen may take, on a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// A connection to the mq listener at `path` made by hand: the setup socket and the two
/// queues, after the procwire handshake, ready to misbehave.
struct RawMq {
    socket: UnixStream,
    tx: Queue,
    rx: Queue,
}

impl RawMq {
    fn connect(path: &str) -> Result<RawMq, Failed> {
        let mut socket = UnixStream::connect(path)?;
        socket.set_read_timeout(Some(PATIENCE))?;
        let mut setup = Vec::new();
        let mut byte = [0u8; 1];
        while setup.iter().filter(|b| **b == b'\n').count() < 2 {
            socket.read_exact(&mut byte)?;
            setup.push(byte[0]);
        }
        // "PWMQ\x01", then the client-to-server and server-to-client queue names.
        let text = std::str::from_utf8(&setup[5..])?;
        let mut names = text.lines();
        let (c2s, s2c) = (names.next().ok_or("no queue")?, names.next().ok_or("no queue")?);
        let raw = RawMq {
            tx: Queue::open(c2s)?,
            rx: Queue::open(s2c)?,
            socket,
        };
        let mut hello = Frame::new();
        hello.encode(&Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            service: SERVICE.into(),
            methods: info().methods,
        })?;
        raw.tx.send(hello.as_length_prefixed(), Wait::Block)?;
        let welcome = raw.rx.recv(Wait::timeout(PATIENCE))?;
        let welcome: Welcome = postcard::from_bytes(&welcome[4..])?;
        assert!(welcome.accepted, "the handshake was refused");
        Ok(raw)
    }

    /// Waits until the server ends the connection (its setup socket closes); returns the
    /// fault it gave as its reason.
    fn wait_for_cut(&mut self) -> Result<String, Failed> {
        let deadline = Instant::now() + PATIENCE;
        let mut said = None;
        self.socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        loop {
            assert!(Instant::now() < deadline, "the server never cut the connection");
            if let Ok(message) = self.rx.recv(Wait::NonBlock) {
                let (envelope, body) = Envelope::decode(&message[4..])?;
                if envelope.kind == FrameKind::Error && envelope.id == 0 {
                    let fault: Fault = postcard::from_bytes(body)?;
                    said = Some(fault.message);
                }
                continue;
            }
            // The read timeout paces the loop; end of file is the cut.
            match self.socket.read(&mut [0u8; 1]) {
                Ok(0) => break,
                Ok(_) => return Err("bytes on the setup socket after the setup".into()),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // What was queued before the close.
        while let Ok(message) = self.rx.recv(Wait::NonBlock) {
            let (envelope, body) = Envelope::decode(&message[4..])?;
            if envelope.kind == FrameKind::Error && envelope.id == 0 {
                said = Some(postcard::from_bytes::<Fault>(body)?.message);
            }
        }
        said.ok_or_else(|| "the server closed the connection without saying why".into())
    }
}

fn still_served(client: &Client, round: i64) -> Result<(), Failed> {
    let sum: i64 = client.call(ADD, &(round, 1i64), Some(Instant::now() + PATIENCE))?;
    assert_eq!(sum, round + 1);
    Ok(())
}

fn a_peer_that_begins_a_frame_over_mq_and_stalls_is_cut_by_the_frame_timeout() -> Result<(), Failed> {
    let mut peer = Peer::spawn_with_limits(Kind::Mq, "frame_timeout_ms=500");
    let client = Client::connect(peer.transport(), info())?;
    let mut attacker = RawMq::connect(peer.addr())?;
    // The first message of a frame of 10 000 bytes, and nothing after it.
    let mut first = 10_000u32.to_le_bytes().to_vec();
    first.extend_from_slice(&[7u8; 100]);
    attacker.tx.send(&first, Wait::Block)?;
    for round in 0..3 {
        still_served(&client, round)?;
    }
    let said = attacker.wait_for_cut()?;
    assert!(said.contains("frame timeout"), "{said}");
    still_served(&client, 99)?;
    Ok(())
}

fn an_idle_connection_over_mq_is_cut_by_the_idle_timeout() -> Result<(), Failed> {
    let mut peer = Peer::spawn_with_limits(Kind::Mq, "idle_timeout_ms=1000");
    let mut attacker = RawMq::connect(peer.addr())?;
    let said = attacker.wait_for_cut()?;
    assert!(said.contains("idle timeout"), "{said}");
    let client = Client::connect(peer.transport(), info())?;
    still_served(&client, 1)?;
    Ok(())
}

fn a_server_over_its_rlimit_msgqueue_refuses_the_client_naming_the_limit() -> Result<(), Failed> {
    // 1000 bytes hold no queue of 4 messages of 8 KiB.
    let peer = Peer::spawn_with_env(Kind::Mq, &[(RLIMIT_MSGQUEUE_ENV, "1000".into())]);
    let err = mq::connect(peer.addr()).unwrap_err();
    let text = ErrorChain(&err).to_string();
    let attrs = mq::Options::default().attrs;
    let asked = mq::limits::cost(attrs);
    assert!(
        text.contains(&format!(
            "its {asked} bytes ({} messages of {} bytes, and the kernel's bookkeeping) do not fit in what this \
             user's queues leave of RLIMIT_MSGQUEUE = 1000 bytes",
            attrs.max_messages, attrs.message_size
        )),
        "{text}"
    );
    // The listener lives on: the limit costs each connection, not the server.
    let again = ErrorChain(&mq::connect(peer.addr()).unwrap_err()).to_string();
    assert!(again.contains("RLIMIT_MSGQUEUE = 1000 bytes"), "{again}");
    assert_eq!(peer.stop(), Some(0));
    Ok(())
}

fn the_queue_past_queues_max_is_refused_naming_the_knob_and_its_value() -> Result<(), Failed> {
    let out = run_child("mq-fill", &[]);
    if let Some(why) = out.strip_prefix("skip: ") {
        println!("skipped: {why}");
        return Ok(());
    }
    let (made, refusal) = out
        .strip_prefix("made ")
        .and_then(|rest| rest.split_once(" refused "))
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    // A fresh IPC namespace starts with queues_max = 256; a process with CAP_SYS_RESOURCE
    // is not held to it, and meets RLIMIT_MSGQUEUE instead.
    if refusal.contains("RLIMIT_MSGQUEUE") {
        println!("queues_max does not bind this process (CAP_SYS_RESOURCE): {refusal}");
        return Ok(());
    }
    assert!(
        refusal.contains(&format!(
            "the system already holds /proc/sys/fs/mqueue/queues_max = {made} queues"
        )),
        "after {made}: {refusal}"
    );
    Ok(())
}

test_main![
    a_peer_that_begins_a_frame_over_mq_and_stalls_is_cut_by_the_frame_timeout,
    an_idle_connection_over_mq_is_cut_by_the_idle_timeout,
    a_server_over_its_rlimit_msgqueue_refuses_the_client_naming_the_limit,
    the_queue_past_queues_max_is_refused_naming_the_knob_and_its_value,
];

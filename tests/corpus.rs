//! The committed fuzz corpus (`fuzz/corpus/TARGET/*`), replayed on stable Rust through the
//! same entry points the cargo-fuzz targets call (`procwire::rpc::fuzz`,
//! `procwire::supervisor::fuzz`), so CI checks every input without nightly: none may panic.
//!
//! `cargo test --test corpus -- --ignored` writes the seed inputs again (made with the
//! library's own encoders, so they stay valid as the wire format changes).

use std::path::{Path, PathBuf};

use procwire::rpc::fuzz;
use procwire::rpc::protocol::{Envelope, Fault, FaultKind, Hello, Kind, Welcome, MAGIC, PROTOCOL_VERSION};
use procwire::rpc::Frame;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

/// Runs every input of `target` through `entry`; there must be some.
fn replay(target: &str, entry: fn(&[u8])) {
    let dir = corpus(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    for input in inputs {
        let bytes = std::fs::read(&input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        // A panic names the input, so that it can be run under the fuzzer.
        eprintln!("{}", input.display());
        entry(&bytes);
    }
}

#[test]
fn every_committed_frame_input_is_read_and_decoded_without_a_panic() {
    replay("frames", fuzz::frames);
}

#[test]
fn every_committed_handshake_input_is_answered_or_refused_without_a_panic() {
    replay("handshake", fuzz::handshake);
}

#[test]
fn every_committed_shared_ring_is_checked_and_read_without_a_panic() {
    replay("shm_ring", fuzz::shm_ring);
}

#[test]
fn every_committed_manifest_is_parsed_or_refused_without_a_panic() {
    replay("manifest", procwire::supervisor::fuzz::manifest);
}

fn prefixed(mut frame: Frame) -> Vec<u8> {
    frame.as_length_prefixed().to_vec()
}

fn envelope(id: u64, kind: Kind, body: &impl serde::Serialize) -> Vec<u8> {
    let frame = Envelope {
        id,
        kind,
        method: 0x1234,
        timeout_us: Some(1000),
    }
    .frame_with(body)
    .expect("encode");
    prefixed(frame)
}

fn encoded(value: &impl serde::Serialize) -> Vec<u8> {
    let mut frame = Frame::new();
    frame.encode(value).expect("encode");
    prefixed(frame)
}

/// A connection's region as the server writes it (see rpc/src/transport/shm/ring.rs): the
/// header, then `frames` in the server-to-client ring.
fn ring_with(frames: &[u8], tail: u64) -> Vec<u8> {
    let capacity = 4096usize;
    let mut region = vec![0u8; 4096 + 2 * capacity];
    region[0..8].copy_from_slice(b"PWSHMRNG");
    region[8..12].copy_from_slice(&1u32.to_le_bytes());
    region[16..24].copy_from_slice(&(capacity as u64).to_le_bytes());
    // Ring 1's control block at 512: tail at +0, head at +128; its data after ring 0's.
    region[512..520].copy_from_slice(&tail.to_le_bytes());
    let data = 4096 + capacity;
    region[data..data + frames.len()].copy_from_slice(frames);
    region
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_the_seed_corpus() {
    let call = envelope(1, Kind::Call, &7u64);
    let fault = envelope(
        0,
        Kind::Error,
        &Fault::new(FaultKind::Protocol, "a complaint before closing"),
    );
    let hello = encoded(&Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        service: "fuzz".into(),
        methods: Vec::new(),
    });
    let welcome = encoded(&Welcome {
        accepted: true,
        version: PROTOCOL_VERSION,
        service: "fuzz".into(),
        methods: Vec::new(),
    });
    let oversized = [0xff, 0xff, 0xff, 0x7f, 1, 2, 3].to_vec();
    let seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("frames", "call", call.clone()),
        (
            "frames",
            "call-reply-cancel",
            [
                call.clone(),
                envelope(1, Kind::Reply, &8u64),
                envelope(1, Kind::Cancel, &()),
            ]
            .concat(),
        ),
        ("frames", "fault", fault.clone()),
        ("frames", "oversized-prefix", oversized.clone()),
        ("frames", "truncated", call[..call.len() - 1].to_vec()),
        (
            "frames",
            "large-frame",
            prefixed(Frame::from_payload(&vec![0x41; 70_000])),
        ),
        ("handshake", "hello-then-call", [hello.clone(), call.clone()].concat()),
        ("handshake", "welcome", welcome.clone()),
        (
            "handshake",
            "hello-other-service",
            encoded(&Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION + 1,
                service: "other".into(),
                methods: Vec::new(),
            }),
        ),
        ("handshake", "not-a-hello", fault.clone()),
        ("shm_ring", "one-frame", ring_with(&call, call.len() as u64)),
        ("shm_ring", "tail-past-capacity", ring_with(&call, 1 << 40)),
        ("shm_ring", "oversized-prefix", ring_with(&oversized, 4)),
        ("shm_ring", "bad-magic", vec![0u8; 12288]),
        (
            "manifest",
            "quickstart",
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml")).unwrap(),
        ),
        (
            "manifest",
            "every-section",
            br#"[supervisor]
name = "fuzz"
shutdown_timeout = "5s"

[shared.counters]
size = "1MiB"

[pool.web]
command = ["./web", "--port", "{index}"]
workers = 2
ready = "tcp:127.0.0.1:8080"
listen = ["unix:run/web-{index}.sock"]
allow_uids = [0, "root"]
allow_gids = ["root"]
mode = "0660"
backoff = { initial = "10ms", max = "1s", factor = 1.5, jitter = 0.2 }
limit = { restarts = 3, within = "10s", then = "shutdown" }
env = { RUST_LOG = "info" }
rlimits = { nofile = 1024 }
stdout = "file:web.log"
log_rotate = { size = "1MiB", keep = 2 }
shared = ["counters"]
forward = ["HUP", "USR1"]
umask = "027"

[pool.job]
command = ["./migrate"]
restart = "never"
after = { web = "ready" }
"#
            .to_vec(),
        ),
        ("manifest", "not-toml", b"[pool.web\ncommand = ".to_vec()),
    ];
    for (target, name, bytes) in seeds {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

//! Entry points for fuzzing: each takes arbitrary bytes as a hostile peer would send or
//! write them and runs them through the code that meets them in production. The cargo-fuzz
//! targets in `fuzz/` and the corpus replay in the normal test suite (`tests/corpus.rs`)
//! call these same functions. None may panic or allocate without bound, whatever the bytes.
//!
//! Not part of the API: hidden from the docs and free to change.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use crate::client::reply::decode_body;
use crate::protocol::{decode_exact, Envelope, Fault, Hello, Kind, Welcome};
use crate::service::{CallContext, Service, ServiceInfo};
use crate::transport::{unix, Payload, Transport};
use crate::{Fault as ServiceFault, Frame, Wait};

/// The largest input the entry points look at: what one socket buffer holds, so that writing
/// it never waits for a reader.
pub const MAX_INPUT: usize = 64 << 10;

/// The largest frame the fuzzed receivers accept (a larger prefix must be refused before
/// anything is allocated, which is part of what is fuzzed).
const MAX_FRAME: usize = 1 << 20;

/// A transport whose peer has sent `bytes` and closed its sending side; the peer's socket,
/// which takes (and drops) what we answer, lives as long as the returned one.
fn fed(bytes: &[u8]) -> (Transport, UnixStream) {
    let (mut peer, ours) = UnixStream::pair().expect("a socketpair");
    peer.write_all(&bytes[..bytes.len().min(MAX_INPUT)])
        .expect("the input fits the socket buffer");
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut transport = unix::from_stream(ours, "fuzz").expect("wrap the socket");
    transport.set_max_frame_len(MAX_FRAME);
    (transport, peer)
}

/// Decodes one frame's payload as each side would: the envelope, then its body by kind.
fn decode_payload(payload: &[u8]) {
    if let Ok((envelope, body)) = Envelope::decode(payload) {
        match envelope.kind {
            Kind::Error => drop(decode_exact::<Fault>(body)),
            Kind::Call | Kind::OneWay | Kind::Reply | Kind::Cancel => drop(decode_exact::<u64>(body)),
        }
    }
    let _ = decode_exact::<Hello>(payload);
    let _ = decode_exact::<Welcome>(payload);
}

/// The stream transport's frame reader (length prefix, limit, budget) and the decoders of
/// every frame it yields.
pub fn frames(bytes: &[u8]) {
    let (mut transport, _peer) = fed(bytes);
    while let Ok(payload) = transport.recv(Wait::NonBlock) {
        decode_payload(&payload);
    }
    // As a client reads replies: a large one may be split before a trailing byte string,
    // and is decoded as the types that take the split bytes, and as one that does not.
    let (mut transport, _peer) = fed(bytes);
    while let Ok(payload) = transport.receiver.recv_payload(Wait::NonBlock) {
        let whole = Payload::Whole(payload.head().to_vec());
        let at = Envelope::decode(payload.head()).map_or(0, |(_, body)| payload.head().len() - body.len());
        let _ = decode_body::<serde_bytes::ByteBuf>(payload, at);
        let _ = decode_body::<String>(whole, at);
    }
}

/// A service with no methods, to be handshaken with.
#[derive(Debug)]
struct Nothing;

impl Service for Nothing {
    fn info(&self) -> ServiceInfo {
        ServiceInfo::new("fuzz")
    }

    fn method_name(&self, _: u32) -> Option<&'static str> {
        None
    }

    fn call(&self, _: &CallContext, _: &[u8]) -> Result<Frame, ServiceFault> {
        Err(ServiceFault::new(crate::FaultKind::UnknownMethod, "no methods"))
    }
}

/// Both sides of the handshake against a peer that sends `bytes`: the server's (reading a
/// hello) and the client's (reading a welcome).
pub fn handshake(bytes: &[u8]) {
    let timeout = Duration::from_secs(5);
    let (mut transport, _peer) = fed(bytes);
    let _ = crate::server::fuzz_handshake(&mut transport, &Arc::new(Nothing), timeout);
    let (mut transport, _peer) = fed(bytes);
    let _ = crate::client::fuzz_handshake(&mut transport, &Nothing.info(), timeout);
}

/// The shared-memory transport's receiver over a region whose every byte the peer wrote:
/// `bytes` are the region's first bytes (header, ring controls, data). The header is checked,
/// then frames are taken from the client-to-server ring until it has none or is refused.
pub fn shm_ring(bytes: &[u8]) {
    crate::transport::shm::fuzz_receive(bytes, MAX_FRAME, decode_payload);
}

/// The shared region a shared-memory topic's subscriber reads, for a test's hostile
/// subscriber to scribble on.
pub fn shm_topic_region<T: serde::de::DeserializeOwned>(
    subscriber: &crate::topic::shm::Subscriber<T>,
) -> &crate::shm::Region {
    subscriber.region()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_frame() -> Vec<u8> {
        let mut frame = Envelope {
            id: 1,
            kind: Kind::Call,
            method: 9,
            timeout_us: None,
        }
        .frame_with(&7u64)
        .unwrap();
        frame.as_length_prefixed().to_vec()
    }

    /// The entry points reach real frames, so that a corpus replay is not vacuous.
    #[test]
    fn fed_bytes_come_out_as_the_frames_they_hold() {
        let frame = call_frame();
        let (mut transport, _peer) = fed(&[frame.clone(), frame.clone()].concat());
        assert_eq!(transport.recv(Wait::NonBlock).unwrap(), frame[4..]);
        assert_eq!(transport.recv(Wait::NonBlock).unwrap(), frame[4..]);
        assert!(transport.recv(Wait::NonBlock).is_err(), "then the end");
    }

    #[test]
    fn a_ring_written_as_a_server_writes_it_yields_its_frame() {
        let frame = call_frame();
        let capacity = 4096usize;
        let mut region = vec![0u8; 4096 + 2 * capacity];
        region[0..8].copy_from_slice(b"PWSHMRNG");
        region[8..12].copy_from_slice(&2u32.to_le_bytes());
        region[16..24].copy_from_slice(&(capacity as u64).to_le_bytes());
        region[512..520].copy_from_slice(&(frame.len() as u64).to_le_bytes());
        region[4096 + capacity..4096 + capacity + frame.len()].copy_from_slice(&frame);
        let mut got = Vec::new();
        crate::transport::shm::fuzz_receive(&region, MAX_FRAME, |p| got.push(p.to_vec()));
        assert_eq!(got, [frame[4..].to_vec()]);
    }
}

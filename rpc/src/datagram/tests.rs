//! Datagrams within one process; across processes in `rpc/tests/datagram.rs`.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::{decode_args, CallContext, Fault, FaultKind, Frame, Method, MethodSignature, Service, ServiceInfo};

const NOTE: Method = Method::new(1, "note");

/// The notes service with `note` of `signature`.
fn notes_info(signature: &str) -> ServiceInfo {
    ServiceInfo::new("notes").with_method(MethodSignature::new(NOTE, signature))
}

/// Forwards each note to a channel.
struct Notes(Mutex<mpsc::Sender<String>>);

impl Service for Notes {
    fn info(&self) -> ServiceInfo {
        notes_info("fn note(String)")
    }
    fn method_name(&self, id: u32) -> Option<&'static str> {
        (id == NOTE.id).then_some(NOTE.name)
    }
    fn call(&self, ctx: &CallContext, args: &[u8]) -> Result<Frame, Fault> {
        assert!(ctx.is_oneway());
        match ctx.method() {
            1 => {
                let (note,): (String,) = decode_args(ctx, args)?;
                let _ = self.0.lock().unwrap().send(note);
                ctx.reply(&())
            }
            m => Err(Fault::new(FaultKind::UnknownMethod, format!("no method {m}"))),
        }
    }
}

fn notes() -> (Notes, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    (Notes(Mutex::new(tx)), rx)
}

#[test]
fn a_datagram_above_the_limit_is_refused_at_the_sender_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.sock");
    let (service, rx) = notes();
    let info = service.info();
    let server = serve(Receiver::bind_unix(&path).unwrap(), service).unwrap();
    let mut sender = Sender::unix(&path, info.clone()).unwrap();
    sender.set_max_datagram(100);
    let err = sender.send(NOTE, &("x".repeat(100),)).unwrap_err();
    assert!(
        err.to_string()
            .contains("is larger than the limit of 100 bytes; nothing was sent"),
        "{err}"
    );
    sender.send(NOTE, &("hello".to_owned(),)).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "hello");
    // A datagram of a method with another signature is dropped and counted; the server
    // goes on.
    Sender::unix(&path, notes_info("fn note(u64)"))
        .unwrap()
        .send(NOTE, &("stranger".to_owned(),))
        .unwrap();
    sender.send(NOTE, &("after".to_owned(),)).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "after");
    let stats = server.stop();
    assert_eq!((stats.received, stats.handled, stats.wrong_service), (3, 2, 1));
}

#[test]
fn udp_carries_a_call_and_a_unix_send_with_no_receiver_says_so() {
    let (service, rx) = notes();
    let info = service.info();
    let receiver = Receiver::bind_udp("127.0.0.1:0").unwrap();
    let addr = receiver.udp_addr().unwrap();
    let _server = serve(receiver, service).unwrap();
    let sender = Sender::udp(addr, info.clone()).unwrap();
    assert_eq!(sender.max_datagram(), DEFAULT_UDP_MAX);
    sender.send(NOTE, &("over udp".to_owned(),)).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "over udp");
    let dir = tempfile::tempdir().unwrap();
    let err = Sender::unix(dir.path().join("absent.sock"), info)
        .unwrap()
        .send(NOTE, &("lost".to_owned(),))
        .unwrap_err();
    assert!(matches!(err, DatagramError::NoReceiver { .. }), "{err}");
}

#[test]
fn a_full_unix_receiver_makes_a_nonblocking_sender_wait_not_lose() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.sock");
    let mut receiver = Receiver::bind_unix(&path).unwrap();
    let mut sender = Sender::unix(&path, notes_info("fn note(String)")).unwrap();
    sender.set_timeout(Some(Duration::ZERO));
    let mut sent = 0u32;
    let err = loop {
        match sender.send(NOTE, &(sent.to_string(),)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000, "the receiver's queue never filled");
    };
    assert!(matches!(err, DatagramError::WouldBlock { .. }), "{err}");
    // Every datagram taken is there, in order.
    for i in 0..sent {
        let datagram = receiver.recv(crate::Wait::NonBlock).unwrap().to_vec();
        let (_, payload) = parse(&datagram).unwrap();
        let (_, args) = crate::protocol::Envelope::decode(payload).unwrap();
        let (note,): (String,) = postcard::from_bytes(args).unwrap();
        assert_eq!(note, i.to_string());
    }
}

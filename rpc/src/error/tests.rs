//! What errors say when printed with `{}`: their causes, their timeouts, the application's
//! own words.

use std::time::Duration;

use super::*;
use crate::client::{Client, ClientConfig};
use crate::pool::Pool;
use crate::service::ServiceInfo;
use crate::transport::unix;
use crate::typed::CallError;

#[test]
fn a_connect_failure_printed_with_braces_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix:{}", dir.path().join("nobody.sock").display());
    let pool = Pool::new(ServiceInfo::new("calc"), [endpoint.clone()], ClientConfig::default());
    let err = pool.call("add", false, None, |_, _| Ok(())).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "connect on {endpoint} failed: No such file or directory (os error 2)"
        )),
        "{text}"
    );
}

#[test]
fn a_transport_failure_kept_as_text_keeps_its_os_error() {
    let source = io::Error::from_raw_os_error(nix::errno::Errno::ECONNRESET as i32);
    let text = chain(&TransportError::io("read", "unix:/x.sock", source));
    assert_eq!(
        text,
        "read on unix:/x.sock failed: Connection reset by peer (os error 104)"
    );
}

#[test]
fn a_handshake_that_times_out_says_how_long_it_was_allowed() {
    // The other end of the pair never answers the hello.
    let (_silent, ours) = unix::pair().unwrap();
    let config = ClientConfig::default().handshake_timeout(Duration::from_millis(50));
    let err = Client::connect_with(ours, ServiceInfo::new("calc"), config).unwrap_err();
    assert!(
        matches!(&err, RpcError::Handshake(HandshakeError::TimedOut { timeout, .. }) if *timeout == Duration::from_millis(50)),
        "{err:?}"
    );
    assert!(err.to_string().ends_with("did not complete within 50ms"), "{err}");
}

#[test]
fn a_handshake_that_fails_in_the_transport_prints_the_transport_failure_too() {
    let (theirs, ours) = unix::pair().unwrap();
    drop(theirs);
    let err = Client::connect(ours, ServiceInfo::new("calc")).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("handshake with unix:socketpair failed: "), "{text}");
    assert!(text.len() > "handshake with unix:socketpair failed: ".len(), "{text}");
    // The cause is also the source, for reporters that walk the chain.
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn a_codec_failure_prints_the_codec_error() {
    let err = RpcError::Decode {
        method: "add",
        peer: "unix:/x.sock".into(),
        source: postcard::Error::DeserializeUnexpectedEnd,
    };
    assert_eq!(
        err.to_string(),
        format!(
            "cannot decode the reply of `add` from unix:/x.sock: {}",
            postcard::Error::DeserializeUnexpectedEnd
        )
    );
}

#[derive(Debug)]
enum DivError {
    DivideByZero,
}

impl std::fmt::Display for DivError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot divide by zero")
    }
}

#[test]
fn an_application_error_prints_with_its_own_display() {
    let err: CallError<DivError> = CallError::Application(DivError::DivideByZero);
    assert_eq!(err.to_string(), "cannot divide by zero");
    assert_eq!(format!("{err:?}"), "Application(DivideByZero)");
}

#[test]
fn a_failed_call_behind_a_call_error_still_prints_its_causes() {
    let source = TransportError::io("write", "unix:/x.sock", io::Error::from_raw_os_error(32));
    let err: CallError<DivError> = CallError::Rpc(RpcError::TooLarge { method: "div", source });
    assert_eq!(
        err.to_string(),
        "call to `div` is too large to send: write on unix:/x.sock failed: Broken pipe (os error 32)"
    );
}

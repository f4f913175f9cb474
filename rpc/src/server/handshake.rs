//! The server's side of the opening handshake: the client's hello, checked against the
//! service (protocol version and service name), answered with a welcome listing the
//! server's method signatures.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{HandshakeError, Identity};
use crate::protocol::{Frame, Hello, Welcome, MAGIC, PROTOCOL_VERSION};
use crate::service::Service;
use crate::transport::Transport;
use crate::wait::Wait;

/// Compares two handshake identities; `None` when they match.
pub(crate) fn mismatch(peer: &str, ours: &Identity, theirs: &Identity) -> Option<HandshakeError> {
    let (peer, ours, theirs) = (peer.to_owned(), ours.clone(), theirs.clone());
    if ours.version != theirs.version {
        Some(HandshakeError::Version { peer, ours, theirs })
    } else if ours.service != theirs.service {
        Some(HandshakeError::Service { peer, ours, theirs })
    } else {
        None
    }
}

pub(crate) fn handshake<S: Service>(
    transport: &mut Transport,
    service: &Arc<S>,
    timeout: Duration,
) -> Result<(), HandshakeError> {
    let peer = transport.peer.name.clone();
    let wait = Wait::timeout(timeout);
    let transport_err = |source| HandshakeError::transport(&peer, timeout, source);
    let payload = transport.recv(wait).map_err(transport_err)?;
    let hello: Hello = match postcard::from_bytes(&payload) {
        Ok(hello @ Hello { magic: MAGIC, .. }) => hello,
        _ => {
            return Err(HandshakeError::Malformed {
                peer,
                detail: "the first frame is not a procwire hello".into(),
            });
        }
    };
    let info = service.info();
    let ours = Identity {
        version: PROTOCOL_VERSION,
        service: info.name,
    };
    let theirs = Identity {
        version: hello.version,
        service: hello.service,
    };
    let refusal = mismatch(&peer, &ours, &theirs);
    if refusal.is_none() {
        // The client refuses these calls itself; a line here tells the server's side why
        // they never come.
        for wanted in &hello.methods {
            let ok = info
                .methods
                .iter()
                .any(|m| m.id == wanted.id && m.fingerprint == wanted.fingerprint);
            if !ok {
                tracing::debug!(%peer, method = %wanted.name, client = %wanted.signature, "a client expects a method this server lacks or has changed");
            }
        }
    }
    let welcome = Welcome {
        accepted: refusal.is_none(),
        version: ours.version,
        service: ours.service,
        methods: info.methods,
    };
    let mut frame = Frame::new();
    frame
        .encode(&welcome)
        .expect("encoding a welcome into a Vec cannot fail");
    transport.send(&mut frame, wait).map_err(transport_err)?;
    match refusal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

//! The client's side of the opening handshake: a hello listing this side's method
//! signatures, and from the server's welcome the calls this side must not send.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{HandshakeError, Identity, RpcError};
use crate::protocol::{Frame, Hello, Welcome, MAGIC, PROTOCOL_VERSION};
use crate::service::{Method, ServiceInfo};
use crate::transport::Transport;
use crate::wait::Wait;

/// The methods of this side that the server lacks or has with another signature, by id:
/// calls to them fail at once, unsent.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    /// Each refused method's signature here, and on the server (`None`: it has none).
    by_id: HashMap<u32, (String, Option<String>)>,
}

impl Refusals {
    /// The refusals for `ours` against the server's `theirs`.
    fn between(ours: &ServiceInfo, theirs: &Welcome) -> Self {
        let by_id = ours
            .methods
            .iter()
            .filter_map(|m| match theirs.methods.iter().find(|t| t.id == m.id) {
                Some(t) if t.fingerprint == m.fingerprint => None,
                Some(t) => Some((m.id, (m.signature.clone(), Some(t.signature.clone())))),
                None => Some((m.id, (m.signature.clone(), None))),
            })
            .collect();
        Refusals { by_id }
    }

    /// The error of a call to `method` on `peer`, if it must not be sent.
    pub(super) fn check(&self, method: Method, peer: &str) -> Result<(), RpcError> {
        if self.by_id.is_empty() {
            return Ok(());
        }
        match self.by_id.get(&method.id) {
            None => Ok(()),
            Some((ours, theirs)) => Err(RpcError::Incompatible {
                method: method.name,
                peer: peer.to_owned(),
                ours: ours.clone(),
                theirs: theirs.clone(),
            }),
        }
    }
}

/// Says hello as `service` and reads the welcome: the connection is refused only for
/// another protocol version or service; differing methods become [`Refusals`].
pub(super) fn handshake(
    transport: &mut Transport,
    service: &ServiceInfo,
    timeout: Duration,
) -> Result<Refusals, HandshakeError> {
    let peer = transport.peer.name.clone();
    let wait = Wait::timeout(timeout);
    let ours = Identity {
        version: PROTOCOL_VERSION,
        service: service.name.clone(),
    };
    let hello = Hello {
        magic: MAGIC,
        version: ours.version,
        service: ours.service.clone(),
        methods: service.methods.clone(),
    };
    let mut frame = Frame::new();
    frame.encode(&hello).expect("encoding a hello into a Vec cannot fail");
    let transport_err = |source| HandshakeError::transport(&peer, timeout, source);
    transport.send(&mut frame, wait).map_err(transport_err)?;
    let payload = transport.recv(wait).map_err(transport_err)?;
    let welcome: Welcome = postcard::from_bytes(&payload).map_err(|e| HandshakeError::Malformed {
        peer: peer.clone(),
        detail: format!("undecodable welcome: {e}"),
    })?;
    let theirs = Identity {
        version: welcome.version,
        service: welcome.service.clone(),
    };
    if let Some(mismatch) = crate::server::mismatch(&peer, &ours, &theirs) {
        return Err(mismatch);
    }
    if !welcome.accepted {
        return Err(HandshakeError::Malformed {
            peer,
            detail: "the server refused the connection (its log says why: at its connection limit, for one)".into(),
        });
    }
    Ok(Refusals::between(service, &welcome))
}

//! The listener's loop: accept, check who the peer is and whether it has a slot, start its
//! connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::limits::{Refusal, Slots};
use super::{start_connection, ServerConfig, Shared};
use crate::error::{ServerError, TransportError};
use crate::service::Service;
use crate::transport::Listener;
use crate::wait::Wait;

pub(super) fn accept_loop<S: Service>(
    mut listener: impl Listener,
    service: Arc<S>,
    config: ServerConfig,
    shared: Arc<Shared>,
) {
    let addr = listener.local_addr();
    tracing::debug!(%addr, "accepting connections");
    let slots = Slots::default();
    while !shared.stopping.load(Ordering::SeqCst) {
        match listener.accept(Wait::Block) {
            Ok(transport) => {
                // Who the kernel says the peer is, before it may say anything itself.
                if let (Some(access), Some(peer)) = (&config.allow, transport.peer.credentials) {
                    if !access.permits(&peer) {
                        slots.refuse(transport, service.info(), Refusal::NotAllowed(peer));
                        continue;
                    }
                }
                let Some(slot) = slots.take(config.max_connections) else {
                    slots.refuse(transport, service.info(), Refusal::Full(config.max_connections));
                    continue;
                };
                let started = start_connection(transport, Arc::clone(&service), config.clone(), &shared, Some(slot));
                if let Err(e) = started {
                    tracing::warn!(%addr, error = %e, "dropping a connection");
                }
            }
            Err(TransportError::Interrupted { .. }) => break,
            Err(TransportError::Io { source, .. }) if is_transient_accept_error(&source) => {
                tracing::warn!(%addr, error = %source, "accept failed; retrying in 100 ms");
                // Out of descriptors or memory: back off rather than spin, but stay stoppable.
                let _ = crate::transport::wait_interrupt(&shared.interrupt, Duration::from_millis(100));
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "accept failed; the server stops");
                *shared.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(ServerError::Accept(e));
                shared.begin_stop();
                break;
            }
        }
    }
}

fn is_transient_accept_error(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(
            Errno::EMFILE
                | Errno::ENFILE
                | Errno::ENOBUFS
                | Errno::ENOMEM
                | Errno::ECONNABORTED
                | Errno::EPROTO
                | Errno::EPERM
        )
    )
}

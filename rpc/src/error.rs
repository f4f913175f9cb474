//! Error types, one enum per layer, and how they print (see the crate docs, "Errors").

use std::fmt;
use std::io;
use std::time::Duration;

use crate::protocol::FaultKind;

/// A transport failed to move a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Nothing could be done without waiting, and the caller asked not to wait.
    #[error("operation on {peer} would block")]
    WouldBlock {
        /// The other end.
        peer: String,
    },
    /// The deadline passed before the operation could be done.
    #[error("operation on {peer} timed out")]
    TimedOut {
        /// The other end.
        peer: String,
    },
    /// The wait was cut short by an [`Interrupt`](crate::transport::Interrupt).
    #[error("operation on {peer} was interrupted")]
    Interrupted {
        /// The other end.
        peer: String,
    },
    /// The peer closed the connection cleanly, between two frames.
    #[error("{peer} closed the connection")]
    Closed {
        /// The other end.
        peer: String,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("{peer} closed the connection mid-frame: got {got} of {expected} bytes")]
    Truncated {
        /// The other end.
        peer: String,
        /// Bytes of the frame (length prefix included) that arrived.
        got: usize,
        /// Bytes the frame should have had.
        expected: usize,
    },
    /// A frame's length is above the configured maximum; nothing was allocated for it.
    #[error("frame of {len} bytes from/to {peer} exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The other end.
        peer: String,
        /// The length the frame claims or has.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// A large frame would take more bytes than are left of the budget shared by the
    /// server's connections for partly received frames; the connection ends.
    #[error("frame of {len} bytes from {peer} refused: partly received frames already hold {held} of the {limit} bytes allowed")]
    BudgetExhausted {
        /// The other end.
        peer: String,
        /// The length the frame claims.
        len: u64,
        /// Bytes held by other partly received frames.
        held: usize,
        /// The budget's limit.
        limit: usize,
    },
    /// The peer could not be authenticated (an encrypted transport's handshake failed): it
    /// holds another key, or does not speak the same security protocol.
    #[error("authentication with {peer} failed: {detail}")]
    AuthFailed {
        /// The other end.
        peer: String,
        /// What went wrong, for humans.
        detail: String,
    },
    /// An endpoint that authenticates has no usable key.
    #[error("{endpoint} needs a key")]
    Key {
        /// The endpoint.
        endpoint: String,
        /// Why no key could be had.
        #[source]
        source: crate::transport::noise::KeyError,
    },
    /// An operating-system call failed.
    #[error("{op} on {peer} failed")]
    Io {
        /// What was being done (`read`, `write`, `connect`, ...).
        op: &'static str,
        /// The other end, or the address or path concerned.
        peer: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl TransportError {
    pub(crate) fn io(op: &'static str, peer: impl Into<String>, source: impl Into<io::Error>) -> Self {
        TransportError::Io {
            op,
            peer: peer.into(),
            source: source.into(),
        }
    }

    /// True for [`WouldBlock`](Self::WouldBlock) and [`TimedOut`](Self::TimedOut): the
    /// operation may succeed if tried again later; the connection is intact.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::WouldBlock { .. } | TransportError::TimedOut { .. }
        )
    }
}

/// What each side of a handshake announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Wire protocol version.
    pub version: u16,
    /// Service name.
    pub service: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service `{}` protocol v{}", self.service, self.version)
    }
}

/// The opening handshake of a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The two sides do not speak the same protocol version.
    #[error("protocol version mismatch with {peer}: this side speaks v{}, the peer v{}", ours.version, theirs.version)]
    Version {
        /// The other end.
        peer: String,
        /// What this side announced.
        ours: Identity,
        /// What the peer announced.
        theirs: Identity,
    },
    /// The client asked for a service the server does not serve.
    #[error("service mismatch with {peer}: this side has `{}`, the peer has `{}`", ours.service, theirs.service)]
    Service {
        /// The other end.
        peer: String,
        /// What this side announced.
        ours: Identity,
        /// What the peer announced.
        theirs: Identity,
    },
    /// The peer sent something that is not a procwire handshake.
    #[error("malformed handshake from {peer}: {detail}")]
    Malformed {
        /// The other end.
        peer: String,
        /// What was wrong.
        detail: String,
    },
    /// The peer did not complete the handshake in the time allowed.
    #[error("handshake with {peer} did not complete within {timeout:?}")]
    TimedOut {
        /// The other end.
        peer: String,
        /// How long the handshake was allowed to take.
        timeout: Duration,
    },
    /// The transport failed during the handshake.
    #[error("handshake with {peer} failed")]
    Transport {
        /// The other end.
        peer: String,
        /// The transport failure.
        #[source]
        source: TransportError,
    },
}

impl HandshakeError {
    /// The handshake with `peer`, allowed `timeout`, failed in the transport: a timeout is
    /// said as such, with the time allowed.
    pub(crate) fn transport(peer: &str, timeout: Duration, source: TransportError) -> Self {
        match source {
            TransportError::TimedOut { .. } => HandshakeError::TimedOut {
                peer: peer.to_owned(),
                timeout,
            },
            source => HandshakeError::Transport {
                peer: peer.to_owned(),
                source,
            },
        }
    }
}

/// A call made through a [`Client`](crate::Client) failed.
///
/// Printed with `{}`, it says its causes too (see [Errors](crate#errors)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The connection is gone: the peer closed it, died, or broke the protocol.
    #[error("call to `{method}` failed: connection to {peer} is gone: {reason} ({delivery})")]
    Disconnected {
        /// The method called.
        method: &'static str,
        /// The other end.
        peer: String,
        /// Why the connection ended.
        reason: String,
        /// Whether the call reached the peer: [`Delivery::NotSent`] is safe to retry.
        delivery: Delivery,
        /// How the connection ended: the peer stopped, died, or was never reached.
        ending: Ending,
    },
    /// The call's deadline passed before its reply arrived.
    #[error("call to `{method}` on {peer} missed its deadline")]
    DeadlineExceeded {
        /// The method called.
        method: &'static str,
        /// The other end.
        peer: String,
    },
    /// A non-blocking operation could not proceed without waiting.
    #[error("call to `{method}` on {peer} would block")]
    WouldBlock {
        /// The method called.
        method: &'static str,
        /// The other end.
        peer: String,
    },
    /// The server answered the call with an error.
    #[error("`{method}` on {peer} failed remotely ({kind}): {message}")]
    Remote {
        /// The method called.
        method: &'static str,
        /// The other end.
        peer: String,
        /// What kind of failure the server reported.
        kind: FaultKind,
        /// The server's description.
        message: String,
    },
    /// The arguments could not be encoded.
    #[error("cannot encode the arguments of `{method}`: {}", ErrorChain(.source))]
    Encode {
        /// The method called.
        method: &'static str,
        /// The codec error.
        #[source]
        source: postcard::Error,
    },
    /// The reply could not be decoded as the expected type.
    #[error("cannot decode the reply of `{method}` from {peer}: {}", ErrorChain(.source))]
    Decode {
        /// The method called.
        method: &'static str,
        /// The other end.
        peer: String,
        /// The codec error.
        #[source]
        source: postcard::Error,
    },
    /// The frame to send is larger than the connection's maximum.
    #[error("call to `{method}` is too large to send: {}", ErrorChain(.source))]
    TooLarge {
        /// The method called.
        method: &'static str,
        /// The transport's refusal.
        #[source]
        source: TransportError,
    },
    /// The server lacks the method, or has it with another signature: the call was not
    /// sent (see [`schema`](crate::schema) for what is compatible).
    #[error("call to `{method}` was not sent: {}", Mismatch { peer, ours, theirs: theirs.as_deref() })]
    Incompatible {
        /// The method called.
        method: &'static str,
        /// The other end.
        peer: String,
        /// The method's signature on this side.
        ours: String,
        /// Its signature on the server, `None` if the server has no such method.
        theirs: Option<String>,
    },
    /// Connecting failed in the handshake.
    #[error("{}", ErrorChain(.0))]
    Handshake(#[from] HandshakeError),
}

/// How an [`RpcError::Incompatible`] says what differs.
struct Mismatch<'a> {
    peer: &'a str,
    ours: &'a str,
    theirs: Option<&'a str>,
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Mismatch { peer, ours, theirs } = self;
        match theirs {
            None => write!(f, "{peer} has no such method (this side has `{ours}`)"),
            Some(theirs) => write!(f, "{peer} has `{theirs}`, this side has `{ours}`"),
        }
    }
}

impl RpcError {
    /// The method name, where the error belongs to a call.
    pub fn method(&self) -> Option<&'static str> {
        match self {
            RpcError::Disconnected { method, .. }
            | RpcError::DeadlineExceeded { method, .. }
            | RpcError::WouldBlock { method, .. }
            | RpcError::Remote { method, .. }
            | RpcError::Encode { method, .. }
            | RpcError::Decode { method, .. }
            | RpcError::TooLarge { method, .. }
            | RpcError::Incompatible { method, .. } => Some(method),
            RpcError::Handshake(_) => None,
        }
    }
}

/// Whether a call that failed with [`RpcError::Disconnected`] reached the peer's service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The call did not run: it was never sent, or the server said it was stopping before
    /// it read the call. Safe to send again, elsewhere, even if it is not idempotent.
    NotSent,
    /// The call was sent and the connection ended before its reply: it may or may not have
    /// run. Only an idempotent call may be sent again.
    Unknown,
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Delivery::NotSent => "the call did not run; safe to retry",
            Delivery::Unknown => "the call was sent; whether it ran is unknown",
        })
    }
}

/// How a connection ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The server stopped gracefully: it answered every call it had read, then said so
    /// before closing.
    Stopped,
    /// The peer went away without a word: it died, or the connection broke.
    Died,
    /// One side broke the protocol, and the connection was closed for it.
    Broken,
    /// There was no connection: connecting or the handshake failed.
    Unreachable,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ending::Stopped => "stopped",
            Ending::Died => "died",
            Ending::Broken => "broke the protocol",
            Ending::Unreachable => "is unreachable",
        })
    }
}

impl RpcError {
    /// True if the call did not run and may be sent again as it is: a
    /// [`Disconnected`](Self::Disconnected) error with [`Delivery::NotSent`].
    pub fn is_safe_to_retry(&self) -> bool {
        matches!(
            self,
            RpcError::Disconnected {
                delivery: Delivery::NotSent,
                ..
            }
        )
    }
}

/// A server failed to start or to accept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Accepting a connection failed in a way that stops the server.
    #[error("accepting connections failed")]
    Accept(#[source] TransportError),
    /// A server thread could not be started.
    #[error("cannot start a server thread")]
    Spawn(#[source] io::Error),
    /// The handshake of a server's only connection failed.
    #[error("the connection's handshake failed")]
    Handshake(#[source] HandshakeError),
}

/// Displays an error followed by each of its causes, `: `-separated, as
/// `format!("{}", ErrorChain(&e))`: what the errors a user gets print, and what a failure
/// kept as text (a connection's `reason`) keeps.
#[derive(Clone, Copy, Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// The text of `e` with its causes, for a failure kept as a string.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    ErrorChain(e).to_string()
}

#[cfg(test)]
mod tests;

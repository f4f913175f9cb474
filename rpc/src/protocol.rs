//! The wire format: frames, the envelope, faults and the handshake messages.
//!
//! On a byte stream every frame is a 4-byte little-endian length followed by that many bytes
//! of payload. A payload is a postcard [`Envelope`] followed directly by the postcard-encoded
//! body (arguments of a call, value of a reply, [`Fault`] of an error). Message transports
//! (shared-memory rings, message queues) carry the same payload without the length prefix.
//!
//! The first frame in each direction is the handshake ([`Hello`] from the client, [`Welcome`]
//! from the server); every later frame carries an envelope.

use serde::{Deserialize, Serialize};

use crate::service::MethodSignature;

/// The wire protocol version this build speaks. Bumped on any incompatible change to the
/// envelope, the handshake or the framing (2: the handshake carries each method's signature
/// instead of one fingerprint for the whole service).
pub const PROTOCOL_VERSION: u16 = 2;

/// The first four bytes of every client hello.
pub const MAGIC: [u8; 4] = *b"PWIR";

/// The default maximum payload length of a frame: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Bytes reserved at the front of every [`Frame`] for a transport's header.
pub const HEADROOM: usize = 4;

/// An outgoing frame: [`HEADROOM`] bytes a transport may use for its header, then the payload.
///
/// Encoding straight into a `Frame` lets a stream transport write length and payload with one
/// system call and no copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    buf: Vec<u8>,
    /// Already sent, in place, by the handler that made it (see `CallContext::__reply`):
    /// nothing left to send.
    sent: bool,
}

impl Frame {
    /// An empty frame.
    pub fn new() -> Self {
        Self::with_capacity(64)
    }

    /// An empty frame with room for a payload of `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = crate::buffers::take(HEADROOM + capacity);
        buf.extend_from_slice(&[0; HEADROOM]);
        Frame { buf, sent: false }
    }

    /// A frame holding a copy of `payload`.
    pub fn from_payload(payload: &[u8]) -> Self {
        let mut frame = Self::with_capacity(payload.len());
        frame.buf.extend_from_slice(payload);
        frame
    }

    /// The frame a handler returns for a reply it has already sent in place. It holds no
    /// buffer, so that a reply sent in place allocates nothing; it reads as an empty payload.
    pub(crate) fn already_sent() -> Self {
        Frame {
            buf: Vec::new(),
            sent: true,
        }
    }

    /// True for [`already_sent`](Self::already_sent)'s frame.
    pub(crate) fn is_sent(&self) -> bool {
        self.sent
    }

    /// The whole buffer, headroom included, for reuse.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        self.buf.get(HEADROOM..).unwrap_or_default()
    }

    /// The payload's length.
    pub fn payload_len(&self) -> usize {
        self.buf.len().saturating_sub(HEADROOM)
    }

    /// Appends bytes to the payload.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.keep_headroom();
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a postcard encoding of `value` to the payload.
    pub fn encode<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), postcard::Error> {
        self.keep_headroom();
        let buf = std::mem::take(&mut self.buf);
        self.buf = postcard::to_extend(value, buf)?;
        Ok(())
    }

    /// Gives an already-sent frame's empty buffer its headroom back before it is written.
    fn keep_headroom(&mut self) {
        if self.buf.len() < HEADROOM {
            self.buf.resize(HEADROOM, 0);
        }
    }

    /// The whole buffer with a 4-byte little-endian payload length in the headroom: what a
    /// byte-stream transport writes.
    pub fn as_length_prefixed(&mut self) -> &[u8] {
        self.set_length_prefix();
        &self.buf
    }

    /// Writes the 4-byte little-endian payload length into the headroom.
    pub(crate) fn set_length_prefix(&mut self) {
        self.keep_headroom();
        let len = u32::try_from(self.payload_len()).unwrap_or(u32::MAX);
        self.buf[..HEADROOM].copy_from_slice(&len.to_le_bytes());
    }

    /// The whole buffer, headroom included: after [`set_length_prefix`](Self::set_length_prefix),
    /// what a byte-stream transport writes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

impl Default for Frame {
    fn default() -> Self {
        Self::new()
    }
}

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A call that expects a reply.
    Call,
    /// A call that expects no reply.
    OneWay,
    /// The successful reply to a call; the body is the return value.
    Reply,
    /// The failed reply to a call; the body is a [`Fault`]. With id 0 it reports a protocol
    /// violation just before the sender closes the connection.
    Error,
    /// The client gave up on a call; the server may stop working on it.
    Cancel,
}

/// The header of every frame after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Request id, chosen by the client, unique on the connection; a reply carries its call's.
    pub id: u64,
    /// What the frame is.
    pub kind: Kind,
    /// The method's id within the service.
    pub method: u32,
    /// For calls: microseconds left until the caller's deadline, if it has one.
    pub timeout_us: Option<u64>,
}

impl Envelope {
    /// Starts a frame with this envelope.
    pub fn frame(&self) -> Frame {
        self.frame_with_capacity(32)
    }

    /// Starts a frame with this envelope and room for `capacity` more bytes.
    pub fn frame_with_capacity(&self, capacity: usize) -> Frame {
        let mut frame = Frame::with_capacity(capacity + 24);
        frame.encode(self).expect("encoding an envelope into a Vec cannot fail");
        frame
    }

    /// A frame with this envelope and `body`, allocated at its exact size.
    pub fn frame_with<T: Serialize + ?Sized>(&self, body: &T) -> Result<Frame, postcard::Error> {
        let size = serialized_size(self)? + serialized_size(body)?;
        let mut frame = Frame::with_capacity(size);
        frame.encode(self)?;
        frame.encode(body)?;
        Ok(frame)
    }

    /// Splits a payload into envelope and body.
    pub fn decode(payload: &[u8]) -> Result<(Envelope, &[u8]), postcard::Error> {
        postcard::take_from_bytes(payload)
    }
}

/// Why a server could not answer a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FaultKind {
    /// The service has no method with that id.
    UnknownMethod,
    /// The arguments could not be decoded.
    BadRequest,
    /// The handler panicked.
    Panicked,
    /// The handler saw the call cancelled and gave up.
    Cancelled,
    /// The handler could not encode its reply.
    BadReply,
    /// The peer broke the protocol; the connection is being closed.
    Protocol,
    /// Sent with id 0 by a server that is stopping gracefully, after the replies to every
    /// call it read and before it closes: a call not answered by then did not run.
    Stopping,
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaultKind::UnknownMethod => "unknown method",
            FaultKind::BadRequest => "bad request",
            FaultKind::Panicked => "handler panicked",
            FaultKind::Cancelled => "cancelled",
            FaultKind::BadReply => "bad reply",
            FaultKind::Protocol => "protocol violation",
            FaultKind::Stopping => "stopping",
        })
    }
}

/// The body of an [`Kind::Error`] frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Fault {
    /// What kind of failure.
    pub kind: FaultKind,
    /// A description for humans.
    pub message: String,
}

impl Fault {
    /// A fault of `kind` described by `message`.
    pub fn new(kind: FaultKind, message: impl Into<String>) -> Self {
        Fault {
            kind,
            message: message.into(),
        }
    }
}

/// The client's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The service the client wants.
    pub service: String,
    /// The signature of each method the client was built with.
    pub methods: Vec<MethodSignature>,
}

/// The server's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// True if the server accepts the connection.
    pub accepted: bool,
    /// The server's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The service the server serves.
    pub service: String,
    /// The signature of each method the server serves.
    pub methods: Vec<MethodSignature>,
}

/// An [`Kind::Error`] frame carrying `fault`.
pub fn fault_frame(id: u64, method: u32, fault: &Fault) -> Frame {
    let mut frame = Envelope {
        id,
        kind: Kind::Error,
        method,
        timeout_us: None,
    }
    .frame();
    frame.encode(fault).expect("encoding a fault into a Vec cannot fail");
    frame
}

/// Decodes a body that must hold exactly one `T`: trailing bytes are an error, since
/// postcard is not self-describing and leftovers are the one sign of a value of another type.
pub fn decode_exact<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes(body)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

/// The length of `value`'s postcard encoding, counted without encoding it.
pub(crate) fn serialized_size<T: Serialize + ?Sized>(value: &T) -> Result<usize, postcard::Error> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_already_sent_frame_holds_no_buffer_and_still_reads_and_writes_as_a_frame() {
        let mut frame = Frame::already_sent();
        assert_eq!(
            frame.into_vec().capacity(),
            0,
            "a reply sent in place allocates nothing"
        );
        frame = Frame::already_sent();
        assert!(frame.is_sent());
        assert_eq!((frame.payload(), frame.payload_len()), (&[][..], 0));
        frame.encode(&7u8).unwrap();
        assert_eq!(frame.payload(), &[7]);
        assert_eq!(frame.as_length_prefixed(), &[1, 0, 0, 0, 7]);
    }
}

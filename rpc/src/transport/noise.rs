//! TCP authenticated and encrypted with the Noise protocol (`Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`):
//! the `tcp:` endpoint (alias `tcp+noise:`), procwire's default for TCP.
//!
//! Both ends hold the same 32-byte pre-shared key ([`NoiseKey`], from a file or an
//! environment variable; it never travels). Before procwire's own hello, the client sends a
//! Noise handshake message mixed with the key and the server answers; only a peer holding the
//! key can produce or read them, so each side authenticates the other, and the ephemeral
//! Diffie-Hellman gives every connection fresh keys (forward secrecy: a key stolen later does
//! not decrypt recorded traffic). A server may hold several keys; the one the client used is
//! the connection's identity ([`CallContext::key_name`](crate::CallContext::key_name)).
//!
//! On the wire every message, handshake or frame, is one length-prefixed frame of the plain
//! stream transport. A procwire frame is encrypted as consecutive Noise messages of at most
//! 65535 bytes (each with its 16-byte tag) in one such frame, so the stream's guarantees
//! (whole frames or none, nothing lost to a timeout, the length checked before allocation,
//! the server's frame budget) hold unchanged. Each direction numbers its messages (the Noise
//! nonce); a message out of place does not decrypt and ends the connection.
//!
//! The client does the handshake in [`connect`]; the server, on the connection's first
//! receive (on the connection's own thread, bounded by the server's handshake timeout), so
//! a peer that stalls its handshake never holds up the acceptor.

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use snow::{HandshakeState, StatelessTransportState};

use super::stream::{FdKind, StreamReceiver, StreamSender};
use super::{FrameBudget, FrameReceiver, FrameSender, Interrupt, PeerInfo, Transport};
use crate::error::TransportError;
use crate::protocol::{Frame, DEFAULT_MAX_FRAME_LEN};
use crate::wait::Wait;

/// The Noise protocol name: pre-shared key first, then ephemeral keys on both sides.
const PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake, so that a key used elsewhere with Noise cannot be replayed here.
const PROLOGUE: &[u8] = b"procwire noise v1";
/// A Noise message's largest size, and its authentication tag.
const MAX_MESSAGE: usize = 65535;
const TAG: usize = 16;
const MAX_PLAIN: usize = MAX_MESSAGE - TAG;
/// Handshake messages are 48 bytes (an ephemeral key and a tag); larger is not Noise.
const MAX_HANDSHAKE: usize = 256;
/// How long [`connect`] waits for the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pre-shared key, and a name for it (the identity a server reports for its connections).
#[derive(Clone)]
pub struct NoiseKey {
    name: String,
    secret: [u8; 32],
}

impl fmt::Debug for NoiseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read the key file {path}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Others than the owner may read the key file.
    #[error("the key file {path} may be read by others (mode {mode:o}); chmod 600 it")]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The environment variable is not set.
    #[error("no key: {var} is not set")]
    Unset {
        /// The variable.
        var: String,
    },
    /// The key is not 32 bytes, raw or as 64 hex digits.
    #[error("the key from {origin} is not 32 bytes (raw, or 64 hex digits): {detail}")]
    Format {
        /// Where it came from.
        origin: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl NoiseKey {
    /// A key called `name` with the 32 bytes `secret`.
    pub fn new(name: impl Into<String>, secret: [u8; 32]) -> Self {
        NoiseKey {
            name: name.into(),
            secret,
        }
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads a key from `path`: 32 raw bytes, or 64 hex digits (surrounding whitespace
    /// ignored). The file must not be readable by group or others. Its name is the file's
    /// stem.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let path = path.as_ref();
        let shown = path.display().to_string();
        let read = |source| KeyError::Read {
            path: shown.clone(),
            source,
        };
        // One open file: its mode is checked and its bytes read, so the file cannot be
        // swapped between the check and the read.
        let mut file = std::fs::File::open(path).map_err(read)?;
        let mode = file.metadata().map_err(read)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: shown,
                mode: mode & 0o777,
            });
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(read)?;
        let name = path
            .file_stem()
            .map_or_else(|| shown.clone(), |s| s.to_string_lossy().into_owned());
        Ok(NoiseKey::new(name, parse_secret(&bytes, &shown)?))
    }

    /// Reads a key as 64 hex digits from the environment variable `var`; its name is `var`.
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let value = std::env::var(var).map_err(|_| KeyError::Unset { var: var.to_owned() })?;
        Ok(NoiseKey::new(var, parse_secret(value.as_bytes(), var)?))
    }

    fn builder(&self) -> snow::Builder<'_> {
        snow::Builder::new(PARAMS.parse().expect("a valid Noise protocol name"))
            .psk(0, &self.secret)
            .and_then(|b| b.prologue(PROLOGUE))
            .expect("a 32-byte psk and a prologue are valid for NNpsk0")
    }
}

fn parse_secret(bytes: &[u8], origin: &str) -> Result<[u8; 32], KeyError> {
    let format = |detail: String| KeyError::Format {
        origin: origin.to_owned(),
        detail,
    };
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Ok(raw);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format(format!("{} bytes, not hex", bytes.len())))?
        .trim();
    if text.len() != 64 {
        return Err(format(format!("{} characters", text.len())));
    }
    let mut secret = [0; 32];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| format(format!("{:?} is not hex", &text[2 * i..2 * i + 2])))?;
    }
    Ok(secret)
}

/// The environment variable naming the key file of `tcp:` endpoints.
pub const KEY_FILE_ENV: &str = "PROCWIRE_KEY_FILE";
/// The environment variable holding the key of `tcp:` endpoints as 64 hex digits,
/// when [`KEY_FILE_ENV`] is not set.
pub const KEY_ENV: &str = "PROCWIRE_KEY";

/// The environment variable naming more key files a server accepts, beside the key of
/// [`KEY_FILE_ENV`] (for rotation), as a path list (`:`-separated).
pub const ACCEPT_KEY_FILES_ENV: &str = "PROCWIRE_ACCEPT_KEY_FILES";

/// The keys a server of `tcp:` endpoints accepts: [`key_from_env`]'s, then one from each
/// file in `PROCWIRE_ACCEPT_KEY_FILES`; to rotate a key, servers accept the old and the new
/// one while clients move from one to the other.
pub fn keys_from_env() -> Result<Vec<NoiseKey>, KeyError> {
    let mut keys = vec![key_from_env()?];
    if let Some(files) = std::env::var_os(ACCEPT_KEY_FILES_ENV) {
        for path in std::env::split_paths(&files).filter(|p| !p.as_os_str().is_empty()) {
            keys.push(NoiseKey::from_file(path)?);
        }
    }
    Ok(keys)
}

/// The key of `tcp:` endpoints: the file named by `PROCWIRE_KEY_FILE`, else the hex
/// digits in `PROCWIRE_KEY`. Workers inherit both from the supervisor's environment.
pub fn key_from_env() -> Result<NoiseKey, KeyError> {
    match std::env::var_os(KEY_FILE_ENV) {
        Some(path) => NoiseKey::from_file(path),
        None => NoiseKey::from_env(KEY_ENV).map_err(|e| match e {
            KeyError::Unset { .. } => KeyError::Unset {
                var: format!("{KEY_FILE_ENV} (a key file) or {KEY_ENV} (64 hex digits)"),
            },
            e => e,
        }),
    }
}

/// Connects to `addr` and authenticates with `key`.
pub fn connect(addr: impl ToSocketAddrs + fmt::Debug, key: &NoiseKey) -> Result<Transport, TransportError> {
    let name = format!("tcp:{addr:?}");
    let stream = TcpStream::connect(&addr).map_err(|e| TransportError::io("connect", name, e))?;
    let (fd, name) = super::tcp::prepare(stream, "tcp")?;
    let (mut sender, mut receiver) = halves(fd, &name)?;
    let wait = Wait::timeout(CONNECT_TIMEOUT);
    let mut hs = key.builder().build_initiator().map_err(|e| noise_error(&name, e))?;
    let mut message = [0; MAX_HANDSHAKE];
    let n = hs.write_message(&[], &mut message).map_err(|e| noise_error(&name, e))?;
    sender.send(&mut Frame::from_payload(&message[..n]), wait)?;
    receiver.set_max_frame_len(MAX_HANDSHAKE);
    let refused = |detail: &str| TransportError::AuthFailed {
        peer: name.clone(),
        detail: detail.to_owned(),
    };
    let answer = match receiver.recv(wait) {
        Ok(answer) => answer,
        Err(TransportError::Closed { .. } | TransportError::Truncated { .. }) => {
            return Err(refused(
                "the server closed the connection during the Noise handshake: it does not know this key \
                 (or does not use Noise)",
            ))
        }
        Err(e) => return Err(e),
    };
    hs.read_message(&answer, &mut message)
        .map_err(|_| refused("the server's answer does not match this key: it does not know this key"))?;
    let keys = Keys::from(hs, &name)?;
    let session = Arc::new(OnceLock::new());
    let _ = session.set((keys, key.name.clone()));
    Ok(transport(sender, receiver, session, Vec::new(), name))
}

/// Both ends of the encryption, once the handshake is done, and the key's name.
type Session = Arc<OnceLock<(Arc<Keys>, String)>>;

struct Keys(StatelessTransportState);

impl Keys {
    fn from(hs: HandshakeState, peer: &str) -> Result<Arc<Self>, TransportError> {
        hs.into_stateless_transport_mode()
            .map(|state| Arc::new(Keys(state)))
            .map_err(|e| noise_error(peer, e))
    }
}

fn noise_error(peer: &str, e: snow::Error) -> TransportError {
    TransportError::AuthFailed {
        peer: peer.to_owned(),
        detail: format!("Noise: {e}"),
    }
}

fn halves(fd: OwnedFd, name: &str) -> Result<(StreamSender, StreamReceiver), TransportError> {
    let read = fd.try_clone().map_err(|e| TransportError::io("dup", name, e))?;
    Ok((
        StreamSender::new(fd, FdKind::Socket, name)?,
        StreamReceiver::new(read, FdKind::Socket, name)?,
    ))
}

fn transport(
    sender: StreamSender,
    receiver: StreamReceiver,
    session: Session,
    keys: Vec<NoiseKey>,
    name: String,
) -> Transport {
    let mut transport = Transport {
        sender: Box::new(NoiseSender {
            inner: sender,
            session: Arc::clone(&session),
            nonce: 0,
            scratch: vec![0; MAX_MESSAGE],
            max: DEFAULT_MAX_FRAME_LEN,
            peer: name.clone(),
        }),
        receiver: Box::new(NoiseReceiver {
            inner: receiver,
            session,
            responder: (!keys.is_empty()).then_some(keys),
            nonce: 0,
            max: DEFAULT_MAX_FRAME_LEN,
            peer: name.clone(),
        }),
        peer: PeerInfo::named(name),
    };
    transport.set_max_frame_len(DEFAULT_MAX_FRAME_LEN);
    transport
}

/// What an encrypted frame of `plain` bytes takes on the wire (without the stream's prefix).
fn sealed_len(plain: usize) -> usize {
    plain + TAG * plain.div_ceil(MAX_PLAIN).max(1)
}

/// The sending half: encrypts each frame into one stream frame.
struct NoiseSender {
    inner: StreamSender,
    session: Session,
    /// The next message's number.
    nonce: u64,
    scratch: Vec<u8>,
    max: usize,
    peer: String,
}

impl FrameSender for NoiseSender {
    fn send(&mut self, frame: &mut Frame, wait: Wait) -> Result<(), TransportError> {
        let plain = frame.payload();
        if plain.len() > self.max {
            return Err(TransportError::FrameTooLarge {
                peer: self.peer.clone(),
                len: plain.len() as u64,
                max: self.max,
            });
        }
        let Some((keys, _)) = self.session.get() else {
            return Err(TransportError::AuthFailed {
                peer: self.peer.clone(),
                detail: "nothing may be sent before the peer's Noise handshake has arrived".into(),
            });
        };
        let first = self.nonce;
        let mut sealed = Frame::with_capacity(sealed_len(plain.len()));
        let mut chunks = plain.chunks(MAX_PLAIN);
        let empty: &[u8] = &[];
        for chunk in std::iter::once(chunks.next().unwrap_or(empty)).chain(chunks) {
            let n = keys
                .0
                .write_message(self.nonce, chunk, &mut self.scratch)
                .map_err(|e| noise_error(&self.peer, e))?;
            self.nonce += 1;
            sealed.extend_from_slice(&self.scratch[..n]);
        }
        let sent = self.inner.send(&mut sealed, wait);
        if sent.is_err() {
            // Not taken: the peer never sees these numbers, so the next frame reuses them.
            self.nonce = first;
        }
        crate::buffers::give(sealed.into_vec());
        sent
    }

    fn flush(&mut self, wait: Wait) -> Result<(), TransportError> {
        self.inner.flush(wait)
    }

    fn has_pending(&self) -> bool {
        self.inner.has_pending()
    }

    fn close(&mut self) {
        self.inner.close()
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
        self.inner.set_max_frame_len(sealed_len(max));
    }
}

/// The receiving half: the server's side of the handshake on the first receive, then
/// decryption of each stream frame.
struct NoiseReceiver {
    inner: StreamReceiver,
    session: Session,
    /// The keys a server accepts, until its handshake is done.
    responder: Option<Vec<NoiseKey>>,
    nonce: u64,
    max: usize,
    peer: String,
}

impl NoiseReceiver {
    /// Reads the client's handshake message, finds the key it was made with, answers.
    fn respond(&mut self, keys: &[NoiseKey], wait: Wait) -> Result<(), TransportError> {
        self.inner.set_max_frame_len(MAX_HANDSHAKE);
        let refused = |peer: &str| TransportError::AuthFailed {
            peer: peer.to_owned(),
            detail: "the peer holds none of this server's keys (or does not use Noise)".into(),
        };
        let message = match self.inner.recv(wait) {
            Ok(message) => message,
            Err(TransportError::FrameTooLarge { .. }) => return Err(refused(&self.peer)),
            Err(e) => return Err(e),
        };
        let mut scratch = [0; MAX_HANDSHAKE];
        let found = keys.iter().find_map(|key| {
            let mut hs = key.builder().build_responder().ok()?;
            hs.read_message(&message, &mut scratch).ok()?;
            Some((hs, key.name.clone()))
        });
        let Some((mut hs, name)) = found else {
            return Err(refused(&self.peer));
        };
        let n = hs
            .write_message(&[], &mut scratch)
            .map_err(|e| noise_error(&self.peer, e))?;
        // The answer goes out on a duplicate of the descriptor: the sending half is elsewhere.
        let fd = self
            .inner
            .dup_fd()
            .map_err(|e| TransportError::io("dup", self.peer.clone(), e))?;
        let mut answer = StreamSender::new(fd, FdKind::Socket, self.peer.clone())?;
        answer.send(&mut Frame::from_payload(&scratch[..n]), wait)?;
        let _ = self.session.set((Keys::from(hs, &self.peer)?, name));
        self.inner.set_max_frame_len(sealed_len(self.max));
        Ok(())
    }

    fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, TransportError> {
        let (keys, _) = self.session.get().expect("the handshake is done");
        let broken = |peer: &str, detail: String| TransportError::AuthFailed {
            peer: peer.to_owned(),
            detail,
        };
        let mut plain = crate::buffers::take(sealed.len());
        plain.resize(sealed.len(), 0);
        let mut len = 0;
        let mut chunks = sealed.chunks(MAX_MESSAGE);
        let empty: &[u8] = &[];
        for chunk in std::iter::once(chunks.next().unwrap_or(empty)).chain(chunks) {
            let n = keys.0.read_message(self.nonce, chunk, &mut plain[len..]).map_err(|e| {
                broken(
                    &self.peer,
                    format!("a frame does not decrypt ({e}): forged or out of place"),
                )
            })?;
            self.nonce += 1;
            len += n;
        }
        plain.truncate(len);
        if len > self.max {
            return Err(TransportError::FrameTooLarge {
                peer: self.peer.clone(),
                len: len as u64,
                max: self.max,
            });
        }
        Ok(plain)
    }
}

impl FrameReceiver for NoiseReceiver {
    fn recv(&mut self, wait: Wait) -> Result<Vec<u8>, TransportError> {
        if let Some(keys) = self.responder.take() {
            if let Err(e) = self.respond(&keys, wait) {
                if e.is_retryable() {
                    // Not all of the handshake has arrived: the stream keeps what did.
                    self.responder = Some(keys);
                }
                return Err(e);
            }
        }
        let sealed = self.inner.recv(wait)?;
        let plain = self.open(&sealed);
        crate::buffers::give(sealed);
        plain
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.inner.set_interrupt(interrupt);
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
        if self.responder.is_none() {
            self.inner.set_max_frame_len(sealed_len(max));
        }
    }

    fn readiness_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.readiness_fd()
    }

    fn liveness_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.liveness_fd()
    }

    fn has_buffered(&self) -> bool {
        self.inner.has_buffered()
    }

    fn in_frame(&self) -> bool {
        self.inner.in_frame()
    }

    fn set_budget(&mut self, budget: FrameBudget) {
        self.inner.set_budget(budget);
    }

    fn authenticated_as(&self) -> Option<&str> {
        self.session.get().map(|(_, name)| name.as_str())
    }
}

/// A listening TCP socket whose connections must authenticate with one of its keys.
#[derive(Debug)]
pub struct Listener {
    inner: super::tcp::Listener,
    keys: Vec<NoiseKey>,
}

impl Listener {
    /// Binds `addr`, accepting clients that hold any of `keys` (at least one).
    pub fn bind(addr: impl ToSocketAddrs + fmt::Debug, keys: Vec<NoiseKey>) -> Result<Self, TransportError> {
        Self::from_tcp(super::tcp::Listener::bind(addr)?, keys)
    }

    /// Wraps a bound TCP listener.
    pub fn from_tcp(inner: super::tcp::Listener, keys: Vec<NoiseKey>) -> Result<Self, TransportError> {
        if keys.is_empty() {
            return Err(TransportError::AuthFailed {
                peer: super::Listener::local_addr(&inner),
                detail: "a Noise listener needs at least one key".into(),
            });
        }
        Ok(Listener { inner, keys })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr()
    }
}

impl super::Listener for Listener {
    fn accept(&mut self, wait: Wait) -> Result<Transport, TransportError> {
        let stream = self.inner.accept_stream(wait)?;
        let (fd, name) = super::tcp::prepare(stream, "tcp")?;
        let (sender, receiver) = halves(fd, &name)?;
        Ok(transport(
            sender,
            receiver,
            Arc::new(OnceLock::new()),
            self.keys.clone(),
            name,
        ))
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.inner.set_interrupt(interrupt);
    }

    fn local_addr(&self) -> String {
        format!("tcp:{}", self.inner.addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_read_as_hex_or_raw_and_a_short_one_is_refused() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        assert_eq!(parse_secret(hex.as_bytes(), "test").unwrap()[1], 0x11);
        assert_eq!(parse_secret(&[9; 32], "test").unwrap(), [9; 32]);
        let err = parse_secret(b"abcd", "test").unwrap_err().to_string();
        assert!(err.contains("4 characters"), "{err}");
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.key");
        std::fs::write(&path, [7; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NoiseKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(NoiseKey::from_file(&path).unwrap().name(), "ci");
    }

    #[test]
    fn the_sealed_length_counts_one_tag_per_message() {
        assert_eq!(sealed_len(0), TAG);
        assert_eq!(sealed_len(MAX_PLAIN), MAX_MESSAGE);
        assert_eq!(sealed_len(MAX_PLAIN + 1), MAX_PLAIN + 1 + 2 * TAG);
    }
}

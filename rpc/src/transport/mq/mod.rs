//! POSIX message queues: the kernel's bounded mailbox of whole messages, as a transport
//! and as a [`Queue`] of its own.
//!
//! # The transport (`mq:PATH`)
//!
//! A connection is a request queue and a reply queue of its own, set up over a Unix socket
//! at `PATH` as the [`shm`](super::shm) transport's rings are: the [`Listener`] creates both
//! queues for each client (mode 0600, named `/procwire-mq.PID.N.c2s` and `.s2c`), tells the
//! client their names on the socket, and the client opens them and removes the names at
//! once, so nothing stays named in the system after the setup (the listener removes them
//! too when the connection ends, for a client that died before it could). The socket then
//! carries nothing but the peers' liveness: a queue cannot say that its peer went away.
//!
//! Frames of any length go through: a frame longer than one message is **split** into
//! messages of the queue's message size (each queue has one writer, so pieces cannot
//! interleave) and joined again by the receiver, which refuses a length above its maximum
//! before allocating, as every transport does. One-message frames (the common small call)
//! cost one `mq_send` and one `mq_receive`.
//!
//! The kernel limits how large queues may be and how much memory a user's queues may take
//! (`fs.mqueue.msg_max`, `msgsize_max`, `queues_max`, `RLIMIT_MSGQUEUE`; see [`limits`]).
//! A listener that cannot create a connection's queues refuses that connection, and the
//! client's [`connect`] fails with the limit by name, its value and what was asked for.
//! Both processes must run as the same user (the queues are 0600).
//!
//! ```
//! use procwire_rpc::transport::{mq, Listener as _};
//! use procwire_rpc::{Frame, Wait};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("calc.sock");
//! let mut listener = mq::Listener::bind(&path)?;
//! let client = std::thread::spawn(move || mq::connect(&path));
//! let mut server = listener.accept(Wait::Block)?;
//! let mut client = client.join().expect("connect thread")?;
//! client.send(&mut Frame::from_payload(b"ping"), Wait::Block)?;
//! assert_eq!(server.recv(Wait::Block)?, b"ping");
//! # Ok(()) }
//! ```
//!
//! # The mailbox ([`Queue`])
//!
//! A [`Queue`] is one queue by name, which any number of processes may send to and receive
//! from without knowing each other: each message arrives whole, at most one receiver gets
//! it, and one larger than the message size is **refused** ([`MqError::TooLarge`]), never
//! split. Sends wait for room with a deadline (`mq_timedsend`), receives for a message
//! (`mq_timedreceive`). The supervisor creates the queues a manifest declares
//! (`[queue.NAME]`) and hands them to the pools that list them ([`Queue::from_env`]).

mod conn;
pub mod limits;
mod queue;

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};

use super::shm::poll_until;
use super::{unix, Interrupt, PeerInfo, Transport};
use crate::error::TransportError;
use crate::wait::Wait;
use conn::Shared;

pub use conn::{MqReceiver, MqSender};
pub use limits::MqError;
pub use queue::{check_name, Attrs, Queue, ENV_PREFIX};

/// What the listener's setup message starts with, and the setup's version.
const SETUP: &[u8; 5] = b"PWMQ\x01";
/// What a refusal starts with; the reason follows.
const REFUSED: &[u8; 5] = b"PWMQ\x00";
/// How long a client waits for the listener's setup message.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest setup message: two names and the marker.
const SETUP_MAX: usize = 4096;

/// The shape of a connection's two queues.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Each queue's shape; default [`DEFAULT_MESSAGES`] messages of the system's default
    /// size (`fs.mqueue.msgsize_default`, 8 KiB unless changed).
    pub attrs: Attrs,
}

/// Messages per queue of a connection by default: 4, not the system's 10, because every
/// queue counts against its creator's `RLIMIT_MSGQUEUE` (800 KiB by default, per user):
/// two queues of 4 messages of 8 KiB take about 66 KiB, so a user's servers hold 12
/// connections at once, where the system's default shape would allow 4.
pub const DEFAULT_MESSAGES: usize = 4;

impl Default for Options {
    fn default() -> Self {
        Options {
            attrs: Attrs::new(DEFAULT_MESSAGES, Attrs::system_default().message_size),
        }
    }
}

impl Options {
    /// Sets [`attrs`](Self::attrs).
    pub fn attrs(mut self, attrs: Attrs) -> Self {
        self.attrs = attrs;
        self
    }
}

fn setup_error(op: &'static str, name: &str, e: impl std::error::Error + Send + Sync + 'static) -> TransportError {
    TransportError::io(op, name, io::Error::other(e))
}

/// Connects to the message-queue listener at the Unix socket `path`. Returns once the
/// listener has created the connection's queues and this side has opened them (within
/// 10 s); a listener that could not create them says why, and so does the error.
pub fn connect(path: impl AsRef<Path>) -> Result<Transport, TransportError> {
    let path = path.as_ref();
    let name = format!("mq:{}", path.display());
    let mut stream = UnixStream::connect(path).map_err(|e| TransportError::io("connect", name.clone(), e))?;
    let setup = read_setup(&mut stream, &name)?;
    let [c2s, s2c] = parse_setup(&setup).map_err(|detail| {
        setup_error(
            "receiving the message queues",
            &name,
            io::Error::new(io::ErrorKind::InvalidData, detail),
        )
    })?;
    let open = |queue: &str| Queue::open(queue).map_err(|e| setup_error("opening a connection queue", &name, e));
    let (tx, rx) = (open(&c2s)?, open(&s2c)?);
    // Both are open: the names have done their job.
    for queue in [&c2s, &s2c] {
        let _ = Queue::unlink(queue);
    }
    Ok(assemble(stream, tx, rx, name, Vec::new()))
}

/// Reads the listener's message: everything up to the end of its second line.
fn read_setup(stream: &mut UnixStream, name: &str) -> Result<Vec<u8>, TransportError> {
    let mut setup = Vec::new();
    let mut chunk = [0; 512];
    let deadline = Wait::timeout(SETUP_TIMEOUT);
    while setup.iter().filter(|b| **b == b'\n').count() < 2 {
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        if !poll_until(&mut fds, deadline, name)? {
            return Err(TransportError::io(
                "waiting for the message queue setup",
                name,
                io::Error::new(io::ErrorKind::TimedOut, format!("nothing came in {SETUP_TIMEOUT:?}")),
            ));
        }
        let n = stream
            .read(&mut chunk)
            .map_err(|e| TransportError::io("receiving the message queues", name, e))?;
        if n == 0 {
            break;
        }
        setup.extend_from_slice(&chunk[..n]);
        if setup.len() > SETUP_MAX {
            break;
        }
    }
    if let Some(reason) = setup.strip_prefix(REFUSED) {
        let reason = String::from_utf8_lossy(reason).trim_end().to_owned();
        return Err(TransportError::io(
            "setting up the message queues",
            name,
            io::Error::other(format!("the listener refused: {reason}")),
        ));
    }
    if setup.is_empty() {
        return Err(TransportError::Closed { peer: name.to_owned() });
    }
    Ok(setup)
}

fn parse_setup(setup: &[u8]) -> Result<[String; 2], &'static str> {
    const OTHER: &str = "the peer is not a procwire message-queue listener (or speaks another version)";
    let text = setup.strip_prefix(SETUP).ok_or(OTHER)?;
    let text = std::str::from_utf8(text).map_err(|_| OTHER)?;
    let mut lines = text.lines();
    match (lines.next(), lines.next(), lines.next()) {
        (Some(c2s), Some(s2c), None) if check_name(c2s).is_ok() && check_name(s2c).is_ok() => {
            Ok([c2s.to_owned(), s2c.to_owned()])
        }
        _ => Err(OTHER),
    }
}

fn assemble(stream: UnixStream, tx: Queue, rx: Queue, name: String, names: Vec<String>) -> Transport {
    let socket = OwnedFd::from(stream);
    let credentials = unix::credentials(&socket);
    let sh = Arc::new(Shared {
        socket,
        name: name.clone(),
        names,
    });
    Transport {
        sender: Box::new(MqSender::new(Arc::clone(&sh), tx)),
        receiver: Box::new(MqReceiver::new(sh, rx)),
        peer: PeerInfo { name, credentials },
    }
}

/// A Unix socket that hands out message-queue connections. The socket file is removed when
/// the listener is dropped.
#[derive(Debug)]
pub struct Listener {
    inner: unix::Listener,
    options: Options,
}

impl Listener {
    /// Binds `path`. A stale socket file left by a dead server is replaced; a live one is an
    /// "address in use" error.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, TransportError> {
        Self::bind_with(path, Options::default())
    }

    /// Binds `path`; connections get queues shaped as `options` says.
    pub fn bind_with(path: impl AsRef<Path>, options: Options) -> Result<Self, TransportError> {
        Ok(Listener {
            inner: unix::Listener::bind(path)?,
            options,
        })
    }

    /// Wraps a listening Unix socket this process was handed (socket activation, a
    /// supervisor) as a message-queue listener. Its file belongs to whoever bound it.
    pub fn from_std(listener: std::os::unix::net::UnixListener, options: Options) -> Result<Self, TransportError> {
        Ok(Listener {
            inner: unix::Listener::from_std(listener)?,
            options,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    fn set_up(&self, mut stream: UnixStream) -> Result<Transport, (UnixStream, MqError)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("/procwire-mq.{}.{n}", std::process::id());
        let (c2s, s2c) = (format!("{base}.c2s"), format!("{base}.s2c"));
        let rx = match Queue::create(&c2s, self.options.attrs) {
            Ok(queue) => queue,
            Err(e) => return Err((stream, e)),
        };
        let tx = match Queue::create(&s2c, self.options.attrs) {
            Ok(queue) => queue,
            Err(e) => {
                let _ = Queue::unlink(&c2s);
                return Err((stream, e));
            }
        };
        let names = vec![c2s.clone(), s2c.clone()];
        let mut setup = SETUP.to_vec();
        setup.extend_from_slice(format!("{c2s}\n{s2c}\n").as_bytes());
        // A client gone already costs only its own connection: its queues go with `names`.
        let _ = stream.write_all(&setup);
        let name = super::Listener::local_addr(self);
        Ok(assemble(stream, tx, rx, name, names))
    }
}

impl super::Listener for Listener {
    fn accept(&mut self, wait: Wait) -> Result<Transport, TransportError> {
        loop {
            let stream = self.inner.accept_stream(wait)?;
            match self.set_up(stream) {
                Ok(transport) => return Ok(transport),
                Err((mut stream, e)) => {
                    // A limit costs this connection, not the listener: the client is told why.
                    tracing::warn!(addr = %self.local_addr(), error = %e, "refusing a message-queue connection");
                    let mut refusal = REFUSED.to_vec();
                    refusal.extend_from_slice(format!("{e}\n\n").as_bytes());
                    let _ = stream.write_all(&refusal);
                    continue;
                }
            }
        }
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        super::Listener::set_interrupt(&mut self.inner, interrupt);
    }

    fn local_addr(&self) -> String {
        format!("mq:{}", self.inner.path().display())
    }
}

#[cfg(test)]
mod tests;

//! Shared-memory rings: the fastest transport between two processes on one machine.
//!
//! A connection is set up over a Unix socket: the listener (`shm:PATH` is "a Unix socket at
//! `PATH` that hands out shared-memory connections") creates, per connection, one unnamed
//! memfd sealed against shrinking and growing ([`Region`]), holding two
//! single-producer single-consumer rings (client to server, server to client), plus two
//! eventfds, and hands them to the client with `SCM_RIGHTS`. Nothing is named in `/dev/shm`:
//! the memory goes away with the last process that maps it, crash or not.
//!
//! The socket stays open as the liveness channel: a peer that dies closes it, so a receive
//! or a send waiting on a dead peer fails at once, as over a socket. It also carries the
//! "data" doorbell (a byte, only when the receiver said it is parked), so a server's epoll
//! set waits on one descriptor per connection for both requests and hang-ups.
//!
//! Rings carry ordinary length-prefixed frames, so any frame the other transports carry goes
//! through, including frames larger than a ring (in pieces, each copied in once and out
//! once). Every index read from the shared memory is checked, so a corrupt or hostile peer
//! gets a [`TransportError`], never undefined behaviour. How each side waits is its
//! [`Strategy`]: by default it spins only while that pays, then parks on a doorbell; an idle
//! connection costs no CPU.
//!
//! ```
//! use procwire_rpc::transport::{shm, Listener as _};
//! use procwire_rpc::{Frame, Wait};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("calc.sock");
//! let mut listener = shm::Listener::bind(&path)?;
//! // A connect returns once the listener has accepted and handed over the region.
//! let client = std::thread::spawn(move || shm::connect(&path));
//! let mut server = listener.accept(Wait::Block)?;
//! let mut client = client.join().expect("connect thread")?;
//! client.send(&mut Frame::from_payload(b"ping"), Wait::Block)?;
//! assert_eq!(server.recv(Wait::Block)?, b"ping");
//! # Ok(()) }
//! ```

mod conn;
mod ring;
mod spin;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{unix, Interrupt, PeerInfo, Transport};
use crate::error::TransportError;
use crate::shm::{recv_fds, send_fds, Region};
use crate::wait::Wait;
use conn::Shared;
use ring::{Consumer, Direction, Layout, Producer};

pub(crate) use conn::poll_until;
pub use conn::{ShmReceiver, ShmSender};
pub use spin::Strategy;

/// What the listener sends with the descriptors: a marker and the setup's version.
const SETUP: &[u8; 6] = b"PWSHM\x01";
/// How long a client waits for the listener's setup message.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How a shared-memory connection is made and waits.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Bytes per ring, a power of two from 4 KiB to 1 GiB; default 2 MiB, so a 1 MiB frame
    /// crosses in one piece (pages are only allocated as they are first used). Set by the
    /// listener, which creates the region. Larger frames go through in pieces.
    pub ring_size: usize,
    /// How this end waits for its peer; default [`Strategy::Adaptive`].
    pub strategy: Strategy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ring_size: 2 << 20,
            strategy: Strategy::Adaptive,
        }
    }
}

impl Options {
    /// Sets [`ring_size`](Self::ring_size), rounded up to a power of two within bounds.
    pub fn ring_size(mut self, bytes: usize) -> Self {
        self.ring_size = bytes.clamp(ring::MIN_CAPACITY, ring::MAX_CAPACITY).next_power_of_two();
        self
    }

    /// Sets [`strategy`](Self::strategy).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
}

fn setup_error(op: &'static str, name: &str, e: impl std::error::Error + Send + Sync + 'static) -> TransportError {
    TransportError::io(op, name, io::Error::other(e))
}

/// Connects to the shared-memory listener at the Unix socket `path`. Returns once the
/// listener has accepted the connection and handed over its region (within 10 s).
pub fn connect(path: impl AsRef<Path>) -> Result<Transport, TransportError> {
    connect_with(path, Options::default())
}

/// Connects to the shared-memory listener at `path`, waiting as `options` says.
pub fn connect_with(path: impl AsRef<Path>, options: Options) -> Result<Transport, TransportError> {
    let path = path.as_ref();
    let name = format!("shm:{}", path.display());
    let stream = UnixStream::connect(path).map_err(|e| TransportError::io("connect", name.clone(), e))?;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    let ready = conn::poll_until(&mut fds, Wait::timeout(SETUP_TIMEOUT), &name)?;
    if !ready {
        return Err(TransportError::io(
            "waiting for the shared-memory setup",
            name,
            io::Error::new(io::ErrorKind::TimedOut, format!("nothing came in {SETUP_TIMEOUT:?}")),
        ));
    }
    let mut marker = [0; SETUP.len()];
    let (n, fds) =
        recv_fds(stream.as_fd(), &mut marker).map_err(|e| setup_error("receiving the shared region", &name, e))?;
    if n == 0 {
        return Err(TransportError::Closed { peer: name });
    }
    let [region, to_server, to_client]: [OwnedFd; 3] = match fds.try_into() {
        Ok(fds) if n == SETUP.len() && &marker == SETUP => fds,
        _ => {
            return Err(setup_error(
                "receiving the shared region",
                &name,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the peer is not a procwire shared-memory listener (or speaks another version)",
                ),
            ))
        }
    };
    // The doorbells are only ever read without waiting: make sure of it whatever the peer sent.
    for bell in [&to_server, &to_client] {
        fcntl(bell.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| TransportError::io("fcntl on a doorbell", name.clone(), e))?;
    }
    let region = Region::from_fd(region).map_err(|e| setup_error("mapping the shared region", &name, e))?;
    let layout = Layout::open(Arc::new(region)).map_err(|e| setup_error("opening the shared region", &name, e))?;
    Ok(assemble(
        stream,
        layout,
        [to_server, to_client],
        Direction::ToServer,
        name,
        options.strategy,
    ))
}

/// For [`crate::fuzz::shm_ring`]: a client's end over a region whose first bytes are `bytes`
/// (as a hostile server wrote them), checked as `connect` checks it, then every frame the
/// receiver yields, given to `each`, until it has none or refuses the ring.
pub(crate) fn fuzz_receive(bytes: &[u8], max_frame_len: usize, mut each: impl FnMut(&[u8])) {
    let len = ring::region_len(ring::MIN_CAPACITY);
    let region = Region::create(len).expect("a region");
    region
        .write_bytes(0, &bytes[..bytes.len().min(len)])
        .expect("the bytes fit the region");
    let Ok(layout) = Layout::open(Arc::new(region)) else {
        return;
    };
    let bell = || {
        EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map(OwnedFd::from)
            .expect("an eventfd")
    };
    let (ours, peer) = UnixStream::pair().expect("a socketpair");
    let mut transport = assemble(
        ours,
        layout,
        [bell(), bell()],
        Direction::ToServer,
        "fuzz".into(),
        Strategy::Block,
    );
    transport.set_max_frame_len(max_frame_len);
    // A hostile ring can hold at most its capacity in frames; each frame takes 4 bytes or more.
    for _ in 0..=ring::MIN_CAPACITY / 4 {
        match transport.recv(Wait::NonBlock) {
            Ok(payload) => each(&payload),
            Err(_) => break,
        }
    }
    drop(peer);
}

/// Builds one end: `tx` is the direction this end sends in.
fn assemble(
    stream: UnixStream,
    layout: Layout,
    space: [OwnedFd; 2],
    tx: Direction,
    name: String,
    strategy: Strategy,
) -> Transport {
    let rx = match tx {
        Direction::ToServer => Direction::ToClient,
        Direction::ToClient => Direction::ToServer,
    };
    let socket = OwnedFd::from(stream);
    let credentials = unix::credentials(&socket);
    let (producer, consumer) = (Producer::new(layout.ring(tx)), Consumer::new(layout.ring(rx)));
    let sh = Arc::new(Shared {
        _layout: layout,
        socket,
        name: name.clone(),
    });
    let [to_server, to_client] = space.map(Arc::new);
    let (tx_space, rx_space) = match tx {
        Direction::ToServer => (to_server, to_client),
        Direction::ToClient => (to_client, to_server),
    };
    Transport {
        sender: Box::new(ShmSender::new(Arc::clone(&sh), producer, tx_space, strategy)),
        receiver: Box::new(ShmReceiver::new(sh, consumer, rx_space, strategy)),
        peer: PeerInfo { name, credentials },
    }
}

/// A Unix socket that hands out shared-memory connections. The socket file is removed when
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

    /// Binds `path`; connections get rings of `options.ring_size` and wait as it says.
    pub fn bind_with(path: impl AsRef<Path>, options: Options) -> Result<Self, TransportError> {
        let options = options.clone().ring_size(options.ring_size);
        Ok(Listener {
            inner: unix::Listener::bind(path)?,
            options,
        })
    }

    /// Wraps a listening Unix socket this process was handed (socket activation, a
    /// supervisor) as a shared-memory listener. Its file belongs to whoever bound it.
    pub fn from_std(listener: std::os::unix::net::UnixListener, options: Options) -> Result<Self, TransportError> {
        let options = options.clone().ring_size(options.ring_size);
        Ok(Listener {
            inner: unix::Listener::from_std(listener)?,
            options,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    fn set_up(&self, stream: UnixStream) -> Result<Transport, TransportError> {
        let name = super::Listener::local_addr(self);
        let capacity = self.options.ring_size;
        let region = Region::create_labelled("procwire-shm-transport", ring::region_len(capacity))
            .map_err(|e| setup_error("creating the shared region", &name, e))?;
        let bell = || {
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map(OwnedFd::from)
                .map_err(|e| TransportError::io("eventfd", name.clone(), e))
        };
        let space = [bell()?, bell()?];
        let region = Arc::new(region);
        // The header is written before the client can see the region.
        let layout = Layout::create(region.clone(), capacity);
        send_fds(
            stream.as_fd(),
            SETUP,
            &[region.as_fd(), space[0].as_fd(), space[1].as_fd()],
        )
        .map_err(|e| setup_error("handing over the shared region", &name, e))?;
        Ok(assemble(
            stream,
            layout,
            space,
            Direction::ToClient,
            name,
            self.options.strategy,
        ))
    }
}

impl super::Listener for Listener {
    fn accept(&mut self, wait: Wait) -> Result<Transport, TransportError> {
        loop {
            let stream = self.inner.accept_stream(wait)?;
            match self.set_up(stream) {
                Ok(transport) => return Ok(transport),
                // A client that left before its setup costs only its own connection.
                Err(TransportError::Io { source, .. }) if is_gone(&source) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        super::Listener::set_interrupt(&mut self.inner, interrupt);
    }

    fn local_addr(&self) -> String {
        format!("shm:{}", self.inner.path().display())
    }
}

fn is_gone(e: &io::Error) -> bool {
    let os = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<crate::shm::ShmError>())
        .and_then(|shm| std::error::Error::source(shm))
        .and_then(|source| source.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error);
    matches!(os, Some(libc::EPIPE | libc::ECONNRESET))
}

//! [`Receiver`] and [`serve`]: one-way calls in, one datagram each, run by a service.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{recv, MsgFlags};

use super::{parse, DatagramError};
use crate::protocol::{Envelope, Kind};
use crate::service::{CallContext, Cancel, Service};
use crate::transport::{wait_ready, Interrupt, PeerInfo};
use crate::wait::Wait;

/// The receive buffer: above any datagram a Unix socket's default buffers let through.
const BUFFER: usize = 256 << 10;

/// A bound datagram socket that one-way calls arrive on. A Unix socket file it bound is
/// removed when it is dropped.
#[derive(Debug)]
pub struct Receiver {
    socket: OwnedFd,
    local: String,
    udp: Option<SocketAddr>,
    path: Option<PathBuf>,
    buf: Vec<u8>,
    interrupt: Option<Interrupt>,
}

impl Receiver {
    /// Binds a Unix datagram socket at `path`. A socket file left there by a receiver that
    /// is gone is replaced; one something still receives on is "address in use".
    pub fn bind_unix(path: impl AsRef<Path>) -> Result<Receiver, DatagramError> {
        let path = path.as_ref();
        let local = format!("unixgram:{}", path.display());
        let bind = || UnixDatagram::bind(path);
        let socket = match bind() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let probe = UnixDatagram::unbound().and_then(|probe| probe.connect(path));
                if probe.is_ok() {
                    return Err(DatagramError::io("bind", &local, e));
                }
                let _ = std::fs::remove_file(path);
                bind()
            }
            other => other,
        }
        .map_err(|e| DatagramError::io("bind", &local, e))?;
        Ok(Self::new(socket.into(), local, None, Some(path.to_path_buf())))
    }

    /// Binds a UDP socket at `addr` (port 0: any free port; see [`udp_addr`](Self::udp_addr)).
    pub fn bind_udp(addr: impl ToSocketAddrs) -> Result<Receiver, DatagramError> {
        let socket = UdpSocket::bind(addr).map_err(|e| DatagramError::io("bind", "udp", e))?;
        let addr = socket
            .local_addr()
            .map_err(|e| DatagramError::io("getsockname", "udp", e))?;
        Ok(Self::new(socket.into(), format!("udp:{addr}"), Some(addr), None))
    }

    fn new(socket: OwnedFd, local: String, udp: Option<SocketAddr>, path: Option<PathBuf>) -> Self {
        Receiver {
            socket,
            local,
            udp,
            path,
            buf: vec![0; BUFFER],
            interrupt: None,
        }
    }

    /// The bound address, for messages: `unixgram:PATH` or `udp:HOST:PORT`.
    pub fn local_addr(&self) -> &str {
        &self.local
    }

    /// The UDP address bound, with the port chosen if 0 was asked for.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// Receives one datagram as it came, waiting as `wait` allows.
    pub fn recv(&mut self, wait: Wait) -> Result<&[u8], DatagramError> {
        loop {
            match recv(self.socket.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Ok(&self.buf[..n]),
                Err(Errno::EINTR) => {}
                // A UDP socket may report an ICMP error for a datagram it sent; it sends none.
                Err(Errno::EAGAIN | Errno::ECONNREFUSED) => self.wait(wait)?,
                Err(e) => return Err(DatagramError::io("recv", &self.local, e)),
            }
        }
    }

    fn wait(&self, wait: Wait) -> Result<(), DatagramError> {
        Ok(wait_ready(
            self.socket.as_fd(),
            PollFlags::POLLIN,
            wait,
            self.interrupt.as_ref(),
            &self.local,
        )?)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a [`DatagramServer`] has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams received.
    pub received: u64,
    /// Calls the service ran and returned from without a fault.
    pub handled: u64,
    /// Calls the service ran that returned a fault (bad arguments, an unknown method) or
    /// panicked.
    pub failed: u64,
    /// Datagrams of another service's fingerprint, dropped.
    pub wrong_service: u64,
    /// Datagrams that are not procwire one-way calls, dropped.
    pub malformed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    handled: AtomicU64,
    failed: AtomicU64,
    wrong_service: AtomicU64,
    malformed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            received: get(&self.received),
            handled: get(&self.handled),
            failed: get(&self.failed),
            wrong_service: get(&self.wrong_service),
            malformed: get(&self.malformed),
        }
    }
}

/// Runs the one-way calls that arrive on a [`Receiver`], in arrival order, on one thread of
/// its own. Dropping it stops it, like [`stop`](Self::stop).
#[derive(Debug)]
pub struct DatagramServer {
    interrupt: Interrupt,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl DatagramServer {
    /// What it has seen so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Stops receiving (a call running finishes first) and returns the final counts.
    pub fn stop(mut self) -> Stats {
        self.end();
        self.counters.snapshot()
    }

    fn end(&mut self) {
        self.interrupt.fire();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DatagramServer {
    fn drop(&mut self) {
        self.end();
    }
}

/// Serves `service`'s one-way methods on `receiver`: each datagram of the service's
/// fingerprint is run as a one-way call (its `CallContext::is_oneway` is true); others are
/// dropped and counted.
pub fn serve<S: Service>(mut receiver: Receiver, service: S) -> Result<DatagramServer, DatagramError> {
    let interrupt = Interrupt::new().map_err(|e| DatagramError::io("eventfd", receiver.local_addr(), e))?;
    receiver.interrupt = Some(interrupt.clone());
    let counters = Arc::new(Counters::default());
    let thread = {
        let counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("procwire-datagrams".into())
            .spawn(move || run(receiver, service, &counters))
            .map_err(|e| DatagramError::io("spawn", "procwire-datagrams", e))?
    };
    Ok(DatagramServer {
        interrupt,
        counters,
        thread: Some(thread),
    })
}

fn run<S: Service>(mut receiver: Receiver, service: S, counters: &Counters) {
    let info = service.info();
    let peer = Arc::new(PeerInfo::named(receiver.local_addr().to_owned()));
    loop {
        let datagram = match receiver.recv(Wait::Block) {
            Ok(datagram) => datagram,
            Err(DatagramError::Interrupted { .. }) => return,
            Err(e) => {
                tracing::warn!(addr = %receiver.local_addr(), error = %e, "datagram receive failed; stopping");
                return;
            }
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        let call = parse(datagram).and_then(|(theirs, payload)| {
            let (envelope, args) = Envelope::decode(payload).map_err(|_| "an undecodable envelope")?;
            match envelope.kind {
                Kind::OneWay => Ok((theirs, envelope, args)),
                _ => Err("not a one-way call"),
            }
        });
        let (theirs, envelope, args) = match call {
            Ok(call) => call,
            Err(why) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(addr = %receiver.local_addr(), why, "dropping a datagram");
                continue;
            }
        };
        // Another service's method, or one whose signature differs from ours: dropped, as
        // a connection's handshake would refuse the call.
        if info.method(envelope.method).map(|m| m.fingerprint) != Some(theirs) {
            counters.wrong_service.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let ctx = CallContext {
            envelope,
            deadline: None,
            peer: Arc::clone(&peer),
            key_name: None,
            cancelled: Arc::new(Cancel::default()),
            replies: None,
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| service.call(&ctx, args)));
        let counter = match outcome {
            Ok(Ok(_)) => &counters.handled,
            _ => &counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

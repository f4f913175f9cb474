//! [`Sender`]: one-way calls out, one datagram each.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{connect, send, MsgFlags, UnixAddr};
use serde::Serialize;

use super::{DatagramError, DEFAULT_UDP_MAX, DEFAULT_UNIX_MAX, HEADER, MAGIC, UDP_MAX};
use crate::protocol::{Envelope, Kind};
use crate::service::{Method, ServiceInfo};
use crate::transport::wait_ready;
use crate::wait::Wait;

/// Where a sender's datagrams go.
#[derive(Debug)]
enum Target {
    /// A Unix datagram socket's path: connected, and connected again if its receiver was
    /// replaced (a restarted receiver binds a new socket at the same path).
    Unix(PathBuf),
    /// A UDP address, connected, so that an ICMP "unreachable" is reported.
    Udp,
}

/// Sends the one-way methods of one service as datagrams to one receiver. `Sync`: any
/// number of threads may send through one. See the [module docs](super) for what is and is
/// not guaranteed.
#[derive(Debug)]
pub struct Sender {
    socket: OwnedFd,
    target: Target,
    peer: String,
    /// The signatures of the service's methods: each datagram carries its method's.
    service: ServiceInfo,
    max: usize,
    timeout: Option<Duration>,
    /// A Unix sender has connected to its receiver.
    connected: AtomicBool,
}

impl Sender {
    /// A sender to the Unix datagram socket at `path`, for `service`. Nothing needs to be
    /// bound there yet: a send finds out ([`DatagramError::NoReceiver`]).
    pub fn unix(path: impl AsRef<Path>, service: ServiceInfo) -> Result<Sender, DatagramError> {
        let path = path.as_ref().to_path_buf();
        let peer = format!("unixgram:{}", path.display());
        let socket = UnixDatagram::unbound().map_err(|e| DatagramError::io("socket", &peer, e))?;
        Ok(Sender {
            socket: socket.into(),
            target: Target::Unix(path),
            peer,
            service,
            max: DEFAULT_UNIX_MAX,
            timeout: None,
            connected: AtomicBool::new(false),
        })
    }

    /// A sender to the UDP address `addr` (the first it resolves to), for `service`.
    pub fn udp(addr: impl ToSocketAddrs, service: ServiceInfo) -> Result<Sender, DatagramError> {
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| DatagramError::io("resolve", "udp", e))?
            .next()
            .ok_or_else(|| DatagramError::io("resolve", "udp", std::io::Error::other("no address")))?;
        let peer = format!("udp:{addr}");
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).map_err(|e| DatagramError::io("bind", &peer, e))?;
        socket
            .connect(addr)
            .map_err(|e| DatagramError::io("connect", &peer, e))?;
        Ok(Sender {
            socket: socket.into(),
            target: Target::Udp,
            peer,
            service,
            max: DEFAULT_UDP_MAX,
            timeout: None,
            connected: AtomicBool::new(true),
        })
    }

    /// The largest datagram sent, header included; a larger one is refused.
    pub fn max_datagram(&self) -> usize {
        self.max
    }

    /// Sets [`max_datagram`](Self::max_datagram) (over UDP at most 65,507 bytes). A Unix
    /// socket's kernel refuses datagrams above its send buffer (`net.core.wmem_default`,
    /// about 208 KiB) whatever this says.
    pub fn set_max_datagram(&mut self, max: usize) {
        self.max = match self.target {
            Target::Udp => max.min(UDP_MAX),
            Target::Unix(_) => max,
        };
    }

    /// How long a send waits for room (a Unix receiver's full queue, a full send buffer):
    /// `None`, the default, as long as it takes; zero, not at all.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// The receiver's address, for messages.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Sends one call of `method` with `args` (encoded as the generated server decodes
    /// them), as one datagram.
    pub fn send<T: Serialize + ?Sized>(&self, method: Method, args: &T) -> Result<(), DatagramError> {
        let envelope = Envelope {
            id: 0,
            kind: Kind::OneWay,
            method: method.id,
            timeout_us: None,
        };
        let mut datagram = Vec::with_capacity(64);
        datagram.extend_from_slice(MAGIC);
        // The method's signature, as the handshake would compare it (0: a method this
        // service does not have, which every receiver drops).
        let fingerprint = self.service.method(method.id).map_or(0, |m| m.fingerprint);
        datagram.extend_from_slice(&fingerprint.to_le_bytes());
        let encoded = postcard::to_extend(&envelope, datagram)
            .and_then(|datagram| postcard::to_extend(args, datagram))
            .map_err(|source| DatagramError::Encode {
                method: method.name,
                source,
            })?;
        debug_assert!(encoded.len() >= HEADER);
        self.send_bytes(&encoded)
    }

    /// Sends `datagram` as it is, within the limit.
    fn send_bytes(&self, datagram: &[u8]) -> Result<(), DatagramError> {
        if datagram.len() > self.max {
            return Err(DatagramError::TooLarge {
                peer: self.peer.clone(),
                len: datagram.len(),
                max: self.max,
            });
        }
        let wait = match self.timeout {
            None => Wait::Block,
            Some(timeout) if timeout.is_zero() => Wait::NonBlock,
            Some(timeout) => Wait::timeout(timeout),
        };
        let mut reconnected = false;
        loop {
            let flags = if wait == Wait::Block {
                MsgFlags::MSG_NOSIGNAL
            } else {
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT
            };
            let result = match self.connect_unix_once() {
                Ok(()) => send(self.socket.as_raw_fd(), datagram, flags).map(drop),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => self.wait_for_room(wait)?,
                // A Unix receiver replaced by a new one at the same path: connect to it.
                Err(Errno::ECONNREFUSED | Errno::ENOTCONN | Errno::ENOENT)
                    if !reconnected && matches!(self.target, Target::Unix(_)) =>
                {
                    reconnected = true;
                    self.connect_unix().map_err(|e| self.send_error(e))?;
                }
                Err(e) => return Err(self.send_error(e)),
            }
        }
    }

    /// Connects a Unix sender the first time it sends (a connected Unix datagram socket
    /// waits for room in its receiver's queue; an unconnected one could only spin).
    fn connect_unix_once(&self) -> Result<(), Errno> {
        if matches!(self.target, Target::Unix(_)) && !self.connected.load(Ordering::Acquire) {
            return self.connect_unix();
        }
        Ok(())
    }

    fn connect_unix(&self) -> Result<(), Errno> {
        let Target::Unix(path) = &self.target else {
            return Ok(());
        };
        connect(self.socket.as_raw_fd(), &UnixAddr::new(path.as_path())?)?;
        self.connected.store(true, Ordering::Release);
        Ok(())
    }

    fn send_error(&self, e: Errno) -> DatagramError {
        match e {
            Errno::ECONNREFUSED | Errno::ENOENT | Errno::ENOTCONN => DatagramError::NoReceiver {
                peer: self.peer.clone(),
            },
            Errno::EMSGSIZE => DatagramError::io(
                "send",
                &self.peer,
                std::io::Error::other("the kernel refuses a datagram this large (see set_max_datagram)"),
            ),
            e => DatagramError::io("send", &self.peer, e),
        }
    }

    fn wait_for_room(&self, wait: Wait) -> Result<(), DatagramError> {
        Ok(wait_ready(
            self.socket.as_fd(),
            PollFlags::POLLOUT,
            wait,
            None,
            &self.peer,
        )?)
    }
}

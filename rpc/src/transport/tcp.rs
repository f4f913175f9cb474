//! Plain TCP (the `tcp+plain:` endpoint), with `TCP_NODELAY` so small frames leave at once.
//! No authentication, no encryption: anyone who reaches the address is served. The `tcp:`
//! endpoint is [`noise`](super::noise) over these sockets.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::PollFlags;

use super::stream::{self, FdKind, StreamReceiver, StreamSender};
use super::{Interrupt, PeerInfo, Transport};
use crate::error::TransportError;
use crate::wait::Wait;

/// Connects to `addr`.
pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Transport, TransportError> {
    let name = format!("tcp+plain:{addr:?}");
    let stream = TcpStream::connect(&addr).map_err(|e| TransportError::io("connect", name, e))?;
    from_stream(stream)
}

/// Sets `TCP_NODELAY` on a connected stream; returns its descriptor and the peer's name
/// under `scheme`.
pub(crate) fn prepare(stream: TcpStream, scheme: &str) -> Result<(OwnedFd, String), TransportError> {
    let name = match stream.peer_addr() {
        Ok(addr) => format!("{scheme}:{addr}"),
        Err(_) => format!("{scheme}:?"),
    };
    stream
        .set_nodelay(true)
        .map_err(|e| TransportError::io("setsockopt TCP_NODELAY", name.clone(), e))?;
    Ok((OwnedFd::from(stream), name))
}

/// Wraps a connected TCP stream.
pub fn from_stream(stream: TcpStream) -> Result<Transport, TransportError> {
    let (fd, name) = prepare(stream, "tcp+plain")?;
    let read = fd.try_clone().map_err(|e| TransportError::io("dup", name.clone(), e))?;
    Ok(Transport {
        sender: Box::new(StreamSender::new(fd, FdKind::Socket, name.clone())?),
        receiver: Box::new(StreamReceiver::new(read, FdKind::Socket, name.clone())?),
        peer: PeerInfo::named(name),
    })
}

/// A listening TCP socket.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
    interrupt: Option<Interrupt>,
}

impl Listener {
    /// Binds `addr`; port 0 picks a free port, see [`addr`](Self::addr).
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Self, TransportError> {
        let name = format!("tcp+plain:{addr:?}");
        let listener = TcpListener::bind(&addr).map_err(|e| TransportError::io("bind", name.clone(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| TransportError::io("fcntl", name.clone(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TransportError::io("getsockname", name, e))?;
        Ok(Listener {
            listener,
            addr,
            interrupt: None,
        })
    }

    /// Wraps a listening socket this process was handed (socket activation, a supervisor).
    pub fn from_std(listener: TcpListener) -> Result<Self, TransportError> {
        listener
            .set_nonblocking(true)
            .map_err(|e| TransportError::io("fcntl", "tcp listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TransportError::io("getsockname", "tcp listener", e))?;
        Ok(Listener {
            listener,
            addr,
            interrupt: None,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Listener {
    /// Accepts one connection as a plain stream, waiting as `wait` allows.
    pub(crate) fn accept_stream(&mut self, wait: Wait) -> Result<TcpStream, TransportError> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return Ok(stream),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    stream::wait_ready(
                        self.listener.as_fd(),
                        PollFlags::POLLIN,
                        wait,
                        self.interrupt.as_ref(),
                        &super::Listener::local_addr(self),
                    )?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::io("accept", super::Listener::local_addr(self), e)),
            }
        }
    }
}

impl super::Listener for Listener {
    fn accept(&mut self, wait: Wait) -> Result<Transport, TransportError> {
        from_stream(self.accept_stream(wait)?)
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = Some(interrupt);
    }

    fn local_addr(&self) -> String {
        format!("tcp+plain:{}", self.addr)
    }
}

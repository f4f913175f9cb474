//! Unix stream sockets.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::poll::PollFlags;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};

use super::stream::{self, FdKind, StreamReceiver, StreamSender};
use super::{Credentials, Interrupt, PeerInfo, Transport};
use crate::error::TransportError;
use crate::wait::Wait;

/// Connects to the Unix socket at `path`.
pub fn connect(path: impl AsRef<Path>) -> Result<Transport, TransportError> {
    let path = path.as_ref();
    let name = format!("unix:{}", path.display());
    let stream = UnixStream::connect(path).map_err(|e| TransportError::io("connect", name.clone(), e))?;
    from_stream(stream, name)
}

/// Wraps a connected Unix stream socket (from `socketpair`, an inherited descriptor, ...).
pub fn from_stream(stream: UnixStream, name: impl Into<String>) -> Result<Transport, TransportError> {
    let name = name.into();
    let fd = OwnedFd::from(stream);
    enlarge_send_buffer(&fd);
    let credentials = credentials(&fd);
    let read = fd.try_clone().map_err(|e| TransportError::io("dup", name.clone(), e))?;
    Ok(Transport {
        sender: Box::new(StreamSender::new(fd, FdKind::Socket, name.clone())?),
        receiver: Box::new(StreamReceiver::new(read, FdKind::Socket, name.clone())?),
        peer: PeerInfo { name, credentials },
    })
}

/// The most a Unix stream socket may hold unread, as its send buffer (the kernel doubles
/// what is asked, for its bookkeeping): 1 MiB, so that a 1 MiB frame crosses in one write
/// and one read rather than in steps of the default ~200 KiB, each a wake-up of the peer
/// (on one CPU, a switch to it and back). A limit, not an allocation: the kernel takes
/// memory only for bytes queued. Best effort, as pipes ask for 1 MiB (`enlarge_pipe`):
/// capped by `net.core.wmem_max` for unprivileged processes.
pub const SEND_BUFFER: usize = 1 << 20;

fn enlarge_send_buffer(fd: &OwnedFd) {
    let _ = setsockopt(fd, sockopt::SndBuf, &SEND_BUFFER);
}

/// The peer's credentials on a connected Unix socket, if the kernel says.
pub(crate) fn credentials(fd: &impl AsFd) -> Option<Credentials> {
    getsockopt(fd, sockopt::PeerCredentials).ok().map(|c| Credentials {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// A connected pair of Unix-socket transports, e.g. for a parent and the child it forks.
pub fn pair() -> Result<(Transport, Transport), TransportError> {
    let (a, b) = UnixStream::pair().map_err(|e| TransportError::io("socketpair", "unix:socketpair", e))?;
    Ok((from_stream(a, "unix:socketpair")?, from_stream(b, "unix:socketpair")?))
}

/// A listening Unix socket. The socket file is removed when the listener is dropped.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    interrupt: Option<Interrupt>,
    /// Whether dropping the listener removes the socket file (only if it bound it).
    owns_path: bool,
}

impl Listener {
    /// Binds `path`. A stale socket file left by a dead server is replaced; a live one is an
    /// "address in use" error.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, TransportError> {
        let path = path.as_ref().to_path_buf();
        let name = format!("unix:{}", path.display());
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && UnixStream::connect(&path).is_err() => {
                std::fs::remove_file(&path).map_err(|e| TransportError::io("remove stale socket", name.clone(), e))?;
                UnixListener::bind(&path).map_err(|e| TransportError::io("bind", name.clone(), e))?
            }
            Err(e) => return Err(TransportError::io("bind", name, e)),
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| TransportError::io("fcntl", name, e))?;
        Ok(Listener {
            listener,
            path,
            interrupt: None,
            owns_path: true,
        })
    }

    /// Wraps a listening socket this process was handed (socket activation, a supervisor).
    /// Its file belongs to whoever bound it and is left in place on drop.
    pub fn from_std(listener: UnixListener) -> Result<Self, TransportError> {
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("(unnamed)"));
        let name = format!("unix:{}", path.display());
        listener
            .set_nonblocking(true)
            .map_err(|e| TransportError::io("fcntl", name, e))?;
        Ok(Listener {
            listener,
            path,
            interrupt: None,
            owns_path: false,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Listener {
    /// Accepts one connection as a plain stream, waiting as `wait` allows (for transports
    /// set up over a Unix socket, like [`shm`](super::shm)).
    pub(crate) fn accept_stream(&mut self, wait: Wait) -> Result<UnixStream, TransportError> {
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
        let stream = self.accept_stream(wait)?;
        from_stream(stream, self.local_addr())
    }

    fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = Some(interrupt);
    }

    fn local_addr(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.owns_path {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_transport_asks_for_a_send_buffer_a_large_frame_fits_in() {
        let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if wmem_max < SEND_BUFFER {
            eprintln!("skip: net.core.wmem_max is {wmem_max}, below {SEND_BUFFER}");
            return;
        }
        let (a, _b) = UnixStream::pair().unwrap();
        let same = a.try_clone().unwrap();
        let default = getsockopt(&same, sockopt::SndBuf).unwrap();
        let _transport = from_stream(a, "test").unwrap();
        let now = getsockopt(&same, sockopt::SndBuf).unwrap();
        // The kernel reports twice what was asked.
        assert!(now >= SEND_BUFFER && now > default, "{default} -> {now}");
    }
}

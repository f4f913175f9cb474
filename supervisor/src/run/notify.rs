//! The sd_notify socket: a datagram socket whose messages (`READY=1`, `STATUS=...`,
//! `STOPPING=1`, `WATCHDOG=1`) carry the sender's credentials, so only the supervisor's
//! own workers are heard.

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
use nix::unistd::Pid;

/// One notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender, as the kernel reports it.
    pub pid: Pid,
    /// `KEY=VALUE` assignments, one per line.
    pub fields: Vec<(String, String)>,
}

/// The notify socket.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds `path`.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        socket.set_nonblocking(true)?;
        setsockopt(&socket, sockopt::PassCred, &true)?;
        Ok(NotifySocket {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.socket)
    }

    /// The next queued message, if any. Messages without credentials are dropped.
    pub fn recv(&self) -> std::io::Result<Option<Message>> {
        let mut buf = [0u8; 4096];
        loop {
            let mut cmsg = nix::cmsg_space!(nix::libc::ucred);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<UnixAddr>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => msg,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let pid = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cred) => Some(Pid::from_raw(cred.pid())),
                _ => None,
            });
            let len = msg.bytes;
            let Some(pid) = pid else { continue };
            let text = String::from_utf8_lossy(&buf[..len]);
            let fields = procwire_workers::notify::decode(&text);
            return Ok(Some(Message { pid, fields }));
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

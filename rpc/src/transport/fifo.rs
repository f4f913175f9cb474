//! A pair of named FIFOs in a directory: `c2s` carries client-to-server frames, `s2c` the
//! replies. Both sides open them in the same order, so neither can deadlock the other;
//! [`open`] returns once the peer has opened its ends too.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::sys::stat::Mode;

use super::stream::{self, FdKind, StreamReceiver, StreamSender};
use super::{PeerInfo, Transport};
use crate::error::TransportError;

/// Which end of the FIFO pair this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Reads `c2s`, writes `s2c`.
    Server,
    /// Writes `c2s`, reads `s2c`.
    Client,
}

/// Creates the two FIFOs in `dir`, readable and writable by the owner only.
pub fn create(dir: impl AsRef<Path>) -> Result<(), TransportError> {
    for name in ["c2s", "s2c"] {
        let path = dir.as_ref().join(name);
        nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|e| TransportError::io("mkfifo", format!("fifo:{}", path.display()), e))?;
    }
    Ok(())
}

/// Opens this side's ends of the FIFO pair in `dir`. Blocks until the peer opens its ends.
pub fn open(dir: impl AsRef<Path>, side: Side) -> Result<Transport, TransportError> {
    let dir = dir.as_ref();
    let name = format!("fifo:{}", dir.display());
    let open = |file: &str, write: bool| -> Result<OwnedFd, TransportError> {
        let path = dir.join(file);
        let file = OpenOptions::new()
            .read(!write)
            .write(write)
            .open(&path)
            .map_err(|e| TransportError::io("open", format!("fifo:{}", path.display()), e))?;
        Ok(OwnedFd::from(file))
    };
    // Both sides open c2s first, then s2c: each open pairs with the peer's matching open.
    let (read, write) = match side {
        Side::Server => {
            let read = open("c2s", false)?;
            (read, open("s2c", true)?)
        }
        Side::Client => {
            let write = open("c2s", true)?;
            (open("s2c", false)?, write)
        }
    };
    stream::enlarge_pipe(read.as_fd());
    stream::enlarge_pipe(write.as_fd());
    Ok(Transport {
        sender: Box::new(StreamSender::new(write, FdKind::Pipe, name.clone())?),
        receiver: Box::new(StreamReceiver::new(read, FdKind::Pipe, name.clone())?),
        peer: PeerInfo::named(name),
    })
}

//! A pair of named FIFOs in a directory: `c2s` carries client-to-server frames, `s2c` the
//! replies. Both sides open them in the same order, so neither can deadlock the other;
//! [`open`] returns once the peer has opened its ends too.
//!
//! Writing to a FIFO whose reader has exited raises `SIGPIPE`. Rust programs ignore it from
//! the start (the standard library does so before `main`), so the write fails with a clear
//! error instead; a host program that restores the default disposition must ignore
//! `SIGPIPE` itself. The same holds for [`pipe`](super::pipe).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc;
use std::time::Duration;

use nix::libc;
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

/// Like [`open`], but gives up with [`TransportError::TimedOut`] if the peer has not opened
/// its ends within `timeout`.
pub fn open_timeout(dir: impl AsRef<Path>, side: Side, timeout: Duration) -> Result<Transport, TransportError> {
    let dir = dir.as_ref().to_path_buf();
    let (tx, rx) = mpsc::channel();
    let opener = {
        let dir = dir.clone();
        std::thread::Builder::new()
            .name("procwire-fifo-open".into())
            .spawn(move || {
                let _ = tx.send(open(&dir, side));
            })
    }
    .map_err(|e| TransportError::io("spawn", format!("fifo:{}", dir.display()), e))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => {
            let _ = opener.join();
            result
        }
        Err(_) => {
            // open(2) on a FIFO cannot time out: play the missing peer so that the opener's
            // blocked open returns, then throw both sides away. On Linux an O_RDWR open of a
            // FIFO neither blocks nor fails, and counts as both a reader and a writer, so it
            // releases the opener whichever end it waits on, now or when it gets there.
            let stand_ins: Vec<_> = ["c2s", "s2c"]
                .into_iter()
                .filter_map(|file| {
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(dir.join(file))
                        .ok()
                })
                .collect();
            let _ = opener.join();
            drop(stand_ins);
            Err(TransportError::TimedOut {
                peer: format!("fifo:{}", dir.display()),
            })
        }
    }
}

/// Opens this side's ends of the FIFO pair in `dir`. Blocks until the peer opens its ends;
/// see [`open_timeout`] to bound the wait.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_without_a_peer_times_out_and_leaves_the_fifos_usable() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path()).unwrap();
        for side in [Side::Server, Side::Client] {
            let err = open_timeout(dir.path(), side, Duration::from_millis(20)).unwrap_err();
            assert!(matches!(err, TransportError::TimedOut { .. }), "{err}");
        }
        // A real pair still connects afterwards.
        let path = dir.path().to_path_buf();
        let server = std::thread::spawn(move || open_timeout(&path, Side::Server, Duration::from_secs(30)));
        let mut client = open_timeout(dir.path(), Side::Client, Duration::from_secs(30)).unwrap();
        let mut server = server.join().unwrap().unwrap();
        client
            .send(&mut crate::Frame::from_payload(b"ping"), crate::Wait::Block)
            .unwrap();
        assert_eq!(server.recv(crate::Wait::Block).unwrap(), b"ping");
    }
}

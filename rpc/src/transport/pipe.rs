//! A pair of anonymous pipes, typically shared between a parent and the child it spawns.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use procwire_rpc::transport::pipe;
//! let (parent, child_ends) = pipe::pair()?;
//! let mut cmd = std::process::Command::new("my-worker");
//! child_ends.pass_to(&mut cmd);         // the child finds them with pipe::from_env()
//! let child = cmd.spawn()?;
//! drop(child_ends);                      // close the parent's copies of the child's ends
//! # let _ = (parent, child); Ok(()) }
//! ```

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::stat::{fstat, SFlag};
use nix::unistd::pipe2;

use super::stream::{self, FdKind, StreamReceiver, StreamSender};
use super::{PeerInfo, Transport};
use crate::error::TransportError;

/// The environment variable through which [`ChildEnds::pass_to`] tells a child its
/// descriptors: `"READ_FD,WRITE_FD"`.
pub const ENV_VAR: &str = "PROCWIRE_PIPE_FDS";

/// Builds a transport from a pipe to read from and a pipe to write to.
pub fn from_fds(read: OwnedFd, write: OwnedFd) -> Result<Transport, TransportError> {
    let name = format!("pipe:{}/{}", read.as_raw_fd(), write.as_raw_fd());
    Ok(Transport {
        sender: Box::new(StreamSender::new(write, FdKind::Pipe, name.clone())?),
        receiver: Box::new(StreamReceiver::new(read, FdKind::Pipe, name.clone())?),
        peer: PeerInfo::named(name),
    })
}

/// Creates two pipes: one end of each for this process, as a transport, and the opposite
/// ends for a child.
pub fn pair() -> Result<(Transport, ChildEnds), TransportError> {
    let (child_read, parent_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| TransportError::io("pipe", "pipe", e))?;
    let (parent_read, child_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| TransportError::io("pipe", "pipe", e))?;
    stream::enlarge_pipe(parent_read.as_fd());
    stream::enlarge_pipe(parent_write.as_fd());
    let transport = from_fds(parent_read, parent_write)?;
    Ok((
        transport,
        ChildEnds {
            read: child_read,
            write: child_write,
        },
    ))
}

/// The child's ends of a [`pair`].
#[derive(Debug)]
pub struct ChildEnds {
    /// The end the child reads from.
    pub read: OwnedFd,
    /// The end the child writes to.
    pub write: OwnedFd,
}

impl ChildEnds {
    /// Makes `cmd` hand both ends to the child it spawns (at the same descriptor numbers,
    /// named in [`ENV_VAR`]). No other process spawned meanwhile inherits them. Drop `self`
    /// after spawning, so that the child's exit closes the pipes.
    pub fn pass_to(&self, cmd: &mut Command) {
        let fds = [self.read.as_raw_fd(), self.write.as_raw_fd()];
        cmd.env(ENV_VAR, format!("{},{}", fds[0], fds[1]));
        // SAFETY: the closure runs in the forked child before exec and calls only fcntl(2),
        // which is async-signal-safe; it allocates nothing and takes no locks. The
        // descriptors are open: `self` owns them and outlives the spawn that runs this.
        unsafe {
            cmd.pre_exec(move || {
                for fd in fds {
                    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                }
                Ok(())
            });
        }
    }
}

/// Builds the transport a parent handed over with [`ChildEnds::pass_to`].
///
/// It claims the descriptors named in [`ENV_VAR`] once per process; a second call fails.
/// Each must be an open pipe that this process inherited (not close-on-exec), which rules out
/// claiming a descriptor that some other part of the program opened at the same number (a
/// grandchild that inherits the variable but not the descriptors, say). Writing to a pipe
/// whose reader has exited raises `SIGPIPE`; Rust programs ignore it from the start (the
/// standard library does so before `main`), so the write fails with a clear error instead,
/// but a host that restores the default disposition must ignore `SIGPIPE` itself.
pub fn from_env() -> Result<Transport, TransportError> {
    static CLAIMED: AtomicBool = AtomicBool::new(false);
    let err = |detail: String| TransportError::io("claim inherited pipes", ENV_VAR, std::io::Error::other(detail));
    let value = std::env::var(ENV_VAR).map_err(|_| err(format!("{ENV_VAR} is not set")))?;
    let bad = || err(format!("{ENV_VAR}={value:?} is not READ_FD,WRITE_FD"));
    let (r, w) = value.split_once(',').ok_or_else(bad)?;
    let r: RawFd = r.trim().parse().map_err(|_| bad())?;
    let w: RawFd = w.trim().parse().map_err(|_| bad())?;
    if r == w || r < 0 || w < 0 {
        return Err(bad());
    }
    for fd in [r, w] {
        let flags =
            fcntl(fd, FcntlArg::F_GETFD).map_err(|e| err(format!("fd {fd} from {ENV_VAR} is not open: {e}")))?;
        if FdFlag::from_bits_retain(flags).contains(FdFlag::FD_CLOEXEC) {
            return Err(err(format!(
                "fd {fd} from {ENV_VAR} was not inherited (it is close-on-exec)"
            )));
        }
        let stat = fstat(fd).map_err(|e| err(format!("fstat of fd {fd} from {ENV_VAR}: {e}")))?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFIFO {
            return Err(err(format!("fd {fd} from {ENV_VAR} is not a pipe")));
        }
    }
    if CLAIMED.swap(true, Ordering::SeqCst) {
        return Err(err(format!(
            "the pipes in {ENV_VAR} were already claimed by this process"
        )));
    }
    let mut owned = Vec::with_capacity(2);
    for fd in [r, w] {
        // SAFETY: the descriptor is open, is a pipe, and was inherited across exec (checked
        // above), so no other part of this process created it; the CLAIMED flag makes this
        // the only place that ever takes ownership of it.
        owned.push(unsafe { OwnedFd::from_raw_fd(fd) });
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    let write = owned.pop().expect("two descriptors");
    let read = owned.pop().expect("two descriptors");
    from_fds(read, write)
}

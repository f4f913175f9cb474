//! Handing descriptors to another process over a Unix socket (`SCM_RIGHTS`).
//!
//! Sending a descriptor gives the receiver its own descriptor for the same open file; for a
//! region that is the same memory. Received descriptors are close-on-exec
//! (`MSG_CMSG_CLOEXEC`), so they reach no child by accident.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::error::ShmError;
use super::region::Region;

/// The most descriptors one message carries; the kernel's own limit is 253.
pub const MAX_FDS: usize = 16;

/// Sends `data` (at least one byte: a stream socket carries descriptors only with data) and
/// `fds` in one message on the Unix socket `socket`. Returns how many bytes of `data` were
/// sent; the descriptors travel with the first byte, so a short send still delivered them.
///
/// Waits if the socket is blocking; on a non-blocking socket that is full it fails with
/// `EAGAIN` as [`ShmError::Os`], and nothing was sent.
///
/// # Panics
///
/// If `data` is empty or `fds` has more than [`MAX_FDS`] descriptors.
pub fn send_fds(socket: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<usize, ShmError> {
    assert!(!data.is_empty(), "send_fds needs at least one byte of data");
    assert!(fds.len() <= MAX_FDS, "send_fds carries at most {MAX_FDS} descriptors");
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    let iov = [IoSlice::new(data)];
    loop {
        match sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ShmError::os("sendmsg with descriptors", e)),
            Ok(n) => return Ok(n),
        }
    }
}

/// Receives one message of at most `buf.len()` bytes (at least one) on the Unix socket
/// `socket`, with the descriptors it carries (at most [`MAX_FDS`]). Returns the bytes read
/// and the descriptors; zero bytes mean the peer closed the socket.
///
/// A message whose descriptors did not all fit is an error ([`ShmError::TooManyFds`]); the
/// ones that did arrive are closed.
///
/// # Panics
///
/// If `buf` is empty.
pub fn recv_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), ShmError> {
    assert!(!buf.is_empty(), "recv_fds needs room for at least one byte");
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ShmError::os("recvmsg with descriptors", e)),
            Ok(msg) => break msg,
        }
    };
    let mut fds = Vec::new();
    let cmsgs = msg
        .cmsgs()
        .map_err(|e| ShmError::os("reading the control messages of recvmsg", e))?;
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in this process for this message;
                // nothing else knows it, so this is its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(ShmError::TooManyFds {
            socket: socket.as_raw_fd(),
            max: MAX_FDS,
        });
    }
    Ok((msg.bytes, fds))
}

/// The byte a region travels with, so that a stray message is recognised.
const REGION_TAG: u8 = b'R';

/// Sends `region` to the process at the other end of the Unix socket `socket`, which
/// receives it with [`recv_region`].
pub fn send_region(socket: impl AsFd, region: &Region) -> Result<(), ShmError> {
    send_fds(socket.as_fd(), &[REGION_TAG], &[region.as_fd()])?;
    Ok(())
}

/// Receives a region sent with [`send_region`] on the Unix socket `socket`, checks it
/// ([`Region::from_fd`]) and maps it.
pub fn recv_region(socket: impl AsFd) -> Result<Region, ShmError> {
    let socket = socket.as_fd();
    let mut tag = [0u8; 1];
    let (n, mut fds) = recv_fds(socket, &mut tag)?;
    if n == 0 {
        return Err(ShmError::PeerClosed {
            socket: socket.as_raw_fd(),
        });
    }
    if tag[0] != REGION_TAG || fds.len() != 1 {
        return Err(ShmError::MissingFds {
            socket: socket.as_raw_fd(),
            got: fds.len(),
            expected: 1,
        });
    }
    Region::from_fd(fds.remove(0))
}

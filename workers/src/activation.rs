//! systemd's socket-activation protocol, the receiving side: `LISTEN_PID` names this
//! process, `LISTEN_FDS` says how many descriptors it was handed from 3 on, and
//! `LISTEN_FDNAMES` names them (colon-separated).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// The first descriptor of the protocol.
pub const LISTEN_FDS_START: RawFd = 3;

/// How many descriptors were handed over, from [`LISTEN_FDS_START`] on.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// The process they are meant for (a child that inherits the variables must not take them).
pub const LISTEN_PID: &str = "LISTEN_PID";
/// Their names, in order, colon-separated.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// How a descriptor's name in [`LISTEN_FDNAMES`] ends when the Unix socket hands out
/// shared-memory connections (an `shm:PATH` endpoint) rather than being one.
pub const SHM_SUFFIX: &str = ".shm";

/// How a descriptor's name in [`LISTEN_FDNAMES`] ends when the Unix socket hands out
/// message-queue connections (an `mq:PATH` endpoint).
pub const MQ_SUFFIX: &str = ".mq";

/// How a descriptor's name in [`LISTEN_FDNAMES`] ends when a TCP socket is to serve
/// without authentication (a `tcp+plain:HOST:PORT` endpoint). Every other TCP socket a
/// worker is handed is authenticated with Noise (`tcp:HOST:PORT`), with the key of
/// `PROCWIRE_KEY_FILE` or `PROCWIRE_KEY`: a worker never serves an unauthenticated TCP peer
/// unless the socket's name asks for it.
pub const PLAIN_SUFFIX: &str = ".plain";

/// The value of [`LISTEN_FDNAMES`] for descriptors named `names`, in order.
pub fn encode_fdnames<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(":")
}

/// The names a value of [`LISTEN_FDNAMES`] gives, in order; an empty name is none.
pub fn decode_fdnames(value: &str) -> Vec<Option<String>> {
    value
        .split(':')
        .map(|n| (!n.is_empty()).then(|| n.to_owned()))
        .collect()
}

/// A descriptor handed over by socket activation.
#[derive(Debug)]
pub struct Activated {
    /// The descriptor (a listening socket, usually).
    pub fd: OwnedFd,
    /// Its name from `LISTEN_FDNAMES`, if given.
    pub name: Option<String>,
}

/// The activation variables are malformed or name descriptors that are not there.
#[derive(Debug, thiserror::Error)]
#[error("socket activation: {0}")]
pub struct ActivationError(String);

static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Takes the descriptors passed to this process by socket activation (from systemd, from
/// `procwire up`'s `listen`, from `systemd-socket-activate`). Empty if this process was not
/// socket-activated (no `LISTEN_FDS`, or `LISTEN_PID` names another process, as it does in
/// a child that inherited the variables). They can be taken once per process; later calls
/// return none. The descriptors are made close-on-exec.
pub fn listen_fds() -> Result<Vec<Activated>, ActivationError> {
    let Some(count) = std::env::var_os(LISTEN_FDS) else {
        return Ok(Vec::new());
    };
    let count: RawFd = count
        .to_str()
        .and_then(|c| c.parse().ok())
        .filter(|c: &RawFd| *c >= 0)
        .ok_or_else(|| ActivationError(format!("LISTEN_FDS={count:?} is not a count")))?;
    match std::env::var(LISTEN_PID).ok().and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) if pid == std::process::id() as i32 => {}
        // Meant for another process (our parent, say), or not said: not ours to take.
        _ => return Ok(Vec::new()),
    }
    if CLAIMED.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let names = std::env::var(LISTEN_FDNAMES)
        .map(|n| decode_fdnames(&n))
        .unwrap_or_default();
    let mut out = Vec::new();
    for i in 0..count {
        let fd = LISTEN_FDS_START + i;
        fcntl(fd, FcntlArg::F_GETFD)
            .map_err(|e| ActivationError(format!("LISTEN_FDS names fd {fd}, which is not open: {e}")))?;
        // SAFETY: the descriptor is open (checked above); the protocol hands descriptors
        // 3..3+LISTEN_FDS to this process (LISTEN_PID is ours) for it to own, and CLAIMED
        // makes this the only place that ever takes them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        out.push(Activated {
            fd: owned,
            name: names.get(i as usize).cloned().flatten(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_names_round_trip_through_their_variable() {
        let names = ["calc", "", "admin"];
        let value = encode_fdnames(names);
        assert_eq!(value, "calc::admin");
        assert_eq!(
            decode_fdnames(&value),
            [Some("calc".to_owned()), None, Some("admin".to_owned())]
        );
    }
}

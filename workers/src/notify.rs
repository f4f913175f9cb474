//! The sd_notify protocol, the sending side: a datagram of `KEY=VALUE` lines to the socket
//! named by `NOTIFY_SOCKET` (a path, or an abstract name starting with `@`).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends notifications to the process supervising this one.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` describes; `None` if it is not set (nobody listens).
    pub fn from_env() -> std::io::Result<Option<Notifier>> {
        let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let target = target.to_string_lossy().into_owned();
        let addr = match target.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes())?
            }
            None => SocketAddr::from_pathname(&target)?,
        };
        Ok(Some(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
        }))
    }

    /// Sends `state` (one or more `KEY=VALUE` lines).
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr).map(drop)
    }

    /// `READY=1`: this process is serving.
    pub fn ready(&self) -> std::io::Result<()> {
        self.notify("READY=1")
    }

    /// `STATUS=...`: a line for humans.
    pub fn status(&self, status: &str) -> std::io::Result<()> {
        self.notify(&format!("STATUS={}", status.replace('\n', " ")))
    }

    /// `STOPPING=1`: this process is shutting down.
    pub fn stopping(&self) -> std::io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// `WATCHDOG=1`: this process is alive.
    pub fn watchdog(&self) -> std::io::Result<()> {
        self.notify("WATCHDOG=1")
    }
}

/// How often the supervisor expects `WATCHDOG=1` (`WATCHDOG_USEC`), if it does and the
/// setting is meant for this process (`WATCHDOG_PID`, when set, is ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

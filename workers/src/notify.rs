//! The sd_notify protocol, the sending side: a datagram of `KEY=VALUE` lines to the socket
//! named by `NOTIFY_SOCKET` (a path, or an abstract name starting with `@`).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where to send notifications: a path, or an abstract name after `@`.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// How often the supervisor expects `WATCHDOG=1`, in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process [`WATCHDOG_USEC`] is meant for, when set.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// A notification's text: one `KEY=VALUE` line per field. A line break in a value would
/// start another field, so it travels as a space.
pub fn encode<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    fields
        .into_iter()
        .map(|(key, value)| format!("{key}={}", value.replace('\n', " ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fields of a notification's text, in order; a line without `=` is skipped.
pub fn decode(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The value of [`WATCHDOG_USEC`] for a heartbeat expected every `period`.
pub fn encode_watchdog_usec(period: Duration) -> String {
    period.as_micros().to_string()
}

/// The period a value of [`WATCHDOG_USEC`] gives; `None` for 0 or a value that is not a
/// number.
pub fn decode_watchdog_usec(value: &str) -> Option<Duration> {
    let usec: u64 = value.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Sends notifications to the process supervising this one.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` describes; `None` if it is not set (nobody listens).
    pub fn from_env() -> std::io::Result<Option<Notifier>> {
        let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
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

    /// Sends `fields` as one notification (see [`encode`]).
    pub fn send<'a>(&self, fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> std::io::Result<()> {
        self.notify(&encode(fields))
    }

    /// `READY=1`: this process is serving.
    pub fn ready(&self) -> std::io::Result<()> {
        self.send([("READY", "1")])
    }

    /// `STATUS=...`: a line for humans.
    pub fn status(&self, status: &str) -> std::io::Result<()> {
        self.send([("STATUS", status)])
    }

    /// `STOPPING=1`: this process is shutting down.
    pub fn stopping(&self) -> std::io::Result<()> {
        self.send([("STOPPING", "1")])
    }

    /// `WATCHDOG=1`: this process is alive.
    pub fn watchdog(&self) -> std::io::Result<()> {
        self.send([("WATCHDOG", "1")])
    }
}

/// How often the supervisor expects `WATCHDOG=1` (`WATCHDOG_USEC`), if it does and the
/// setting is meant for this process (`WATCHDOG_PID`, when set, is ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var(WATCHDOG_PID).ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    decode_watchdog_usec(&std::env::var(WATCHDOG_USEC).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_round_trips_through_its_text() {
        let text = encode([("READY", "1"), ("STATUS", "serving on\nunix:/run/a.sock")]);
        assert_eq!(text, "READY=1\nSTATUS=serving on unix:/run/a.sock");
        assert_eq!(
            decode(&text),
            [
                ("READY".to_owned(), "1".to_owned()),
                ("STATUS".to_owned(), "serving on unix:/run/a.sock".to_owned())
            ]
        );
        assert_eq!(decode("garbage\nWATCHDOG=1"), [("WATCHDOG".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn a_watchdog_period_round_trips_through_its_variable() {
        let period = Duration::from_millis(1500);
        assert_eq!(decode_watchdog_usec(&encode_watchdog_usec(period)), Some(period));
        assert_eq!(decode_watchdog_usec("0"), None);
        assert_eq!(decode_watchdog_usec("soon"), None);
    }
}

//! Output: the supervisor's own lines ([`supervisor_line`]: a UTC timestamp, its name, the
//! worker and pid a line is about), and worker output: pipes the supervisor holds, read line
//! by line and written with a `pool.index` prefix (or as JSON lines), to the supervisor's own
//! output or to per-pool files with size rotation. Pipes are read to their end even after the
//! worker is gone, so no line is lost.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;

use crate::manifest::LogRotate;

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Worker lines as `pool.index | line`; the supervisor's as
    /// `2026-12-01T20:46:42.123Z procwire[NAME]: pool.index (pid N) message`.
    Text,
    /// Worker lines as `{"pool":..,"index":..,"stream":..,"line":..}`; the supervisor's as
    /// `{"time":..,"supervisor":..,"pool":..,"index":..,"pid":..,"message":..}` (the worker
    /// keys only on a line about one worker).
    Json,
}

/// The worker a supervisor line is about.
#[derive(Clone, Copy, Debug)]
pub struct About<'a> {
    /// Its pool.
    pub pool: &'a str,
    /// Its index in the pool.
    pub index: u32,
    /// Its pid (the last it had), if it was ever spawned.
    pub pid: Option<nix::unistd::Pid>,
}

/// One line of the supervisor's own, newline included, written at `at`.
pub fn supervisor_line(
    format: Format,
    supervisor: &str,
    about: Option<About<'_>>,
    message: &str,
    at: SystemTime,
) -> String {
    let time = rfc3339(at);
    match format {
        Format::Text => {
            let about = match about {
                None => String::new(),
                Some(About {
                    pool,
                    index,
                    pid: Some(pid),
                }) => format!("{pool}.{index} (pid {pid}) "),
                Some(About { pool, index, pid: None }) => format!("{pool}.{index} "),
            };
            format!("{time} procwire[{supervisor}]: {about}{message}\n")
        }
        Format::Json => {
            let mut record = serde_json::json!({ "time": time, "supervisor": supervisor });
            if let Some(about) = about {
                record["pool"] = about.pool.into();
                record["index"] = about.index.into();
                if let Some(pid) = about.pid {
                    record["pid"] = pid.as_raw().into();
                }
            }
            record["message"] = message.into();
            format!("{record}\n")
        }
    }
}

/// `at` in UTC as RFC 3339 with milliseconds: `2026-12-01T20:46:42.123Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, second) = (since.as_secs() / 86_400, since.as_secs() % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second / 3600,
        second / 60 % 60,
        second % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Which of a worker's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Out,
    /// stderr.
    Err,
}

/// Where lines go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// The supervisor's stdout or stderr (the same as the stream's).
    Inherit,
    /// A file, shared by the pool's workers.
    File(Rc<RefCell<RotatingFile>>),
}

/// An append-only file rotated by size: `f` becomes `f.1`, `f.1` becomes `f.2`, ...
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotate: Option<LogRotate>,
}

impl RotatingFile {
    /// Opens (creates) `path` for appending.
    pub fn open(path: PathBuf, rotate: Option<LogRotate>) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            file,
            size,
            rotate,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(rotate) = self.rotate {
            if self.size > 0 && self.size + bytes.len() as u64 > rotate.size {
                self.rotate(rotate.keep)?;
            }
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self, keep: u32) -> std::io::Result<()> {
        let numbered = |i: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{i}"));
            PathBuf::from(name)
        };
        if keep == 0 {
            self.file = File::create(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(keep));
            for i in (1..keep).rev() {
                let _ = std::fs::rename(numbered(i), numbered(i + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// One worker stream being read.
#[derive(Debug)]
pub struct LogPipe {
    fd: OwnedFd,
    owner: nix::unistd::Pid,
    pool: String,
    index: u32,
    stream: Stream,
    sink: Sink,
    partial: Vec<u8>,
    /// Where the control plane keeps the worker's recent lines (`procwire logs`).
    tail: Option<super::control::Tail>,
}

/// The longest line kept whole; longer ones are cut into pieces of this size.
const MAX_LINE: usize = 64 * 1024;

impl LogPipe {
    /// A pipe for `pool.index`'s `stream`, written by the process `owner`.
    pub fn new(fd: OwnedFd, owner: nix::unistd::Pid, pool: &str, index: u32, stream: Stream, sink: Sink) -> Self {
        LogPipe {
            fd,
            owner,
            pool: pool.to_owned(),
            index,
            stream,
            sink,
            partial: Vec::new(),
            tail: None,
        }
    }

    /// Also keeps each line in `tail`.
    pub(crate) fn with_tail(mut self, tail: super::control::Tail) -> Self {
        self.tail = Some(tail);
        self
    }

    /// The worker process that writes it.
    pub fn owner(&self) -> nix::unistd::Pid {
        self.owner
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads what is there and writes the complete lines; true at the end of the stream
    /// (the last partial line is written too).
    pub fn pump(&mut self, format: Format) -> bool {
        let mut buf = [0u8; 16 * 1024];
        // A bounded helping per call: a worker that writes faster than we read must not
        // keep the event loop from signals, timers and reaping; poll brings us back.
        for _ in 0..4 {
            match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&self.fd), &mut buf) {
                Ok(0) => {
                    if !self.partial.is_empty() {
                        let line = std::mem::take(&mut self.partial);
                        self.emit(&line, format);
                    }
                    return true;
                }
                Ok(n) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = self.partial.drain(..=end).collect();
                        self.emit(&line[..line.len() - 1], format);
                    }
                    while self.partial.len() >= MAX_LINE {
                        let piece: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
                        self.emit(&piece, format);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return false,
                Err(_) => return true,
            }
        }
        false
    }

    fn emit(&self, line: &[u8], format: Format) {
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if let Some(tail) = &self.tail {
            tail.push(text);
        }
        let record = match format {
            Format::Text => format!("{}.{} | {}\n", self.pool, self.index, text),
            Format::Json => {
                let record = serde_json::json!({
                    "pool": self.pool,
                    "index": self.index,
                    "stream": match self.stream { Stream::Out => "stdout", Stream::Err => "stderr" },
                    "line": text,
                });
                format!("{record}\n")
            }
        };
        // A full disk or a closed terminal must not stop the supervisor.
        let _ = match (&self.sink, self.stream) {
            (Sink::File(file), _) => file.borrow_mut().write(record.as_bytes()),
            (Sink::Inherit, Stream::Out) => std::io::stdout().lock().write_all(record.as_bytes()),
            (Sink::Inherit, Stream::Err) => std::io::stderr().lock().write_all(record.as_bytes()),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn timestamps_are_rfc_3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(1_796_158_002, 123)), "2026-12-01T20:46:42.123Z");
        assert_eq!(rfc3339(at(4_107_542_399, 999)), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn a_line_about_a_worker_names_it_with_its_pid_in_text_and_in_json() {
        let about = About {
            pool: "web",
            index: 3,
            pid: Some(nix::unistd::Pid::from_raw(812)),
        };
        let when = at(1_796_158_002, 123);
        assert_eq!(
            supervisor_line(Format::Text, "shop", Some(about), "started", when),
            "2026-12-01T20:46:42.123Z procwire[shop]: web.3 (pid 812) started\n"
        );
        assert_eq!(
            supervisor_line(Format::Text, "shop", None, "reloading", when),
            "2026-12-01T20:46:42.123Z procwire[shop]: reloading\n"
        );
        let json: serde_json::Value = serde_json::from_str(&supervisor_line(
            Format::Json,
            "shop",
            Some(about),
            "a \"quoted\" line",
            when,
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "time": "2026-12-01T20:46:42.123Z",
                "supervisor": "shop",
                "pool": "web",
                "index": 3,
                "pid": 812,
                "message": "a \"quoted\" line",
            })
        );
    }
}

//! Worker output: pipes the supervisor holds, read line by line and written with a
//! `pool.index` prefix (or as JSON lines), to the supervisor's own output or to per-pool
//! files with size rotation. Pipes are read to their end even after the worker is gone, so
//! no line is lost.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;

use nix::errno::Errno;

use crate::manifest::LogRotate;

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `pool.index | line`.
    Text,
    /// `{"pool":..,"index":..,"stream":..,"line":..}`.
    Json,
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
        }
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

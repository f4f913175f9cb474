//! The event loop's output: its own lines (through [`logs::supervisor_line`]), and the
//! workers' log pipes pumped into their sinks.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::logs::{self, RotatingFile, Sink};
use super::Runner;
use crate::manifest::Output;
use crate::policy::WorkerId;

impl Runner {
    /// A line of the supervisor's own, on stderr.
    pub(super) fn say(&self, message: &str) {
        self.write_line(None, message);
    }

    /// A line about worker `w`, named with its (last) pid.
    pub(super) fn report(&self, w: WorkerId, message: &str) {
        let about = logs::About {
            pool: self.policy.pool_name(w.pool),
            index: w.index,
            pid: self.last_pid.get(&w).copied(),
        };
        self.write_line(Some(about), message);
    }

    fn write_line(&self, about: Option<logs::About<'_>>, message: &str) {
        let line = logs::supervisor_line(
            self.format,
            &self.manifest.supervisor.name,
            about,
            message,
            std::time::SystemTime::now(),
        );
        // One write per line: stderr is unbuffered, and a line must not interleave.
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }

    pub(super) fn pump_logs(&mut self, ready: &[bool]) {
        let format = self.format;
        let mut keep = Vec::with_capacity(self.logs.len());
        for (i, mut pipe) in std::mem::take(&mut self.logs).into_iter().enumerate() {
            let done = ready.get(i).copied().unwrap_or(false) && pipe.pump(format);
            if !done {
                keep.push(pipe);
            }
        }
        self.logs = keep;
    }

    /// Reads what the dead workers left in their pipes. A pipe still held open by some
    /// leftover process is read until it has been quiet for a moment.
    pub(super) fn drain_logs(&mut self) {
        let deadline = Instant::now() + std::time::Duration::from_millis(500);
        while !self.logs.is_empty() && Instant::now() < deadline {
            let mut fds: Vec<_> = self
                .logs
                .iter()
                .map(|l| PollFd::new(l.fd(), PollFlags::POLLIN))
                .collect();
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32;
            if matches!(
                poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO)),
                Ok(0) | Err(_)
            ) {
                break;
            }
            let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
            self.pump_logs(&ready);
        }
    }

    pub(super) fn sink(&mut self, output: &Output, rotate: Option<crate::manifest::LogRotate>) -> Option<Sink> {
        match output {
            Output::Discard => None,
            Output::Inherit => Some(Sink::Inherit),
            Output::File(path) => {
                let path = path.clone();
                if let Some(file) = self.files.get(&path) {
                    return Some(Sink::File(Rc::clone(file)));
                }
                match RotatingFile::open(path.clone(), rotate) {
                    Ok(file) => {
                        let file = Rc::new(RefCell::new(file));
                        self.files.insert(path, Rc::clone(&file));
                        Some(Sink::File(file))
                    }
                    Err(e) => {
                        self.say(&format!(
                            "cannot open log file {}: {e}; writing to the console",
                            path.display()
                        ));
                        Some(Sink::Inherit)
                    }
                }
            }
        }
    }
}

//! Shared support for the tests that run the real `procwire` binary: a [`Supervisor`] whose
//! output lines are collected and awaited with a deadline, FIFO [`Gate`]s workers wait on,
//! and `/proc` readers.
//!
//! No helper sleeps to synchronise: each waits for an event (a line of output, a process's
//! exit) with a deadline, and fails with every line seen so far if the deadline passes.
#![allow(dead_code)]

pub mod control;

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

/// How long any one awaited event may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Which of the supervisor's streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// One line the supervisor wrote, without its newline and without the timestamp its own
/// lines start with.
#[derive(Clone, Debug)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
    /// The timestamp the line started with, if it did (`2026-12-01T20:46:42.123Z`).
    pub stamp: Option<String>,
}

/// Splits a leading RFC 3339 UTC timestamp with milliseconds off `line`.
pub fn split_stamp(line: &str) -> (Option<String>, &str) {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ ";
    let stamped = line.len() > shape.len()
        && line.bytes().zip(shape.bytes()).all(|(b, s)| match s {
            b'd' => b.is_ascii_digit(),
            s => b == s,
        });
    if stamped {
        (Some(line[..shape.len() - 1].to_owned()), &line[shape.len()..])
    } else {
        (None, line)
    }
}

/// Everything read so far from the supervisor's stdout and stderr, in arrival order (the
/// order within one stream is the order the supervisor wrote it in).
#[derive(Debug, Default)]
pub struct Seen {
    pub lines: Vec<Line>,
    /// How many of the two streams reached their end.
    pub closed: usize,
}

#[derive(Debug, Default)]
pub struct Shared {
    pub seen: Mutex<Seen>,
    pub changed: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub fn dump(seen: &Seen) -> String {
    let mut text = String::new();
    for line in &seen.lines {
        let tag = match line.stream {
            Stream::Out => "out",
            Stream::Err => "err",
        };
        let _ = writeln!(text, "  [{tag}] {}", line.text);
    }
    if seen.lines.is_empty() {
        text.push_str("  (none)\n");
    }
    text
}

/// Reads `stream` line by line into `shared` on a thread of its own.
pub fn read_lines(stream: impl Read + Send + 'static, which: Stream, shared: Arc<Shared>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
                    let text = String::from_utf8_lossy(line);
                    let (stamp, text) = split_stamp(&text);
                    let text = text.to_owned();
                    shared.lock().lines.push(Line {
                        stream: which,
                        text,
                        stamp,
                    });
                    shared.changed.notify_all();
                }
            }
        }
        shared.lock().closed += 1;
        shared.changed.notify_all();
    });
}

/// A pidfd for `pid`, or `None` if there is no such process (any more).
pub fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and a flags word, passes no memory, and returns a new
    // descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let error = Errno::last();
        assert_eq!(error, Errno::ESRCH, "pidfd_open({pid})");
        return None;
    }
    let fd = i32::try_from(fd).expect("a descriptor fits in an int");
    // SAFETY: `fd` was just returned by pidfd_open, so it is open and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until the process behind `pidfd` has exited; false if `deadline` passed first.
pub fn exited_by(pidfd: &OwnedFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(ms).expect("a valid timeout")) {
            Ok(0) if Instant::now() >= deadline => return false,
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return true,
            Err(e) => panic!("poll on a pidfd: {e}"),
        }
    }
}

/// A `procwire up` process this test started; SIGKILLed and reaped on drop if the test did
/// not see it exit (so a failing test leaves no supervisor, hence no worker, behind).
#[derive(Debug)]
pub struct Supervisor {
    pub child: Child,
    pub shared: Arc<Shared>,
    pub status: Option<ExitStatus>,
}

impl Supervisor {
    /// Writes `manifest` to `DIR/NAME.toml` and runs `procwire up` on it.
    pub fn start(dir: &Path, name: &str, manifest: &str) -> Supervisor {
        Supervisor::start_with(dir, name, manifest, &[])
    }

    /// [`Supervisor::start`] with extra arguments after the file.
    pub fn start_with(dir: &Path, name: &str, manifest: &str, args: &[&str]) -> Supervisor {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, manifest).expect("write the manifest");
        let mut all = vec!["up", path.to_str().expect("a UTF-8 path")];
        all.extend_from_slice(args);
        Supervisor::spawn(&all, None)
    }

    /// Runs `procwire ARGS...`, in `cwd` if given.
    pub fn spawn(args: &[&str], cwd: Option<&Path>) -> Supervisor {
        Supervisor::spawn_program(env!("CARGO_BIN_EXE_procwire"), args, cwd)
    }

    /// Runs `PROGRAM ARGS...` (a wrapper that runs the supervisor), in `cwd` if given.
    pub fn spawn_program(program: &str, args: &[&str], cwd: Option<&Path>) -> Supervisor {
        Supervisor::spawn_with_env(program, args, cwd, &[])
    }

    /// [`Supervisor::spawn_program`] with `env` added to the supervisor's environment.
    pub fn spawn_with_env(program: &str, args: &[&str], cwd: Option<&Path>, env: &[(&str, &str)]) -> Supervisor {
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        // The runtime directory (the name locks) is the manifest's own: tests that run at
        // once, here or in another checkout, never share a name's lock.
        if let Some(manifest) = args.iter().find(|arg| arg.ends_with(".toml")) {
            let manifest = cwd.unwrap_or(Path::new(".")).join(manifest);
            command.env("XDG_RUNTIME_DIR", manifest.parent().expect("the manifest's directory"));
        }
        let mut child = command.spawn().expect("start procwire");
        let shared = Arc::new(Shared::default());
        read_lines(
            child.stdout.take().expect("piped stdout"),
            Stream::Out,
            Arc::clone(&shared),
        );
        read_lines(
            child.stderr.take().expect("piped stderr"),
            Stream::Err,
            Arc::clone(&shared),
        );
        Supervisor {
            child,
            shared,
            status: None,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits in an int"))
    }

    pub fn signal(&self, signal: Signal) {
        assert!(self.status.is_none(), "the supervisor was already reaped");
        kill(self.pid(), signal).expect("signal the supervisor");
    }

    /// Waits until `check` finds what it wants in the output; panics with the output after
    /// [`DEADLINE`].
    pub fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&Seen) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = self.shared.lock();
        loop {
            if let Some(found) = check(&seen) {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                let lines = dump(&seen);
                drop(seen);
                panic!("{what}: not seen within {DEADLINE:?}; lines so far:\n{lines}");
            }
            seen = self
                .shared
                .changed
                .wait_timeout(seen, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Waits until more than `seen` lines have arrived, or `until`; false if it came first.
    pub fn wait_for_more_lines(&self, seen: usize, until: Instant) -> bool {
        let mut lines = self.shared.lock();
        loop {
            if lines.lines.len() > seen {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            lines = self
                .shared
                .changed
                .wait_timeout(lines, until - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// The first line starting with `prefix`, waiting for it.
    pub fn wait_for(&self, prefix: &str) -> String {
        self.wait_for_nth(prefix, 1)
    }

    /// The `n`th line (from 1) starting with `prefix`, waiting for it.
    pub fn wait_for_nth(&self, prefix: &str, n: usize) -> String {
        self.wait_until(&format!("line #{n} starting with {prefix:?}"), |seen| {
            seen.lines
                .iter()
                .filter(|line| line.text.starts_with(prefix))
                .nth(n - 1)
                .map(|line| line.text.clone())
        })
    }

    /// The first line containing `needle`, waiting for it.
    pub fn wait_for_containing(&self, needle: &str) -> String {
        self.wait_until(&format!("a line containing {needle:?}"), |seen| {
            seen.lines
                .iter()
                .find(|line| line.text.contains(needle))
                .map(|line| line.text.clone())
        })
    }

    /// Everything seen so far.
    pub fn lines(&self) -> Vec<Line> {
        self.shared.lock().lines.clone()
    }

    /// The text of the lines seen so far on one stream.
    pub fn texts(&self, stream: Stream) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.stream == stream)
            .map(|line| line.text)
            .collect()
    }

    pub fn output(&self) -> String {
        dump(&self.shared.lock())
    }

    /// Waits for the supervisor to exit and for the end of both its streams.
    pub fn finish(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + DEADLINE;
        let fd = pidfd(self.pid().as_raw()).expect("our own child is not reaped yet");
        assert!(
            exited_by(&fd, deadline),
            "the supervisor did not exit within {DEADLINE:?}; lines so far:\n{}",
            self.output()
        );
        let status = self.child.wait().expect("reap the supervisor");
        self.status = Some(status);
        self.wait_until("the end of the supervisor's output", |seen| {
            (seen.closed == 2).then_some(())
        });
        status
    }

    /// [`Supervisor::finish`], asserting the exit code.
    pub fn expect_exit(&mut self, code: i32) {
        let status = self.finish();
        assert_eq!(
            status.code(),
            Some(code),
            "the supervisor ended with {status}, not exit code {code}; lines:\n{}",
            self.output()
        );
    }

    /// SIGKILLs the supervisor and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the supervisor");
        self.status = Some(self.child.wait().expect("reap the supervisor"));
    }

    /// Like [`Supervisor::assert_has_line`], with the pid in `(pid N)` written as `_`.
    pub fn assert_has_report(&self, expected: &str) {
        assert!(
            self.lines().iter().any(|line| unpid(&line.text) == expected),
            "no line {expected:?}; lines:\n{}",
            self.output()
        );
    }

    pub fn assert_has_line(&self, expected: &str) {
        assert!(
            self.lines().iter().any(|line| line.text == expected),
            "no line {expected:?}; lines:\n{}",
            self.output()
        );
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.status.is_some() {
            end_cgroups_of(self.pid());
            return;
        }
        // Each worker leads a process group, and what a worker started there outlives a
        // SIGKILLed supervisor until the next start of its name (which these tests do not
        // make): those groups go too, and so does its cgroup subtree.
        let groups: Vec<i64> = children(self.pid())
            .unwrap_or_default()
            .into_iter()
            .filter(|&kid| proc_stat(kid).is_some_and(|stat| stat.pgrp == kid))
            .collect();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for group in groups {
            let _ = nix::sys::signal::killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
        }
        end_cgroups_of(self.pid());
    }
}

/// Ends and removes the cgroup subtree a SIGKILLed supervisor `pid` left beside this test
/// (`procwire-NAME-PID-NONCE`), so that killed supervisors litter no cgroups. A next start of
/// the same name would end it too; most tests never make one.
fn end_cgroups_of(pid: Pid) {
    let Some(own) = own_cgroup() else { return };
    let Ok(entries) = std::fs::read_dir(&own) else { return };
    let infix = format!("-{pid}-");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("procwire-") && name.contains(&infix)) {
            continue;
        }
        let dir = entry.path();
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + DEADLINE;
        // Each worker's cgroup is removed once empty: the kill has been sent, and the dead
        // leave their cgroups as they exit. rmdir says EBUSY until then.
        while Instant::now() < deadline {
            let workers: Vec<_> = std::fs::read_dir(&dir)
                .map(|e| e.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()).collect())
                .unwrap_or_default();
            let busy = workers
                .iter()
                .any(|w| std::fs::remove_dir(w).is_err_and(|e| e.raw_os_error() == Some(nix::libc::EBUSY)));
            if !busy && std::fs::remove_dir(&dir).is_ok() {
                break;
            }
            let events = std::fs::File::open(dir.join("cgroup.events"));
            if let Ok(events) = events {
                // Woken when `populated` changes.
                let mut fds = [PollFd::new(events.as_fd(), PollFlags::POLLPRI)];
                let _ = poll(&mut fds, PollTimeout::from(100u8));
            }
        }
    }
}

/// This test process's cgroup v2 directory, if there is one (the cgroup2 mount's point plus
/// the `0::` path; a mount of a subtree is not expected in CI).
pub fn own_cgroup() -> Option<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let point = mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        (after.split(' ').next()? == "cgroup2").then(|| before.split(' ').nth(4).map(str::to_owned))?
    })?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|line| line.strip_prefix("0::"))?;
    Some(Path::new(&point).join(path.trim_start_matches('/')))
}

/// A FIFO that workers block on with `read go < NAME`; [`Gate::open`] lets that many reads
/// through. The test holds it open for reading and writing, so opening it never blocks and
/// its readers never see end-of-file while the test runs.
#[derive(Debug)]
pub struct Gate {
    pub file: File,
}

impl Gate {
    pub fn new(path: &Path) -> Gate {
        nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).expect("mkfifo");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the FIFO");
        Gate { file }
    }

    /// Lets `reads` line reads through.
    pub fn open(&mut self, reads: usize) {
        self.file.write_all(&b"go\n".repeat(reads)).expect("write to the FIFO");
    }
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::TempDir::new().expect("a temporary directory")
}

/// The number right after `marker` in `line` (`"a.0 | pid 123"`, `"pid "` -> 123;
/// `"b (pid 45) is ready"`, `"(pid "` -> 45).
pub fn number_after(line: &str, marker: &str) -> i64 {
    let (_, rest) = line
        .split_once(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {line:?}"));
    let rest = rest.trim();
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("a number after {marker:?} in {line:?}: {e}"))
}

/// `line` with every `(pid N)` written as `(pid _)`.
pub fn unpid(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("(pid ") {
        out.push_str(&rest[..at + 5]);
        rest = rest[at + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('_');
    }
    out.push_str(rest);
    out
}

/// What `/proc/PID/stat` says about a process.
#[derive(Clone, Copy, Debug)]
pub struct ProcStat {
    /// `R`, `S`, `Z`, ...
    pub state: char,
    pub ppid: i64,
    pub pgrp: i64,
}

/// `/proc/PID/stat`, or `None` if the process is gone.
pub fn proc_stat(pid: i64) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE PPID PGRP ...`; COMM may hold spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp })
}

/// Every child of `pid`, from `/proc/PID/task/*/children`.
pub fn children(pid: Pid) -> std::io::Result<Vec<i64>> {
    let mut all = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = std::fs::read_to_string(task?.path().join("children"))?;
        all.extend(text.split_whitespace().filter_map(|p| p.parse::<i64>().ok()));
    }
    Ok(all)
}

/// The position of the first line equal to `text` among `lines`.
pub fn position(lines: &[String], text: &str) -> usize {
    lines
        .iter()
        .position(|line| line == text)
        .unwrap_or_else(|| panic!("no line {text:?} in {lines:#?}"))
}

/// The live (not zombie) processes whose environment holds `KEY=VALUE` exactly: a marker a
/// manifest's `env` gives a worker, and so everything the worker starts.
pub fn marked(key: &str, value: &str) -> Vec<i64> {
    let wanted = format!("{key}={value}").into_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|var| var == wanted.as_slice())
            && proc_stat(pid).is_some_and(|stat| stat.state != 'Z')
        {
            found.push(pid);
        }
    }
    found
}

/// [`marked`], looked at again until it finds at least `n` processes or `deadline` passes:
/// a process in the middle of an `exec` has no readable environment for a moment, and one
/// started in the background may be seen a look later than the line its parent printed
/// after starting it.
pub fn marked_at_least(key: &str, value: &str, n: usize, deadline: Instant) -> Vec<i64> {
    loop {
        let found = marked(key, value);
        if found.len() >= n || Instant::now() >= deadline {
            return found;
        }
        std::thread::yield_now();
    }
}

// ----- restarts -----

/// The value of a `NAME:` line of this test process's own `/proc/self/status` (what its
/// children inherit), trimmed; `None` if the kernel has no such line.
pub fn own_status(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
}

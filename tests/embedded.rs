//! `procwire::Supervisor` embedded in a program that already runs other threads and a tokio
//! runtime: it starts, stops by a command (not by signalling the process), leaves the
//! program's own children alone, and survives pools that cannot be spawned.
//!
//! Workers report `POOL.INDEX PID` on a FIFO the test holds open; every wait is on such a
//! line, or on a process's exit, with a deadline.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire::supervisor::manifest::{Manifest, Pool};
use procwire::Supervisor;

const LIMIT: Duration = Duration::from_secs(20);
/// Set in a re-executed copy of this binary: which child scenario to run.
const CHILD_ENV: &str = "PROCWIRE_EMBEDDED_TEST_CHILD";

/// A FIFO workers write their reports to, read line by line with a deadline.
struct Reports {
    path: PathBuf,
    file: File,
    buffer: Vec<u8>,
}

impl Reports {
    fn new(dir: &Path) -> Reports {
        let path = dir.join("reports");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        // Open for reading and writing: opening never blocks and no reader sees its end.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open the FIFO");
        Reports {
            path,
            file,
            buffer: Vec::new(),
        }
    }

    /// A pool whose workers report `POOL.INDEX PID` and then wait until stopped.
    fn pool(&self, name: &str, workers: u32) -> Pool {
        let script = format!(
            "echo \"$PROCWIRE_POOL.$PROCWIRE_INDEX $$\" > '{}'; exec sleep 1000",
            self.path.display()
        );
        Pool {
            workers,
            ..Pool::new(name, vec!["sh".into(), "-c".into(), script])
        }
    }

    /// The next report: (`POOL.INDEX`, pid).
    fn next(&mut self) -> Result<(String, Pid), Failed> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                let (name, pid) = line.split_once(' ').ok_or(format!("a report {line:?}"))?;
                let pid: i32 = pid.parse().map_err(|e| format!("a pid in {line:?}: {e}"))?;
                return Ok((name.to_owned(), Pid::from_raw(pid)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no worker report within the deadline".into());
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(format!("poll: {e}").into()),
            }
            let mut chunk = [0u8; 512];
            let n = self.file.read(&mut chunk).map_err(|e| format!("read the FIFO: {e}"))?;
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A pidfd for `pid`; `None` if there is no such process (any more).
fn pidfd(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and a flags word, reads no memory of ours, and
    // returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        assert_eq!(Errno::last(), Errno::ESRCH, "pidfd_open({pid})");
        return None;
    }
    // SAFETY: pidfd_open just returned `fd`: it is open and owned by nothing else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process behind `pidfd` has exited (without collecting it); at once if it
/// was gone already.
fn exited(pidfd: Option<OwnedFd>) -> Result<(), Failed> {
    let Some(pidfd) = pidfd else { return Ok(()) };
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if matches!(poll(&mut fds, PollTimeout::from(1000u16)), Ok(n) if n > 0) {
            return Ok(());
        }
    }
    Err("the process did not exit within the deadline".into())
}

/// True while `pid` exists (a zombie counts).
fn exists(pid: Pid) -> bool {
    kill(pid, None).is_ok()
}

/// A tokio runtime with its worker threads, and a plain thread: the program the supervisor
/// is started inside.
struct Host {
    runtime: tokio::runtime::Runtime,
    thread: std::sync::mpsc::Sender<std::sync::mpsc::Sender<u32>>,
}

impl Host {
    fn start() -> Host {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("a tokio runtime");
        // Its worker threads exist before the supervisor starts.
        runtime.block_on(runtime.spawn(async {})).expect("a first task");
        let (thread, requests) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<u32>>();
        std::thread::spawn(move || {
            for reply in requests {
                let _ = reply.send(42);
            }
        });
        Host { runtime, thread }
    }

    /// Both the runtime and the thread still answer.
    fn alive(&self) -> Result<(), Failed> {
        let task = self.runtime.spawn(async { 7 });
        if !matches!(self.runtime.block_on(task), Ok(7)) {
            return Err("the tokio runtime did not run a task".into());
        }
        let (reply, answer) = std::sync::mpsc::channel();
        self.thread.send(reply).map_err(|_| "the host thread is gone")?;
        match answer.recv_timeout(LIMIT) {
            Ok(42) => Ok(()),
            _ => Err("the host thread did not answer".into()),
        }
    }
}

fn started_inside_tokio_and_threads_stop_ends_the_supervisor_and_nothing_else() -> Result<(), Failed> {
    let host = Host::start();
    // The program watches TERM itself: a stop that signalled the process would show here.
    let terms = Arc::new(AtomicUsize::new(0));
    let id = signal_hook::flag::register_usize(signal_hook::consts::SIGTERM, Arc::clone(&terms), 1)
        .map_err(|e| format!("register a TERM flag: {e}"))?;
    let dir = tempfile::tempdir()?;
    let mut reports = Reports::new(dir.path());
    let supervisor = Supervisor::start(Manifest::new("embedded").pool(reports.pool("w", 2)))?;
    let workers = [reports.next()?.1, reports.next()?.1];
    let code = supervisor.stop()?;
    signal_hook::low_level::unregister(id);
    if code != 0 {
        return Err(format!("stop() returned exit code {code}, not 0").into());
    }
    if terms.load(Ordering::SeqCst) != 0 {
        return Err("stop() signalled the process with TERM".into());
    }
    for pid in workers {
        if exists(pid) {
            return Err(format!("worker {pid} is still there after stop()").into());
        }
    }
    host.alive()
}

fn the_programs_own_child_is_left_for_the_program_to_wait_for() -> Result<(), Failed> {
    let _host = Host::start();
    let dir = tempfile::tempdir()?;
    let mut reports = Reports::new(dir.path());
    let supervisor = Supervisor::start(Manifest::new("own").pool(reports.pool("w", 1)))?;
    let (_, worker) = reports.next()?;
    let mut child = Command::new("sh").args(["-c", "exit 7"]).stdin(Stdio::null()).spawn()?;
    exited(pidfd(Pid::from_raw(child.id() as i32)))?;
    // The supervisor has work to do after the child's SIGCHLD: a worker to restart.
    kill(worker, Signal::SIGKILL)?;
    let (_, restarted) = reports.next()?;
    if restarted == worker {
        return Err("the killed worker reported again".into());
    }
    let status = child
        .wait()
        .map_err(|e| format!("the program could not wait for its own child: {e}"))?;
    if status.code() != Some(7) {
        return Err(format!("the program's child ended with {status}, not exit code 7").into());
    }
    let code = supervisor.stop()?;
    if code != 0 {
        return Err(format!("stop() returned exit code {code}").into());
    }
    Ok(())
}

/// Whether SIGCHLD is at its default disposition in this process.
fn sigchld_at_default() -> bool {
    let mut old = std::mem::MaybeUninit::<nix::libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction only writes the current one into `old`.
    let rc = unsafe { nix::libc::sigaction(nix::libc::SIGCHLD, std::ptr::null(), old.as_mut_ptr()) };
    assert_eq!(rc, 0, "sigaction");
    // SAFETY: sigaction succeeded and filled `old` in (zeroed memory is valid besides).
    unsafe { old.assume_init() }.sa_sigaction == nix::libc::SIG_DFL
}

/// A SIGCHLD handler would make every read with a timeout in the program (SO_RCVTIMEO, which
/// SA_RESTART does not restart) fail with EINTR whenever a worker exits: the supervisor
/// learns of its workers' exits from pidfds and leaves SIGCHLD alone.
fn a_running_supervisor_installs_no_sigchld_handler_in_the_program() -> Result<(), Failed> {
    if !sigchld_at_default() {
        return Err("SIGCHLD was handled before the supervisor started".into());
    }
    let dir = tempfile::tempdir()?;
    let mut reports = Reports::new(dir.path());
    let supervisor = Supervisor::start(Manifest::new("quiet").pool(reports.pool("w", 1)))?;
    let (_, worker) = reports.next()?;
    kill(worker, Signal::SIGKILL)?;
    let (_, restarted) = reports.next()?;
    if restarted == worker {
        return Err("the killed worker reported again".into());
    }
    if !sigchld_at_default() {
        return Err("the supervisor installed a SIGCHLD handler".into());
    }
    supervisor.stop()?;
    Ok(())
}

fn a_role_pool_that_cannot_be_spawned_is_given_up_while_the_rest_runs_on() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mut reports = Reports::new(dir.path());
    // A gate the test opens: the pool `gate` reports and completes once it reads a line.
    let gate_path = dir.path().join("gate");
    nix::unistd::mkfifo(&gate_path, nix::sys::stat::Mode::S_IRWXU)?;
    let mut gate = OpenOptions::new().read(true).write(true).open(&gate_path)?;
    let mut gate_pool = Pool::new(
        "gate",
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "read go < '{}'; echo \"gate.0 $$\" > '{}'",
                gate_path.display(),
                reports.path.display()
            ),
        ],
    );
    gate_pool.restart = procwire::supervisor::manifest::Restart::Never;
    // A role whose working directory exists when the manifest is checked and is gone when,
    // after the gate, it is spawned.
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd)?;
    let mut role = Pool::new("role", Vec::new());
    role.role = Some("never-runs".into());
    role.cwd = Some(cwd.clone());
    role.after = vec![("gate".into(), procwire::supervisor::manifest::Condition::Completed)];
    role.limit.start_attempts = 1;
    let manifest = Manifest::new("broken")
        .pool(reports.pool("w", 1))
        .pool(gate_pool)
        .pool(role);
    let supervisor = Supervisor::start(manifest)?;
    let (_, worker) = reports.next()?;
    let worker_fd = pidfd(worker);
    std::fs::remove_dir(&cwd)?;
    gate.write_all(b"go\n")?;
    let (name, gate_pid) = reports.next()?;
    if name != "gate.0" {
        return Err(format!("{name} reported, not gate.0").into());
    }
    // Once the gate has exited, the loop learns it (and so spawns the role, which fails)
    // no later than it reads the stop command: it handles exits first.
    exited(pidfd(gate_pid))?;
    // A supervisor that panicked on the failed spawn killed the worker on its way out and
    // ended with something other than a graceful stop's 0.
    let code = supervisor.stop()?;
    if code != 0 {
        return Err(format!("stop() returned exit code {code}, not 0").into());
    }
    exited(worker_fd)?;
    Ok(())
}

/// In a child process: a supervisor that was started and stopped leaves TERM as it found
/// it, so TERM now ends the process.
fn child_term_after_stop() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let reports = Reports::new(dir.path());
    let supervisor = Supervisor::start(Manifest::new("term").pool(reports.pool("w", 1))).expect("start");
    assert_eq!(supervisor.stop().expect("stop"), 0);
    kill(Pid::this(), Signal::SIGTERM).expect("TERM to itself");
    // Still here: TERM was swallowed.
    std::process::exit(0);
}

/// In a child process: TERM to the program, while an embedded supervisor runs, stops the
/// supervisor gracefully and the program lives on to report its exit code.
fn child_term_stops_the_supervisor() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut reports = Reports::new(dir.path());
    let supervisor = Supervisor::start(Manifest::new("term").pool(reports.pool("w", 1))).expect("start");
    reports.next().expect("the worker runs");
    kill(Pid::this(), Signal::SIGTERM).expect("TERM to itself");
    let code = supervisor.wait().expect("wait");
    std::process::exit(if code == 0 { 0 } else { 10 + code });
}

/// Runs this binary as the child `scenario` and waits for it.
fn run_child(scenario: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, scenario)
        .stdin(Stdio::null())
        .status()
}

fn term_to_the_program_stops_a_running_supervisor_gracefully() -> Result<(), Failed> {
    let status = run_child("term-stops")?;
    match status.code() {
        Some(0) => Ok(()),
        _ => Err(format!("the program ended with {status}, not exit code 0 after wait() returned 0").into()),
    }
}

fn after_stop_term_ends_the_program_again() -> Result<(), Failed> {
    let status = run_child("term-after-stop")?;
    match status.signal() {
        Some(15) => Ok(()),
        _ => Err(format!("the program ended with {status}, not by TERM").into()),
    }
}

fn main() {
    if let Ok(scenario) = std::env::var(CHILD_ENV) {
        match scenario.as_str() {
            "term-after-stop" => child_term_after_stop(),
            "term-stops" => child_term_stops_the_supervisor(),
            other => panic!("unknown child scenario {other:?}"),
        }
        return;
    }
    let mut args = Arguments::from_args();
    // One supervisor at a time: each watches the process's signals.
    args.test_threads = Some(1);
    let trials = vec![
        Trial::test(
            "started_inside_tokio_and_threads_stop_ends_the_supervisor_and_nothing_else",
            started_inside_tokio_and_threads_stop_ends_the_supervisor_and_nothing_else,
        ),
        Trial::test(
            "the_programs_own_child_is_left_for_the_program_to_wait_for",
            the_programs_own_child_is_left_for_the_program_to_wait_for,
        ),
        Trial::test(
            "a_role_pool_that_cannot_be_spawned_is_given_up_while_the_rest_runs_on",
            a_role_pool_that_cannot_be_spawned_is_given_up_while_the_rest_runs_on,
        ),
        Trial::test(
            "term_to_the_program_stops_a_running_supervisor_gracefully",
            term_to_the_program_stops_a_running_supervisor_gracefully,
        ),
        Trial::test(
            "a_running_supervisor_installs_no_sigchld_handler_in_the_program",
            a_running_supervisor_installs_no_sigchld_handler_in_the_program,
        ),
        Trial::test(
            "after_stop_term_ends_the_program_again",
            after_stop_term_ends_the_program_again,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

//! Children of a test binary: this executable re-run in a named role, with lines on stdout
//! to say where it is, stdin held open until the parent lets it go, and waits with
//! deadlines.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

/// How long a child may take to do what a test waits for, so that a broken test fails
/// rather than hangs (generous: the machine is busy).
pub const LIMIT: Duration = Duration::from_secs(60);

const ROLE_ENV: &str = "PROCWIRE_TEST_CHILD_ROLE";

/// The role this process was started in, with its arguments, if it is a child.
pub fn role() -> Option<Vec<String>> {
    let role = std::env::var(ROLE_ENV).ok()?;
    Some(role.split(' ').map(str::to_owned).collect())
}

/// A child running this test binary in a role.
pub struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Kid {
    /// Starts this executable in `role` (words separated by spaces), after `configure` has
    /// set up the command (to pass it descriptors, say).
    pub fn spawn(role: &str, configure: impl FnOnce(&mut Command)) -> Kid {
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.env(ROLE_ENV, role)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Kid { child, stdin, lines }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child's next line on stdout, which must be `want`.
    pub fn expect_line(&self, want: &str) {
        let line = self
            .lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("child {} did not say {want:?} in time", self.pid()));
        assert_eq!(line, want, "child {} said something else", self.pid());
    }

    /// Waits for the child's next line on stdout.
    pub fn next_line(&self) -> String {
        self.lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("child {} said nothing in time", self.pid()))
    }

    /// Closes the child's stdin (the usual "you may go") without waiting for it.
    #[allow(dead_code)] // used by tests/topic.rs
    pub fn release(&mut self) {
        drop(self.stdin.take());
    }

    /// Kills the child with SIGKILL and waits for it to be gone.
    pub fn kill(mut self) {
        self.child.kill().expect("kill our child");
        self.child.wait().expect("wait for the killed child");
    }

    /// Closes the child's stdin (the usual "you may go") and waits, with a deadline, for it
    /// to exit; returns its status.
    pub fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let pid = Pid::from_raw(self.child.id() as i32);
        let (tx, rx) = mpsc::channel();
        // Wait without reaping, so that a timeout can still kill by handle.
        std::thread::spawn(move || {
            let _ = tx.send(waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT));
        });
        if rx.recv_timeout(LIMIT).is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("child {pid} did not exit in time");
        }
        self.child.wait().expect("wait for child")
    }

    /// As [`finish`](Kid::finish), and the child must have succeeded.
    pub fn succeed(self) {
        let pid = self.pid();
        let status = self.finish();
        assert!(status.success(), "child {pid} failed: {status}");
    }

    /// Blocks the child until the parent closes its stdin (call in the child).
    pub fn park_until_released() {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        // Only ever our own child, by its handle; a no-op once it was waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A supervisor inside the program that uses it: [`Supervisor::start`].

use std::thread::JoinHandle;

use nix::sys::signal::{kill, SigmaskHow, Signal};
use nix::unistd::Pid;

use crate::manifest::Manifest;
use crate::run::{self, Options, RunError};

/// The environment variable that tells a worker started for a pool's `role` which role it
/// plays; see [`role`].
pub const ROLE_ENV: &str = "PROCWIRE_ROLE";

/// The role this process was started in by an embedded supervisor (a pool's `role`), if
/// any. A program that is both supervisor and workers picks its part at the top of `main`:
///
/// ```no_run
/// match procwire_supervisor::role().as_deref() {
///     Some("calc") => { /* serve the calc service, then return from main */ }
///     _ => { /* supervise */ }
/// }
/// ```
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// A supervisor running on a thread of this program, from a manifest read from a file or
/// built in code. It stops gracefully, in reverse dependency order, when dropped, when
/// [`stop`](Self::stop) is called, or when the process receives SIGTERM or SIGINT (a second
/// SIGINT kills at once); [`wait`](Self::wait) returns its exit code then.
///
/// Two things come with running a supervisor in-process:
/// - Start it from the main thread before starting any other thread: it blocks the signals
///   it handles in the calling thread, and only threads started afterwards inherit that, so
///   that the signals reach the supervisor rather than some thread that would die of them.
/// - It reaps every child of the process (it is a subreaper and calls `waitpid(-1)`):
///   children the program starts by itself are reaped by it too, and their `wait` fails.
#[derive(Debug)]
pub struct Supervisor {
    thread: Option<JoinHandle<Result<i32, RunError>>>,
    manifest: Manifest,
}

impl Supervisor {
    /// Starts supervising `manifest` on a new thread. Pools may use `role`.
    pub fn start(manifest: Manifest) -> Result<Supervisor, RunError> {
        let mask = run::signal_mask(&manifest);
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(|e| RunError::Setup {
            what: "signal mask".into(),
            source: e.into(),
        })?;
        let (started, setup) = std::sync::mpsc::channel();
        let options = Options {
            log_format: run::logs::Format::Text,
            verbose: false,
            roles: true,
            started: Some(started),
        };
        let copy = manifest.clone();
        let thread = std::thread::Builder::new()
            .name("procwire-supervisor".into())
            .spawn(move || run::run(copy, options))
            .map_err(|e| RunError::Setup {
                what: "supervisor thread".into(),
                source: e,
            })?;
        // Return once the pools' sockets exist, so that callers can connect at once.
        if setup.recv().is_err() {
            // It ended before it started: its error says why.
            return match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(RunError::Setup {
                    what: "supervisor thread".into(),
                    source: std::io::Error::other("the supervisor ended before it started"),
                }),
            };
        }
        Ok(Supervisor {
            thread: Some(thread),
            manifest,
        })
    }

    /// The endpoints of `pool`'s workers, one per worker in index order, for a pool client:
    /// `CalcPool::new(supervisor.endpoints("calc"))`. A pool whose workers share one socket
    /// gives that socket once per worker. Empty for an unknown pool or one without `listen`.
    pub fn endpoints(&self, pool: &str) -> Vec<procwire_rpc::Endpoint> {
        let Some(pool) = self.manifest.pools.iter().find(|p| p.name == pool) else {
            return Vec::new();
        };
        match pool.listen.first() {
            Some(endpoint) => (0..pool.workers).map(|i| endpoint.for_worker(i)).collect(),
            None => Vec::new(),
        }
    }

    /// Stops gracefully and waits; returns the supervisor's exit code.
    pub fn stop(mut self) -> Result<i32, RunError> {
        self.request_stop();
        self.join()
    }

    /// Waits until the supervisor ends (its pools are done, or a signal stopped it).
    pub fn wait(mut self) -> Result<i32, RunError> {
        self.join()
    }

    fn request_stop(&self) {
        // The supervisor reads TERM from its signalfd: the same path as an outside stop.
        if self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            let _ = kill(Pid::this(), Signal::SIGTERM);
        }
    }

    fn join(&mut self) -> Result<i32, RunError> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Ok(1)),
            None => Ok(0),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.request_stop();
            let _ = self.join();
        }
    }
}

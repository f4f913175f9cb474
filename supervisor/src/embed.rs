//! A supervisor inside the program that uses it: [`Supervisor::start`].

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::control::client::ClientError;
use crate::control::feed::{Feeds, WAIT_MAX};
use crate::control::follow;
use crate::control::server::Request;
use crate::control::ControlError;
use crate::manifest::Manifest;
use crate::run::command::{Command, Handle};
use crate::run::{self, Options, Reaping, RunError};

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
/// It may be started at any time, from any thread, in a program that runs other threads
/// (a tokio runtime, say), and it changes no thread's signal mask:
/// - Signals reach it through handlers (signal-hook, so the program's own signal-hook or
///   tokio handlers keep working beside it). While it runs, TERM and INT stop it rather
///   than the program; once it has ended, a signal that was at its default disposition
///   before has that effect again.
/// - [`stop`](Self::stop) sends the loop a command; it signals nobody.
/// - It collects only the processes it started, each by its pid (pidfds): the program's
///   own children stay the program's to wait for. It is no child subreaper: what a worker
///   leaves behind in its process group (and, where cgroups are writable, in its cgroup) is
///   killed when the worker exits, and orphans go to the process's own reaper, as they would
///   without a supervisor. It records its cgroups for no successor: what its workers started
///   outlives a SIGKILL of the program. (If the
///   program itself collects any child with `waitpid(-1)`, a worker collected that way is
///   still restarted, with an unknown exit status.)
/// - Workers are forked from the supervisor's own thread, and their parent-death signal is
///   tied to it: they die with it.
#[derive(Debug)]
pub struct Supervisor {
    thread: Option<JoinHandle<Result<i32, RunError>>>,
    handle: Handle,
    manifest: Manifest,
    feeds: Arc<Feeds>,
}

impl Supervisor {
    /// Starts supervising `manifest` on a new thread. Pools may use `role`.
    pub fn start(manifest: Manifest) -> Result<Supervisor, RunError> {
        Supervisor::start_with(manifest, None)
    }

    /// [`start`](Self::start), serving the control socket at `control` as `procwire up`
    /// does ([`crate::control`]), so that `procwire status --control PATH` and the other
    /// verbs see and steer this supervisor's pools. Only this process's user and root are
    /// served; the socket goes when the supervisor ends.
    pub fn start_with_control(manifest: Manifest, control: impl Into<PathBuf>) -> Result<Supervisor, RunError> {
        Supervisor::start_with(manifest, Some(control.into()))
    }

    fn start_with(manifest: Manifest, control: Option<PathBuf>) -> Result<Supervisor, RunError> {
        let (started, setup) = std::sync::mpsc::channel();
        let options = Options {
            log_format: run::logs::Format::Text,
            verbose: false,
            roles: true,
            reaping: Reaping::Own,
            started: Some(started),
            control,
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
        let Ok((handle, feeds)) = setup.recv() else {
            // It ended before it started: its error says why.
            return match joined(thread.join()) {
                Err(e) => Err(e),
                Ok(_) => Err(RunError::Setup {
                    what: "supervisor thread".into(),
                    source: std::io::Error::other("the supervisor ended before it started"),
                }),
            };
        };
        Ok(Supervisor {
            thread: Some(thread),
            handle,
            manifest,
            feeds,
        })
    }

    /// The endpoints of `pool`'s workers, one per worker in index order, for a pool client:
    /// `CalcPool::new(supervisor.endpoints("calc"))`. A pool whose workers share one socket
    /// gives that socket once per worker. Empty for an unknown pool or one without `listen`.
    /// They are those of the workers there are now (scaled by hand, reloaded); once the
    /// supervisor has ended, those of the manifest it started with. [`follow`](Self::follow)
    /// keeps a pool client up to date.
    pub fn endpoints(&self, pool: &str) -> Vec<procwire_rpc::Endpoint> {
        let name = pool.to_owned();
        match crate::control::server::ask(&self.handle, |reply| Request::Endpoints { pool: name, reply }) {
            Ok(endpoints) => endpoints,
            Err(ControlError::NoSuchPool { .. }) => Vec::new(),
            Err(_) => {
                let Some(pool) = self.manifest.pools.iter().find(|p| p.name == pool) else {
                    return Vec::new();
                };
                match pool.listen.first() {
                    Some(endpoint) => (0..pool.workers).map(|i| endpoint.for_worker(i)).collect(),
                    None => Vec::new(),
                }
            }
        }
    }

    /// Keeps `client`, a pool client of `pool` (`CalcPool::pool()`), calling the pool's
    /// current workers: after a scale (`procwire scale` on the control socket) or a reload
    /// it calls the new workers and stops calling removed ones, without being rebuilt. Its
    /// endpoints are set at once; a thread keeps them up to date until the supervisor ends
    /// or no one holds the pool client any more.
    pub fn follow(&self, pool: &str, client: &procwire_rpc::pool::Pool) -> Result<JoinHandle<()>, ClientError> {
        let ask = |handle: &Handle, name: &str| {
            let name = name.to_owned();
            crate::control::server::ask(handle, |reply| Request::Endpoints { pool: name, reply })
        };
        let first = ask(&self.handle, pool).map_err(ClientError::Refused)?;
        client.set_endpoints(&first);
        let (feeds, handle, name) = (Arc::clone(&self.feeds), self.handle.clone(), pool.to_owned());
        follow::spawn(
            client.downgrade(),
            name.clone(),
            move |cursor| {
                let events = &feeds.events;
                let from = cursor.unwrap_or_else(|| events.head());
                let wait = if cursor.is_some() { WAIT_MAX } else { Duration::ZERO };
                follow::Asked::Got(events.read(from, wait, |_| true))
            },
            // In process, a question fails only once the supervisor has ended.
            move || match ask(&handle, &name) {
                Ok(endpoints) => follow::Asked::Got(endpoints.iter().map(ToString::to_string).collect()),
                Err(_) => follow::Asked::Ended,
            },
        )
        .map_err(|source| ClientError::Thread {
            pool: pool.to_owned(),
            source,
        })
    }

    /// A handle to command the supervisor from any thread ([`Command::Stop`], ...), for
    /// as long as it runs.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops gracefully and waits; returns the supervisor's exit code.
    pub fn stop(mut self) -> Result<i32, RunError> {
        self.request_stop();
        self.join()
    }

    /// Waits until the supervisor ends (its pools are done, or a signal or a command
    /// stopped it).
    pub fn wait(mut self) -> Result<i32, RunError> {
        self.join()
    }

    fn request_stop(&self) {
        // An error means it has ended already: nothing to stop.
        let _ = self.handle.send(Command::Stop);
    }

    fn join(&mut self) -> Result<i32, RunError> {
        match self.thread.take() {
            Some(thread) => joined(thread.join()),
            None => Ok(0),
        }
    }
}

/// The supervisor thread's result; a panic is an error that says so, never an exit code.
fn joined(result: std::thread::Result<Result<i32, RunError>>) -> Result<i32, RunError> {
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Err(RunError::Panicked { message })
    })
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.request_stop();
            let _ = self.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{client, WorkerState};
    use crate::manifest::Pool;

    #[test]
    fn an_embedded_supervisor_serves_its_control_socket_when_asked_to() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ctl.sock");
        let manifest =
            Manifest::new("embedded-control").pool(Pool::new("sleeper", vec!["sleep".into(), "1000".into()]));
        let supervisor = Supervisor::start_with_control(manifest, &socket).unwrap();
        let control = client::connect(&socket).unwrap();
        let status = control.status(None).unwrap();
        assert_eq!(status.supervisor.name, "embedded-control");
        assert_eq!(status.supervisor.pid, std::process::id());
        let worker = &status.pools[0].workers[0];
        assert_eq!(worker.state, WorkerState::Ready);
        let pid = worker.pid.expect("a running worker has a pid");
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert_eq!(control.down().unwrap(), 0);
        assert_eq!(supervisor.wait().unwrap(), 0);
        assert!(!socket.exists(), "the socket goes with the supervisor");
    }

    #[test]
    fn a_panicked_supervisor_thread_is_an_error_naming_the_panic_not_an_exit_code() {
        let thread = std::thread::spawn(|| -> Result<i32, RunError> { panic!("index out of bounds") });
        let error = joined(thread.join()).expect_err("a panic is no exit code");
        assert!(matches!(error, RunError::Panicked { .. }), "{error:?}");
        assert_eq!(error.to_string(), "the supervisor thread panicked: index out of bounds");
        let formatted = std::thread::spawn(|| -> Result<i32, RunError> { panic!("pool {}", 3) });
        assert!(joined(formatted.join())
            .expect_err("a panic")
            .to_string()
            .ends_with("pool 3"));
    }
}

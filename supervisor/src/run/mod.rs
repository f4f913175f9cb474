//! The imperative shell around [`Policy`]: one thread, one `poll(2)` loop over the signal
//! self-pipe, the notify socket, the command inbox, a pidfd per child and the workers' log
//! pipes, with the next timer as its timeout. It turns what the OS and other threads report
//! into policy events and carries out the policy's actions; it uses no CPU while nothing
//! happens. It needs no signal mask, so it runs on any thread of any program, at any time.

mod cgroup;
mod children;
pub mod command;
mod containment;
mod control;
mod listen;
pub mod lock;
pub mod logs;
pub mod notify;
mod notify_access;
mod output;
mod probe;
mod queues;
mod reload;
mod shared;
mod signals;
mod sockets;
pub mod spawn;
mod start;
mod sys;
mod topics;
mod vfork;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::manifest::{Endpoint, Host, Manifest, Pool, Ready, ValidationError};
use crate::policy::{Action, Event, Policy, TimerKey, WorkerId};
use command::{Command, Handle, Inbox};
use logs::{Format, LogPipe, RotatingFile, Stream};
use notify::NotifySocket;
use signals::Signals;

pub(crate) use listen::bind_unix;
use listen::{bind_endpoint, bind_listeners, same_socket, socket_group};

/// How `procwire up` runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// How worker output is written.
    pub log_format: Format,
    /// Also report orphans reaped and notifications from unknown processes.
    pub verbose: bool,
    /// Whether pools may use `role` (the supervising program runs itself as workers): true
    /// for an embedded supervisor, false for `procwire up`.
    pub roles: bool,
    /// Which exited children the supervisor collects.
    pub reaping: Reaping,
    /// Given a [`Handle`] to command the loop once the supervisor is set up (its sockets
    /// bound), as it starts the pools, and the feeds its followers read.
    pub started: Option<std::sync::mpsc::Sender<(Handle, std::sync::Arc<crate::control::feed::Feeds>)>>,
    /// Where to serve the control socket ([`crate::control`]), if at all.
    pub control: Option<PathBuf>,
}

/// Which exited children the supervisor collects (`waitpid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaping {
    /// Every child of the process: it becomes a child subreaper, so that orphans its workers
    /// leave are re-parented to it and reaped (and it reaps them as PID 1). For `procwire
    /// up`, which has no children but its own.
    All,
    /// Only the workers and probes it started, each by its pid: a program that embeds the
    /// supervisor keeps its own children to itself, and orphans of the workers go to the
    /// process's own reaper, as they would without the supervisor.
    Own,
}

/// The supervisor could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Setting up signals, the notify socket or the runtime directory failed.
    #[error("cannot set up the supervisor: {what}: {source}")]
    Setup {
        /// What was being set up.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest cannot run here ([`Manifest::validate_for`]): nothing was started.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Another supervisor of the same name runs (`procwire up` only), or the runtime
    /// directory cannot hold the lock.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The control socket cannot be served.
    #[error(transparent)]
    Control(#[from] crate::control::server::ServeError),
    /// The supervisor's thread panicked (a bug in procwire): its workers were killed.
    #[error("the supervisor thread panicked: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
    },
}

fn setup(what: &str) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Setup {
        what: what.to_owned(),
        source,
    }
}

/// Runs `manifest` until it is done or shut down; returns the exit code.
///
/// Any thread may call it, at any time: signals arrive through handlers (signal-hook), not a
/// signal mask, and workers' exits through pidfds. Workers are forked from the calling
/// thread, whose exit their parent-death signal is tied to; it blocks here until the end.
pub fn run(manifest: Manifest, options: Options) -> Result<i32, RunError> {
    let host = if options.roles { Host::Embedded } else { Host::Command };
    manifest.validate_for(host)?;
    // One `procwire up` per name. Embedded supervisors take no name lock (a program may run
    // several, as tests do); they too never take over a live socket (bind_endpoint).
    let _lock = if options.roles {
        None
    } else {
        Some(lock::NameLock::acquire(&manifest.supervisor.name)?)
    };
    if options.reaping == Reaping::All {
        // Orphans re-parent to us, so that every zombie below us is reaped, grandchildren
        // included.
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| setup("child subreaper")(e.into()))?;
    }
    // Before anything starts: what a killed predecessor of this name left is ended here.
    let contained = containment::Containment::set_up(
        &manifest.supervisor.name,
        _lock.as_ref().and_then(|lock| lock.path().parent()),
        options.reaping == Reaping::All,
    );
    // Without pidfds, SIGCHLD says when to look for exited children.
    let pidfds = children::have_pidfds();
    let sigchld = options.reaping == Reaping::All || !pidfds;
    let mut signals = Signals::new().map_err(setup("signal handling"))?;
    for signal in watched_signals(&manifest, sigchld) {
        signals.watch(signal).map_err(|source| RunError::Setup {
            what: format!("watching {signal}"),
            source,
        })?;
    }
    let (handle, inbox) = command::channel().map_err(setup("command channel"))?;
    let runtime = tempfile::Builder::new()
        .prefix(&format!("procwire-{}-", manifest.supervisor.name))
        .tempdir_in(std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from))
        .map_err(setup("runtime directory"))?;
    let feeds = std::sync::Arc::new(crate::control::feed::Feeds::default());
    // After the name lock: the socket beside it is this supervisor's to replace.
    let control = match &options.control {
        Some(path) => Some(crate::control::server::ControlSocket::serve(
            path,
            handle.clone(),
            crate::control::server::Identity {
                name: manifest.supervisor.name.clone(),
                manifest: std::fs::canonicalize(&manifest.path).unwrap_or_else(|_| manifest.path.clone()),
                shutdown_timeout: manifest.supervisor.shutdown_timeout,
            },
            std::sync::Arc::clone(&feeds),
        )?),
        None => None,
    };
    let mut listeners = BTreeMap::new();
    bind_listeners(&manifest, &mut listeners).map_err(|(what, source)| RunError::Setup { what, source })?;
    let mut shared = shared::SharedRegions::default();
    shared.create(&manifest).map_err(|(what, e)| RunError::Setup {
        what,
        source: std::io::Error::other(e),
    })?;
    queues::Queues::remove_leftovers();
    let mut queues = queues::Queues::new(&manifest.supervisor.name);
    queues.create(&manifest).map_err(|(what, e)| RunError::Setup {
        what,
        source: std::io::Error::other(e),
    })?;
    let mut topics = topics::Topics::new(runtime.path());
    topics
        .create(&manifest)
        .map_err(|(what, source)| RunError::Setup { what, source })?;
    let notify = NotifySocket::bind(&runtime.path().join("notify")).map_err(setup("notify socket"))?;
    // Workers that run as another user must reach the notify socket too; what they send is
    // heard only if it comes from a pid the supervisor started (SO_PASSCRED), and the
    // directory cannot be listed or written by others.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(setup("runtime directory"))?;
        std::fs::set_permissions(notify.path(), std::fs::Permissions::from_mode(0o666))
            .map_err(setup("notify socket"))?;
    }
    let base = manifest
        .path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let mut runner = Runner {
        policy: Policy::new(&manifest, seed),
        manifest,
        timers: BTreeMap::new(),
        probes: BTreeMap::new(),
        probe_pids: HashMap::new(),
        pids: HashMap::new(),
        listeners,
        shared,
        queues,
        topics,
        workers: HashMap::new(),
        last_pid: HashMap::new(),
        logs: Vec::new(),
        files: HashMap::new(),
        notify,
        signals,
        inbox,
        pidfds: if pidfds { Some(BTreeMap::new()) } else { None },
        reaping: options.reaping,
        base,
        format: options.log_format,
        verbose: options.verbose,
        host,
        interrupts: 0,
        exit: None,
        observed: control::Observed::new(feeds),
        containment: contained.containment,
        _runtime: runtime,
    };
    for note in &contained.notes {
        runner.say(note);
    }
    if let (true, Some(tree)) = (runner.verbose, runner.containment.tree()) {
        runner.say(&format!(
            "containment: each worker in a cgroup of its own under {}",
            tree.display()
        ));
    }
    if let Some(started) = &options.started {
        let _ = started.send((handle, std::sync::Arc::clone(&runner.observed.feeds)));
    }
    runner.feed(Event::Begin);
    let code = runner.run();
    // Followers (of the control socket, or in process) get what is left, then the end.
    runner.observed.feeds.end();
    if let Some(control) = control {
        control.finish(code);
    }
    Ok(code)
}

/// The signals the supervisor reads: its own (CHLD only if asked), and those it forwards.
fn watched_signals(manifest: &Manifest, sigchld: bool) -> Vec<Signal> {
    let mut signals = vec![Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];
    if sigchld {
        signals.push(Signal::SIGCHLD);
    }
    for pool in &manifest.pools {
        for signal in &pool.forward {
            if !signals.contains(signal) {
                signals.push(*signal);
            }
        }
    }
    signals
}

/// What a pool runs, to name it in a message: its program, or its role.
fn program(pool: &Pool) -> String {
    match (&pool.role, pool.command.first()) {
        (Some(role), _) => format!("role {role:?}"),
        (None, Some(program)) => program.clone(),
        (None, None) => "(an empty command)".to_owned(),
    }
}

struct Runner {
    manifest: Manifest,
    policy: Policy,
    timers: BTreeMap<TimerKey, Instant>,
    /// Workers waiting for a readiness probe, and when to probe next.
    probes: BTreeMap<WorkerId, Instant>,
    /// Running `exec:` probes: probe pid -> worker.
    probe_pids: HashMap<Pid, WorkerId>,
    pids: HashMap<Pid, WorkerId>,
    /// The listening sockets the supervisor owns, open for as long as a pool names them.
    listeners: BTreeMap<Endpoint, std::os::fd::OwnedFd>,
    /// The `[shared.NAME]` regions, kept for as long as the manifest names them.
    shared: shared::SharedRegions,
    /// The `[queue.NAME]` message queues, kept for as long as the manifest names them.
    queues: queues::Queues,
    /// The `[topic.NAME]` sockets, kept for as long as the manifest names them.
    topics: topics::Topics,
    workers: HashMap<WorkerId, Pid>,
    /// The pid each worker had last, also after it exited, to name it in reports.
    last_pid: HashMap<WorkerId, Pid>,
    logs: Vec<LogPipe>,
    files: HashMap<PathBuf, Rc<RefCell<RotatingFile>>>,
    notify: NotifySocket,
    signals: Signals,
    inbox: Inbox,
    /// A pidfd for each child (worker or probe) by its pid; `None` without kernel support.
    pidfds: Option<BTreeMap<Pid, OwnedFd>>,
    reaping: Reaping,
    base: PathBuf,
    format: Format,
    verbose: bool,
    /// Who runs the manifest, for validating the reloaded one.
    host: Host,
    interrupts: u32,
    exit: Option<i32>,
    /// What only the control plane asks about.
    observed: control::Observed,
    /// The workers' cgroups, or the fallback; ended after the workers (field order).
    containment: containment::Containment,
    _runtime: tempfile::TempDir,
}

impl Runner {
    fn run(&mut self) -> i32 {
        loop {
            if let Some(code) = self.exit {
                self.drain_logs();
                return code;
            }
            let timeout = match self.timers.values().chain(self.probes.values()).min() {
                None => PollTimeout::NONE,
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            let children: Vec<Pid> = self.pidfds.iter().flat_map(|fds| fds.keys().copied()).collect();
            let (signals, notify, commands, exited, logs) = {
                let mut fds = vec![
                    PollFd::new(self.signals.fd(), PollFlags::POLLIN),
                    PollFd::new(self.notify.fd(), PollFlags::POLLIN),
                    PollFd::new(self.inbox.fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    self.pidfds
                        .iter()
                        .flat_map(|fds| fds.values())
                        .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
                );
                fds.extend(self.logs.iter().map(|l| PollFd::new(l.fd(), PollFlags::POLLIN)));
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        self.say(&format!("poll failed: {e}"));
                        return 1;
                    }
                }
                let ready = |fd: &PollFd<'_>| fd.any().unwrap_or(false);
                let (children_end, all) = (3 + children.len(), fds.len());
                let exited: Vec<Pid> = children
                    .iter()
                    .zip(&fds[3..children_end])
                    .filter(|(_, fd)| ready(fd))
                    .map(|(pid, _)| *pid)
                    .collect();
                (
                    ready(&fds[0]),
                    ready(&fds[1]),
                    ready(&fds[2]),
                    exited,
                    fds[children_end..all].iter().map(ready).collect::<Vec<_>>(),
                )
            };
            if logs.iter().any(|r| *r) {
                self.pump_logs(&logs);
            }
            if signals {
                self.on_signals();
            }
            for pid in exited {
                // Unless SIGCHLD's waitpid(-1) above collected it already.
                let watched = self.pidfds.as_ref().is_some_and(|fds| fds.contains_key(&pid));
                if let Some(exit) = watched.then(|| children::wait_for(pid)).flatten() {
                    self.exited(pid, exit);
                }
            }
            if notify {
                self.on_notify();
            }
            if commands {
                self.on_commands();
            }
            self.fire_timers();
        }
    }

    fn on_commands(&mut self) {
        for command in self.inbox.drain() {
            match command {
                Command::Stop => self.feed(Event::Shutdown),
                Command::Kill => self.feed(Event::Kill),
                Command::Control(request) => self.on_control(request),
            }
        }
    }

    fn on_signals(&mut self) {
        let mut reap = false;
        for signal in self.signals.pending() {
            match signal {
                Signal::SIGCHLD => reap = true,
                Signal::SIGTERM => self.feed(Event::Shutdown),
                Signal::SIGINT => {
                    self.interrupts += 1;
                    if self.interrupts == 1 {
                        self.say("interrupted; stopping (interrupt again to kill at once)");
                        self.feed(Event::Shutdown);
                    } else {
                        self.feed(Event::Kill);
                    }
                }
                Signal::SIGHUP if !self.forwards(Signal::SIGHUP) => self.reload(),
                other => self.forward(other),
            }
        }
        if reap {
            self.reap();
        }
    }

    fn forwards(&self, signal: Signal) -> bool {
        self.manifest.pools.iter().any(|p| p.forward.contains(&signal))
    }

    fn forward(&self, signal: Signal) {
        for (w, pid) in &self.workers {
            if self.policy.pool(w.pool).forward.contains(&signal) {
                let _ = killpg(*pid, signal);
            }
        }
    }

    fn on_notify(&mut self) {
        loop {
            let message = match self.notify.recv() {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    self.say(&format!("notify socket: {e}"));
                    return;
                }
            };
            // Only the processes we started are heard, and their trees where notify_access allows.
            let access = |w: WorkerId| self.policy.pool(w.pool).notify_access;
            let Some(w) = notify_access::sender_worker(message.pid, &self.pids, access) else {
                if self.verbose {
                    let fields: Vec<String> = message.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    self.say(&format!(
                        "ignored notify message from pid {} (not a worker, nor in the tree of one with notify_access = \"all\"): {}",
                        message.pid,
                        fields.join(" ")
                    ));
                }
                continue;
            };
            for (key, value) in message.fields {
                match (key.as_str(), value.as_str()) {
                    ("READY", "1") => self.feed(Event::Ready(w)),
                    ("WATCHDOG", "1") => self.feed(Event::Heartbeat(w)),
                    ("STATUS", status) => {
                        self.observed.status(w, status);
                        self.report(w, &format!("status: {status}"));
                    }
                    ("STOPPING", "1") => self.report(w, "is stopping"),
                    _ => {}
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<TimerKey> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.timers.remove(&key);
            self.feed(Event::Timer(key));
        }
        let due: Vec<WorkerId> = self
            .probes
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(w, _)| *w)
            .collect();
        for w in due {
            self.probe(w);
        }
    }

    /// Feeds an event to the policy and carries out everything that follows.
    fn feed(&mut self, event: Event) {
        let actions = self.policy.handle(Instant::now(), event);
        self.apply(actions);
    }

    /// Carries out actions, feeding back the events they cause.
    fn apply(&mut self, mut actions: Vec<Action>) {
        let mut queue = VecDeque::new();
        loop {
            for action in actions {
                match action {
                    Action::Spawn(w) => queue.push_back(self.spawn(w)),
                    Action::Signal(w, signal) => {
                        if let Some(pid) = self.workers.get(&w) {
                            let _ = killpg(*pid, signal);
                        }
                    }
                    Action::Kill(w) => {
                        if let Some(pid) = self.workers.get(&w) {
                            let _ = killpg(*pid, Signal::SIGKILL);
                            self.kill_cgroup(w);
                        }
                    }
                    Action::SetTimer(key, at) => {
                        self.timers.insert(key, at);
                    }
                    Action::CancelTimer(key) => {
                        self.timers.remove(&key);
                    }
                    Action::Log(line) => self.say(&line),
                    Action::Report(w, line) => self.report(w, &line),
                    Action::Lifecycle(w, step) => self.lifecycle(w, step),
                    Action::Exit(code) => self.exit = Some(code),
                }
            }
            match queue.pop_front() {
                Some(event) => actions = self.policy.handle(Instant::now(), event),
                None => return,
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // The socket files it created go with it.
        for endpoint in self.listeners.keys() {
            if let Endpoint::Unix(path) | Endpoint::Shm(path) | Endpoint::Mq(path) = endpoint {
                let _ = std::fs::remove_file(path);
            }
        }
        // Never leave a worker behind, whatever ended the loop (an error, a panic), nor a
        // zombie: nothing else may wait for them.
        for pid in self.workers.values() {
            let _ = killpg(*pid, Signal::SIGKILL);
        }
        for pid in self.probe_pids.keys() {
            let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
        }
        for pid in self.workers.values().chain(self.probe_pids.keys()) {
            let _ = nix::sys::wait::waitpid(*pid, None);
        }
    }
}

//! Benchmarks `procwire up`, each measure beside this machine's own floor, measured in the
//! same run:
//!
//! 1. restart latency: SIGKILL of a worker to its replacement running (50 workers, zero
//!    backoff), against fork+exec+wait of `/bin/true`;
//! 2. start-up: spawning `procwire up` to all 200 workers running, against the bench
//!    spawning the same 200 workers itself;
//! 3. idle CPU: the supervisor's clock ticks over 10 s with 200 idle workers, against an idle
//!    worker's over the same window;
//! 4. RSS of the supervisor with 200 workers, against an idle worker's;
//! 5. `default-restart`: SIGKILL of a worker that has run 3 s to its replacement running,
//!    with a manifest that sets nothing but the command, the worker count and the bench's
//!    socket (every restart setting at its default), against fork+exec+wait of `/bin/true`,
//!    and against the bench restarting its own worker the same way (SIGKILL, wait, spawn,
//!    report): what the same restart costs with no supervisor in between; and, where
//!    `s6-supervise` is installed, against s6 restarting the same worker (one
//!    `s6-supervise` per worker, its `run` the same binary, ready through s6's
//!    `notification-fd`, without which s6 waits a second before every restart), in the same
//!    rounds.
//!
//! A filter argument runs only the measures whose name contains it: `restart`, `start-up`,
//! `idle`, `rss` (these four run together) or `default-restart`, e.g.
//! `cargo bench -p procwire-supervisor --bench supervisor -- default-restart`.
//!
//! "Running" is an event, not a poll: every worker is this very binary re-executed in the
//! worker role (selected by `PROCWIRE_BENCH_SOCKET`), which connects to the bench's Unix
//! socket as soon as it starts, sends `INDEX PID`, and then blocks reading the connection
//! (it exits when the bench closes it).
//!
//! `PROCWIRE_BENCH_QUICK=1` shortens the idle window to 2 s (so does running the target
//! without `--bench`, as `cargo test --benches` does).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::Pid;

/// Selects the worker role; its value is the socket to report to.
const SOCKET_VAR: &str = "PROCWIRE_BENCH_SOCKET";
/// Workers running during the restart measurement.
const RESTART_WORKERS: u32 = 50;
/// How many workers are killed, round-robin.
const KILLS: usize = 200;
/// Workers started for the start-up, idle and RSS measurements.
const START_WORKERS: u32 = 200;
/// How long any single wait may take before the bench gives up (a failure, not a measure).
const DEADLINE: Duration = Duration::from_secs(60);

/// Workers running during the default-manifest restart measurement.
const DEFAULT_WORKERS: u32 = 20;
/// The first index of the workers the bench restarts itself beside them.
const DIRECT_BASE: u32 = 1000;
/// How many times each of them is killed (once in quick mode).
const DEFAULT_ROUNDS: usize = 5;
/// The first index of the workers s6-supervise restarts beside them.
const S6_BASE: u32 = 2000;
/// Set for workers under s6: the descriptor on which they tell s6-supervise they are ready.
const S6_NOTIFY_VAR: &str = "PROCWIRE_BENCH_S6_NOTIFY_FD";
/// The descriptor number s6 hands them for that (`notification-fd`).
const S6_NOTIFY_FD: i32 = 3;
/// How long a worker has run when it is killed: past the 1 s after which, by default, a
/// worker counts as started and its restart is immediate.
const UP_FOR: Duration = Duration::from_secs(3);

const RESTART_TARGET: Duration = Duration::from_millis(2);
const START_TARGET: Duration = Duration::from_millis(500);
const RSS_TARGET_KIB: u64 = 16 * 1024;

fn main() {
    if let Some(socket) = std::env::var_os(SOCKET_VAR) {
        worker(socket);
    }
    bench();
}

// ---------------------------------------------------------------------------------------
// The worker role.

/// Reports `INDEX PID` to the bench, then blocks until the bench closes the connection.
fn worker(socket: OsString) -> ! {
    let index: u32 = std::env::var("PROCWIRE_INDEX")
        .ok()
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| std::process::exit(2));
    let Ok(mut stream) = UnixStream::connect(socket) else {
        std::process::exit(3)
    };
    if stream
        .write_all(format!("{index} {}\n", std::process::id()).as_bytes())
        .is_err()
    {
        std::process::exit(4);
    }
    // Under s6: readiness on the notification descriptor, without which s6-supervise waits a
    // second before each restart.
    if let Ok(fd) = std::env::var(S6_NOTIFY_VAR) {
        // The pipe s6-supervise opened there, opened again by name (no descriptor adopted).
        if let Ok(mut notify) = File::options().write(true).open(format!("/proc/self/fd/{fd}")) {
            let _ = notify.write_all(b"\n");
        }
    }
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => std::process::exit(0),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => std::process::exit(0),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The bench's side of the socket.

/// One worker that reported in: its index, its pid as the kernel tells it, and the
/// connection that keeps it alive.
#[derive(Debug)]
struct Report {
    index: u32,
    pid: Pid,
    _stream: UnixStream,
}

#[derive(Debug)]
struct Reports {
    listener: UnixListener,
    path: PathBuf,
}

impl Reports {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("workers.sock");
        let listener = UnixListener::bind(&path).expect("bind the workers' socket");
        Reports { listener, path }
    }

    /// Waits for the next worker to connect and report. Returns as soon as it has.
    fn next(&self, what: &str) -> Report {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what}: no worker reported within {DEADLINE:?}");
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => break,
                Err(e) => panic!("{what}: poll: {e}"),
            }
        }
        let (mut stream, _) = self.listener.accept().expect("accept a worker");
        let pid = Pid::from_raw(getsockopt(&stream, PeerCredentials).expect("SO_PEERCRED").pid());
        stream.set_read_timeout(Some(DEADLINE)).expect("read timeout");
        let mut line = Vec::with_capacity(32);
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') {
            match stream.read(&mut byte) {
                Ok(0) => panic!("{what}: a worker hung up before reporting"),
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{what}: reading a worker's report: {e}"),
            }
        }
        let line = String::from_utf8(line).expect("UTF-8 report");
        let (index, reported) = line
            .trim_end()
            .split_once(' ')
            .unwrap_or_else(|| panic!("{what}: bad report {line:?}"));
        let index: u32 = index.parse().expect("index");
        let reported: i32 = reported.parse().expect("pid");
        assert_eq!(reported, pid.as_raw(), "{what}: the reported pid is not the peer's");
        Report {
            index,
            pid,
            _stream: stream,
        }
    }

    /// Waits for `n` workers with indices 0..n.
    fn all(&self, n: u32, what: &str) -> Vec<Report> {
        let mut reports: Vec<Option<Report>> = (0..n).map(|_| None).collect();
        for _ in 0..n {
            let report = self.next(what);
            let slot = &mut reports[report.index as usize];
            assert!(slot.is_none(), "{what}: worker {} reported twice", report.index);
            *slot = Some(report);
        }
        reports.into_iter().map(|r| r.expect("every index")).collect()
    }
}

// ---------------------------------------------------------------------------------------
// The supervisor under test, and the guard that never leaves it behind.

#[derive(Debug)]
struct Supervisor {
    child: Child,
    log: PathBuf,
    waited: bool,
}

fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => write!(out, "\\u{:04X}", c as u32).expect("write to a String"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Supervisor {
    /// Writes a manifest of `workers` workers (this binary in the worker role) into `dir`.
    fn manifest(dir: &Path, reports: &Reports, workers: u32) -> PathBuf {
        let me = std::env::current_exe().expect("the bench's own path");
        let text = format!(
            r#"[supervisor]
name = "bench"
shutdown_timeout = "20s"

[pool.w]
command = [{exe}]
workers = {workers}
restart = "always"
backoff = {{ initial = "0s", max = "1s", factor = 2.0, jitter = 0.0, reset_after = "60s" }}
limit = {{ restarts = 100000, within = "1s" }}
stop_timeout = "10s"
stdout = "discard"
stderr = "discard"
env = {{ {var} = {socket} }}
"#,
            exe = toml_string(me.to_str().expect("UTF-8 path")),
            var = SOCKET_VAR,
            socket = toml_string(reports.path.to_str().expect("UTF-8 path")),
        );
        let path = dir.join(format!("bench-{workers}.toml"));
        std::fs::write(&path, text).expect("write the manifest");
        path
    }

    /// A manifest of `workers` workers that sets nothing else: every restart, backoff,
    /// limit and output setting at its default.
    fn default_manifest(dir: &Path, reports: &Reports, workers: u32) -> PathBuf {
        let me = std::env::current_exe().expect("the bench's own path");
        let text = format!(
            "[pool.w]\ncommand = [{exe}]\nworkers = {workers}\nenv = {{ {var} = {socket} }}\n",
            exe = toml_string(me.to_str().expect("UTF-8 path")),
            var = SOCKET_VAR,
            socket = toml_string(reports.path.to_str().expect("UTF-8 path")),
        );
        let path = dir.join(format!("default-{workers}.toml"));
        std::fs::write(&path, text).expect("write the manifest");
        path
    }

    /// Spawns `procwire up MANIFEST`; its own output goes to a log file in `dir`.
    fn spawn(dir: &Path, manifest: &Path) -> Self {
        let log = dir.join(format!(
            "{}.log",
            manifest.file_stem().and_then(|s| s.to_str()).unwrap_or("procwire")
        ));
        let out = File::create(&log).expect("create the supervisor's log");
        let child = Command::new(env!("CARGO_BIN_EXE_procwire"))
            .arg("up")
            .arg(manifest)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the log"))
            .stderr(out)
            .env_remove(SOCKET_VAR)
            .spawn()
            .expect("spawn procwire up");
        Supervisor {
            child,
            log,
            waited: false,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGTERM, then waits for it to exit.
    fn stop(mut self) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM the supervisor");
        let status = self.child.wait().expect("wait for the supervisor");
        self.waited = true;
        status
    }

    /// SIGKILLs worker `report`, which must be this supervisor's child.
    fn kill_worker(&self, report: &Report) {
        assert_eq!(
            parent_of(report.pid),
            Some(self.pid()),
            "worker {} (pid {}) is not a child of our supervisor",
            report.index,
            report.pid
        );
        kill(report.pid, Signal::SIGKILL).expect("SIGKILL a worker");
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.waited {
            return;
        }
        // Its workers die with it (they get SIGKILL as their parent-death signal).
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("procwire's last lines:");
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
        }
    }
}

/// Workers the bench spawned itself; killed (by pid) and reaped whatever happens.
#[derive(Debug, Default)]
struct Direct(Vec<Child>);

impl Direct {
    fn spawn(&mut self, reports: &Reports, index: u32) {
        let child = Self::command(reports, index).spawn().expect("spawn a worker");
        self.0.push(child);
    }

    /// The floor of a restart: SIGKILLs the `i`th worker it spawned (by pid), waits for it,
    /// spawns its replacement as worker `index` and waits for that to report: what a restart
    /// costs with no supervisor in between. Returns the time from the kill to the report.
    fn restart(&mut self, reports: &Reports, i: usize, index: u32) -> (Duration, Report) {
        let t0 = Instant::now();
        kill(Pid::from_raw(self.0[i].id() as i32), Signal::SIGKILL).expect("SIGKILL a direct worker");
        self.0[i].wait().expect("wait for a direct worker");
        self.0[i] = Self::command(reports, index).spawn().expect("spawn a worker");
        let report = reports.next("direct restart");
        (t0.elapsed(), report)
    }

    fn command(reports: &Reports, index: u32) -> Command {
        let mut command = Command::new(std::env::current_exe().expect("the bench's own path"));
        command
            .env(SOCKET_VAR, &reports.path)
            .env("PROCWIRE_INDEX", index.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Waits for every worker; they exit once their connections are closed.
    fn wait(mut self) {
        for mut child in std::mem::take(&mut self.0) {
            child.wait().expect("wait for a worker");
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Workers under s6: one `s6-supervise` per worker, in a service directory of its own
/// whose `run` is this binary, so that s6 restarts exactly what the supervisor does.
#[derive(Debug)]
struct S6 {
    supervisors: Vec<Child>,
}

impl S6 {
    /// Starts `n` workers under s6 (indices from [`S6_BASE`]), or says why not.
    fn spawn(dir: &Path, reports: &Reports, n: u32) -> Result<S6, String> {
        let mut s6 = S6 {
            supervisors: Vec::new(),
        };
        for i in 0..n {
            let service = dir.join(format!("s6-{i}"));
            std::fs::create_dir_all(&service).map_err(|e| format!("{}: {e}", service.display()))?;
            let exe = std::env::current_exe().expect("the bench's own path");
            std::os::unix::fs::symlink(&exe, service.join("run")).map_err(|e| format!("run: {e}"))?;
            // Readiness, as the issue's s6 figure had it: without it s6-supervise waits a
            // second before every restart.
            std::fs::write(service.join("notification-fd"), format!("{S6_NOTIFY_FD}\n"))
                .map_err(|e| format!("notification-fd: {e}"))?;
            let child = Command::new("s6-supervise")
                .arg(&service)
                .env(SOCKET_VAR, &reports.path)
                .env(S6_NOTIFY_VAR, S6_NOTIFY_FD.to_string())
                .env("PROCWIRE_INDEX", (S6_BASE + i).to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("s6-supervise: {e}"))?;
            s6.supervisors.push(child);
        }
        Ok(s6)
    }

    /// SIGKILLs worker `report` (s6's) and waits for s6's replacement to report.
    fn restart(&self, reports: &Reports, report: &Report) -> (Duration, Report) {
        let t0 = Instant::now();
        kill(report.pid, Signal::SIGKILL).expect("SIGKILL a worker under s6");
        let next = reports.next("s6 restart");
        (t0.elapsed(), next)
    }
}

impl Drop for S6 {
    fn drop(&mut self) {
        // The workers exit once the bench closes their connections.
        for child in &mut self.supervisors {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc.

fn stat_fields(pid: Pid) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 2 (comm) is in parentheses and may hold spaces; the rest follow the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let mut fields = vec![String::new(), String::new()];
    fields.extend(rest.split_whitespace().map(str::to_owned));
    fields
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat.
fn stat_field(pid: Pid, n: usize) -> Option<u64> {
    stat_fields(pid).get(n - 1)?.parse().ok()
}

fn parent_of(pid: Pid) -> Option<Pid> {
    stat_field(pid, 4).map(|p| Pid::from_raw(p as i32))
}

/// utime + stime (fields 14 and 15), in clock ticks.
fn cpu_ticks(pid: Pid) -> u64 {
    let fields = stat_fields(pid);
    let field = |n: usize| -> u64 {
        fields
            .get(n - 1)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("/proc/{pid}/stat has no field {n}"))
    };
    field(14) + field(15)
}

/// VmRSS, in KiB.
fn rss_kib(pid: Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no VmRSS"))
}

// ---------------------------------------------------------------------------------------
// Statistics and the table.

/// The value at quantile `q` (nearest rank) of sorted `v`.
fn quantile(v: &[Duration], q: f64) -> Duration {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".to_owned()
    } else {
        format!("{:.1}x", a / b)
    }
}

#[derive(Debug)]
struct Row {
    measure: String,
    procwire: String,
    floor: String,
    ratio: String,
    target: String,
    met: &'static str,
}

fn yes(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "NO"
    }
}

fn print_table(rows: &[Row]) {
    let header = ["measure", "procwire", "floor", "ratio", "target", "met?"];
    let cells: Vec<[&str; 6]> = rows
        .iter()
        .map(|r| [&*r.measure, &*r.procwire, &*r.floor, &*r.ratio, &*r.target, r.met])
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str; 6]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (c, w))| if i == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&header);
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in &cells {
        line(row);
    }
}

fn machine_facts() {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    println!(
        "machine: nproc {nproc}, cpu {cpu}, kernel {}, {hz} clock ticks/s",
        kernel.trim()
    );
}

// ---------------------------------------------------------------------------------------
// The measurements.

/// Restart latencies, sorted, of workers that had run [`UP_FOR`] under a default manifest,
/// and of the floor beside them: as many workers the bench spawned itself (indices from
/// [`DIRECT_BASE`]), each restarted by the bench right after the supervisor's, so that both
/// measures see the same load.
/// Restart latencies with the default manifest, beside the bench's own restarts and
/// s6's (if installed, else why not), interleaved round by round so that all see the same
/// load: each sorted.
struct DefaultRestarts {
    procwire: Vec<Duration>,
    direct: Vec<Duration>,
    s6: Result<Vec<Duration>, String>,
}

fn default_restarts(dir: &Path, reports: &Reports, rounds: usize) -> DefaultRestarts {
    let manifest = Supervisor::default_manifest(dir, reports, DEFAULT_WORKERS);
    let supervisor = Supervisor::spawn(dir, &manifest);
    let mut direct = Direct::default();
    for i in 0..DEFAULT_WORKERS {
        direct.spawn(reports, DIRECT_BASE + i);
    }
    let s6 = S6::spawn(dir, reports, DEFAULT_WORKERS);
    let expected = DEFAULT_WORKERS * if s6.is_ok() { 3 } else { 2 };
    let slots = || -> Vec<Option<Report>> { (0..DEFAULT_WORKERS).map(|_| None).collect() };
    let (mut running, mut own, mut under_s6) = (slots(), slots(), slots());
    for _ in 0..expected {
        let report = reports.next("default restart set-up");
        let slot = match (report.index.checked_sub(S6_BASE), report.index.checked_sub(DIRECT_BASE)) {
            (Some(i), _) => &mut under_s6[i as usize],
            (None, Some(i)) => &mut own[i as usize],
            (None, None) => &mut running[report.index as usize],
        };
        assert!(slot.is_none(), "worker {} reported twice", report.index);
        *slot = Some(report);
    }
    let every = |slots: Vec<Option<Report>>| -> Vec<Report> { slots.into_iter().flatten().collect() };
    let (mut running, mut own, mut under_s6) = (every(running), every(own), every(under_s6));
    assert_eq!(
        (running.len(), own.len()),
        (DEFAULT_WORKERS as usize, DEFAULT_WORKERS as usize)
    );
    let mut since = vec![Instant::now(); running.len()];
    let (mut restarts, mut floor, mut s6_restarts) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..DEFAULT_WORKERS as usize * rounds {
        let i = k % DEFAULT_WORKERS as usize;
        // The measure's condition (a worker that has been up for a while), not a
        // synchronisation: nothing is awaited here.
        if let Some(left) = (since[i] + UP_FOR).checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        let old = running[i].pid;
        let t0 = Instant::now();
        supervisor.kill_worker(&running[i]);
        let report = reports.next("default restart");
        restarts.push(t0.elapsed());
        assert_eq!(report.index, i as u32, "another worker than the one killed came back");
        assert_ne!(report.pid, old);
        since[i] = Instant::now();
        running[i] = report;

        let (t, report) = direct.restart(reports, i, DIRECT_BASE + i as u32);
        assert_eq!(
            report.index,
            DIRECT_BASE + i as u32,
            "another worker than the one killed came back"
        );
        floor.push(t);
        own[i] = report;

        if let Ok(s6) = &s6 {
            // Up as long as the supervisor's: started at the same time, killed after it.
            let (t, report) = s6.restart(reports, &under_s6[i]);
            assert_eq!(
                report.index,
                S6_BASE + i as u32,
                "another worker than the one killed came back"
            );
            s6_restarts.push(t);
            under_s6[i] = report;
        }
    }
    let status = supervisor.stop();
    assert!(status.success(), "the supervisor ended with {status}");
    // s6's supervisors are killed here; its workers exit once their connections close below.
    let s6 = match s6 {
        Ok(s6) => {
            drop(s6);
            Ok(sorted(s6_restarts))
        }
        Err(why) => Err(why),
    };
    drop((running, own, under_s6));
    direct.wait();
    DefaultRestarts {
        procwire: sorted(restarts),
        direct: sorted(floor),
        s6,
    }
}

/// The median row (judged by [`RESTART_TARGET`]) and the p90 row of restart latencies
/// `restarts` (sorted) beside `floor` (sorted).
fn latency_rows(what: &str, restarts: &[Duration], floor: &[Duration]) -> [Row; 2] {
    let row = |q: f64, name: &str| {
        let (value, base) = (quantile(restarts, q), quantile(floor, q));
        Row {
            measure: format!("{what}, {name}"),
            procwire: ms(value),
            floor: ms(base),
            ratio: ratio(value.as_secs_f64(), base.as_secs_f64()),
            target: "-".to_owned(),
            met: "-",
        }
    };
    let mut median = row(0.5, "median");
    median.target = format!("< {}", ms(RESTART_TARGET));
    median.met = yes(quantile(restarts, 0.5) < RESTART_TARGET);
    [median, row(0.9, "p90")]
}

/// Whether the measure `name` runs: without a filter argument all do, with one those whose
/// name contains it.
fn selected(name: &str) -> bool {
    match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        Some(filter) => name.contains(&filter),
        None => true,
    }
}

fn bench() {
    let quick =
        std::env::var_os("PROCWIRE_BENCH_QUICK").is_some_and(|v| v == "1") || !std::env::args().any(|a| a == "--bench");
    let standard = ["restart", "start-up", "idle", "rss"].iter().any(|m| selected(m));
    let idle_window = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    machine_facts();
    let dir = tempfile::Builder::new()
        .prefix("procwire-bench-")
        .tempdir()
        .expect("temporary directory");
    let reports = Reports::bind(dir.path());
    let mut rows = Vec::new();

    // Floor of 1: fork+exec+wait of /bin/true.
    let floor_true = sorted(
        (0..KILLS)
            .map(|_| {
                let t0 = Instant::now();
                let status = Command::new("/bin/true")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("run /bin/true");
                let t = t0.elapsed();
                assert!(status.success());
                t
            })
            .collect(),
    );

    // Not a floor the targets are judged by: the bench starting one worker itself, until it
    // has connected. The part of a restart that is not the supervisor's.
    let direct_one = sorted(
        (0..KILLS)
            .map(|k| {
                let mut direct = Direct::default();
                let t0 = Instant::now();
                direct.spawn(&reports, k as u32);
                let report = reports.next("direct worker");
                let t = t0.elapsed();
                drop(report);
                direct.wait();
                t
            })
            .collect(),
    );

    // 5. Restart latency with the defaults, after a run of 3 s.
    if selected("default-restart") {
        let measured = default_restarts(dir.path(), &reports, if quick { 1 } else { DEFAULT_ROUNDS });
        let restarts = &measured.procwire;
        let what = format!(
            "restart after {} s up, default manifest ({DEFAULT_WORKERS} workers, {} kills)",
            UP_FOR.as_secs(),
            restarts.len()
        );
        rows.extend(latency_rows(&what, restarts, &floor_true));
        let beside = [
            ("the bench restarting its own", Ok(&measured.direct)),
            ("s6-supervise", measured.s6.as_ref()),
        ];
        for (peer, floor) in beside {
            match floor {
                Ok(floor) => {
                    for row in latency_rows(&what, restarts, floor) {
                        rows.push(Row {
                            measure: format!("{}, beside {peer}", row.measure),
                            target: "-".to_owned(),
                            met: "-",
                            ..row
                        });
                    }
                }
                Err(why) => println!("beside {peer}: skipped ({why})"),
            }
        }
    }
    if !standard {
        println!();
        print_table(&rows);
        println!();
        println!(
            "floors: fork+exec+wait of /bin/true (median of {KILLS}); \"beside the bench restarting its own\": \
             the bench SIGKILLing a worker it spawned, waiting for it, spawning the same worker binary \
             again and waiting for it to connect (no supervisor); the difference is the supervisor's share; \
             \"beside s6-supervise\": s6 restarting the same worker binary (its `run`), killed in the same rounds"
        );
        return;
    }

    // 1. Restart latency.
    let manifest = Supervisor::manifest(dir.path(), &reports, RESTART_WORKERS);
    let supervisor = Supervisor::spawn(dir.path(), &manifest);
    let mut running = reports.all(RESTART_WORKERS, "restart set-up");
    let mut restarts = Vec::with_capacity(KILLS);
    for k in 0..KILLS {
        let i = k % RESTART_WORKERS as usize;
        let old = running[i].pid;
        let t0 = Instant::now();
        supervisor.kill_worker(&running[i]);
        let report = reports.next("restart");
        let t = t0.elapsed();
        assert_eq!(report.index, i as u32, "another worker than the one killed came back");
        assert_ne!(report.pid, old);
        restarts.push(t);
        running[i] = report;
    }
    let restart_status = supervisor.stop();
    drop(running);
    let restarts = sorted(restarts);
    let what = format!("restart latency ({RESTART_WORKERS} workers, zero backoff, {KILLS} kills)");
    rows.extend(latency_rows(&what, &restarts, &floor_true));

    // Floor of 2: the bench starting the 200 workers itself.
    let mut direct = Direct::default();
    let t0 = Instant::now();
    for index in 0..START_WORKERS {
        direct.spawn(&reports, index);
    }
    let all = reports.all(START_WORKERS, "direct start-up");
    let floor_start = t0.elapsed();
    drop(all);
    direct.wait();

    // 2. Start-up.
    let manifest = Supervisor::manifest(dir.path(), &reports, START_WORKERS);
    let t0 = Instant::now();
    let supervisor = Supervisor::spawn(dir.path(), &manifest);
    let running = reports.all(START_WORKERS, "start-up");
    let start = t0.elapsed();
    rows.push(Row {
        measure: format!("start-up, {START_WORKERS} workers"),
        procwire: ms(start),
        floor: ms(floor_start),
        ratio: ratio(start.as_secs_f64(), floor_start.as_secs_f64()),
        target: format!("< {}", ms(START_TARGET)),
        met: yes(start < START_TARGET),
    });

    // 3. Idle CPU: the supervisor beside an idle worker over the same window.
    let idle_worker = running[0].pid;
    let (sup0, worker0) = (cpu_ticks(supervisor.pid()), cpu_ticks(idle_worker));
    std::thread::sleep(idle_window); // The measurement interval, not a synchronisation.
    let (sup1, worker1) = (cpu_ticks(supervisor.pid()), cpu_ticks(idle_worker));
    let (idle, idle_floor) = (sup1 - sup0, worker1 - worker0);
    rows.push(Row {
        measure: format!("idle CPU over {} s, {START_WORKERS} workers", idle_window.as_secs()),
        procwire: format!("{idle} ticks"),
        floor: format!("{idle_floor} ticks"),
        ratio: ratio(idle as f64, idle_floor as f64),
        target: "0 ticks".to_owned(),
        met: yes(idle == 0),
    });

    // 4. RSS: the supervisor beside an idle worker (a minimal Rust process).
    let (rss, rss_floor) = (rss_kib(supervisor.pid()), rss_kib(idle_worker));
    rows.push(Row {
        measure: format!("RSS, {START_WORKERS} workers"),
        procwire: format!("{:.1} MiB", rss as f64 / 1024.0),
        floor: format!("{:.1} MiB", rss_floor as f64 / 1024.0),
        ratio: ratio(rss as f64, rss_floor as f64),
        target: format!("< {} MiB", RSS_TARGET_KIB / 1024),
        met: yes(rss < RSS_TARGET_KIB),
    });

    let t0 = Instant::now();
    let start_status = supervisor.stop();
    let shutdown = t0.elapsed();
    drop(running);

    println!();
    print_table(&rows);
    println!();
    println!(
        "floors: restart = fork+exec+wait of /bin/true (median of {KILLS}); start-up = the bench \
         spawning the same {START_WORKERS} workers itself until all connected; idle CPU and RSS = one \
         idle worker (this binary, blocked in read) over the same window"
    );
    println!(
        "breakdown: the bench starting one worker itself until it connects: median {}, p90 {} \
         (of {KILLS}); the supervisor's share of a restart is the difference",
        ms(quantile(&direct_one, 0.5)),
        ms(quantile(&direct_one, 0.9)),
    );
    println!(
        "restart latency: min {}, max {}; /bin/true: min {}, max {}",
        ms(restarts[0]),
        ms(restarts[restarts.len() - 1]),
        ms(floor_true[0]),
        ms(floor_true[floor_true.len() - 1]),
    );
    println!(
        "shutdown (SIGTERM to exit, {START_WORKERS} workers): {}; supervisor exits: {restart_status} \
         ({RESTART_WORKERS} workers), {start_status} ({START_WORKERS} workers)",
        ms(shutdown)
    );
    if quick {
        println!("(quick mode: idle window {} s)", idle_window.as_secs());
    }
}

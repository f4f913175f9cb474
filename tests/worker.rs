//! `procwire::workers::Worker` in a real child process (this test binary, re-executed): run by
//! hand, socket-activated by `systemd-socket-activate`, and under `procwire up`-style
//! notification. Waits are on events (a notify datagram, a line, an exit) with deadlines.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use procwire::rpc::transport::unix;
use procwire::rpc::{HandshakeError, RpcError};
use procwire::workers::WorkerError;

const LIMIT: Duration = Duration::from_secs(20);
/// Set in a child: `serve` runs the worker, `main-result` returns the worker's result from
/// `main`.
const CHILD_ENV: &str = "PROCWIRE_WORKER_TEST_CHILD";

#[procwire::service]
pub trait Calc {
    fn add(&self, a: i64, b: i64) -> i64;
    /// Says it has the call (a `pid=` datagram to `DIR/reached`), then holds it until
    /// `DIR/release` (a FIFO) is written; answers its pid.
    fn hold(&self, dir: String) -> u32;
    /// As `hold` for the first worker to take it; later ones (a retry) say so and answer
    /// at once. Safe to repeat.
    #[procwire(idempotent)]
    fn hold_first(&self, dir: String) -> u32;
    /// Which worker answered; safe to repeat.
    #[procwire(idempotent)]
    fn pid(&self) -> u32;
}

/// Another service: its clients are refused.
#[allow(dead_code)]
mod other {
    #[procwire::service]
    pub trait Calculator {
        fn add(&self, a: i32, b: i32) -> i32;
    }
}

struct MyCalc;

impl Calc for MyCalc {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn hold(&self, dir: String) -> u32 {
        Rendezvous::reached(Path::new(&dir));
        Rendezvous::held_until_released(Path::new(&dir));
        std::process::id()
    }
    fn hold_first(&self, dir: String) -> u32 {
        let dir = Path::new(&dir);
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join("claimed"))
            .is_ok();
        Rendezvous::reached(dir);
        if first {
            Rendezvous::held_until_released(dir);
        }
        std::process::id()
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
}

fn child_main() {
    let result = procwire::workers::Worker::new()
        .on_signal(procwire::workers::signal::SIGHUP, || println!("reloaded"))
        .serve(CalcServer::new(MyCalc));
    match result {
        Ok(()) => println!("drained"),
        Err(e) => {
            eprintln!("worker: {e}");
            std::process::exit(3);
        }
    }
}

/// Where a call and the test meet: the handler reports that it has the call, and waits for
/// the test to let it go.
struct Rendezvous {
    dir: PathBuf,
    reached: NotifyListener,
}

impl Rendezvous {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir(&dir).unwrap();
        nix::unistd::mkfifo(&dir.join("release"), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        let reached = NotifyListener::bind(&dir.join("reached"));
        Rendezvous { dir, reached }
    }

    /// The argument for `hold` and `hold_first`.
    fn arg(&self) -> String {
        self.dir.display().to_string()
    }

    /// The pid of the next worker that has the call; panics after the deadline.
    fn wait_reached(&self) -> u32 {
        let text = self.reached.wait_for("pid=");
        text.trim_start_matches("pid=").parse().expect("a pid")
    }

    /// Lets every held call go.
    fn release(&self) {
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("release"))
            .unwrap();
        fifo.write_all(b"go").unwrap();
    }

    /// In the worker: tells the test this worker has the call.
    fn reached(dir: &Path) {
        let socket = UnixDatagram::unbound().expect("a socket");
        socket
            .send_to(format!("pid={}", std::process::id()).as_bytes(), dir.join("reached"))
            .expect("the test listens");
    }

    /// In the worker: blocks until the test writes the FIFO and closes it.
    fn held_until_released(dir: &Path) {
        let mut fifo = std::fs::File::open(dir.join("release")).expect("the release FIFO");
        let mut buf = Vec::new();
        let _ = fifo.read_to_end(&mut buf);
    }
}

/// A notify socket the test listens on, as a supervisor would.
struct NotifyListener {
    socket: UnixDatagram,
}

impl NotifyListener {
    fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(LIMIT)).unwrap();
        NotifyListener { socket }
    }

    /// The next datagram that contains `needle`; panics after the deadline.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let n = self.socket.recv(&mut buf).expect("a notification before the deadline");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.contains(needle) {
                return text;
            }
        }
        panic!("no notification with {needle:?}");
    }
}

/// The lines of a child's stdout or stderr, as they come.
fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    lines_of(child.stdout.take().unwrap())
}

/// The next line that `matches`; panics after the deadline.
fn expect_line_where(rx: &mpsc::Receiver<String>, what: &str, matches: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if matches(&line) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line {what:?} before the deadline"),
        }
    }
}

fn expect_line(rx: &mpsc::Receiver<String>, expected: &str) {
    expect_line_where(rx, expected, |line| line == expected);
}

fn expect_line_with(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    expect_line_where(rx, needle, |line| line.contains(needle))
}

/// Every line left, up to the end of the stream; panics if it does not end in time.
fn rest_of(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    let mut rest = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => rest.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return rest,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the stream did not end before the deadline"),
        }
    }
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A worker to be run by hand on `dir/NAME.sock`, reporting to `dir/NAME.notify`: its
/// command (to complete and spawn), its socket, and the notify socket it reports to.
fn worker(dir: &Path, name: &str) -> std::io::Result<(Command, PathBuf, NotifyListener)> {
    let socket = dir.join(format!("{name}.sock"));
    let notify_path = dir.join(format!("{name}.notify"));
    let notify = NotifyListener::bind(&notify_path);
    let mut command = Command::new(std::env::current_exe()?);
    command
        .env(CHILD_ENV, "serve")
        .env("PROCWIRE_LISTEN", format!("unix:{}", socket.display()))
        .env("NOTIFY_SOCKET", notify_path);
    Ok((command, socket, notify))
}

fn connect(path: &Path) -> CalcClient {
    CalcClient::connect(unix::connect(path).expect("connect")).expect("handshake")
}

fn a_worker_run_by_hand_serves_reports_and_drains_on_term() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let (mut command, socket, notify) = worker(dir.path(), "calc")?;
    let mut child = command.env("WATCHDOG_USEC", "100000").stdout(Stdio::piped()).spawn()?;
    let out = lines(&mut child);
    let pid = Pid::from_raw(child.id() as i32);
    let mut guard = Guard(child);
    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("STATUS=serving on unix:"), "{ready}");
    // Heartbeats at half of WATCHDOG_USEC.
    notify.wait_for("WATCHDOG=1");
    notify.wait_for("WATCHDOG=1");
    let calc = connect(&socket);
    assert_eq!(calc.add(2, 3)?, 5);
    // Its own signal handler runs on an ordinary thread.
    kill(pid, Signal::SIGHUP)?;
    expect_line(&out, "reloaded");
    // A call in flight when TERM arrives still gets its answer: the worker has the call
    // before the signal, and lets it go only after it said it is stopping.
    let call = Rendezvous::new(dir.path().join("drain"));
    let held = calc.start().hold(call.arg())?;
    assert_eq!(call.wait_reached(), guard.0.id(), "the worker has the call");
    kill(pid, Signal::SIGTERM)?;
    notify.wait_for("STOPPING=1");
    call.release();
    assert_eq!(held.wait()?, guard.0.id(), "the call in flight was answered");
    expect_line(&out, "drained");
    let status = guard.0.wait()?;
    assert_eq!(status.code(), Some(0), "the worker exits 0 after draining");
    Ok(())
}

fn a_worker_without_an_endpoint_says_so() -> Result<(), Failed> {
    let output = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, "serve")
        .env_remove("PROCWIRE_LISTEN")
        .env_remove("LISTEN_FDS")
        .stdout(Stdio::null())
        .output()?;
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no endpoint to serve on"), "{stderr}");
    Ok(())
}

fn the_same_worker_runs_socket_activated_by_systemd_socket_activate_unchanged() -> Result<(), Failed> {
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("activated.sock");
    let notify = NotifyListener::bind(&dir.path().join("notify"));
    let exe = std::env::current_exe()?;
    let child = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&socket)
        .arg(format!("--setenv={CHILD_ENV}=serve"))
        .arg(format!(
            "--setenv=NOTIFY_SOCKET={}",
            dir.path().join("notify").display()
        ))
        .arg(&exe)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    let mut guard = Guard(child);
    // systemd-socket-activate binds the socket and says so; on the first connection it
    // becomes the worker (exec, same pid) and hands it the listening socket as fd 3.
    let stderr = lines_of(guard.0.stderr.take().unwrap());
    expect_line_with(&stderr, "Listening on");
    let transport = unix::connect(&socket)?;
    let calc = CalcClient::connect(transport)?;
    assert_eq!(calc.add(40, 2)?, 42);
    notify.wait_for("READY=1");
    kill(pid, Signal::SIGTERM)?;
    notify.wait_for("STOPPING=1");
    assert_eq!(guard.0.wait()?.code(), Some(0));
    Ok(())
}

fn a_pool_client_spreads_calls_names_a_dead_worker_and_retries_idempotent_calls_elsewhere() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let mut workers = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..3 {
        let (mut command, socket, notify) = worker(dir.path(), &format!("w{i}"))?;
        let child = command.stdout(Stdio::null()).spawn()?;
        workers.push(Guard(child));
        notify.wait_for("READY=1");
        endpoints.push(format!("unix:{}", socket.display()));
    }
    let pids: Vec<u32> = workers.iter().map(|w| w.0.id()).collect();
    let index_of = |pid: u32| pids.iter().position(|&p| p == pid).expect("one of the pool's workers");
    let pool = CalcPool::new(endpoints.clone());
    // Calls in a row find every worker idle, and ties go round robin over the workers
    // connected (in the background, from the first call on): every worker answers.
    let mut answered = BTreeSet::new();
    let deadline = Instant::now() + LIMIT;
    while answered.len() < pids.len() && Instant::now() < deadline {
        answered.insert(pool.pid()?);
    }
    assert_eq!(answered, pids.iter().copied().collect(), "each worker in turn");
    let pool = &pool;

    // A call that is not idempotent reaches a worker, which dies under it: the error names
    // that worker, and the call is not tried again elsewhere.
    let call = Rendezvous::new(dir.path().join("dies"));
    let (arg, died) = (call.arg(), &mut None);
    let killed = std::thread::scope(|s| {
        let held = s.spawn(move || pool.hold(arg));
        let pid = call.wait_reached();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        *died = Some(held.join().unwrap());
        index_of(pid)
    });
    match died.take().unwrap() {
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&endpoints[killed]) && text.contains("died"),
                "the error names the killed worker: {text}"
            );
        }
        Ok(pid) => panic!("worker {pid} answered a call whose worker was killed"),
    }
    workers[killed].0.wait()?;

    // An idempotent call reaches a worker, which dies under it: the pool tries it again on
    // the worker that is left, which answers.
    let call = Rendezvous::new(dir.path().join("retried"));
    let arg = call.arg();
    let (first, answer) = std::thread::scope(|s| {
        let held = s.spawn(move || pool.hold_first(arg));
        let pid = call.wait_reached();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        (index_of(pid), held.join().unwrap())
    });
    assert_ne!(first, killed, "a dead worker is not called");
    let answer = answer?;
    let retried = call.wait_reached();
    assert_eq!(answer, retried, "the retry reached the worker that answered");
    assert_ne!(
        index_of(answer),
        first,
        "the call was answered by another worker than the one killed"
    );
    workers[first].0.wait()?;
    let live = (0..3).find(|i| *i != killed && *i != first).unwrap();
    assert_eq!(answer, pids[live], "retried on the live worker");
    // From now on only the live worker is called: the dead ones refuse connections.
    for _ in 0..5 {
        assert_eq!(pool.pid()?, pids[live]);
    }
    Ok(())
}

fn a_worker_reports_a_refused_connection_on_stderr_by_default() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let (mut command, socket, notify) = worker(dir.path(), "calc")?;
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let err = lines_of(child.stderr.take().unwrap());
    let pid = Pid::from_raw(child.id() as i32);
    let mut guard = Guard(child);
    notify.wait_for("READY=1");
    // A readiness probe: connects and leaves without a word. Not worth a line.
    drop(std::os::unix::net::UnixStream::connect(&socket)?);
    // A client of another service is refused, and the worker says so.
    match other::CalculatorClient::connect(unix::connect(&socket)?) {
        Err(RpcError::Handshake(HandshakeError::Service { .. })) => {}
        other => panic!("expected a service mismatch, got {other:?}"),
    }
    let line = expect_line_with(&err, "refused a connection");
    assert!(
        line.contains("service mismatch") && line.contains("`Calculator`"),
        "the line says why: {line}"
    );
    // After the drain every connection's thread has ended: nothing else was reported.
    kill(pid, Signal::SIGTERM)?;
    assert_eq!(guard.0.wait()?.code(), Some(0));
    let rest = rest_of(&err);
    assert!(
        rest.iter().all(|l| !l.contains("refused")),
        "the probe was not reported: {rest:?}"
    );
    Ok(())
}

fn a_main_returning_a_worker_error_prints_it_with_its_cause() -> Result<(), Failed> {
    let run = |listen: Option<String>| -> Result<std::process::Output, Failed> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env(CHILD_ENV, "main-result")
            .env_remove("PROCWIRE_LISTEN")
            .env_remove("LISTEN_FDS");
        if let Some(listen) = listen {
            command.env("PROCWIRE_LISTEN", listen);
        }
        Ok(command.stdout(Stdio::null()).output()?)
    };
    let output = run(None)?;
    assert_eq!(output.status.code(), Some(1), "a main returning Err exits 1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("Error: no endpoint to serve on: not socket-activated"),
        "{stderr}"
    );
    // A socket in a directory that does not exist: the OS error reaches the reader.
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("missing").join("calc.sock");
    let output = run(Some(format!("unix:{}", socket.display())))?;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("Error: cannot serve on unix:{}: ", socket.display())),
        "{stderr}"
    );
    assert!(stderr.contains("No such file or directory (os error 2)"), "{stderr}");
    Ok(())
}

/// Under a supervisor (its `PROCWIRE_ALLOW_UIDS`), the worker serves the listed uid and root
/// and refuses another uid before the handshake, though the socket file lets everyone in.
fn a_worker_serves_only_the_users_its_supervisor_allows() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        println!(
            "skipping a_worker_serves_only_the_users_its_supervisor_allows: running clients as other uids needs root"
        );
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let (mut command, socket, notify) = worker(dir.path(), "guarded")?;
    let child = command
        .env(procwire::rpc::ALLOW_UIDS_ENV, "0,64001")
        .env(procwire::rpc::ALLOW_GIDS_ENV, "")
        .stdout(Stdio::null())
        .spawn()?;
    let _guard = Guard(child);
    notify.wait_for("READY=1");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777))?;
    let client_as = |uid: u32| -> std::io::Result<std::process::Output> {
        Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, "client")
            .env("PROCWIRE_WORKER_TEST_SOCKET", &socket)
            .uid(uid)
            .gid(uid)
            .output()
    };
    let allowed = client_as(64001)?;
    assert_eq!(String::from_utf8_lossy(&allowed.stdout).trim(), "5", "{allowed:?}");
    let refused = client_as(64002)?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("the server refused the connection"),
        "uid 64002 was not refused: {refused:?}"
    );
    assert_eq!(connect(&socket).add(2, 3)?, 5, "root is always served");
    Ok(())
}

/// In a child: one call through the socket in `PROCWIRE_WORKER_TEST_SOCKET`; prints the sum,
/// or the error on stderr.
fn client_main() {
    let path = std::env::var_os("PROCWIRE_WORKER_TEST_SOCKET").expect("the socket");
    let result = unix::connect(Path::new(&path))
        .map_err(|e| e.to_string())
        .and_then(|t| CalcClient::connect(t).map_err(|e| procwire::rpc::ErrorChain(&e).to_string()))
        .and_then(|calc| calc.add(2, 3).map_err(|e| e.to_string()));
    match result {
        Ok(sum) => println!("{sum}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

fn main() -> Result<(), WorkerError> {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("main-result") => return procwire::workers::Worker::new().serve(CalcServer::new(MyCalc)),
        Ok("client") => {
            client_main();
            return Ok(());
        }
        Ok(_) => {
            child_main();
            return Ok(());
        }
        Err(_) => {}
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "a_pool_client_spreads_calls_names_a_dead_worker_and_retries_idempotent_calls_elsewhere",
            a_pool_client_spreads_calls_names_a_dead_worker_and_retries_idempotent_calls_elsewhere,
        ),
        Trial::test(
            "a_worker_run_by_hand_serves_reports_and_drains_on_term",
            a_worker_run_by_hand_serves_reports_and_drains_on_term,
        ),
        Trial::test(
            "a_worker_serves_only_the_users_its_supervisor_allows",
            a_worker_serves_only_the_users_its_supervisor_allows,
        ),
        Trial::test(
            "a_worker_without_an_endpoint_says_so",
            a_worker_without_an_endpoint_says_so,
        ),
        Trial::test(
            "a_worker_reports_a_refused_connection_on_stderr_by_default",
            a_worker_reports_a_refused_connection_on_stderr_by_default,
        ),
        Trial::test(
            "a_main_returning_a_worker_error_prints_it_with_its_cause",
            a_main_returning_a_worker_error_prints_it_with_its_cause,
        ),
        Trial::test(
            "the_same_worker_runs_socket_activated_by_systemd_socket_activate_unchanged",
            the_same_worker_runs_socket_activated_by_systemd_socket_activate_unchanged,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

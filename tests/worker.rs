//! `procwire::workers::Worker` in a real child process (this test binary, re-executed): run by
//! hand, socket-activated by `systemd-socket-activate`, and under `procwire up`-style
//! notification. Waits are on events (a notify datagram, a line, an exit) with deadlines.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire::rpc::transport::unix;

const LIMIT: Duration = Duration::from_secs(20);
const CHILD_ENV: &str = "PROCWIRE_WORKER_TEST_CHILD";

#[procwire::service]
pub trait Calc {
    fn add(&self, a: i64, b: i64) -> i64;
    /// Simulated slow work.
    fn slow(&self, ms: u64) -> u64;
    /// Which worker answered; safe to repeat.
    #[procwire(idempotent)]
    fn pid(&self) -> u32;
}

struct MyCalc;

impl Calc for MyCalc {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn slow(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
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

/// The child's stdout lines, with a deadline.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn expect_line(rx: &mpsc::Receiver<String>, expected: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == expected => return,
            Ok(_) => {}
            Err(_) => panic!("no line {expected:?} before the deadline"),
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

fn connect(path: &Path) -> CalcClient {
    CalcClient::connect(unix::connect(path).expect("connect")).expect("handshake")
}

fn a_worker_run_by_hand_serves_reports_and_drains_on_term() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("calc.sock");
    let notify = NotifyListener::bind(&dir.path().join("notify"));
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, "1")
        .env("PROCWIRE_LISTEN", format!("unix:{}", socket.display()))
        .env("NOTIFY_SOCKET", dir.path().join("notify"))
        .env("WATCHDOG_USEC", "100000")
        .stdout(Stdio::piped())
        .spawn()?;
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
    // A call in flight when TERM arrives still gets its answer.
    let slow = calc.start().slow(300)?;
    kill(pid, Signal::SIGTERM)?;
    notify.wait_for("STOPPING=1");
    assert_eq!(slow.wait()?, 300);
    expect_line(&out, "drained");
    let status = guard.0.wait()?;
    assert_eq!(status.code(), Some(0), "the worker exits 0 after draining");
    Ok(())
}

fn a_worker_without_an_endpoint_says_so() -> Result<(), Failed> {
    let output = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, "1")
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
        .arg(format!("--setenv={CHILD_ENV}=1"))
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
    let stderr = guard.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + LIMIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("Listening on") => break,
            Ok(_) => {}
            Err(_) => panic!("systemd-socket-activate did not start listening"),
        }
    }
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
        let socket = dir.path().join(format!("w{i}.sock"));
        let notify = NotifyListener::bind(&dir.path().join(format!("notify{i}")));
        let child = Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, "1")
            .env("PROCWIRE_LISTEN", format!("unix:{}", socket.display()))
            .env("NOTIFY_SOCKET", dir.path().join(format!("notify{i}")))
            .stdout(Stdio::null())
            .spawn()?;
        workers.push(Guard(child));
        notify.wait_for("READY=1");
        endpoints.push(format!("unix:{}", socket.display()));
    }
    let pool = CalcPool::new(endpoints);
    // Round robin: one call to each worker in turn.
    let pids: Vec<u32> = (0..3).map(|_| pool.pid()).collect::<Result<_, _>>()?;
    let expected: Vec<u32> = workers.iter().map(|w| w.0.id()).collect();
    assert_eq!(pids, expected, "each worker in turn");
    // The next call goes to worker 0; it dies under it. Not idempotent: the error says so.
    let pool = &pool;
    let died = std::thread::scope(|s| {
        let slow = s.spawn(move || pool.slow(10_000));
        kill(Pid::from_raw(pids[0] as i32), Signal::SIGKILL).unwrap();
        slow.join().unwrap()
    });
    match died {
        Err(procwire::rpc::RpcError::Disconnected { reason, .. }) => {
            assert!(reason.contains("w0.sock died"), "{reason}")
        }
        other => panic!("expected the worker's death, got {other:?}"),
    }
    workers[0].0.wait()?;
    // Worker 1 dies before its next turn; `pid` is idempotent, so it is retried elsewhere.
    kill(Pid::from_raw(pids[1] as i32), Signal::SIGKILL)?;
    workers[1].0.wait()?;
    assert_eq!(pool.pid()?, pids[2], "retried on the live worker");
    // From now on only the live worker is called: the dead ones refuse connections.
    for _ in 0..5 {
        assert_eq!(pool.pid()?, pids[2]);
    }
    Ok(())
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child_main();
        return;
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
            "a_worker_without_an_endpoint_says_so",
            a_worker_without_an_endpoint_says_so,
        ),
        Trial::test(
            "the_same_worker_runs_socket_activated_by_systemd_socket_activate_unchanged",
            the_same_worker_runs_socket_activated_by_systemd_socket_activate_unchanged,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

//! `#[procwire::service]` end to end: the generated client in this process, the generated
//! server in a child process (this test binary, re-executed), over a Unix socket and over a
//! pair of pipes.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use procwire::rpc::transport::{pipe, shm, unix, Transport};

use procwire::rpc::{CallContext, CallError, RpcError, Server};
use serde::{Deserialize, Serialize};

#[path = "service/awaited.rs"]
mod awaited;

use awaited::{
    an_awaited_call_keeps_its_deadline_and_the_client_goes_on, awaited_calls_need_no_runtime_of_their_own,
    awaited_calls_round_trip_on_tokio_from_many_tasks, dropping_an_awaited_call_cancels_it_on_the_server,
    one_client_is_awaited_in_one_runtime_then_outside_it_and_in_another,
};

#[derive(Debug, PartialEq, Serialize, Deserialize, procwire::Schema)]
pub enum DivError {
    DivideByZero,
}

impl std::fmt::Display for DivError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("division by zero")
    }
}

/// How long the service's blocking methods wait at most, so a broken test fails, not hangs.
const LIMIT: Duration = Duration::from_secs(30);

#[procwire::service]
pub trait Calc {
    /// Adds.
    fn add(&self, a: i64, b: i64) -> i64;
    /// Divides; dividing by zero is an application error.
    fn div(&self, a: i64, b: i64) -> Result<i64, DivError>;
    fn checksum(&self, data: &[u8]) -> u32;
    fn reverse(&self, data: Vec<u8>) -> Vec<u8>;
    /// Whether `data` is the buffer this server last read a byte string into (not a copy of
    /// it), and the sum of its bytes.
    fn received_in_place(&self, data: Vec<u8>) -> (bool, u64);
    fn greet(&self, name: &str) -> String;
    fn total(&self, values: &[u32]) -> u64;
    #[procwire(oneway)]
    fn log(&self, line: String);
    /// Waits until at least `n` lines were logged; returns how many.
    fn logged(&self, n: u64) -> u64;
    /// Waits until released (true) or cancelled by the caller (false).
    fn hold(&self, ctx: &CallContext, token: u64) -> bool;
    fn release(&self, token: u64);
    /// Waits until `hold(token)` saw its caller cancel.
    fn was_cancelled(&self, token: u64) -> bool;
    /// Simulated slow work.
    fn slow(&self, ms: u64) -> u64;
    fn caller_pid(&self, ctx: &CallContext) -> Option<i32>;
    /// An async method: the server runs it on its runner (here a tokio runtime).
    async fn in_tokio(&self, x: i64) -> (i64, bool);
}

/// Another build of the same service: `add` changed to `i32`, `greet` and `div` spelled
/// otherwise but alike in structure, a method the server never had, and the others left
/// out (an older client). Only its client is used.
#[allow(dead_code)]
mod v2 {
    #[derive(serde::Serialize, serde::Deserialize, procwire::Schema)]
    pub enum Failure {
        DivideByZero,
    }

    #[procwire::service]
    pub trait Calc {
        fn add(&self, a: i32, b: i32) -> i32;
        fn greet(&self, name: ::std::string::String) -> std::string::String;
        fn div(&self, x: i64, y: i64) -> ::core::result::Result<i64, Failure>;
        fn sub(&self, a: i64, b: i64) -> i64;
    }
}

#[derive(Default)]
struct State {
    logs: u64,
    released: HashSet<u64>,
    cancelled: HashSet<u64>,
}

#[derive(Default)]
struct MyCalc {
    state: Mutex<State>,
    changed: Condvar,
}

impl MyCalc {
    fn wait_until(&self, mut done: impl FnMut(&State) -> bool) -> bool {
        let deadline = Instant::now() + LIMIT;
        let mut st = self.state.lock().unwrap();
        while !done(&st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.changed.wait_timeout(st, left).unwrap().0;
        }
        true
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }
}

impl Calc for MyCalc {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn div(&self, a: i64, b: i64) -> Result<i64, DivError> {
        a.checked_div(b).ok_or(DivError::DivideByZero)
    }
    fn checksum(&self, data: &[u8]) -> u32 {
        data.iter().map(|&b| u32::from(b)).sum()
    }
    fn reverse(&self, mut data: Vec<u8>) -> Vec<u8> {
        data.reverse();
        data
    }
    fn received_in_place(&self, data: Vec<u8>) -> (bool, u64) {
        let in_place = data.as_ptr() as usize == procwire::rpc::__private::last_split_bytes_in_process();
        (in_place, data.iter().map(|&b| u64::from(b)).sum())
    }
    fn greet(&self, name: &str) -> String {
        format!("hello, {name}")
    }
    fn total(&self, values: &[u32]) -> u64 {
        values.iter().map(|&v| u64::from(v)).sum()
    }
    fn log(&self, _line: String) {
        self.update(|st| st.logs += 1);
    }
    fn logged(&self, n: u64) -> u64 {
        self.wait_until(|st| st.logs >= n);
        self.state.lock().unwrap().logs
    }
    fn hold(&self, ctx: &CallContext, token: u64) -> bool {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            if self.state.lock().unwrap().released.contains(&token) {
                return true;
            }
            // Waits on the cancel flag, bounded so a release is noticed too.
            if ctx.wait_cancelled(Duration::from_millis(20)) {
                self.update(|st| {
                    st.cancelled.insert(token);
                });
                return false;
            }
        }
        false
    }
    fn release(&self, token: u64) {
        self.update(|st| {
            st.released.insert(token);
        });
    }
    fn was_cancelled(&self, token: u64) -> bool {
        self.wait_until(|st| st.cancelled.contains(&token))
    }
    fn slow(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    fn caller_pid(&self, ctx: &CallContext) -> Option<i32> {
        ctx.peer().credentials.map(|c| c.pid)
    }
    async fn in_tokio(&self, x: i64) -> (i64, bool) {
        let doubled = std::future::ready(x * 2).await;
        (doubled, tokio::runtime::Handle::try_current().is_ok())
    }
}

const CHILD_ENV: &str = "PROCWIRE_SERVICE_TEST_CHILD";

/// The child: serves `MyCalc` until its stdin closes (socket) or its connection does (pipes).
fn child_main(role: &str) {
    // The async method runs on this runtime; the calls still come in on server threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a tokio runtime");
    let runner = procwire::rpc::Runner::Tokio(runtime.handle().clone());
    let server = Server::new(CalcServer::with_runner(MyCalc::default(), runner));
    let handle = match role.split_once(':') {
        Some(("unix", path)) => {
            let handle = server.spawn(unix::Listener::bind(path).expect("bind")).expect("serve");
            println!("ready");
            handle
        }
        Some(("shm", path)) => {
            let handle = server.spawn(shm::Listener::bind(path).expect("bind")).expect("serve");
            println!("ready");
            handle
        }
        _ => server
            .spawn_connection(pipe::from_env().expect("pipes"))
            .expect("serve"),
    };
    let stopper = handle.stopper();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stopper.stop();
    });
    if let Err(e) = handle.wait() {
        // Expected when a test connects with a mismatched interface.
        eprintln!("calc server: {e}");
        std::process::exit(3);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Unix,
    Pipe,
    /// Shared memory: only the cases about large byte strings run over it.
    Shm,
}

struct Peer {
    child: Child,
    transport: Option<Transport>,
    _dir: tempfile::TempDir,
}

impl Peer {
    fn spawn(kind: Kind) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env("RUST_BACKTRACE", "0");
        match kind {
            Kind::Unix | Kind::Shm => {
                let path = dir.path().join("calc.sock");
                let role = match kind {
                    Kind::Unix => "unix",
                    _ => "shm",
                };
                let mut child = cmd
                    .env(CHILD_ENV, format!("{role}:{}", path.display()))
                    .spawn()
                    .unwrap();
                let mut line = String::new();
                BufReader::new(child.stdout.take().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                assert_eq!(line.trim(), "ready", "the child server did not start");
                let transport = match kind {
                    Kind::Unix => unix::connect(&path).unwrap(),
                    _ => shm::connect(&path).unwrap(),
                };
                Peer {
                    child,
                    transport: Some(transport),
                    _dir: dir,
                }
            }
            Kind::Pipe => {
                let (transport, ends) = pipe::pair().unwrap();
                ends.pass_to(cmd.env(CHILD_ENV, "pipe"));
                let child = cmd.spawn().unwrap();
                drop(ends);
                Peer {
                    child,
                    transport: Some(transport),
                    _dir: dir,
                }
            }
        }
    }

    fn client(&mut self) -> CalcClient {
        CalcClient::connect(self.transport.take().expect("one connection per peer")).expect("connect")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Outcome = Result<(), Failed>;

fn typed_calls_round_trip(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    assert_eq!(calc.add(2, 3)?, 5);
    assert_eq!(calc.checksum(&[1, 2, 3, 250])?, 256);
    assert_eq!(calc.reverse(vec![1, 2, 3])?, vec![3, 2, 1]);
    assert_eq!(calc.greet("procwire")?, "hello, procwire");
    assert_eq!(calc.total(&[1, 2, 3])?, 6);
    let big = vec![9u8; 3 << 20];
    assert_eq!(calc.checksum(&big)?, 9 * (3 << 20));
    Ok(())
}

/// The `Vec<u8>` a generated client returns for a large reply is the buffer the transport
/// read the bytes into, not a copy of it.
fn a_large_vec_reply_is_the_buffer_its_bytes_were_received_into(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let back = calc.reverse(data.clone())?;
    assert!(back.iter().rev().eq(data.iter()), "the bytes came back reversed");
    assert_eq!(back.as_ptr() as usize, procwire::rpc::__private::last_split_bytes());
    Ok(())
}

/// A large `Vec<u8>` argument reaches the handler in the buffer the server's transport read
/// its bytes into, not a copy of it; a small one is decoded from the frame as usual.
fn a_large_vec_argument_is_the_buffer_its_bytes_were_received_into(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    // The small one first: this server has split nothing before it.
    let small = vec![3u8; 4096];
    assert_eq!(calc.received_in_place(small)?, (false, 3 * 4096), "4 KiB: decoded");
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let sum = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(calc.received_in_place(data)?, (true, sum), "1 MiB: in place, intact");
    Ok(())
}

fn application_errors_arrive_typed(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    assert_eq!(calc.div(6, 3)?, 2);
    match calc.div(1, 0) {
        Err(e @ CallError::Application(DivError::DivideByZero)) => {
            assert_eq!(e.to_string(), "division by zero", "it prints as the service's error")
        }
        other => panic!("expected the typed application error, got {other:?}"),
    }
    Ok(())
}

fn oneway_calls_arrive(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    for i in 0..50 {
        calc.log(format!("line {i}"))?;
    }
    assert_eq!(calc.logged(50)?, 50);
    Ok(())
}

fn a_deadline_cuts_a_call_short_and_the_client_goes_on(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    let err = calc.with_timeout(Duration::from_millis(50)).slow(3_000).unwrap_err();
    assert!(
        matches!(err, RpcError::DeadlineExceeded { method: "slow", .. }),
        "{err}"
    );
    let err = calc.with_deadline(Instant::now()).add(1, 1).unwrap_err();
    assert!(matches!(err, RpcError::DeadlineExceeded { method: "add", .. }), "{err}");
    assert_eq!(calc.add(1, 1)?, 2);
    Ok(())
}

fn dropping_a_started_call_cancels_it_on_the_server(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    let pending = calc.start().hold(7)?;
    drop(pending);
    assert!(calc.was_cancelled(7)?, "the server saw the cancel");
    Ok(())
}

fn a_started_call_can_be_polled_then_waited(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    let mut pending = calc.try_start().hold(8)?;
    assert!(pending.try_wait()?.is_none(), "a held call has no reply yet");
    calc.release(8)?;
    assert!(pending.wait()?, "released, not cancelled");
    Ok(())
}

fn many_threads_share_one_client(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    std::thread::scope(|s| {
        for t in 0..8i64 {
            let calc = calc.clone();
            s.spawn(move || {
                for i in 0..200i64 {
                    assert_eq!(calc.add(t, i).expect("add"), t + i);
                }
            });
        }
    });
    Ok(())
}

fn a_client_of_another_build_calls_what_matches_and_is_told_what_does_not(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = v2::CalcClient::connect(peer.transport.take().unwrap())?;
    // Spelled otherwise, alike in structure: these work.
    assert_eq!(calc.greet("Ada".to_owned())?, "hello, Ada");
    assert!(matches!(
        calc.div(1, 0),
        Err(CallError::Application(v2::Failure::DivideByZero))
    ));
    // Changed, and missing: refused here, naming the method and both signatures.
    let err = calc.add(1, 2).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RpcError::Incompatible { method: "add", .. }), "{text}");
    assert!(
        text.contains("fn add(i32, i32) -> i32") && text.contains("fn add(i64, i64) -> i64"),
        "{text}"
    );
    let err = calc.sub(3, 2).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            RpcError::Incompatible {
                method: "sub",
                theirs: None,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("has no such method") && text.contains("fn sub(i64, i64) -> i64"),
        "{text}"
    );
    // The connection is whole: what matches still works after the refusals.
    assert_eq!(calc.greet("Bob".to_owned())?, "hello, Bob");
    Ok(())
}

fn an_async_method_runs_on_the_servers_runtime_for_any_client(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    assert_eq!(calc.in_tokio(21)?, (42, true));
    let calc = CalcAsyncClient::from(calc);
    let awaited = awaited::block_on(calc.in_tokio(4));
    assert_eq!(awaited?, (8, true));
    Ok(())
}

fn the_server_knows_its_caller(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.client();
    assert_eq!(calc.caller_pid()?, Some(std::process::id() as i32));
    Ok(())
}

fn main() {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        child_main(&role);
        return;
    }
    let args = Arguments::from_args();
    type Case = fn(Kind) -> Outcome;
    macro_rules! cases {
        ($($case:ident),* $(,)?) => { [$((stringify!($case), $case as Case)),*] };
    }
    let every = cases![
        typed_calls_round_trip,
        a_large_vec_reply_is_the_buffer_its_bytes_were_received_into,
        a_large_vec_argument_is_the_buffer_its_bytes_were_received_into,
        application_errors_arrive_typed,
        oneway_calls_arrive,
        a_deadline_cuts_a_call_short_and_the_client_goes_on,
        dropping_a_started_call_cancels_it_on_the_server,
        a_started_call_can_be_polled_then_waited,
        many_threads_share_one_client,
        a_client_of_another_build_calls_what_matches_and_is_told_what_does_not,
        awaited_calls_round_trip_on_tokio_from_many_tasks,
        an_async_method_runs_on_the_servers_runtime_for_any_client,
        an_awaited_call_keeps_its_deadline_and_the_client_goes_on,
        dropping_an_awaited_call_cancels_it_on_the_server,
        awaited_calls_need_no_runtime_of_their_own,
        one_client_is_awaited_in_one_runtime_then_outside_it_and_in_another,
    ];
    let mut trials = Vec::new();
    for (kind, prefix) in [(Kind::Unix, "unix"), (Kind::Pipe, "pipe")] {
        for (name, case) in every {
            trials.push(Trial::test(format!("{prefix}::{name}"), move || case(kind)));
        }
    }
    let bytes = cases![
        typed_calls_round_trip,
        a_large_vec_reply_is_the_buffer_its_bytes_were_received_into,
        a_large_vec_argument_is_the_buffer_its_bytes_were_received_into,
    ];
    for (name, case) in bytes {
        trials.push(Trial::test(format!("shm::{name}"), move || case(Kind::Shm)));
    }
    trials.push(Trial::test("unix::the_server_knows_its_caller", || {
        the_server_knows_its_caller(Kind::Unix)
    }));
    libtest_mimic::run(&args, trials).exit();
}

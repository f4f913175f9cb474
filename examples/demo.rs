//! The procwire demo: a worker process serves a small service; this process calls it over a
//! Unix socket and over a pair of pipes, from many threads, with deadlines and typed errors,
//! then kills the worker mid-call to show that nothing hangs.
//!
//! Run it with `cargo run --example demo`.
//!

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use procwire::rpc::transport::{pipe, unix};
use procwire::rpc::{CallContext, CallError, RpcError, Server};
use serde::{Deserialize, Serialize};

/// An application error that reaches the client typed.
#[derive(Debug, Serialize, Deserialize, procwire::Schema)]
enum DivError {
    DivideByZero,
}

/// What `CallError::Application` prints, so that `?` takes it into `anyhow`.
impl std::fmt::Display for DivError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DivError::DivideByZero => f.write_str("division by zero"),
        }
    }
}

/// The interface, defined once; the macro generates `CalcClient` and `CalcServer`.
#[procwire::service]
trait Calc {
    fn add(&self, a: i64, b: i64) -> i64;
    fn div(&self, a: i64, b: i64) -> Result<i64, DivError>;
    /// Simulated slow work.
    fn slow(&self, ms: u64) -> u64;
    /// The worker's pid and, where the transport knows it, the caller's.
    fn pids(&self, ctx: &CallContext) -> (u32, Option<i32>);
}

struct MyCalc;

impl Calc for MyCalc {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn div(&self, a: i64, b: i64) -> Result<i64, DivError> {
        a.checked_div(b).ok_or(DivError::DivideByZero)
    }
    fn slow(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    fn pids(&self, ctx: &CallContext) -> (u32, Option<i32>) {
        (std::process::id(), ctx.peer().credentials.map(|c| c.pid))
    }
}

/// Another build of the same service: `add` changed to `i32`, to show the refusal.
#[allow(dead_code)]
mod v2 {
    #[procwire::service]
    pub trait Calc {
        fn add(&self, a: i32, b: i32) -> i32;
    }
}

/// The worker: serves `Calc` on the socket path in argv, or on inherited pipes.
fn worker(how: &str) -> Result<()> {
    let handle = if how == "pipe" {
        Server::new(CalcServer::new(MyCalc)).spawn_connection(pipe::from_env()?)?
    } else {
        let handle = Server::new(CalcServer::new(MyCalc)).spawn(unix::Listener::bind(how)?)?;
        println!("ready");
        handle
    };
    // Serve until the parent closes our stdin (or, for pipes, the connection).
    let stopper = handle.stopper();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stopper.stop();
    });
    handle.wait()?;
    Ok(())
}

fn main() -> Result<()> {
    if let Ok(how) = std::env::var("PROCWIRE_DEMO_WORKER") {
        return worker(&how);
    }
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("calc.sock");

    println!(
        "1. Starting a worker process that serves `calc` on {}",
        socket.display()
    );
    let mut child = Command::new(std::env::current_exe()?)
        .env("PROCWIRE_DEMO_WORKER", &socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ready = String::new();
    BufReader::new(child.stdout.take().context("worker stdout")?).read_line(&mut ready)?;
    if ready.trim() != "ready" {
        bail!("the worker did not start");
    }

    let calc = CalcClient::connect(unix::connect(&socket)?)?;
    let (worker, caller) = calc.pids()?;
    println!("   connected; the worker is pid {worker}; it sees its caller as pid {caller:?}");

    println!("2. Typed calls");
    println!("   add(2, 3) = {}", calc.add(2, 3)?);
    println!("   div(7, 2) = {}", calc.div(7, 2)?);
    match calc.div(1, 0) {
        Err(CallError::Application(e)) => {
            println!("   div(1, 0) -> {e:?}: \"{e}\"   <- an application error, typed, distinct from transport errors")
        }
        other => bail!("expected an application error, got {other:?}"),
    }

    println!("3. Eight threads share one connection; calls are multiplexed by request id");
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..8i64 {
            let calc = calc.clone();
            s.spawn(move || {
                for i in 0..1000i64 {
                    assert_eq!(calc.add(t, i).expect("add"), t + i);
                }
            });
        }
    });
    println!("   8000 calls answered correctly in {:.0?}", started.elapsed());

    println!("4. A deadline: slow(2000 ms) with a 100 ms timeout");
    match calc.with_timeout(Duration::from_millis(100)).slow(2000) {
        Err(e @ RpcError::DeadlineExceeded { .. }) => println!("   {e}"),
        other => bail!("expected a missed deadline, got {other:?}"),
    }

    println!("5. A client of another build whose `add` changed: that call is refused unsent");
    match v2::CalcClient::connect(unix::connect(&socket)?)?.add(1, 2) {
        Err(e @ RpcError::Incompatible { .. }) => println!("   {e}"),
        other => bail!("expected a refusal, got {other:?}"),
    }

    println!("6. The same service over a pair of anonymous pipes inherited by a second worker");
    let (transport, ends) = pipe::pair()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env("PROCWIRE_DEMO_WORKER", "pipe").stdin(Stdio::piped());
    ends.pass_to(&mut cmd);
    let mut piped = cmd.spawn()?;
    drop(ends);
    let over_pipes = CalcClient::connect(transport)?;
    println!("   add(40, 2) over pipes = {}", over_pipes.add(40, 2)?);
    drop(over_pipes);
    piped.wait()?;

    println!("7. Killing the worker while a call is in flight");
    let call = calc.start().slow(10_000)?;
    child.kill()?;
    match call.wait() {
        Err(e @ RpcError::Disconnected { .. }) => println!("   {e}"),
        other => bail!("expected a disconnect, got {other:?}"),
    }
    child.wait()?;
    println!("Done: every call was answered or failed with a clear error; nothing hung.");
    Ok(())
}

//! The procwire demo: a worker process serves a small service; this process calls it over a
//! Unix socket and over a pair of pipes, from many threads, with deadlines and typed errors,
//! then kills the worker mid-call to show that nothing hangs.
//!
//! Run it with `cargo run --example demo`.
//!
//! The service here is written by hand against `procwire::rpc::Service`; the
//! `#[procwire::service]` macro will generate this code from a plain trait.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use procwire::rpc::transport::{pipe, unix};
use procwire::rpc::{
    decode_args, CallContext, Client, Fault, FaultKind, Frame, Method, RpcError, Server, Service, ServiceInfo,
};
use serde::{Deserialize, Serialize};

const ADD: Method = Method::new(1, "add");
const DIV: Method = Method::new(2, "div");
const SLOW: Method = Method::new(3, "slow");
const PID: Method = Method::new(4, "pid");
const METHODS: [Method; 4] = [ADD, DIV, SLOW, PID];

/// An application error that travels typed inside a successful reply.
#[derive(Debug, Serialize, Deserialize)]
enum DivError {
    DivideByZero,
}

struct Calc;

fn info() -> ServiceInfo {
    ServiceInfo::new("calc", 0xca1c_0001)
}

impl Service for Calc {
    fn info(&self) -> ServiceInfo {
        info()
    }

    fn method_name(&self, id: u32) -> Option<&'static str> {
        METHODS.iter().find(|m| m.id == id).map(|m| m.name)
    }

    fn call(&self, ctx: &CallContext, args: &[u8]) -> Result<Frame, Fault> {
        match ctx.method() {
            1 => {
                let (a, b): (i64, i64) = decode_args(ctx, args)?;
                ctx.reply(&(a + b))
            }
            2 => {
                let (a, b): (i64, i64) = decode_args(ctx, args)?;
                let result: Result<i64, DivError> = if b == 0 { Err(DivError::DivideByZero) } else { Ok(a / b) };
                ctx.reply(&result)
            }
            3 => {
                // Simulated slow work.
                let ms: u64 = decode_args(ctx, args)?;
                std::thread::sleep(Duration::from_millis(ms));
                ctx.reply(&ms)
            }
            4 => ctx.reply(&std::process::id()),
            m => Err(Fault::new(FaultKind::UnknownMethod, format!("calc has no method {m}"))),
        }
    }
}

/// The worker: serves `Calc` on the socket path in argv, or on inherited pipes.
fn worker(how: &str) -> Result<()> {
    let handle = if how == "pipe" {
        Server::new(Calc).spawn_connection(pipe::from_env()?)?
    } else {
        let handle = Server::new(Calc).spawn(unix::Listener::bind(how)?)?;
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

    let client = Client::connect(unix::connect(&socket)?, info())?;
    let pid: u32 = client.call(PID, &(), None)?;
    println!(
        "   connected; the worker is pid {pid}, this process is pid {}",
        std::process::id()
    );

    println!("2. Typed calls");
    let sum: i64 = client.call(ADD, &(2i64, 3i64), None)?;
    println!("   add(2, 3) = {sum}");
    let q: Result<i64, DivError> = client.call(DIV, &(7i64, 2i64), None)?;
    println!("   div(7, 2) = {q:?}");
    let q: Result<i64, DivError> = client.call(DIV, &(1i64, 0i64), None)?;
    println!("   div(1, 0) = {q:?}   <- an application error, typed, distinct from transport errors");

    println!("3. Eight threads share one connection; calls are multiplexed by request id");
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..8i64 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..1000i64 {
                    let sum: i64 = client.call(ADD, &(t, i), None).expect("add");
                    assert_eq!(sum, t + i);
                }
            });
        }
    });
    println!("   8000 calls answered correctly in {:.0?}", started.elapsed());

    println!("4. A deadline: slow(2000 ms) with a 100 ms deadline");
    match client.call::<_, u64>(SLOW, &2000u64, Some(Instant::now() + Duration::from_millis(100))) {
        Err(e @ RpcError::DeadlineExceeded { .. }) => println!("   {e}"),
        other => bail!("expected a missed deadline, got {other:?}"),
    }

    println!("5. A client built against another version of the interface is refused");
    match Client::connect(unix::connect(&socket)?, ServiceInfo::new("calc", 0xca1c_0002)) {
        Err(e) => println!("   {e}"),
        Ok(_) => bail!("a mismatched client was accepted"),
    }

    println!("6. The same service over a pair of anonymous pipes inherited by a second worker");
    let (transport, ends) = pipe::pair()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env("PROCWIRE_DEMO_WORKER", "pipe").stdin(Stdio::piped());
    ends.pass_to(&mut cmd);
    let mut piped = cmd.spawn()?;
    drop(ends);
    let over_pipes = Client::connect(transport, info())?;
    let sum: i64 = over_pipes.call(ADD, &(40i64, 2i64), None)?;
    println!("   add(40, 2) over pipes = {sum}");
    drop(over_pipes);
    piped.wait()?;

    println!("7. Killing the worker while a call is in flight");
    let call = client.start::<_, u64>(SLOW, &10_000u64, None)?;
    child.kill()?;
    match call.wait() {
        Err(e @ RpcError::Disconnected { .. }) => println!("   {e}"),
        other => bail!("expected a disconnect, got {other:?}"),
    }
    child.wait()?;
    println!("Done: every call was answered or failed with a clear error; nothing hung.");
    Ok(())
}

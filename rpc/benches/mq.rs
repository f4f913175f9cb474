//! The message-queue transport against a raw POSIX message queue ping-pong measured in the
//! same run, with both processes on one CPU and on two.
//!
//! - small call: `BenchClient::add` over `mq:` against one 8-byte message each way on a
//!   pair of queues (`mq_send`, then a blocking `mq_receive`: one system call per step);
//! - 64 KiB echo: `BenchClient::echo` over `mq:` (the frame split into messages of the
//!   queue's size) against the same bytes sent raw as messages of that size each way.
//!
//! Both use queues of the transport's default shape (4 messages of `msgsize_default`, 8 KiB
//! unless changed). Placement: this process pins itself to CPU 0; each child pins itself to
//! CPU 0 ("one CPU") or CPU 1 ("two CPUs") and reports where it ran. Figures are medians of
//! batch means. Run with `cargo bench -p procwire-rpc --bench mq` (`PROCWIRE_BENCH_QUICK=1`:
//! a tenth).

#[path = "support/mod.rs"]
mod support;

use std::io::Write;

use anyhow::{ensure, Result};
use nix::sched::sched_getcpu;
use procwire_rpc::transport::mq::{self, Queue};
use procwire_rpc::Wait;
use support::{measure_calls, median, pin, serve, BenchClient, Proc, CPU_ENV};

const CHILD_ENV: &str = "PROCWIRE_MQ_BENCH_CHILD";
const ADDR_ENV: &str = "PROCWIRE_MQ_BENCH_ADDR";
const ECHO: usize = 64 << 10;

fn child(role: &str) -> Result<()> {
    let cpu: usize = std::env::var(CPU_ENV)?.parse()?;
    pin(cpu)?;
    let mut out = std::io::stdout().lock();
    if role == "rpc" {
        drop(out);
        return serve(mq::Listener::bind(std::env::var(ADDR_ENV)?)?);
    }
    // The raw echo: every message back as it came, until an empty one.
    let (requests, replies) = (Queue::from_env("requests")?, Queue::from_env("replies")?);
    writeln!(out, "ready {}", sched_getcpu()?)?;
    out.flush()?;
    let mut buf = vec![0; requests.attrs().message_size];
    loop {
        let n = requests.recv_into(&mut buf, Wait::Block)?;
        if n == 0 {
            return Ok(());
        }
        replies.send(&buf[..n], Wait::Block)?;
    }
}

struct Figures {
    /// Microseconds per small round trip.
    small: f64,
    /// Microseconds per 64 KiB echo.
    echo: f64,
    cpus: (usize, usize),
}

fn raw(cpu: usize, scale: usize, payload: &[u8]) -> Result<Figures> {
    let attrs = mq::Options::default().attrs;
    let base = format!("/procwire-bench-{}", std::process::id());
    let (requests, replies) = (
        Queue::create(&format!("{base}-requests"), attrs)?,
        Queue::create(&format!("{base}-replies"), attrs)?,
    );
    for queue in [&requests, &replies] {
        Queue::unlink(queue.name())?;
    }
    let proc = Proc::spawn(CHILD_ENV, "raw", cpu, |cmd| {
        requests.pass_to(cmd, "requests")?;
        replies.pass_to(cmd, "replies")?;
        Ok(())
    })?;
    let mut buf = vec![0; attrs.message_size];
    let small = median(2000, 50_000 / scale, 10, |i| {
        requests.send(&u64::from(i).to_le_bytes(), Wait::Block)?;
        ensure!(replies.recv_into(&mut buf, Wait::Block)? == 8);
        Ok(())
    })?;
    // The child answers each message as it comes: at most a queue's worth is in flight.
    let pieces: Vec<&[u8]> = payload.chunks(attrs.message_size).collect();
    let window = attrs.max_messages.min(pieces.len());
    let mut back = Vec::with_capacity(payload.len());
    let echo = median(50, 2000 / scale, 10, |_| {
        back.clear();
        for piece in &pieces[..window] {
            requests.send(piece, Wait::Block)?;
        }
        for next in window..pieces.len() + window {
            let n = replies.recv_into(&mut buf, Wait::Block)?;
            back.extend_from_slice(&buf[..n]);
            if let Some(piece) = pieces.get(next) {
                requests.send(piece, Wait::Block)?;
            }
        }
        Ok(())
    })?;
    ensure!(back == payload, "the raw echo came back different");
    requests.send(b"", Wait::Block)?;
    Ok(Figures {
        small: small * 1e6,
        echo: echo * 1e6,
        cpus: (sched_getcpu()?, proc.cpu),
    })
}

fn procwire(cpu: usize, scale: usize, payload: &[u8]) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.sock");
    let proc = Proc::spawn(CHILD_ENV, "rpc", cpu, |cmd| {
        cmd.env(ADDR_ENV, &path);
        Ok(())
    })?;
    let client = BenchClient::connect(mq::connect(&path)?)?;
    let (small, echo) = measure_calls(&client, scale, payload, 2000)?;
    Ok(Figures {
        small: small * 1e6,
        echo: echo * 1e6,
        cpus: (sched_getcpu()?, proc.cpu),
    })
}

fn main() -> Result<()> {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        return child(&role);
    }
    pin(0)?;
    let scale = if std::env::var("PROCWIRE_BENCH_QUICK").is_ok_and(|v| v == "1") {
        10
    } else {
        1
    };
    let payload: Vec<u8> = (0..ECHO).map(|i| (i * 31 + i / 4099) as u8).collect();
    let attrs = mq::Options::default().attrs;
    println!(
        "mq transport vs raw POSIX message queues, same run; queues of {} messages of {} bytes; client on CPU 0, server child pinned",
        attrs.max_messages, attrs.message_size
    );
    println!(
        "small: us per round trip (add(i64, i64) -> i64 / one 8-byte message each way); echo: us per 64 KiB round trip"
    );
    for (label, cpu) in [("one CPU (0, 0)", 0), ("two CPUs (0, 1)", 1)] {
        println!();
        println!("== {label}");
        let floor = raw(cpu, scale, &payload)?;
        let ours = procwire(cpu, scale, &payload)?;
        let ran = |f: &Figures| format!("ran on {} and {}", f.cpus.0, f.cpus.1);
        for (name, f) in [("raw mq  ", &floor), ("procwire", &ours)] {
            println!(
                "{name}   small {:>8.2} us   echo 64 KiB {:>8.2} us   {}",
                f.small,
                f.echo,
                ran(f)
            );
        }
        println!(
            "ratios: small / raw {:.2}x; echo / raw {:.2}x",
            ours.small / floor.small,
            ours.echo / floor.echo
        );
    }
    Ok(())
}

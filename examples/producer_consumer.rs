//! Producer and consumer in two processes, over a bounded buffer: the producer sends items
//! faster than the consumer handles them; once the buffer is full, a non-blocking send says
//! so and a blocking send waits for room.
//!
//! The buffer is the connection itself: the pipe between the processes (1 MiB) plus the
//! client's outgoing queue (`Buffering::Bounded(4)`). Items are 64 KiB, so about twenty fit.
//!
//! Run it with `cargo run --example producer_consumer`.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use procwire::rpc::transport::pipe;
use procwire::rpc::{Buffering, ClientConfig, RpcError, Server, ServerConfig};

#[procwire::service]
trait Sink {
    /// Takes one item; the producer does not wait for an answer.
    #[procwire(oneway)]
    fn put(&self, item: Vec<u8>);
    /// How many items were taken so far.
    fn taken(&self) -> u64;
}

struct Consumer {
    taken: AtomicU64,
}

impl Sink for Consumer {
    fn put(&self, item: Vec<u8>) {
        // Simulated slow work: the consumer is the bottleneck.
        std::thread::sleep(Duration::from_millis(2));
        let _ = item.len();
        self.taken.fetch_add(1, Ordering::Relaxed);
    }
    fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}

fn main() -> Result<()> {
    if std::env::var_os("PROCWIRE_EXAMPLE_CONSUMER").is_some() {
        // One item at a time, in order, like a single consumer thread.
        let server = Server::new(SinkServer::new(Consumer {
            taken: AtomicU64::new(0),
        }))
        .with_config(ServerConfig::default().max_calls_per_connection(1));
        server.spawn_connection(pipe::from_env()?)?.wait()?;
        return Ok(());
    }
    let (transport, ends) = pipe::pair()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env("PROCWIRE_EXAMPLE_CONSUMER", "1");
    ends.pass_to(&mut cmd);
    let mut consumer = cmd.spawn()?;
    drop(ends);
    let sink = SinkClient::connect_with(transport, ClientConfig::default().buffering(Buffering::Bounded(4)))?;
    let item = || vec![7u8; 64 * 1024];

    println!("== the producer sends without waiting until the buffer is full");
    let mut sent = 0u64;
    loop {
        match sink.try_start().put(item()) {
            Ok(()) => sent += 1,
            Err(RpcError::WouldBlock { .. }) => break,
            Err(e) => return Err(e.into()),
        }
        if sent > 10_000 {
            bail!("the buffer never filled");
        }
    }
    println!("   {sent} items accepted, then the buffer was full: a non-blocking send says WouldBlock");

    println!("== blocking sends wait for room: each waits for the consumer to take an item");
    let started = Instant::now();
    for _ in 0..50 {
        sink.put(item())?;
        sent += 1;
    }
    let waited = started.elapsed();
    println!("   50 more items took {waited:.0?} to hand over: the consumer's pace, not the producer's");

    // This call queues behind the items: the consumer takes calls one at a time, in order.
    let taken = sink.taken()?;
    println!("== by the time it answers, the consumer has taken all {taken} of the {sent} items sent");
    anyhow::ensure!(taken == sent, "no item was lost");
    drop(sink);
    consumer.wait()?;
    println!("== done: the consumer finished the buffered items and exited when the producer hung up");
    Ok(())
}

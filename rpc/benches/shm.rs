//! The shared-memory transport against raw floors measured in the same run, with both
//! processes on one CPU and on two.
//!
//! - small call: `BenchClient::add` over `shm:` against a raw ping-pong of a counter in a
//!   shared mapping, woken by futex (`FUTEX_WAIT`/`FUTEX_WAKE`, shared) and, on two CPUs,
//!   by spinning;
//! - 1 MiB echo: `BenchClient::echo` over `shm:` against a raw copy-in/copy-out echo through
//!   a shared mapping (`memcpy` in, `memcpy` out, each way), woken the same way; on two CPUs
//!   also against the same echo in 64 KiB pieces, each published as soon as it is copied in
//!   (the reader copies one out while the writer copies the next in), as the transport
//!   publishes a large frame for a reader on another CPU.
//!
//!   `BenchClient::echo_owned` is the same echo with the bytes taken by value, so that the
//!   handler returns the buffer the server copied them into instead of copying them again
//!   (4 copies in all, as the raw echo's, where `echo` makes 5).
//!
//! - the best-known peer, ipc-channel, in the same run and placement: the small call as 16
//!   bytes in and 8 out over a byte channel, the echo over a byte channel and as
//!   `IpcSharedMemory` (a fresh region per message, each way).
//!
//! Placement: this process pins itself to CPU 0; each child pins itself to CPU 0 ("one
//! CPU") or CPU 1 ("two CPUs") and reports where it ran. Figures are medians of batch means.
//! Run with `cargo bench -p procwire-rpc --bench shm` (`PROCWIRE_BENCH_QUICK=1`: a tenth;
//! `PROCWIRE_SHM_BENCH_ONLY=procwire` skips the floors, `procwire-one` also the two-CPU run,
//! `procwire-two` the one-CPU run; `PROCWIRE_SHM_BENCH_SMALL_ONLY=1` skips the echo: to
//! profile the transport or count its system calls under `strace -f -c` or `perf stat`;
//! `PROCWIRE_SHM_BENCH_STRATEGY=spin|block|adaptive` sets how both ends wait).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, ensure, Result};
use nix::sched::sched_getcpu;
use procwire_rpc::shm::Region;
use procwire_rpc::transport::shm;
use procwire_rpc::Server;
use support::{median, pin, Proc, CPU_ENV};

// Only its pinning, child and median: this bench has its own `Bench` service, served with
// the shm options it measures.
#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

const CHILD_ENV: &str = "PROCWIRE_SHM_BENCH_CHILD";
const ADDR_ENV: &str = "PROCWIRE_SHM_BENCH_ADDR";
const IPC_ENV: &str = "PROCWIRE_SHM_BENCH_IPC";
/// `spin`, `block` or `adaptive` (the default): how both ends of the transport wait.
const STRATEGY_ENV: &str = "PROCWIRE_SHM_BENCH_STRATEGY";

fn options() -> Result<shm::Options> {
    let strategy = match std::env::var(STRATEGY_ENV).as_deref() {
        Err(_) | Ok("adaptive") => shm::Strategy::Adaptive,
        Ok("spin") => shm::Strategy::Spin,
        Ok("block") => shm::Strategy::Block,
        Ok(other) => bail!("{STRATEGY_ENV}={other}: expected spin, block or adaptive"),
    };
    Ok(shm::Options::default().strategy(strategy))
}
const REGION: &str = "bench";
const MIB: usize = 1 << 20;
/// Region layout for the raw floors: two counters on their own cache lines, two buffers.
const PING: usize = 0;
const PONG: usize = 64;
const REQUEST: usize = 4096;
const REPLY: usize = REQUEST + MIB;

#[procwire_macros::service]
trait Bench {
    /// A small call: two integers in, one out.
    fn add(&self, a: i64, b: i64) -> i64;
    /// A large call: bytes in, the same bytes out.
    fn echo(&self, data: &[u8]) -> Vec<u8>;
    /// The same, the bytes taken by value: the server hands the handler the buffer it
    /// copied them out of the ring into, and the handler returns it as it is.
    fn echo_owned(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Echo;

impl Bench for Echo {
    fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    fn echo(&self, data: &[u8]) -> Vec<u8> {
        // The one copy a handler returning `Vec<u8>` from borrowed bytes must make.
        data.to_vec()
    }

    fn echo_owned(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

mod raw {
    //! The raw floors' only unsafe code: the shared mapping, memcpy and futex calls.

    use super::*;
    use memmap2::MmapRaw;
    use nix::libc;

    /// A region mapped a second time, for plain memcpy (the floor a transport can reach).
    pub(super) struct Map {
        map: MmapRaw,
        _region: Region,
    }

    impl Map {
        pub(super) fn new(region: Region) -> Result<Map> {
            let map = memmap2::MmapOptions::new()
                .len(region.len())
                .map_raw(region.as_fd().as_raw_fd())?;
            Ok(Map { map, _region: region })
        }

        pub(super) fn word(&self, offset: usize) -> &AtomicU32 {
            assert!(offset % 4 == 0 && offset + 4 <= self.map.len());
            // SAFETY: aligned, inside the mapping, which lives as long as `self`; only ever
            // accessed atomically by both processes.
            unsafe { &*self.map.as_mut_ptr().add(offset).cast::<AtomicU32>() }
        }

        pub(super) fn copy_in(&self, offset: usize, data: &[u8]) {
            assert!(offset + data.len() <= self.map.len());
            // SAFETY: the destination lies inside the mapping; by the ping-pong protocol the
            // peer does not touch these bytes until we publish them.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(offset), data.len()) }
        }

        pub(super) fn copy_out(&self, offset: usize, out: &mut [u8]) {
            assert!(offset + out.len() <= self.map.len());
            // SAFETY: the source lies inside the mapping; the peer published these bytes and
            // does not write them again until we answer.
            unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(offset), out.as_mut_ptr(), out.len()) }
        }
    }

    pub(super) fn futex_wait(word: &AtomicU32, expected: u32) {
        // SAFETY: FUTEX_WAIT (shared, not private: the word is in a shared mapping) reads the
        // word at a valid address; no other memory is touched.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                std::ptr::null::<libc::timespec>(),
            );
        }
    }

    pub(super) fn futex_wake(word: &AtomicU32) {
        // SAFETY: FUTEX_WAKE only uses the address as a key.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
        }
    }
}

/// How a raw end waits for its peer's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Spin,
    Futex,
}

impl Waiting {
    fn name(self) -> &'static str {
        match self {
            Waiting::Spin => "spin",
            Waiting::Futex => "futex",
        }
    }

    fn publish(self, word: &AtomicU32, value: u32) {
        word.store(value, Ordering::Release);
        if self == Waiting::Futex {
            raw::futex_wake(word);
        }
    }

    fn wait_for(self, word: &AtomicU32, value: u32) {
        loop {
            let now = word.load(Ordering::Acquire);
            if now == value {
                return;
            }
            match self {
                Waiting::Spin => std::hint::spin_loop(),
                Waiting::Futex => raw::futex_wait(word, now),
            }
        }
    }
}

fn child(role: &str) -> Result<()> {
    let cpu: usize = std::env::var(CPU_ENV)?.parse()?;
    pin(cpu)?;
    let mut out = std::io::stdout().lock();
    if role == "ipc" {
        return peer::child(&std::env::var(IPC_ENV)?, &mut out);
    }
    if role == "rpc" {
        let listener = shm::Listener::bind_with(std::env::var(ADDR_ENV)?, options()?)?;
        let handle = Server::new(BenchServer::new(Echo)).spawn(listener)?;
        writeln!(out, "ready {}", sched_getcpu()?)?;
        out.flush()?;
        drop(out);
        let stopper = handle.stopper();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stopper.stop();
        });
        handle.wait()?;
        return Ok(());
    }
    let waiting = if role.ends_with("spin") {
        Waiting::Spin
    } else {
        Waiting::Futex
    };
    let map = raw::Map::new(Region::from_env(REGION)?)?;
    writeln!(out, "ready {}", sched_getcpu()?)?;
    out.flush()?;
    let (ping, pong) = (map.word(PING), map.word(PONG));
    let mut buf = vec![0u8; MIB];
    let large = role.starts_with("large");
    let pieces = role.contains("pieces");
    let mut seen = 0;
    loop {
        waiting.wait_for_change(ping, seen);
        seen = ping.load(Ordering::Acquire);
        if seen == u32::MAX {
            return Ok(());
        }
        if pieces {
            // Counters count pieces: call `c`'s piece `k` is published as `c * PIECES + k + 1`.
            let base = (seen - 1) / PIECES * PIECES;
            for k in 0..PIECES {
                waiting.wait_for_at_least(ping, base + k + 1);
                let at = k as usize * PIECE;
                map.copy_out(REQUEST + at, &mut buf[at..at + PIECE]);
            }
            for k in 0..PIECES {
                let at = k as usize * PIECE;
                map.copy_in(REPLY + at, &buf[at..at + PIECE]);
                waiting.publish(pong, base + k + 1);
            }
            seen = base + PIECES;
            continue;
        }
        if large {
            map.copy_out(REQUEST, &mut buf);
            map.copy_in(REPLY, &buf);
        }
        waiting.publish(pong, seen);
    }
}

/// The echo in pieces: how many, of how many bytes.
const PIECES: u32 = 16;
const PIECE: usize = MIB / PIECES as usize;

impl Waiting {
    fn wait_for_at_least(self, word: &AtomicU32, value: u32) {
        loop {
            let now = word.load(Ordering::Acquire);
            if now >= value {
                return;
            }
            match self {
                Waiting::Spin => std::hint::spin_loop(),
                Waiting::Futex => raw::futex_wait(word, now),
            }
        }
    }

    fn wait_for_change(self, word: &AtomicU32, old: u32) {
        loop {
            let now = word.load(Ordering::Acquire);
            if now != old {
                return;
            }
            match self {
                Waiting::Spin => std::hint::spin_loop(),
                Waiting::Futex => raw::futex_wait(word, now),
            }
        }
    }
}

struct Figures {
    small: f64,
    large: f64,
    /// procwire's `echo_owned`, GB/s (0 for the others).
    owned: f64,
    cpus: (usize, usize),
}

/// What a raw end does per round trip.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trip {
    /// The 4-byte counter only.
    Small,
    /// A megabyte each way, copied in whole, then out.
    Whole,
    /// A megabyte each way, in pieces published one by one.
    Pieces,
}

fn raw(waiting: Waiting, cpu: usize, scale: usize, payload: &[u8]) -> Result<Figures> {
    let small = raw_echo(waiting, Trip::Small, cpu, scale, payload)?;
    let large = raw_echo(waiting, Trip::Whole, cpu, scale, payload)?;
    Ok(Figures {
        small: small.0 * 1e6,
        large: 2.0 * MIB as f64 / large.0 / 1e9,
        owned: 0.0,
        cpus: (sched_getcpu()?, small.1),
    })
}

/// Seconds per round trip, and the CPU the child ran on.
fn raw_echo(waiting: Waiting, echo: Trip, cpu: usize, scale: usize, payload: &[u8]) -> Result<(f64, usize)> {
    let large = echo != Trip::Small;
    let run = || -> Result<(f64, usize)> {
        let region = Region::create(REPLY + MIB)?;
        let kind = match echo {
            Trip::Small => "small",
            Trip::Whole => "large",
            Trip::Pieces => "large-pieces",
        };
        let role = format!("{kind}-{}", waiting.name());
        let proc = Proc::spawn(CHILD_ENV, &role, cpu, |cmd| Ok(region.pass_to(cmd, REGION)?))?;
        let map = raw::Map::new(region)?;
        let (ping, pong) = (map.word(PING), map.word(PONG));
        let mut back = vec![0u8; MIB];
        let (warmup, calls) = if large {
            (30, 300 / scale)
        } else {
            (2000, 50_000 / scale)
        };
        let secs = median(warmup, calls, 10, |i| {
            if echo == Trip::Pieces {
                for k in 0..PIECES {
                    let at = k as usize * PIECE;
                    map.copy_in(REQUEST + at, &payload[at..at + PIECE]);
                    waiting.publish(ping, i * PIECES + k + 1);
                }
                for k in 0..PIECES {
                    waiting.wait_for_at_least(pong, i * PIECES + k + 1);
                    let at = k as usize * PIECE;
                    map.copy_out(REPLY + at, &mut back[at..at + PIECE]);
                }
                return Ok(());
            }
            let seq = i + 1;
            if large {
                map.copy_in(REQUEST, payload);
            }
            waiting.publish(ping, seq);
            waiting.wait_for(pong, seq);
            if large {
                map.copy_out(REPLY, &mut back);
            }
            Ok(())
        })?;
        ensure!(!large || back == payload, "the raw echo came back different");
        waiting.publish(ping, u32::MAX);
        Ok((secs, proc.cpu))
    };
    run()
}

fn procwire(cpu: usize, scale: usize, payload: &[u8]) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.sock");
    let proc = Proc::spawn(CHILD_ENV, "rpc", cpu, |cmd| {
        cmd.env(ADDR_ENV, &path);
        Ok(())
    })?;
    let client = BenchClient::connect(shm::connect_with(&path, options()?)?)?;
    let small = median(2000, 50_000 / scale, 10, |i| {
        ensure!(client.add(i as i64, 1)? == i as i64 + 1);
        Ok(())
    })?;
    if std::env::var_os("PROCWIRE_SHM_BENCH_SMALL_ONLY").is_some() {
        return Ok(Figures {
            small: small * 1e6,
            large: 0.0,
            owned: 0.0,
            cpus: (sched_getcpu()?, proc.cpu),
        });
    }
    ensure!(client.echo(payload)? == payload, "the echo came back different");
    let large = median(30, 300 / scale, 10, |_| {
        ensure!(client.echo(payload)?.len() == MIB);
        Ok(())
    })?;
    // Each call sends the buffer the last one returned, as a caller that owns it would.
    let mut buf = client.echo_owned(payload.to_vec())?;
    ensure!(buf == payload, "the owned echo came back different");
    let owned = median(30, 300 / scale, 10, |_| {
        buf = client.echo_owned(std::mem::take(&mut buf))?;
        ensure!(buf.len() == MIB);
        Ok(())
    })?;
    ensure!(buf == payload, "the owned echo came back different");
    Ok(Figures {
        small: small * 1e6,
        large: 2.0 * MIB as f64 / large / 1e9,
        owned: 2.0 * MIB as f64 / owned / 1e9,
        cpus: (sched_getcpu()?, proc.cpu),
    })
}

mod peer {
    //! ipc-channel, measured as the transport is: same placement, same medians.

    use super::*;
    use ipc_channel::ipc::IpcSharedMemory;
    use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender};

    /// What the child hands the bench: where to send requests, where replies come.
    type Channels = (
        IpcBytesSender,
        IpcBytesReceiver,
        IpcSender<IpcSharedMemory>,
        IpcReceiver<IpcSharedMemory>,
    );

    /// The child: answers byte requests (8 bytes for a small one, the same bytes for a
    /// large one) and shared-memory echoes, until the bench hangs up.
    pub(super) fn child(name: &str, out: &mut impl Write) -> Result<()> {
        let (req_tx, req_rx) = ipc::bytes_channel()?;
        let (rep_tx, rep_rx) = ipc::bytes_channel()?;
        let (shm_req_tx, shm_req_rx) = ipc::channel::<IpcSharedMemory>()?;
        let (shm_rep_tx, shm_rep_rx) = ipc::channel::<IpcSharedMemory>()?;
        IpcSender::<Channels>::connect(name.to_owned())?.send((req_tx, rep_rx, shm_req_tx, shm_rep_rx))?;
        writeln!(out, "ready {}", sched_getcpu()?)?;
        out.flush()?;
        let shm = std::thread::spawn(move || {
            while let Ok(region) = shm_req_rx.recv() {
                if shm_rep_tx.send(IpcSharedMemory::from_bytes(&region)).is_err() {
                    break;
                }
            }
        });
        while let Ok(request) = req_rx.recv() {
            let reply = if request.len() == 16 {
                let a = i64::from_le_bytes(request[..8].try_into()?);
                let b = i64::from_le_bytes(request[8..].try_into()?);
                a.wrapping_add(b).to_le_bytes().to_vec()
            } else {
                request
            };
            if rep_tx.send(&reply).is_err() {
                break;
            }
        }
        let _ = shm.join();
        Ok(())
    }

    /// Small call, byte-channel echo and shared-memory echo (GB/s), in that order.
    pub(super) fn measure(cpu: usize, scale: usize, payload: &[u8]) -> Result<(Figures, f64)> {
        let (server, name) = IpcOneShotServer::<Channels>::new()?;
        let proc = Proc::spawn(CHILD_ENV, "ipc", cpu, |cmd| {
            cmd.env(IPC_ENV, &name);
            Ok(())
        })?;
        let (_, (req, rep, shm_req, shm_rep)) = server.accept()?;
        let small = median(2000, 50_000 / scale, 10, |i| {
            let mut request = [0u8; 16];
            request[..8].copy_from_slice(&i64::from(i).to_le_bytes());
            request[8..].copy_from_slice(&1i64.to_le_bytes());
            req.send(&request)?;
            let reply = rep.recv()?;
            ensure!(reply == (i64::from(i) + 1).to_le_bytes(), "ipc-channel added wrongly");
            Ok(())
        })?;
        req.send(payload)?;
        ensure!(rep.recv()? == payload, "the ipc-channel echo came back different");
        let large = median(30, 300 / scale, 10, |_| {
            req.send(payload)?;
            ensure!(rep.recv()?.len() == MIB);
            Ok(())
        })?;
        let shared = median(30, 300 / scale, 10, |_| {
            shm_req.send(IpcSharedMemory::from_bytes(payload))?;
            let back = shm_rep.recv()?;
            // Read it out, as a caller that keeps the bytes would.
            ensure!(back.to_vec().len() == MIB);
            Ok(())
        })?;
        Ok((
            Figures {
                small: small * 1e6,
                large: 2.0 * MIB as f64 / large / 1e9,
                owned: 0.0,
                cpus: (sched_getcpu()?, proc.cpu),
            },
            2.0 * MIB as f64 / shared / 1e9,
        ))
    }
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
    let payload: Vec<u8> = (0..MIB).map(|i| (i * 31 + i / 4099) as u8).collect();
    println!("shm transport vs raw shared-memory floors, same run; client on CPU 0, server child pinned");
    println!("small: us per round trip (add(i64, i64) -> i64 / 4-byte counter ping-pong); 1 MiB echo: GB/s of payload, 2 MiB per round trip");
    for (label, cpu) in [("one CPU (0, 0)", 0), ("two CPUs (0, 1)", 1)] {
        println!();
        println!("== {label}");
        let only = std::env::var("PROCWIRE_SHM_BENCH_ONLY").unwrap_or_default();
        if only == "procwire-one" && cpu != 0 {
            break;
        }
        if only == "procwire-two" && cpu == 0 {
            continue;
        }
        if only.starts_with("procwire") {
            let ours = procwire(cpu, scale, &payload)?;
            println!(
                "procwire   small {:>8.2} us   echo {:>6.2} GB/s   (echo_owned {:.2} GB/s)",
                ours.small, ours.large, ours.owned
            );
            continue;
        }
        let futex = raw(Waiting::Futex, cpu, scale, &payload)?;
        let spin = if cpu == 0 {
            None
        } else {
            let pieces = raw_echo(Waiting::Spin, Trip::Pieces, cpu, scale, &payload)?.0;
            Some((
                raw(Waiting::Spin, cpu, scale, &payload)?,
                2.0 * MIB as f64 / pieces / 1e9,
            ))
        };
        let ours = procwire(cpu, scale, &payload)?;
        let (ipc, ipc_shared) = peer::measure(cpu, scale, &payload)?;
        let ran = |f: &Figures| format!("ran on {} and {}", f.cpus.0, f.cpus.1);
        println!(
            "raw futex  small {:>8.2} us   echo {:>6.2} GB/s   {}",
            futex.small,
            futex.large,
            ran(&futex)
        );
        if let Some((spin, pieces)) = &spin {
            println!(
                "raw spin   small {:>8.2} us   echo {:>6.2} GB/s   {}   (echo in {PIECES} pieces {pieces:.2} GB/s)",
                spin.small,
                spin.large,
                ran(spin)
            );
        }
        println!(
            "procwire   small {:>8.2} us   echo {:>6.2} GB/s   (echo_owned {:.2} GB/s)   {}",
            ours.small,
            ours.large,
            ours.owned,
            ran(&ours)
        );
        println!(
            "ipc-chan   small {:>8.2} us   echo {:>6.2} GB/s   (IpcSharedMemory echo {:.2} GB/s)   {}",
            ipc.small,
            ipc.large,
            ipc_shared,
            ran(&ipc)
        );
        println!(
            "ratios: echo / best ipc-channel {:.2}x (target >= 3x), echo_owned {:.2}x; small / ipc-channel {:.2}x",
            ours.large / ipc.large.max(ipc_shared),
            ours.owned / ipc.large.max(ipc_shared),
            ours.small / ipc.small
        );
        println!(
            "ratios: small / raw futex {:.2}x (target <= 1.5x on one CPU); echo / raw futex {:.2}x, echo_owned {:.2}x",
            ours.small / futex.small,
            ours.large / futex.large,
            ours.owned / futex.large
        );
        if let Some((spin, pieces)) = &spin {
            println!(
                "ratios: small / raw spin {:.2}x (target: under 1 us: {}); echo / raw spin {:.2}x (target >= 0.5x), / raw spin in pieces {:.2}x",
                ours.small / spin.small,
                if ours.small < 1.0 { "MET" } else { "NOT MET" },
                ours.large / spin.large,
                ours.large / pieces
            );
        }
    }
    Ok(())
}

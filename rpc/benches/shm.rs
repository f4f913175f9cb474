//! The shared-memory transport against raw floors measured in the same run, with both
//! processes on one CPU and on two.
//!
//! - small call: `BenchClient::add` over `shm:` against a raw ping-pong of a counter in a
//!   shared mapping, woken by futex (`FUTEX_WAIT`/`FUTEX_WAKE`, shared) and, on two CPUs,
//!   by spinning;
//! - 1 MiB echo: `BenchClient::echo` over `shm:` against a raw copy-in/copy-out echo through
//!   a shared mapping (`memcpy` in, `memcpy` out, each way), woken the same way.
//!
//! Placement: this process pins itself to CPU 0; each child pins itself to CPU 0 ("one
//! CPU") or CPU 1 ("two CPUs") and reports where it ran. Figures are medians of batch means.
//! Run with `cargo bench -p procwire-rpc --bench shm` (`PROCWIRE_BENCH_QUICK=1`: a tenth).

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{ensure, Result};
use nix::sched::sched_getcpu;
use procwire_rpc::shm::Region;
use procwire_rpc::transport::shm;
use support::{measure_calls, median, pin, serve, BenchClient, Proc, CPU_ENV};

const CHILD_ENV: &str = "PROCWIRE_SHM_BENCH_CHILD";
const ADDR_ENV: &str = "PROCWIRE_SHM_BENCH_ADDR";
const REGION: &str = "bench";
const MIB: usize = 1 << 20;
/// Region layout for the raw floors: two counters on their own cache lines, two buffers.
const PING: usize = 0;
const PONG: usize = 64;
const REQUEST: usize = 4096;
const REPLY: usize = REQUEST + MIB;

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
    if role == "rpc" {
        drop(out);
        return serve(shm::Listener::bind(std::env::var(ADDR_ENV)?)?);
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
    let mut seen = 0;
    loop {
        waiting.wait_for_change(ping, seen);
        seen = ping.load(Ordering::Acquire);
        if seen == u32::MAX {
            return Ok(());
        }
        if large {
            map.copy_out(REQUEST, &mut buf);
            map.copy_in(REPLY, &buf);
        }
        waiting.publish(pong, seen);
    }
}

impl Waiting {
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
    cpus: (usize, usize),
}

fn raw(waiting: Waiting, cpu: usize, scale: usize, payload: &[u8]) -> Result<Figures> {
    let run = |large: bool| -> Result<(f64, usize)> {
        let region = Region::create(REPLY + MIB)?;
        let role = format!("{}-{}", if large { "large" } else { "small" }, waiting.name());
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
    let (small, child_cpu) = run(false)?;
    let (large, _) = run(true)?;
    Ok(Figures {
        small: small * 1e6,
        large: 2.0 * MIB as f64 / large / 1e9,
        cpus: (sched_getcpu()?, child_cpu),
    })
}

fn procwire(cpu: usize, scale: usize, payload: &[u8]) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.sock");
    let proc = Proc::spawn(CHILD_ENV, "rpc", cpu, |cmd| {
        cmd.env(ADDR_ENV, &path);
        Ok(())
    })?;
    let client = BenchClient::connect(shm::connect(&path)?)?;
    let (small, large) = measure_calls(&client, scale, payload, 300)?;
    Ok(Figures {
        small: small * 1e6,
        large: 2.0 * MIB as f64 / large / 1e9,
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
    let payload: Vec<u8> = (0..MIB).map(|i| (i * 31 + i / 4099) as u8).collect();
    println!("shm transport vs raw shared-memory floors, same run; client on CPU 0, server child pinned");
    println!("small: us per round trip (add(i64, i64) -> i64 / 4-byte counter ping-pong); 1 MiB echo: GB/s of payload, 2 MiB per round trip");
    for (label, cpu) in [("one CPU (0, 0)", 0), ("two CPUs (0, 1)", 1)] {
        println!();
        println!("== {label}");
        let futex = raw(Waiting::Futex, cpu, scale, &payload)?;
        let spin = if cpu == 0 {
            None
        } else {
            Some(raw(Waiting::Spin, cpu, scale, &payload)?)
        };
        let ours = procwire(cpu, scale, &payload)?;
        let ran = |f: &Figures| format!("ran on {} and {}", f.cpus.0, f.cpus.1);
        println!(
            "raw futex  small {:>8.2} us   echo {:>6.2} GB/s   {}",
            futex.small,
            futex.large,
            ran(&futex)
        );
        if let Some(spin) = &spin {
            println!(
                "raw spin   small {:>8.2} us   echo {:>6.2} GB/s   {}",
                spin.small,
                spin.large,
                ran(spin)
            );
        }
        println!(
            "procwire   small {:>8.2} us   echo {:>6.2} GB/s   {}",
            ours.small,
            ours.large,
            ran(&ours)
        );
        println!(
            "ratios: small / raw futex {:.2}x (target <= 1.5x on one CPU); echo / raw futex {:.2}x",
            ours.small / futex.small,
            ours.large / futex.large
        );
        if let Some(spin) = &spin {
            println!(
                "ratios: small / raw spin {:.2}x (target: under 1 us: {}); echo / raw spin {:.2}x (target >= 0.5x)",
                ours.small / spin.small,
                if ours.small < 1.0 { "MET" } else { "NOT MET" },
                ours.large / spin.large
            );
        }
    }
    Ok(())
}

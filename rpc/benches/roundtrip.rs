//! Round trips through procwire against raw reads and writes over the same kind of channel.
//!
//! procwire is measured as users see it: the `Bench` trait below goes through
//! `#[procwire_macros::service]`, and the bench calls the generated `BenchClient` against the
//! generated `BenchServer`, so the figures include whatever the generated code costs.
//!
//! Every server runs in a child process: this binary re-executes itself with
//! `PROCWIRE_BENCH_CHILD=<role>` set. For each transport (Unix socket, TCP on 127.0.0.1, pipe
//! pair, FIFO pair) it measures a small call (`add(i64, i64) -> i64` against an 8-byte
//! ping-pong) and a 1 MiB echo (`echo(&[u8]) -> Vec<u8>` against 1 MiB written and read
//! back), then prints one table and whether the targets are met.
//!
//! Environment:
//! - `PROCWIRE_BENCH_PIN` (default 1): pin this process, and so the children, which inherit
//!   the affinity, to one CPU (CPU 0 if allowed). `0` lets the scheduler place them.
//! - `PROCWIRE_BENCH_QUICK=1`: a tenth of the iterations, for a quick look.
//!
//! Run with `cargo bench -p procwire-rpc --bench roundtrip`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::fcntl::OFlag;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use procwire_rpc::transport::noise::{self, NoiseKey};
use procwire_rpc::transport::{fifo, pipe, tcp, unix, Listener, Transport};
use procwire_rpc::{Server, ServerHandle};

/// Selects the child role; unset in the parent.
const CHILD_ENV: &str = "PROCWIRE_BENCH_CHILD";
/// Where a child finds its channel: a socket path or a FIFO directory.
const ADDR_ENV: &str = "PROCWIRE_BENCH_ADDR";

const MIB: usize = 1024 * 1024;

#[path = "support/scaling.rs"]
mod scaling;
// Only its count of context switches: this bench has its own `Bench` and children.
#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
#[path = "support/tarpc.rs"]
mod tarpc_peer;

/// The key both ends of the `tcp` (Noise) measurement hold.
fn bench_key() -> NoiseKey {
    NoiseKey::new("bench", [0x42; 32])
}
/// Timings are medians over this many equal batches (see `median_secs`).
const SMALL_BATCHES: usize = 20;
const LARGE_BATCHES: usize = 10;

fn main() -> Result<()> {
    // Before anything else: a child must not print the table or pin itself again.
    // Arguments (cargo adds `--bench`) are ignored.
    if let Ok(role) = std::env::var(CHILD_ENV) {
        return child::run(&role);
    }
    parent()
}

/// The service both sides agree on, as a user would write it: `#[service]` generates
/// `BenchClient` (the parent's side) and `BenchServer` (the child's).
#[procwire_macros::service]
trait Bench {
    /// A small call: two integers in, one out.
    fn add(&self, a: i64, b: i64) -> i64;
    /// A large call: the bytes travel as one byte string each way. Borrowed, so the client
    /// sends the caller's buffer as it is and the server reads it straight from the frame.
    fn echo(&self, data: &[u8]) -> Vec<u8>;
    /// The same, the bytes taken by value: the server hands the handler the buffer it read
    /// them into, and the handler returns it as it is (no copy but the kernel's).
    fn echo_owned(&self, data: Vec<u8>) -> Vec<u8>;
}

/// The implementation the child serves.
struct Echo;

impl Bench for Echo {
    fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    fn echo(&self, data: &[u8]) -> Vec<u8> {
        // The one copy a handler returning `Vec<u8>` must make.
        data.to_vec()
    }

    fn echo_owned(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

mod child {
    //! The server side of every measurement.

    use super::*;

    pub(super) fn run(role: &str) -> Result<()> {
        match role {
            "rpc-unix" => {
                let listener = unix::Listener::bind(addr()?)?;
                serve_listener(listener, "ready".to_owned())
            }
            "rpc-tcp" => {
                let listener = tcp::Listener::bind("127.0.0.1:0")?;
                let ready = format!("ready {}", listener.addr());
                serve_listener(listener, ready)
            }
            "rpc-noise" => {
                let listener = noise::Listener::bind("127.0.0.1:0", vec![bench_key()])?;
                let ready = format!("ready {}", listener.addr());
                serve_listener(listener, ready)
            }
            // For pipes and FIFOs the procwire handshake is the readiness signal.
            "rpc-pipe" => serve_connection(pipe::from_env()?),
            "rpc-fifo" => serve_connection(fifo::open_timeout(
                addr()?,
                fifo::Side::Server,
                Duration::from_secs(30),
            )?),
            "raw-small" => {
                let (mut r, mut w) = raw_ends()?;
                let mut buf = [0u8; 8];
                while read_or_eof(&mut r, &mut buf)? {
                    w.write_all(&buf)?;
                }
                Ok(())
            }
            "raw-large" => {
                // Store and forward, like an RPC server, which must have the whole request
                // before it replies. Because nothing is written back until everything has
                // been read, the parent can write the whole message and then read it back
                // on one thread without any risk of both sides blocking on full buffers.
                let (mut r, mut w) = raw_ends()?;
                let mut len = [0u8; 4];
                let mut buf = Vec::new();
                while read_or_eof(&mut r, &mut len)? {
                    buf.resize(u32::from_le_bytes(len) as usize, 0);
                    r.read_exact(&mut buf)?;
                    w.write_all(&buf)?;
                }
                Ok(())
            }
            scaling::TARPC_ROLE => tarpc_peer::serve(&addr()?),
            other => bail!("unknown {CHILD_ENV} role {other:?}"),
        }
    }

    fn addr() -> Result<PathBuf> {
        Ok(std::env::var_os(ADDR_ENV)
            .with_context(|| format!("{ADDR_ENV} is not set"))?
            .into())
    }

    fn serve_listener(listener: impl Listener, ready: String) -> Result<()> {
        let handle = Server::new(BenchServer::new(Echo)).spawn(listener)?;
        // Bound and accepting before the parent hears of it, so its connect cannot fail.
        let mut out = io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
        drop(out);
        stop_on_stdin_eof(&handle);
        handle.wait()?;
        Ok(())
    }

    fn serve_connection(transport: Transport) -> Result<()> {
        let handle = Server::new(BenchServer::new(Echo)).spawn_connection(transport)?;
        stop_on_stdin_eof(&handle);
        // Returns when the parent closes the connection, or stdin ends.
        handle.wait()?;
        Ok(())
    }

    /// The parent closing our stdin (or dying) ends the server.
    fn stop_on_stdin_eof(handle: &ServerHandle) {
        let stopper = handle.stopper();
        std::thread::spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            stopper.stop();
        });
    }

    /// The raw channel: the FIFOs in `ADDR_ENV` if set, else stdin and stdout, which the
    /// parent made the socket or the pipes. Plain blocking descriptors, no buffering.
    fn raw_ends() -> Result<(File, File)> {
        if let Ok(dir) = addr() {
            // Same opening order as the parent: c2s, then s2c.
            let r = File::open(dir.join("c2s"))?;
            let w = OpenOptions::new().write(true).open(dir.join("s2c"))?;
            return Ok((r, w));
        }
        let r = io::stdin().as_fd().try_clone_to_owned()?;
        let w = io::stdout().as_fd().try_clone_to_owned()?;
        Ok((File::from(r), File::from(w)))
    }

    /// Fills `buf`; false if the stream ended cleanly before its first byte.
    fn read_or_eof(r: &mut File, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => bail!("the stream ended inside a message"),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
}

/// A child process that is waited for, and killed if the parent bails out early.
struct ChildProc {
    role: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ChildProc {
    /// Spawns `cmd` and drops it, so that our copies of the child's descriptors close.
    fn spawn(role: &'static str, mut cmd: Command) -> Result<Self> {
        let mut child = cmd.spawn().with_context(|| format!("spawning the {role} child"))?;
        drop(cmd);
        let stdin = child.stdin.take();
        Ok(ChildProc { role, child, stdin })
    }

    /// Waits for the `ready` line a listening child prints; returns the rest of it.
    fn ready(&mut self) -> Result<String> {
        let out = self.child.stdout.take().context("the child's stdout is not piped")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        match line.trim_end().strip_prefix("ready") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => bail!("the {} child exited before it was ready", self.role),
        }
    }

    /// Closes the child's stdin and waits for it to exit on its own.
    fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        ensure!(status.success(), "the {} child failed: {status}", self.role);
        Ok(())
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn child_command(role: &str) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    // A stray address from our own environment would send every raw child to FIFOs.
    cmd.env(CHILD_ENV, role)
        .env_remove(ADDR_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Ok(cmd)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unix,
    /// Plain TCP (`tcp+plain:`).
    Tcp,
    /// TCP authenticated and encrypted with Noise (`tcp:`); its raw baseline is plain TCP.
    Noise,
    Pipe,
    Fifo,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::Unix, Kind::Tcp, Kind::Noise, Kind::Pipe, Kind::Fifo];

    fn name(self) -> &'static str {
        match self {
            Kind::Unix => "unix",
            // As the endpoints are spelled: `tcp:` is authenticated, `tcp+plain:` is not.
            Kind::Tcp => "tcp+plain",
            Kind::Noise => "tcp",
            Kind::Pipe => "pipe",
            Kind::Fifo => "fifo",
        }
    }
}

/// A raw echo child and our ends of its channel.
struct Raw {
    reader: Box<dyn Read>,
    writer: Box<dyn Write>,
    child: ChildProc,
    _dir: Option<tempfile::TempDir>,
}

impl Raw {
    fn spawn(kind: Kind, role: &'static str) -> Result<Raw> {
        let mut cmd = child_command(role)?;
        // The child's stdin and stdout become its end of the channel.
        let give = |cmd: &mut Command, read: OwnedFd, write: OwnedFd| {
            cmd.stdin(Stdio::from(read)).stdout(Stdio::from(write));
        };
        let (reader, writer): (Box<dyn Read>, Box<dyn Write>) = match kind {
            Kind::Unix => {
                let (ours, theirs) = UnixStream::pair()?;
                // The send buffer procwire's Unix transport asks for, so that the floor is
                // not held back by a smaller one.
                for end in [&ours, &theirs] {
                    nix::sys::socket::setsockopt(end, nix::sys::socket::sockopt::SndBuf, &unix::SEND_BUFFER)?;
                }
                give(&mut cmd, theirs.try_clone()?.into(), theirs.into());
                (Box::new(ours.try_clone()?), Box::new(ours))
            }
            Kind::Tcp | Kind::Noise => {
                // A real loopback connection; the accepted end goes to the child.
                let listener = TcpListener::bind("127.0.0.1:0")?;
                let ours = TcpStream::connect(listener.local_addr()?)?;
                let (theirs, _) = listener.accept()?;
                // Like procwire's TCP transport, so both sides send small writes at once.
                ours.set_nodelay(true)?;
                theirs.set_nodelay(true)?;
                give(&mut cmd, theirs.try_clone()?.into(), theirs.into());
                (Box::new(ours.try_clone()?), Box::new(ours))
            }
            Kind::Pipe => {
                // CLOEXEC keeps our ends out of the child; its own ends are dup'ed onto 0
                // and 1, which clears the flag there.
                let (their_read, our_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                let (our_read, their_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                give(&mut cmd, their_read, their_write);
                (Box::new(File::from(our_read)), Box::new(File::from(our_write)))
            }
            Kind::Fifo => {
                let dir = tempfile::TempDir::new()?;
                for name in ["c2s", "s2c"] {
                    nix::unistd::mkfifo(&dir.path().join(name), Mode::S_IRUSR | Mode::S_IWUSR)?;
                }
                cmd.env(ADDR_ENV, dir.path());
                let child = ChildProc::spawn(role, cmd)?;
                // Each open returns once the child has opened the other end.
                let w = OpenOptions::new().write(true).open(dir.path().join("c2s"))?;
                let r = File::open(dir.path().join("s2c"))?;
                return Ok(Raw {
                    reader: Box::new(r),
                    writer: Box::new(w),
                    child,
                    _dir: Some(dir),
                });
            }
        };
        let child = ChildProc::spawn(role, cmd)?;
        Ok(Raw {
            reader,
            writer,
            child,
            _dir: None,
        })
    }

    /// Closing our ends is the child's signal to exit.
    fn finish(self) -> Result<()> {
        drop(self.reader);
        drop(self.writer);
        self.child.finish()
    }
}

/// A procwire server child and a client connected to it.
struct Rpc {
    client: BenchClient,
    child: ChildProc,
    _dir: Option<tempfile::TempDir>,
}

impl Rpc {
    fn spawn(kind: Kind) -> Result<Rpc> {
        let role = match kind {
            Kind::Unix => "rpc-unix",
            Kind::Tcp => "rpc-tcp",
            Kind::Noise => "rpc-noise",
            Kind::Pipe => "rpc-pipe",
            Kind::Fifo => "rpc-fifo",
        };
        let mut cmd = child_command(role)?;
        // Piped stdin: its end is the child's signal to stop.
        cmd.stdin(Stdio::piped());
        let (transport, child, dir) = match kind {
            Kind::Unix => {
                let dir = tempfile::TempDir::new()?;
                let path = dir.path().join("bench.sock");
                cmd.env(ADDR_ENV, &path).stdout(Stdio::piped());
                let mut child = ChildProc::spawn(role, cmd)?;
                child.ready()?;
                (unix::connect(&path)?, child, Some(dir))
            }
            Kind::Tcp | Kind::Noise => {
                cmd.stdout(Stdio::piped());
                let mut child = ChildProc::spawn(role, cmd)?;
                let addr: SocketAddr = child.ready()?.parse().context("the tcp child's address")?;
                let transport = match kind {
                    Kind::Noise => noise::connect(addr, &bench_key())?,
                    _ => tcp::connect(addr)?,
                };
                (transport, child, None)
            }
            Kind::Pipe => {
                let (transport, child_ends) = pipe::pair()?;
                child_ends.pass_to(&mut cmd);
                let child = ChildProc::spawn(role, cmd)?;
                // Our copies of the child's ends must go, or its exit would go unnoticed.
                drop(child_ends);
                (transport, child, None)
            }
            Kind::Fifo => {
                let dir = tempfile::TempDir::new()?;
                fifo::create(dir.path())?;
                cmd.env(ADDR_ENV, dir.path());
                let child = ChildProc::spawn(role, cmd)?;
                (
                    fifo::open_timeout(dir.path(), fifo::Side::Client, Duration::from_secs(30))?,
                    child,
                    Some(dir),
                )
            }
        };
        let client = BenchClient::connect(transport)?;
        Ok(Rpc {
            client,
            child,
            _dir: dir,
        })
    }

    fn finish(self) -> Result<()> {
        drop(self.client);
        self.child.finish()
    }
}

/// Iteration counts.
#[derive(Clone, Copy)]
struct Counts {
    small_calls: usize,
    small_warmup: usize,
    large_calls: usize,
    large_warmup: usize,
}

/// Runs `op` `warmup` times, then `calls` times in `batches` equal batches, and returns
/// the median over batches of the mean seconds per call. The median keeps one descheduling
/// or page-fault storm from moving the figure; the argument is the call's index.
fn median_secs(warmup: usize, calls: usize, batches: usize, mut op: impl FnMut(i64) -> Result<()>) -> Result<f64> {
    for i in 0..warmup {
        op(i as i64)?;
    }
    let per_batch = (calls / batches).max(1);
    let mut samples = Vec::with_capacity(batches);
    let mut i = 0;
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..per_batch {
            op(i)?;
            i += 1;
        }
        samples.push(start.elapsed().as_secs_f64() / per_batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    let mid = batches / 2;
    Ok(if batches % 2 == 0 {
        (samples[mid - 1] + samples[mid]) / 2.0
    } else {
        samples[mid]
    })
}

/// Microseconds per small round trip.
fn per_call_micros(counts: Counts, op: impl FnMut(i64) -> Result<()>) -> Result<f64> {
    Ok(median_secs(counts.small_warmup, counts.small_calls, SMALL_BATCHES, op)? * 1e6)
}

/// Payload throughput in GB/s (1e9 bytes per second) of a 1 MiB echo: each round trip
/// counts 2 MiB, the request's payload plus the reply's. Framing bytes are not counted.
fn echo_gbps(counts: Counts, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let secs = median_secs(counts.large_warmup, counts.large_calls, LARGE_BATCHES, |_| op())?;
    Ok(2.0 * MIB as f64 / secs / 1e9)
}

fn payload() -> Vec<u8> {
    // Not all zeroes, so that nothing along the way can shortcut it.
    (0..MIB).map(|i| (i * 31 + i / 4099) as u8).collect()
}

fn raw_small(kind: Kind, counts: Counts) -> Result<f64> {
    let mut raw = Raw::spawn(kind, "raw-small")?;
    let micros = per_call_micros(counts, |i| {
        let out = i.to_le_bytes();
        let mut back = [0u8; 8];
        raw.writer.write_all(&out)?;
        raw.reader.read_exact(&mut back)?;
        ensure!(back == out, "raw echo returned other bytes");
        Ok(())
    })?;
    raw.finish()?;
    Ok(micros)
}

fn raw_large(kind: Kind, counts: Counts, payload: &[u8]) -> Result<f64> {
    let mut raw = Raw::spawn(kind, "raw-large")?;
    // Length and payload in one buffer, so one write call, as procwire's framing does.
    let mut message = Vec::with_capacity(4 + payload.len());
    message.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    message.extend_from_slice(payload);
    let mut back = vec![0u8; payload.len()];
    let round_trip = |raw: &mut Raw, back: &mut [u8]| -> Result<()> {
        raw.writer.write_all(&message)?;
        raw.reader.read_exact(back)?;
        Ok(())
    };
    round_trip(&mut raw, &mut back)?;
    ensure!(back == payload, "raw echo returned other bytes");
    let gbps = echo_gbps(counts, || round_trip(&mut raw, &mut back))?;
    raw.finish()?;
    Ok(gbps)
}

/// The procwire small-call and 1 MiB echo figures, over one connection.
fn procwire(kind: Kind, counts: Counts, payload: &[u8]) -> Result<(f64, f64)> {
    let rpc = Rpc::spawn(kind)?;
    let client = &rpc.client;
    let micros = per_call_micros(counts, |i| {
        let sum = client.add(i, 1)?;
        ensure!(sum == i + 1, "add({i}, 1) returned {sum}");
        Ok(())
    })?;
    let back = client.echo(payload)?;
    ensure!(back == payload, "echo returned other bytes");
    let gbps = echo_gbps(counts, || {
        let back = client.echo(payload)?;
        ensure!(back.len() == payload.len(), "echo returned {} bytes", back.len());
        Ok(())
    })?;
    rpc.finish()?;
    Ok((micros, gbps))
}

/// Pins this thread, and so every thread and child started later, to one CPU: CPU 0 if we
/// may run there, else the first we may. Returns the CPU.
fn pin() -> Result<usize> {
    let allowed = sched_getaffinity(Pid::from_raw(0))?;
    let cpu = (0..CpuSet::count())
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .context("no CPU in the affinity mask")?;
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)?;
    Ok(cpu)
}

fn env_flag(name: &str, default: bool) -> bool {
    match std::env::var(name) {
        Ok(v) => !matches!(v.trim(), "0" | "" | "false" | "no" | "off"),
        Err(_) => default,
    }
}

struct Row {
    transport: &'static str,
    small_raw: f64,
    small_rpc: f64,
    large_raw: f64,
    large_rpc: f64,
}

fn parent() -> Result<()> {
    // The CPUs we may use, before pinning narrows them: the placements take two of them.
    let allowed = sched_getaffinity(Pid::from_raw(0))?;
    // First, so that every thread and child inherits the affinity.
    let pinned = if env_flag("PROCWIRE_BENCH_PIN", true) {
        Some(pin().context("pinning to one CPU")?)
    } else {
        None
    };
    let quick = env_flag("PROCWIRE_BENCH_QUICK", false);
    let scale = if quick { 10 } else { 1 };
    let counts = Counts {
        small_calls: 20_000 / scale,
        small_warmup: 2_000 / scale,
        large_calls: 300 / scale,
        large_warmup: 30 / scale,
    };

    println!("procwire round trips, server in a child process");
    println!(
        "procwire side: the client and server #[procwire_macros::service] generates for trait Bench \
         (BenchClient -> BenchServer)"
    );
    match pinned {
        Some(cpu) => println!(
            "pinned: this process and its children all on CPU {cpu}, as for the reference figures \
             (PROCWIRE_BENCH_PIN=0 to unpin)"
        ),
        None => println!("not pinned: the scheduler places both processes (PROCWIRE_BENCH_PIN=1 to pin)"),
    }
    if quick {
        println!("quick mode (PROCWIRE_BENCH_QUICK=1): a tenth of the iterations");
    }
    println!(
        "small call: BenchClient::add(i64, i64) -> i64 vs raw 8-byte write/read ping-pong; {} calls after {} warm-up, \
         median of {SMALL_BATCHES} batch means, microseconds per round trip",
        counts.small_calls, counts.small_warmup
    );
    println!(
        "1 MiB echo: BenchClient::echo(&[u8]) -> Vec<u8> (server borrows the bytes from the frame, handler \
         returns a copy) vs raw 4-byte length + 1 MiB written, 1 MiB read back; {} round trips after {} \
         warm-up; GB/s = 2 MiB of payload per round trip (1 MiB each way, framing not counted) / median of \
         {LARGE_BATCHES} batch means of the round-trip time, 1 GB = 1e9 bytes",
        counts.large_calls, counts.large_warmup
    );
    println!();

    let payload = payload();
    let mut rows = Vec::new();
    // PROCWIRE_BENCH_ONLY=tcp,tcp+plain measures only those transports.
    let only = std::env::var("PROCWIRE_BENCH_ONLY").ok();
    let chosen = |kind: Kind| {
        only.as_deref()
            .is_none_or(|only| only.split(',').any(|n| n.trim() == kind.name()))
    };
    let scaling = only
        .as_deref()
        .is_none_or(|only| only.split(',').any(|n| n.trim() == "scaling"));
    for kind in Kind::ALL.into_iter().filter(|&kind| chosen(kind)) {
        let transport = kind.name();
        let ctx = |what: &str| format!("{transport}: {what}");
        let small_raw = raw_small(kind, counts).with_context(|| ctx("raw small"))?;
        let large_raw = raw_large(kind, counts, &payload).with_context(|| ctx("raw 1 MiB"))?;
        let (small_rpc, large_rpc) = procwire(kind, counts, &payload).with_context(|| ctx("procwire"))?;
        rows.push(Row {
            transport,
            small_raw,
            small_rpc,
            large_raw,
            large_rpc,
        });
    }

    println!("ratio = procwire / raw: for latency lower is better, for throughput higher is better");
    println!(
        "{:<9}  {:<10}  {:>12}  {:>12}  {:>7}",
        "transport", "case", "raw", "procwire", "ratio"
    );
    for r in &rows {
        println!(
            "{:<9}  {:<10}  {:>9.2} us  {:>9.2} us  {:>6.2}x",
            r.transport,
            "small call",
            r.small_raw,
            r.small_rpc,
            r.small_rpc / r.small_raw
        );
        println!(
            "{:<9}  {:<10}  {:>7.2} GB/s  {:>7.2} GB/s  {:>6.2}x",
            r.transport,
            "1 MiB echo",
            r.large_raw,
            r.large_rpc,
            r.large_rpc / r.large_raw
        );
    }

    let row = |name: &str| rows.iter().find(|r| r.transport == name);
    if let (Some(plain), Some(sealed)) = (row("tcp+plain"), row("tcp")) {
        println!();
        println!(
            "tcp / tcp+plain (the cost of authentication and encryption): small call {:.2}x, 1 MiB echo {:.2}x",
            sealed.small_rpc / plain.small_rpc,
            sealed.large_rpc / plain.large_rpc
        );
    }

    if let Some(unix) = row("unix") {
        let small = unix.small_rpc / unix.small_raw;
        let large = unix.large_rpc / unix.large_raw;
        let verdict = |met: bool| if met { "MET" } else { "NOT MET" };
        println!();
        println!(
            "target: small call over unix within 1.5x of raw: {small:.2}x -> {}",
            verdict(small <= 1.5)
        );
        println!(
            "target: 1 MiB echo over unix at least 0.5x raw throughput: {large:.2}x -> {}",
            verdict(large >= 0.5)
        );
    }
    if scaling {
        scaling::report(&allowed, quick, &payload)?;
    }
    Ok(())
}

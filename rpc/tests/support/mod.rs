//! The conformance suite's service, its child process, and helpers to spawn and reach it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};

use procwire_rpc::serde_bytes::ByteBuf;
use procwire_rpc::transport::noise::{self, NoiseKey};
use procwire_rpc::transport::{fifo, mq, pipe, shm, tcp, unix, Transport};
use procwire_rpc::{
    decode_args, CallContext, Fault, FaultKind, Frame, Method, MethodSignature, Server, ServerConfig, Service,
    ServiceInfo,
};

#[path = "senders.rs"]
mod senders;
#[allow(unused_imports)] // not every test binary wraps a sender
pub use senders::{CountingSender, Counts, GatherSender};

/// One `libtest_mimic::Trial` per test function, named after it; each returns a `Result`.
/// A test binary's `main`: the child role if this process is a child, else the given test
/// functions (each returning a `Result`), one trial each, named after them.
#[allow(unused_macros)] // used by tests/hostile.rs and tests/noise.rs
macro_rules! test_main {
    ($($case:ident),* $(,)?) => {
        fn main() {
            if support::child_main() {
                return;
            }
            let args = libtest_mimic::Arguments::from_args();
            let trials = vec![$(libtest_mimic::Trial::test(stringify!($case), $case)),*];
            libtest_mimic::run(&args, trials).exit();
        }
    };
}

pub const SERVICE: &str = "conformance";

pub const ADD: Method = Method::new(1, "add");
pub const ECHO: Method = Method::new(2, "echo");
pub const CONCAT: Method = Method::new(3, "concat");
pub const LOG: Method = Method::new(4, "log");
pub const WAIT_LOGS: Method = Method::new(5, "wait_logs");
pub const SLOW: Method = Method::new(6, "slow");
pub const PANIC: Method = Method::new(7, "panic");
pub const DIE: Method = Method::new(8, "die");
pub const HOLD: Method = Method::new(9, "hold");
pub const RELEASE: Method = Method::new(10, "release");
pub const WAIT_HELD: Method = Method::new(11, "wait_held");
pub const PEER_PID: Method = Method::new(12, "peer_pid");
pub const GROW: Method = Method::new(13, "grow");
pub const KEY_NAME: Method = Method::new(14, "key_name");
/// The writes the server has made on the connections it counts (`COUNT_WRITES_ENV`), and
/// the frames they carried, as they stand when the call is read.
pub const WRITES: Method = Method::new(15, "writes");
/// How many times the server's connection threads have gone to sleep so far (their
/// voluntary context switches).
pub const SLEEPS: Method = Method::new(16, "sleeps");
const METHODS: [Method; 16] = [
    ADD, ECHO, CONCAT, LOG, WAIT_LOGS, SLOW, PANIC, DIE, HOLD, RELEASE, WAIT_HELD, PEER_PID, GROW, KEY_NAME, WRITES,
    SLEEPS,
];

/// Set for a `unix` child: it serves one connection, counting the writes its sender makes
/// (`WRITES`).
pub const COUNT_WRITES_ENV: &str = "PROCWIRE_CONFORMANCE_COUNT_WRITES";

/// What the counted connection has written.
static SERVED: std::sync::LazyLock<std::sync::Arc<Counts>> = std::sync::LazyLock::new(Default::default);

/// The environment variable that hands a Noise server its key (64 hex digits); also the
/// key's name.
pub const KEY_ENV: &str = "PROCWIRE_CONFORMANCE_KEY";

/// The key the suite's Noise server and clients share.
pub fn suite_key() -> NoiseKey {
    NoiseKey::new(KEY_ENV, [0x5a; 32])
}

fn hex(secret: &[u8; 32]) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long the service's blocking methods wait at most, so that a broken test fails rather
/// than hangs.
const LIMIT: Duration = Duration::from_secs(30);

/// The suite's service, each method listed with its signature as `#[service]` would make it.
pub fn info() -> ServiceInfo {
    fn d<T: procwire_rpc::Schema + ?Sized>() -> procwire_rpc::schema::Describe {
        T::describe
    }
    let sig = |method: Method, args: &[procwire_rpc::schema::Describe], result| {
        MethodSignature::of(method, method == LOG, args, result)
    };
    [
        sig(ADD, &[d::<i64>(), d::<i64>()], d::<i64>()),
        sig(ECHO, &[d::<[u8]>()], d::<[u8]>()),
        sig(CONCAT, &[d::<String>(), d::<String>()], d::<String>()),
        sig(LOG, &[d::<String>()], d::<()>()),
        sig(WAIT_LOGS, &[d::<u64>()], d::<u64>()),
        sig(SLOW, &[d::<u64>(), d::<u64>()], d::<u64>()),
        sig(PANIC, &[], d::<()>()),
        sig(DIE, &[], d::<()>()),
        sig(HOLD, &[d::<u64>()], d::<bool>()),
        sig(RELEASE, &[d::<u64>()], d::<()>()),
        sig(WAIT_HELD, &[d::<u64>()], d::<bool>()),
        sig(PEER_PID, &[], d::<Option<i32>>()),
        sig(GROW, &[d::<u64>()], d::<[u8]>()),
        sig(KEY_NAME, &[], d::<Option<String>>()),
        sig(WRITES, &[], d::<(u64, u64)>()),
        sig(SLEEPS, &[], d::<u64>()),
    ]
    .into_iter()
    .fold(ServiceInfo::new(SERVICE), ServiceInfo::with_method)
}

/// The hand-written service every transport is tested with.
#[derive(Default)]
pub struct Conformance {
    logs: Mutex<u64>,
    held: Mutex<(HashSet<u64>, HashSet<u64>)>,
    changed: Condvar,
}

impl Conformance {
    fn wait_for(&self, mut done: impl FnMut(&mut (HashSet<u64>, HashSet<u64>)) -> bool) -> bool {
        let deadline = Instant::now() + LIMIT;
        let mut held = self.held.lock().unwrap();
        while !done(&mut held) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            held = self.changed.wait_timeout(held, left).unwrap().0;
        }
        true
    }
}

impl Service for Conformance {
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
                ctx.reply(&a.wrapping_add(b))
            }
            2 => {
                let data: ByteBuf = decode_args(ctx, args)?;
                ctx.reply(&data)
            }
            3 => {
                let (a, b): (String, String) = decode_args(ctx, args)?;
                ctx.reply(&(a + &b))
            }
            4 => {
                let _line: String = decode_args(ctx, args)?;
                *self.logs.lock().unwrap() += 1;
                self.changed.notify_all();
                ctx.reply(&())
            }
            5 => {
                let n: u64 = decode_args(ctx, args)?;
                let deadline = Instant::now() + LIMIT;
                let mut logs = self.logs.lock().unwrap();
                while *logs < n && Instant::now() < deadline {
                    logs = self.changed.wait_timeout(logs, deadline - Instant::now()).unwrap().0;
                }
                ctx.reply(&*logs)
            }
            6 => {
                // Simulated slow work, not synchronisation; the token tells wait_held it began.
                let (token, ms): (u64, u64) = decode_args(ctx, args)?;
                self.held.lock().unwrap().0.insert(token);
                self.changed.notify_all();
                std::thread::sleep(Duration::from_millis(ms));
                ctx.reply(&ms)
            }
            7 => panic!("the panic method was called"),
            8 => std::process::exit(17),
            9 => {
                let token: u64 = decode_args(ctx, args)?;
                self.held.lock().unwrap().0.insert(token);
                self.changed.notify_all();
                let released = self.wait_for(|(_, released)| released.contains(&token));
                ctx.reply(&released)
            }
            10 => {
                let token: u64 = decode_args(ctx, args)?;
                self.held.lock().unwrap().1.insert(token);
                self.changed.notify_all();
                ctx.reply(&())
            }
            11 => {
                let token: u64 = decode_args(ctx, args)?;
                let held = self.wait_for(|(held, _)| held.contains(&token));
                ctx.reply(&held)
            }
            12 => ctx.reply(&ctx.peer().credentials.map(|c| c.pid)),
            13 => {
                let n: u64 = decode_args(ctx, args)?;
                ctx.reply(&ByteBuf::from(vec![7u8; n as usize]))
            }
            14 => ctx.reply(&ctx.key_name().map(str::to_owned)),
            15 => ctx.reply(&(
                SERVED.writes.load(Ordering::SeqCst) as u64,
                SERVED.frames.load(Ordering::SeqCst) as u64,
            )),
            16 => ctx.reply(&thread_switches("procwire-conn", &["voluntary_ctxt_switches:"])),
            m => Err(Fault::new(
                FaultKind::UnknownMethod,
                format!("{SERVICE} has no method {m}"),
            )),
        }
    }
}

/// The transports the suite runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Unix,
    Tcp,
    Pipe,
    Fifo,
    Shm,
    /// TCP authenticated and encrypted with Noise, with [`suite_key`].
    Noise,
    /// Two POSIX message queues per connection, set up over a Unix socket.
    Mq,
}

pub const ALL: [Kind; 7] = [
    Kind::Unix,
    Kind::Tcp,
    Kind::Pipe,
    Kind::Fifo,
    Kind::Shm,
    Kind::Noise,
    Kind::Mq,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Unix => "unix",
            Kind::Tcp => "tcp",
            Kind::Pipe => "pipe",
            Kind::Fifo => "fifo",
            Kind::Shm => "shm",
            Kind::Noise => "noise",
            Kind::Mq => "mq",
        }
    }

    /// Whether a server on it accepts many connections.
    pub fn has_listener(self) -> bool {
        matches!(self, Kind::Unix | Kind::Tcp | Kind::Shm | Kind::Noise | Kind::Mq)
    }

    /// Whether a test can write raw bytes to a server on it (a byte stream it can connect
    /// to); the shm transport's hostile-peer cases are unit tests of its rings, and raw bytes
    /// mean nothing to an encrypted transport (tests/noise.rs covers its refusals).
    pub fn has_raw_stream(self) -> bool {
        matches!(self, Kind::Unix | Kind::Tcp)
    }

    /// Whether a client on it receives a large reply's byte string straight into the
    /// buffer the caller gets (`FrameReceiver::recv_payload`).
    pub fn splits_replies(self) -> bool {
        matches!(self, Kind::Unix | Kind::Tcp | Kind::Pipe | Kind::Fifo | Kind::Shm)
    }
}

const CHILD_ENV: &str = "PROCWIRE_CONFORMANCE_CHILD";
const WRITE_TIMEOUT_ENV: &str = "PROCWIRE_CONFORMANCE_WRITE_TIMEOUT_MS";
const MAX_FRAME_ENV: &str = "PROCWIRE_CONFORMANCE_MAX_FRAME_LEN";
const LIMITS_ENV: &str = "PROCWIRE_CONFORMANCE_LIMITS";
const FAILURES_ENV: &str = "PROCWIRE_CONFORMANCE_FAILURES";
/// Lowers the child's `RLIMIT_MSGQUEUE` soft limit to this many bytes before it serves.
pub const RLIMIT_MSGQUEUE_ENV: &str = "PROCWIRE_CONFORMANCE_RLIMIT_MSGQUEUE";

/// Applies `name=value` pairs, `,`-separated, to the child server's limits.
fn apply_limits(mut config: ServerConfig, limits: &str) -> ServerConfig {
    for pair in limits.split(',').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').expect("name=value");
        let n: u64 = value.parse().expect("a number");
        config = match name {
            "max_connections" => config.max_connections(n as usize),
            "frame_timeout_ms" => config.frame_timeout(Duration::from_millis(n)),
            "idle_timeout_ms" => config.idle_timeout(Some(Duration::from_millis(n))),
            "frame_budget" => config.frame_budget(procwire_rpc::transport::FrameBudget::new(n as usize)),
            "write_timeout_ms" => config.write_timeout(Duration::from_millis(n)),
            "handshake_timeout_ms" => config.handshake_timeout(Duration::from_millis(n)),
            "max_calls" => config.max_calls_per_connection(n as usize),
            "spare_thread_timeout_ms" => config.spare_thread_timeout(Duration::from_millis(n)),
            other => panic!("unknown limit {other}"),
        };
    }
    config
}

/// Runs the child role if this process is a child; returns false otherwise.
pub fn child_main() -> bool {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return false;
    };
    let arg = std::env::var("PROCWIRE_CONFORMANCE_ARG").unwrap_or_default();
    let mut config = ServerConfig::default();
    if let Ok(len) = std::env::var(MAX_FRAME_ENV) {
        config = config.max_frame_len(len.parse().expect("bytes"));
    }
    if let Ok(ms) = std::env::var(WRITE_TIMEOUT_ENV) {
        config = config.write_timeout(Duration::from_millis(ms.parse().expect("milliseconds")));
    }
    if let Ok(limits) = std::env::var(LIMITS_ENV) {
        config = apply_limits(config, &limits);
    }
    // As a worker under a supervisor: only the allowed local users.
    if let Some(access) = procwire_rpc::Access::from_env().expect("the allow lists") {
        config = config.allow(access);
    }
    if let Ok(path) = std::env::var(FAILURES_ENV) {
        // Each failed handshake, one line, written before the connection closes.
        config = config.on_handshake_failure(move |e| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open the failures file");
            writeln!(file, "{}", procwire_rpc::ErrorChain(e)).expect("write a failure");
        });
    }
    if let Ok(bytes) = std::env::var(RLIMIT_MSGQUEUE_ENV) {
        let bytes = bytes.parse().expect("bytes");
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MSGQUEUE).expect("getrlimit");
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_MSGQUEUE, bytes, hard).expect("setrlimit");
    }
    let server = Server::new(Conformance::default()).with_config(config);
    let handle = match role.as_str() {
        "unix" if std::env::var_os(COUNT_WRITES_ENV).is_some() => {
            use procwire_rpc::transport::Listener as _;
            let mut listener = unix::Listener::bind(&arg).expect("bind unix socket");
            println!("ready {arg}");
            let mut transport = listener.accept(procwire_rpc::Wait::Block).expect("accept");
            transport.sender = Box::new(CountingSender {
                inner: transport.sender,
                counts: std::sync::Arc::clone(&SERVED),
            });
            server.spawn_connection(transport).expect("spawn server")
        }
        "unix" => {
            let listener = unix::Listener::bind(&arg).expect("bind unix socket");
            let handle = server.spawn(listener).expect("spawn server");
            println!("ready {arg}");
            handle
        }
        "shm" => {
            let listener = shm::Listener::bind(&arg).expect("bind shm socket");
            let handle = server.spawn(listener).expect("spawn server");
            println!("ready {arg}");
            handle
        }
        "mq" => {
            let listener = mq::Listener::bind(&arg).expect("bind mq socket");
            let handle = server.spawn(listener).expect("spawn server");
            println!("ready {arg}");
            handle
        }
        "noise" => {
            let key = NoiseKey::from_env(KEY_ENV).expect("the suite's key");
            let listener = noise::Listener::bind("127.0.0.1:0", vec![key]).expect("bind tcp (noise)");
            let addr = listener.addr();
            let handle = server.spawn(listener).expect("spawn server");
            println!("ready {addr}");
            handle
        }
        "tcp" => {
            let listener = tcp::Listener::bind("127.0.0.1:0").expect("bind tcp+plain");
            let addr = listener.addr();
            let handle = server.spawn(listener).expect("spawn server");
            println!("ready {addr}");
            handle
        }
        "pipe" => server
            .spawn_connection(pipe::from_env().expect("pipe fds"))
            .expect("spawn server"),
        "fifo" => server
            .spawn_connection(fifo::open_timeout(&arg, fifo::Side::Server, LIMIT).expect("open fifos"))
            .expect("spawn server"),
        "evil" => {
            evil_server(&arg);
            return true;
        }
        "mq-fill" => {
            mq_fill();
            return true;
        }
        "local-awaits" => {
            local_awaits();
            return true;
        }
        "pinned-calls" => {
            pinned_calls();
            return true;
        }
        "endpoint-client" => {
            // A client of the endpoint `arg`, which finds its key in the environment.
            let endpoint: procwire_rpc::Endpoint = arg.parse().expect("an endpoint");
            let transport = endpoint
                .connect()
                .unwrap_or_else(|e| panic!("connect to the endpoint: {}", procwire_rpc::ErrorChain(&e)));
            let client = procwire_rpc::Client::connect(transport, info())
                .unwrap_or_else(|e| panic!("handshake: {}", procwire_rpc::ErrorChain(&e)));
            let sum: i64 = client.call(ADD, &(20i64, 22i64), None).expect("call add");
            println!("sum {sum}");
            return true;
        }
        other => panic!("unknown child role {other}"),
    };
    // The parent ends the child gracefully by closing its stdin.
    let stopper = handle.stopper();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stopper.stop();
    });
    if let Err(e) = handle.wait() {
        eprintln!("conformance server: {e}");
        std::process::exit(3);
    }
    true
}

/// The socket of the server a `local-awaits` child calls.
pub const SERVER_ENV: &str = "PROCWIRE_CONFORMANCE_SERVER";

/// Makes 200 awaited calls, one after another, in `Runner::Local`'s `block_on`, and prints
/// how many times the reactor thread was switched to meanwhile: `reactor-switches N`, or
/// `reactor-switches none` if there is no reactor thread.
fn local_awaits() {
    let path = std::env::var(SERVER_ENV).expect("the server's socket");
    let client = procwire_rpc::Client::connect(unix::connect(&path).expect("connect"), info()).expect("handshake");
    let runner = procwire_rpc::Runner::Local;
    // The first watch starts the reactor thread: a call that takes a while, so that it
    // surely waits (an add may be answered before its first poll looks).
    let slept = runner.block_on(client.call_async::<_, u64>(SLOW, &(1u64, 20u64), None));
    assert_eq!(slept.expect("a call"), 20);
    let Some(before) = reactor_switches() else {
        println!("reactor-switches none");
        return;
    };
    runner.block_on(async {
        for i in 0..200i64 {
            let sum: i64 = client.call_async(ADD, &(i, 1i64), None).await.expect("a call");
            assert_eq!(sum, i + 1);
        }
    });
    let after = reactor_switches().expect("the reactor thread");
    println!("reactor-switches {}", after - before);
}

/// Context switches to this process's reactor thread so far, if it has one.
fn reactor_switches() -> Option<u64> {
    let switches = ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"];
    // Thread names are cut to 15 bytes.
    let named = |task: &std::path::Path| {
        std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim() == "procwire-reacto")
    };
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(|task| Some(task.ok()?.path()))
        .any(|task| named(&task))
        .then(|| thread_switches("procwire-reacto", &switches))
}

/// The counts of `fields` (lines of `/proc/self/task/*/status`) summed over this process's
/// threads named `name`.
fn thread_switches(name: &str, fields: &[&str]) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            (comm.trim() == name).then(|| std::fs::read_to_string(dir.join("status")).ok())?
        })
        .flat_map(|status| {
            status
                .lines()
                .filter_map(|line| {
                    let n = fields.iter().find_map(|field| line.strip_prefix(field))?;
                    n.trim().parse::<u64>().ok()
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Set for `pinned-calls`: its rounds run while a call of the same connection is held in
/// its handler.
pub const PINNED_HOLD_ENV: &str = "PROCWIRE_CONFORMANCE_PINNED_HOLD";

/// A blocking caller of the server at `SERVER_ENV`, on the CPUs it was started on: after a
/// warm-up, five rounds of 200 adds, each between two looks at how often the server's
/// connection threads slept; prints `server-sleeps` and each round's count. With
/// `PINNED_HOLD_ENV`, a `hold` of the same connection runs in its handler meanwhile.
fn pinned_calls() {
    let path = std::env::var(SERVER_ENV).expect("the server's socket");
    let client = procwire_rpc::Client::connect(unix::connect(&path).expect("connect"), info()).expect("handshake");
    let add = |i: i64| {
        let sum: i64 = client.call(ADD, &(i, 1i64), None).expect("a call");
        assert_eq!(sum, i + 1);
    };
    std::thread::scope(|s| {
        let hold = std::env::var_os(PINNED_HOLD_ENV).is_some().then(|| {
            let held = s.spawn(|| client.call::<_, bool>(HOLD, &77u64, None).expect("hold"));
            assert!(
                client.call::<_, bool>(WAIT_HELD, &77u64, None).expect("wait_held"),
                "held"
            );
            held
        });
        (0..200).for_each(add);
        let mut rounds = Vec::new();
        for _ in 0..5 {
            let before: u64 = client.call(SLEEPS, &(), None).expect("sleeps");
            (0..200).for_each(add);
            let after: u64 = client.call(SLEEPS, &(), None).expect("sleeps");
            // A thread that left takes its count with it: never below zero.
            rounds.push(after.saturating_sub(before).to_string());
        }
        if let Some(held) = hold {
            client.call::<_, ()>(RELEASE, &77u64, None).expect("release");
            assert!(held.join().expect("the holding thread"), "released");
        }
        println!("server-sleeps {}", rounds.join(" "));
    });
}

/// In an IPC namespace of its own (so that no other test's queues are in the way), creates
/// queues until the kernel refuses one, and prints how many it made and the refusal.
fn mq_fill() {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC) {
        println!("skip: no IPC namespace of its own ({e})");
        return;
    }
    let attrs = mq::Attrs::new(1, 8);
    let mut made = Vec::new();
    loop {
        match mq::Queue::create(&format!("/fill-{}", made.len()), attrs) {
            Ok(queue) => made.push(queue),
            Err(e) => {
                println!("made {} refused {e}", made.len());
                return;
            }
        }
        if made.len() > 100_000 {
            println!("made {} refused nothing", made.len());
            return;
        }
    }
}

/// Runs the child `role` to its end and returns what it printed.
#[allow(dead_code)] // used by tests/mq.rs
pub fn run_child(role: &str, env: &[(&str, String)]) -> String {
    let output = child_command_with(role, "", env)
        .stdin(Stdio::null())
        .output()
        .expect("run the child");
    assert!(output.status.success(), "child {role} failed: {:?}", output.status);
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A server that completes the handshake and then misbehaves as `mode` says.
fn evil_server(mode: &str) {
    use procwire_rpc::protocol::{Envelope, Hello, Kind as FrameKind, Welcome};
    let mut transport = pipe::from_env().expect("pipe fds");
    let hello = transport.recv(procwire_rpc::Wait::Block).expect("hello");
    let hello: Hello = postcard::from_bytes(&hello).expect("decode hello");
    let mut welcome = Frame::new();
    welcome
        .encode(&Welcome {
            accepted: true,
            version: hello.version,
            service: hello.service,
            methods: hello.methods,
        })
        .unwrap();
    transport.send(&mut welcome, procwire_rpc::Wait::Block).unwrap();
    let call = transport.recv(procwire_rpc::Wait::Block).expect("call");
    let (envelope, _) = Envelope::decode(&call).expect("decode call");
    if let Some(frame) = bad_reply_of_bytes(mode, envelope) {
        let (prefix, half) = (frame.len() as u32, frame.len() / 2);
        match mode {
            "bytes-truncated" | "bytes-then-die" => {
                // Half a frame, written raw through the pipe the transport writes to.
                let (_, w) = std::env::var(pipe::ENV_VAR)
                    .unwrap()
                    .split_once(',')
                    .map(|(r, w)| (r.to_owned(), w.to_owned()))
                    .unwrap();
                let mut raw = std::fs::OpenOptions::new()
                    .write(true)
                    .open(format!("/proc/self/fd/{w}"))
                    .unwrap();
                std::io::Write::write_all(&mut raw, &prefix.to_le_bytes()).unwrap();
                std::io::Write::write_all(&mut raw, &frame[..half]).unwrap();
                if mode == "bytes-then-die" {
                    nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
                }
                drop((raw, transport));
            }
            _ => transport
                .send(&mut Frame::from_payload(&frame), procwire_rpc::Wait::Block)
                .unwrap(),
        }
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        return;
    }
    let mut frame = match mode {
        "unknown-id" => {
            let mut f = Envelope {
                id: envelope.id + 1000,
                kind: FrameKind::Reply,
                method: envelope.method,
                timeout_us: None,
            }
            .frame();
            f.encode(&5i64).unwrap();
            f
        }
        "garbage" => Frame::from_payload(&[0xff; 16]),
        "wrong-type" => {
            let mut f = Envelope {
                id: envelope.id,
                kind: FrameKind::Reply,
                method: envelope.method,
                timeout_us: None,
            }
            .frame();
            f.encode("not a number").unwrap();
            f
        }
        "oversized" => Frame::from_payload(&vec![0; 2048]),
        other => panic!("unknown evil mode {other}"),
    };
    transport.send(&mut frame, procwire_rpc::Wait::Block).unwrap();
    // Stay until the parent is done with us.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
}

/// For the `bytes-*` modes of the evil server: the payload of a 300 000-byte reply of
/// bytes to the call `envelope`, its length prefix as `mode` says.
fn bad_reply_of_bytes(mode: &str, envelope: procwire_rpc::protocol::Envelope) -> Option<Vec<u8>> {
    const LEN: u64 = 300_000;
    let count = match mode {
        "bytes-longer-than-frame" => LEN + 1000,
        "bytes-absurd-length" => u64::MAX >> 1,
        "bytes-shorter-than-frame" => LEN - 1000,
        "bytes-truncated" | "bytes-then-die" => LEN,
        _ => return None,
    };
    let reply = procwire_rpc::protocol::Envelope {
        kind: procwire_rpc::protocol::Kind::Reply,
        timeout_us: None,
        ..envelope
    };
    let mut payload = postcard::to_allocvec(&reply).unwrap();
    payload.extend(postcard::to_allocvec(&count).unwrap());
    payload.resize(payload.len() + LEN as usize, 9);
    Some(payload)
}

/// A server child process.
pub struct Peer {
    pub kind: Kind,
    child: Child,
    stdin: Option<ChildStdin>,
    addr: String,
    /// The one connection of a pipe or FIFO server, until taken.
    single: Option<Transport>,
    /// Where the server writes its failed handshakes, if asked to.
    failures: Option<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs a child that connects to `endpoint` with `env` set, calls `add(20, 22)` and prints
/// the sum; returns its output, or its failure.
#[allow(dead_code)] // used by tests/noise.rs, not by the conformance suite
pub fn run_endpoint_client(endpoint: &str, env: &[(&str, String)]) -> Result<String, String> {
    let output = child_command("endpoint-client", endpoint)
        .env_remove("PROCWIRE_KEY_FILE")
        .env_remove("PROCWIRE_KEY")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run the endpoint client");
    match output.status.success() {
        true => Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

/// [`run_endpoint_client`] as user `uid` and group `gid` (no supplementary groups), which
/// needs root.
#[allow(dead_code)] // used by tests/access.rs only
pub fn run_endpoint_client_as(endpoint: &str, uid: u32, gid: u32) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    let output = child_command("endpoint-client", endpoint)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run the endpoint client");
    match output.status.success() {
        true => Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

/// The suite's key as 64 hex digits.
#[allow(dead_code)] // used by tests/noise.rs, not by the conformance suite
pub fn suite_key_hex() -> String {
    hex(&[0x5a; 32])
}

fn child_command(role: &str, arg: &str) -> Command {
    child_command_with(role, arg, &[])
}

fn child_command_with(role: &str, arg: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    // The panic case panics on purpose; keep its report to one line.
    cmd.env(CHILD_ENV, role)
        .env("RUST_BACKTRACE", "0")
        .env("PROCWIRE_CONFORMANCE_ARG", arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Reads the child's "ready ADDR" line, with a deadline.
fn read_ready(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(LIMIT).expect("the child did not report ready in time");
    line.strip_prefix("ready ")
        .unwrap_or_else(|| panic!("the child did not start: {line:?}"))
        .trim()
        .to_owned()
}

impl Peer {
    /// Starts a conformance server over `kind` with `env` set.
    #[allow(dead_code)] // used by tests/mq.rs
    pub fn spawn_with_env(kind: Kind, env: &[(&str, String)]) -> Peer {
        Self::spawn_with(kind, env)
    }

    /// Starts a conformance server over `kind`.
    pub fn spawn(kind: Kind) -> Peer {
        Self::spawn_with(kind, &[])
    }

    /// Starts a conformance server whose replies give up on a client that reads nothing for
    /// `ms` milliseconds.
    pub fn spawn_with_write_timeout(kind: Kind, ms: u64) -> Peer {
        Self::spawn_with(kind, &[(WRITE_TIMEOUT_ENV, ms.to_string())])
    }

    /// Starts a conformance server that sends and accepts frames of up to `len` bytes.
    pub fn spawn_with_max_frame_len(kind: Kind, len: usize) -> Peer {
        Self::spawn_with(kind, &[(MAX_FRAME_ENV, len.to_string())])
    }

    /// Starts a conformance server with limits set by `limits`: `name=value` pairs,
    /// `,`-separated (`max_connections`, `frame_timeout_ms`, `idle_timeout_ms`,
    /// `frame_budget`, `write_timeout_ms`, `handshake_timeout_ms`, `max_calls`).
    #[allow(dead_code)] // used by tests/hostile.rs, not by the conformance suite
    pub fn spawn_with_limits(kind: Kind, limits: &str) -> Peer {
        Self::spawn_with(kind, &[(LIMITS_ENV, limits.to_owned())])
    }

    /// Starts a conformance server that serves, besides root, only `access` (as a supervisor
    /// would tell a worker, in `PROCWIRE_ALLOW_UIDS` and `PROCWIRE_ALLOW_GIDS`).
    #[allow(dead_code)] // used by tests/access.rs only
    pub fn spawn_allowing(kind: Kind, access: &procwire_rpc::Access) -> Peer {
        let env: Vec<(&str, String)> = access.to_env().into_iter().collect();
        Self::spawn_with(kind, &env)
    }

    /// Starts a conformance server that writes each failed handshake to [`failures`](Self::failures).
    #[allow(dead_code)] // used by tests/noise.rs, not by the conformance suite
    pub fn spawn_logging_failures(kind: Kind) -> Peer {
        let path = std::env::temp_dir().join(format!(
            "procwire-failures-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut peer = Self::spawn_with(kind, &[(FAILURES_ENV, path.display().to_string())]);
        peer.failures = Some(path);
        peer
    }

    /// The failed handshakes the server has written, one per line (see
    /// [`spawn_logging_failures`](Self::spawn_logging_failures)).
    #[allow(dead_code)] // used by tests/noise.rs, not by the conformance suite
    pub fn failures(&self) -> String {
        self.failures
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    fn spawn_with(kind: Kind, env: &[(&str, String)]) -> Peer {
        let dir = tempfile::tempdir().expect("temp dir");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut env = env.to_vec();
        if kind == Kind::Noise {
            env.push((KEY_ENV, hex(&[0x5a; 32])));
        }
        let env = env.as_slice();
        match kind {
            Kind::Unix | Kind::Tcp | Kind::Shm | Kind::Noise | Kind::Mq => {
                let path = dir.path().join(format!("s{n}.sock"));
                let mut child = child_command_with(kind.name(), path.to_str().unwrap(), env)
                    .spawn()
                    .expect("spawn child");
                let addr = read_ready(&mut child);
                let stdin = child.stdin.take();
                Peer {
                    kind,
                    child,
                    stdin,
                    addr,
                    single: None,
                    failures: None,
                    _dir: dir,
                }
            }
            Kind::Pipe => {
                let (transport, ends) = pipe::pair().expect("pipes");
                let mut cmd = child_command_with("pipe", "", env);
                ends.pass_to(&mut cmd);
                let mut child = cmd.spawn().expect("spawn child");
                drop(ends);
                let stdin = child.stdin.take();
                Peer {
                    kind,
                    child,
                    stdin,
                    addr: String::new(),
                    single: Some(transport),
                    failures: None,
                    _dir: dir,
                }
            }
            Kind::Fifo => {
                fifo::create(dir.path()).expect("mkfifo");
                let mut child = child_command_with("fifo", dir.path().to_str().unwrap(), env)
                    .spawn()
                    .expect("spawn child");
                let transport = fifo::open_timeout(dir.path(), fifo::Side::Client, LIMIT).expect("open fifos");
                let stdin = child.stdin.take();
                Peer {
                    kind,
                    child,
                    stdin,
                    addr: String::new(),
                    single: Some(transport),
                    failures: None,
                    _dir: dir,
                }
            }
        }
    }

    /// Starts a misbehaving server (see `evil_server`) over a pipe pair.
    pub fn spawn_evil(mode: &str) -> Peer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (transport, ends) = pipe::pair().expect("pipes");
        let mut cmd = child_command("evil", mode);
        ends.pass_to(&mut cmd);
        let mut child = cmd.spawn().expect("spawn child");
        drop(ends);
        let stdin = child.stdin.take();
        Peer {
            kind: Kind::Pipe,
            child,
            stdin,
            addr: String::new(),
            single: Some(transport),
            failures: None,
            _dir: dir,
        }
    }

    /// A new connection to the server (the only one, for pipes and FIFOs).
    pub fn transport(&mut self) -> Transport {
        match self.kind {
            Kind::Unix => unix::connect(&self.addr).expect("connect"),
            Kind::Tcp => tcp::connect(self.addr.as_str()).expect("connect"),
            Kind::Shm => shm::connect(&self.addr).expect("connect"),
            Kind::Mq => mq::connect(&self.addr).expect("connect"),
            Kind::Noise => noise::connect(self.addr.as_str(), &suite_key()).expect("connect and authenticate"),
            Kind::Pipe | Kind::Fifo => self.single.take().expect("a pipe or FIFO server has one connection"),
        }
    }

    /// The listener's address (unix path or tcp host:port).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server to stop gracefully and waits for it to exit; returns its exit code.
    pub fn stop(mut self) -> Option<i32> {
        drop(self.stdin.take());
        self.child.wait().expect("wait for child").code()
    }

    /// Asks the server to stop and waits at most `limit` for it to exit; returns its exit
    /// code, or `None` if it is still running (it is then killed).
    pub fn stop_within(mut self, limit: Duration) -> Option<Option<i32>> {
        drop(self.stdin.take());
        let deadline = Instant::now() + limit;
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // Wait for the exit without reaping, so that a timeout can still kill by handle.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(nix::sys::wait::waitid(
                nix::sys::wait::Id::Pid(pid),
                nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
            ));
        });
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => Some(self.child.wait().expect("wait for child").code()),
            Err(_) => None,
        }
    }

    /// Waits for the child to exit by itself; returns its exit code.
    pub fn wait_exit(mut self) -> Option<i32> {
        self.child.wait().expect("wait for child").code()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(path) = &self.failures {
            let _ = std::fs::remove_file(path);
        }
        // Only ever our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_end(&mut Vec::new());
        }
    }
}

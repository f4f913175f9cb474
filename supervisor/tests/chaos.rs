//! Chaos under load, bounded in time: `procwire up` runs a pool of 4 workers (this test
//! binary, in the worker role) while 8 client threads call it through the pool client and a
//! random worker is SIGKILLed every 200 ms for 10 s. Every call must return the right answer
//! or an explicit error that says whether the call was sent; afterwards the pool is back to 4
//! ready workers, the supervisor has no zombie child, and it holds no more descriptors than
//! before the chaos. And across hosts: two network namespaces joined by a veth pair, a pool
//! on `tcp+noise:` in one, its client in the other, workers killed during the calls.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procwire_rpc::{Delivery, Endpoint, RpcError};

use support::*;

/// Set in the workers' environment by the manifest.
const ROLE_ENV: &str = "PROCWIRE_CHAOS_ROLE";
const WORKERS: usize = 4;
const CALLERS: u64 = 8;
const CHAOS_FOR: Duration = Duration::from_secs(10);
const KILL_EVERY: Duration = Duration::from_millis(200);

#[procwire_macros::service]
pub trait Calc {
    /// Not idempotent on purpose: a call on a dying worker must say what became of it.
    fn add(&self, a: u64, b: u64) -> u64;
}

struct MyCalc;

impl Calc for MyCalc {
    fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// The supervisor's open descriptors, by what they are.
fn descriptors(pid: Pid) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the supervisor's fds")
        .filter_map(|fd| {
            let fd = fd.ok()?;
            let target = std::fs::read_link(fd.path()).ok()?;
            Some(format!("{} -> {}", fd.file_name().to_string_lossy(), target.display()))
        })
        .collect();
    fds.sort();
    fds
}

/// The supervisor's children that are still running (not zombies), and its zombies.
fn children_by_state(pid: Pid) -> (Vec<i64>, Vec<i64>) {
    let (mut running, mut zombies) = (Vec::new(), Vec::new());
    for kid in children(pid).expect("the supervisor's children") {
        match proc_stat(kid).map(|stat| stat.state) {
            Some('Z') => zombies.push(kid),
            Some(_) => running.push(kid),
            None => {}
        }
    }
    (running, zombies)
}

/// Waits until every worker of the pool is ready: the supervisor's last line about each one's
/// life (started, ready, ended) says so. (Asking `status` would open a control connection, whose descriptor the supervisor
/// closes a moment after the client has gone, and spoil the descriptor count.)
fn wait_all_ready(sup: &Supervisor) {
    sup.wait_until(&format!("{WORKERS} ready workers"), |seen| {
        (0..WORKERS)
            .all(|i| {
                let worker = format!("calc.{i} (pid ");
                seen.lines
                    .iter()
                    .rev()
                    .filter(|l| l.text.contains(&worker))
                    .find(|l| ["started", "is ready"].iter().any(|e| l.text.ends_with(e)) || l.text.contains(" ended "))
                    .is_some_and(|l| l.text.ends_with("is ready"))
            })
            .then_some(())
    });
}

/// A small xorshift: which worker to kill next.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn a_pool_of_four_under_eight_callers_survives_a_worker_killed_every_200_ms_for_10_s() -> Result<(), Failed> {
    let dir = temp_dir();
    let d = dir.path().display();
    let exe = std::env::current_exe()?;
    let mut sup = Supervisor::start(
        dir.path(),
        "chaos",
        &format!(
            r#"
[pool.calc]
command = ["{exe}"]
workers = {WORKERS}
ready = "notify"
listen = ["unix:{d}/calc-{{index}}.sock"]
env = {{ {ROLE_ENV} = "worker" }}
backoff = {{ initial = "1ms", max = "50ms" }}
limit = {{ restarts = 100000, within = "60s", start_attempts = 0 }}
"#,
            exe = exe.display()
        ),
    );
    wait_all_ready(&sup);
    let supervisor = sup.pid();
    let fds_before = descriptors(supervisor);
    let endpoints: Vec<Endpoint> = (0..WORKERS)
        .map(|i| Endpoint::Unix(dir.path().join(format!("calc-{i}.sock"))))
        .collect();
    let pool = CalcPool::new(endpoints);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    println!("chaos seed {seed:#x}");
    let done = AtomicBool::new(false);
    let (answered, not_sent, unknown) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let killed = std::thread::scope(|s| {
        for t in 0..CALLERS {
            let (pool, done, answered, not_sent, unknown) = (&pool, &done, &answered, &not_sent, &unknown);
            s.spawn(move || {
                let _stop = StopOnDrop(done);
                let mut i = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let a = t << 40 | i;
                    match pool.add(a, 7) {
                        Ok(sum) => {
                            assert_eq!(sum, a + 7, "a wrong answer");
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(RpcError::Disconnected {
                            delivery: Delivery::NotSent,
                            ..
                        }) => {
                            not_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(RpcError::Disconnected {
                            delivery: Delivery::Unknown,
                            ..
                        }) => {
                            unknown.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("an error that does not say whether the call was sent: {other}"),
                    }
                    i += 1;
                }
            });
        }
        // The killer: a random running worker every 200 ms, for 10 s.
        let mut dice = Dice(seed);
        let mut killed = Vec::new();
        let until = Instant::now() + CHAOS_FOR;
        while Instant::now() < until && !done.load(Ordering::SeqCst) {
            let (running, _) = children_by_state(supervisor);
            if !running.is_empty() {
                let victim = running[dice.roll(running.len())];
                if kill(Pid::from_raw(victim as i32), Signal::SIGKILL).is_ok() {
                    killed.push(victim);
                }
            }
            // The rhythm of the chaos, not a synchronisation: nothing waits for it.
            std::thread::sleep(KILL_EVERY);
        }
        done.store(true, Ordering::SeqCst);
        killed
    });
    let (answered, not_sent, unknown) = (answered.into_inner(), not_sent.into_inner(), unknown.into_inner());
    println!(
        "{} workers killed; {answered} calls answered, {not_sent} not sent, {unknown} of unknown fate",
        killed.len()
    );
    assert!(killed.len() >= 20, "the chaos killed only {} workers", killed.len());
    assert!(answered > 0, "no call was answered");
    drop(pool);
    let settled = Instant::now();
    // Every kill has been noticed (so no restart is still to come), then all are ready.
    sup.wait_until("every killed worker's end reported", |seen| {
        killed
            .iter()
            .all(|pid| {
                let ended = format!("(pid {pid}) ended");
                seen.lines.iter().any(|l| l.text.contains(&ended))
            })
            .then_some(())
    });
    wait_all_ready(&sup);
    println!("back to {WORKERS} ready in {:?}", settled.elapsed());
    let (running, zombies) = children_by_state(supervisor);
    assert_eq!(running.len(), WORKERS, "the supervisor's running children: {running:?}");
    assert_eq!(zombies, Vec::<i64>::new(), "zombie children of the supervisor");
    let fds_after = descriptors(supervisor);
    assert!(
        fds_after.len() <= fds_before.len(),
        "the supervisor holds {} descriptors after the chaos, {} before:\nbefore {fds_before:#?}\nafter {fds_after:#?}",
        fds_after.len(),
        fds_before.len()
    );
    let stopping = Instant::now();
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    println!("stopped in {:?}", stopping.elapsed());
    Ok(())
}

/// Sets its flag when dropped, also while unwinding: a failed caller ends the chaos.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ----- across hosts -----

/// The pre-shared key of the namespaces test, as `PROCWIRE_KEY` wants it.
const KEY_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// The client's endpoints, comma-separated, and how long it calls.
const ENDPOINTS_ENV: &str = "PROCWIRE_CHAOS_ENDPOINTS";
const CALL_FOR_MS_ENV: &str = "PROCWIRE_CHAOS_CALL_FOR_MS";

/// Runs `ip ARGS...`; its error output if it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Two network namespaces joined by a veth pair, `10.231.0.1` in `a` and `.2` in `b`;
/// deleted when dropped.
struct Hosts {
    a: String,
    b: String,
}

impl Hosts {
    fn new() -> Result<Hosts, String> {
        let n = std::process::id();
        let hosts = Hosts {
            a: format!("pw-a-{n}"),
            b: format!("pw-b-{n}"),
        };
        let (va, vb) = (format!("pwa{n}"), format!("pwb{n}"));
        ip(&["netns", "add", &hosts.a])?;
        ip(&["netns", "add", &hosts.b])?;
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", &hosts.a])?;
        ip(&["link", "set", &vb, "netns", &hosts.b])?;
        for (ns, dev, addr) in [(&hosts.a, &va, "10.231.0.1/24"), (&hosts.b, &vb, "10.231.0.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // The veth pair goes with its namespaces.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

fn a_pool_in_one_network_namespace_serves_a_client_in_another_over_tcp_noise_while_workers_die() -> Result<(), Failed> {
    const TEST: &str = "a_pool_in_one_network_namespace_serves_a_client_in_another_over_tcp_noise_while_workers_die";
    if !nix::unistd::geteuid().is_root() {
        println!("skipping {TEST}: network namespaces need root");
        return Ok(());
    }
    let hosts = match Hosts::new() {
        Ok(hosts) => hosts,
        Err(why) => {
            println!("skipping {TEST}: cannot make two network namespaces joined by a veth pair: {why}");
            return Ok(());
        }
    };
    let dir = temp_dir();
    let exe = std::env::current_exe()?;
    let manifest = dir.path().join("hosts.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[pool.calc]
command = ["{exe}"]
workers = 2
ready = "notify"
env = {{ {ROLE_ENV} = "worker", PROCWIRE_LISTEN = "tcp+noise:10.231.0.1:1700{{index}}", PROCWIRE_KEY = "{KEY_HEX}" }}
backoff = {{ initial = "1ms", max = "50ms" }}
limit = {{ restarts = 100000, within = "60s", start_attempts = 0 }}
"#,
            exe = exe.display()
        ),
    )?;
    let manifest = manifest.display().to_string();
    let mut sup = Supervisor::spawn_program(
        "ip",
        &[
            "netns",
            "exec",
            &hosts.a,
            env!("CARGO_BIN_EXE_procwire"),
            "up",
            &manifest,
        ],
        None,
    );
    for i in 0..2 {
        sup.wait_until(&format!("calc.{i} ready"), |seen| {
            let worker = format!("calc.{i} (pid ");
            seen.lines
                .iter()
                .any(|l| l.text.contains(&worker) && l.text.ends_with("is ready"))
                .then_some(())
        });
    }
    // The client, in the other namespace: it reaches the pool only over the veth pair.
    let mut client = std::process::Command::new("ip")
        .args(["netns", "exec", &hosts.b])
        .arg(&exe)
        .env(ROLE_ENV, "client")
        .env(ENDPOINTS_ENV, "tcp+noise:10.231.0.1:17000,tcp+noise:10.231.0.1:17001")
        .env(CALL_FOR_MS_ENV, "3000")
        .env("PROCWIRE_KEY", KEY_HEX)
        .env_remove("PROCWIRE_KEY_FILE")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let lines = {
        let stdout = client.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let first = lines.recv_timeout(DEADLINE).expect("the client says it is calling");
    assert_eq!(first, "calling", "the client's first line");
    // Kill a worker every 300 ms until the client is done.
    let mut dice = Dice(u64::from(std::process::id()) | 1);
    let (mut killed, mut said) = (0, Vec::new());
    let deadline = Instant::now() + DEADLINE * 3;
    loop {
        assert!(Instant::now() < deadline, "the client never finished: {said:?}");
        match lines.recv_timeout(Duration::from_millis(300)) {
            Ok(line) => said.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let (running, _) = children_by_state(sup.pid());
                if !running.is_empty()
                    && kill(Pid::from_raw(running[dice.roll(running.len())] as i32), Signal::SIGKILL).is_ok()
                {
                    killed += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = client.wait()?;
    println!("{killed} workers killed across the namespaces; the client said {said:?}");
    assert!(status.success(), "the client failed ({status}): {said:?}");
    let answered: u64 = said
        .iter()
        .find_map(|l| l.strip_prefix("answered "))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count in {said:?}"));
    assert!(answered > 0 && killed > 0, "answered {answered}, killed {killed}");
    sup.signal(Signal::SIGTERM);
    sup.expect_exit(0);
    drop(hosts);
    Ok(())
}

/// In the other namespace: calls the pool on `PROCWIRE_CHAOS_ENDPOINTS` from 4 threads for
/// `PROCWIRE_CHAOS_CALL_FOR_MS`; says `calling` after the first answer and `answered N
/// not-sent M unknown K` at the end. A wrong answer, or an error that does not say whether
/// the call was sent, fails it.
fn client_main() {
    let endpoints: Vec<Endpoint> = std::env::var(ENDPOINTS_ENV)
        .expect("the endpoints")
        .split(',')
        .map(|e| e.parse().expect("an endpoint"))
        .collect();
    let call_for = Duration::from_millis(std::env::var(CALL_FOR_MS_ENV).expect("a duration").parse().expect("ms"));
    let pool = CalcPool::new(endpoints);
    let first = pool
        .add(1, 2)
        .unwrap_or_else(|e| panic!("the first call: {}", procwire_rpc::ErrorChain(&e)));
    assert_eq!(first, 3);
    println!("calling");
    let until = Instant::now() + call_for;
    let (answered, not_sent, unknown) = (AtomicU64::new(1), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (pool, answered, not_sent, unknown) = (&pool, &answered, &not_sent, &unknown);
            s.spawn(move || {
                let mut i = 0;
                while Instant::now() < until {
                    let a = t << 40 | i;
                    match pool.add(a, 7) {
                        Ok(sum) => {
                            assert_eq!(sum, a + 7, "a wrong answer");
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(RpcError::Disconnected { delivery, .. }) => {
                            let count = match delivery {
                                Delivery::NotSent => not_sent,
                                _ => unknown,
                            };
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("an error that does not say whether the call was sent: {other}"),
                    }
                    i += 1;
                }
            });
        }
    });
    println!(
        "answered {} not-sent {} unknown {}",
        answered.into_inner(),
        not_sent.into_inner(),
        unknown.into_inner()
    );
}

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("worker") => {
            procwire_workers::Worker::new()
                .serve(CalcServer::new(MyCalc))
                .expect("serve");
            return;
        }
        Ok("client") => {
            client_main();
            return;
        }
        _ => {}
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "a_pool_of_four_under_eight_callers_survives_a_worker_killed_every_200_ms_for_10_s",
            a_pool_of_four_under_eight_callers_survives_a_worker_killed_every_200_ms_for_10_s,
        ),
        Trial::test(
            "a_pool_in_one_network_namespace_serves_a_client_in_another_over_tcp_noise_while_workers_die",
            a_pool_in_one_network_namespace_serves_a_client_in_another_over_tcp_noise_while_workers_die,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

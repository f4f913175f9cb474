//! Many callers on one connection: whoever reads for the others may give up (its deadline)
//! and the others still get their replies; a server on one CPU still serves a request read
//! behind a call that blocks.

use std::time::{Duration, Instant};

use std::sync::Arc;

use procwire_rpc::serde_bytes::ByteBuf;
use procwire_rpc::{Client, RpcError};

use super::awaited::{run_all, Task};
use super::{connect, soon, Outcome};
use crate::support::*;

/// A caller whose deadline ends while it reads for the others hands the reading on: four
/// callers wait behind a reader that times out before their replies come, and each gets its
/// reply (without the hand-on they would sleep until their own, far deadlines). Then eight
/// threads mix calls that time out with quick ones, and every quick one is answered.
pub(crate) fn callers_that_time_out_while_reading_hand_the_reading_on(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    // A second connection to watch the server.
    let watch = connect(&mut peer);
    for round in 0..3u64 {
        let reader = 100 + round * 10;
        std::thread::scope(|s| -> Outcome {
            let client = &client;
            // Alone on the connection, so it reads; gives up at 100 ms, long before any
            // reply comes (its own after 2 s).
            let timed_out = s.spawn(move || {
                let deadline = Some(Instant::now() + Duration::from_millis(100));
                client.call::<_, u64>(SLOW, &(reader, 2_000u64), deadline)
            });
            // Its call has reached the server, so it is waiting for the reply: reading.
            assert!(watch.call::<_, bool>(WAIT_HELD, &reader, soon())?);
            let waiting: Vec<_> = (1..=4u64)
                .map(|n| s.spawn(move || client.call::<_, u64>(SLOW, &(reader + n, 300u64), soon())))
                .collect();
            let err = timed_out.join().expect("the reader thread").unwrap_err();
            assert!(matches!(err, RpcError::DeadlineExceeded { .. }), "{err}");
            for waiter in waiting {
                assert_eq!(waiter.join().expect("a waiting thread")?, 300);
            }
            Ok(())
        })?;
    }
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..5u64 {
                    let deadline = Some(Instant::now() + Duration::from_millis(5));
                    let err = client
                        .call::<_, u64>(SLOW, &(1000 + t * 100 + i, 50u64), deadline)
                        .unwrap_err();
                    assert!(matches!(err, RpcError::DeadlineExceeded { .. }), "{err}");
                }
            });
        }
        for t in 0..4i64 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..200i64 {
                    let sum: i64 = client.call(ADD, &(t, i), soon()).expect("a quick call");
                    assert_eq!(sum, t + i);
                }
            });
        }
    });
    assert_eq!(client.call::<_, i64>(ADD, &(1i64, 2i64), soon())?, 3);
    Ok(())
}

/// Runs `f` with this thread pinned to one CPU (children started meanwhile inherit it),
/// then restores its affinity.
fn on_one_cpu<T>(f: impl FnOnce() -> T) -> T {
    let cpu = allowed_cpus().first().copied().expect("a CPU");
    on_cpu(cpu, f)
}

/// Two CPUs this thread may run on, for a server and its client; `None`, saying that the
/// test is skipped, if it may run on one only.
fn two_cpus() -> Option<(usize, usize)> {
    let cpus = allowed_cpus();
    let [server, client, ..] = cpus[..] else {
        println!("skipped: this test may run on {cpus:?}, and needs two CPUs");
        return None;
    };
    Some((server, client))
}

/// The CPUs this thread may run on.
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let set = sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("sched_getaffinity");
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// Runs `f` with this thread pinned to `cpu` (children started meanwhile inherit it), then
/// restores its affinity.
fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let before = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let mut one = CpuSet::new();
    one.set(cpu).expect("a CPU in the set");
    sched_setaffinity(Pid::from_raw(0), &one).expect("pin");
    let out = f();
    sched_setaffinity(Pid::from_raw(0), &before).expect("unpin");
    out
}

/// A server thread whose client can never run on its CPU looks for the next request for a
/// while before it sleeps, so a blocking caller's next request, sent as soon as its reply
/// came, finds it awake: the server pinned to one CPU, a caller child pinned to another,
/// five rounds of 200 adds, and in the best round the connection's threads slept for fewer
/// than half of the calls (each call put one to sleep before; the best of five, because a
/// loaded machine can deschedule the caller past the longest look in any round). But not
/// while a handler of the connection runs, which may need the CPU the look would hold: with
/// a call held in its handler meanwhile, every round sleeps for most calls.
pub(crate) fn a_server_apart_from_its_client_looks_for_the_next_request_before_sleeping(kind: Kind) -> Outcome {
    let Some((server_cpu, client_cpu)) = two_cpus() else {
        return Ok(());
    };
    let sleeps = |env: &[(&str, String)]| -> Vec<u64> {
        let peer = on_cpu(server_cpu, || Peer::spawn(kind));
        let mut env = env.to_vec();
        env.push((SERVER_ENV, peer.addr().to_owned()));
        let out = on_cpu(client_cpu, || run_child("pinned-calls", &env));
        out.strip_prefix("server-sleeps ")
            .map(|counts| counts.split(' ').filter_map(|n| n.parse().ok()).collect())
            .filter(|rounds: &Vec<u64>| rounds.len() == 5)
            .unwrap_or_else(|| panic!("the child printed {out:?}"))
    };
    let alone = sleeps(&[]);
    println!("alone, the server's connection threads slept {alone:?} times in rounds of 200 calls");
    let best = alone.iter().min().copied().expect("five rounds");
    assert!(
        best < 100,
        "the server's connection threads slept {alone:?} times in rounds of 200 calls"
    );
    let beside = sleeps(&[(PINNED_HOLD_ENV, "1".into())]);
    println!("beside a held call, they slept {beside:?} times");
    let least = beside.iter().min().copied().expect("five rounds");
    assert!(
        least >= 150,
        "with a handler running, the connection's threads should sleep between requests, not \
         spin: they slept {beside:?} times in rounds of 200 calls"
    );
    Ok(())
}

/// A server pinned to one CPU takes requests that one read brought one after another on
/// one thread; a request behind a call that blocks is still served (a helper takes it once
/// the backlog has waited the grace period).
pub(crate) fn on_one_cpu_a_request_read_behind_a_blocking_call_is_served(kind: Kind) -> Outcome {
    let mut peer = on_one_cpu(|| Peer::spawn(kind));
    let client = connect(&mut peer);
    for token in 0..20u64 {
        // Sent back to back, so that one read usually brings both: the hold blocks its
        // thread until the release, which only another thread can take.
        let held = client.start::<_, bool>(HOLD, &(500 + token), soon())?;
        let released = client.start::<_, ()>(RELEASE, &(500 + token), soon())?;
        released.wait()?;
        assert!(held.wait()?, "the held call {token} was released");
    }
    Ok(())
}

/// Voluntary context switches of every thread of process `pid`, summed.
fn voluntary_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Gives the first connection of `peer` spare threads: `n` calls held at once (confirmed
/// through `watch`), then released.
fn start_spare_threads(client: &procwire_rpc::Client, watch: &procwire_rpc::Client, n: u64, base: u64) -> Outcome {
    let held = (base..base + n)
        .map(|token| client.start::<_, bool>(HOLD, &token, soon()))
        .collect::<Result<Vec<_>, _>>()?;
    for token in base..base + n {
        assert!(watch.call::<_, bool>(WAIT_HELD, &token, soon())?, "call {token} held");
    }
    for token in base..base + n {
        watch.call::<_, ()>(RELEASE, &token, soon())?;
    }
    for call in held {
        assert!(call.wait()?);
    }
    Ok(())
}

/// On one CPU, a connection's idle threads do not all wake for a large request: only one
/// of them sleeps with the descriptor. A 1 MiB request arrives in several socket buffers,
/// and each buffer's wake-up went to another idle thread (each a context switch for
/// nothing); with ten idle threads it switched about nine times per echo, now about twice.
pub(crate) fn on_one_cpu_a_large_request_wakes_one_idle_thread(kind: Kind) -> Outcome {
    on_one_cpu(|| -> Outcome {
        let mut peer = Peer::spawn(kind);
        let client = connect(&mut peer);
        let watch = connect(&mut peer);
        start_spare_threads(&client, &watch, 9, 700)?;
        let payload = procwire_rpc::serde_bytes::ByteBuf::from(vec![5u8; 1 << 20]);
        let echoes = 40u64;
        let before = voluntary_switches(peer.pid());
        for _ in 0..echoes {
            let back: procwire_rpc::serde_bytes::ByteBuf = client.call(ECHO, &payload, soon())?;
            assert_eq!(back.len(), payload.len());
        }
        let switches = voluntary_switches(peer.pid()) - before;
        eprintln!("{switches} server context switches in {echoes} echoes");
        assert!(
            switches < 5 * echoes,
            "{switches} voluntary context switches of the server in {echoes} echoes of 1 MiB"
        );
        Ok(())
    })
}

/// On one CPU, while the thread that watched the descriptor runs a call that blocks and
/// the others sleep in reserve, a request that arrives then is still served: the reserve
/// takes over the watch once the grace period (2 ms) passes. Without the hand-over it would
/// wait for a reserve's spare thread timeout (10 s), past these calls' deadlines (5 s).
pub(crate) fn on_one_cpu_a_request_behind_blocking_calls_is_read_by_a_reserve_thread(kind: Kind) -> Outcome {
    let mut peer = on_one_cpu(|| Peer::spawn(kind));
    let client = connect(&mut peer);
    let watch = connect(&mut peer);
    start_spare_threads(&client, &watch, 4, 800)?;
    let within = || Some(Instant::now() + Duration::from_secs(5));
    for round in 0..5u64 {
        let (a, b) = (900 + round * 2, 901 + round * 2);
        let held_a = client.start::<_, bool>(HOLD, &a, soon())?;
        assert!(watch.call::<_, bool>(WAIT_HELD, &a, within())?);
        let held_b = client.start::<_, bool>(HOLD, &b, soon())?;
        assert!(watch.call::<_, bool>(WAIT_HELD, &b, within())?);
        // Sent on the held calls' connection, after both are running.
        client.call::<_, ()>(RELEASE, &a, within())?;
        client.call::<_, ()>(RELEASE, &b, within())?;
        assert!(held_a.wait()? && held_b.wait()?);
    }
    Ok(())
}

/// A server on one CPU writes the replies to requests one read brought in one write: each
/// reply but the last waits for the next one's. Eight tasks on one client call in turn, so
/// that their calls leave together (one client write, one server read); the server counts
/// its writes (`WRITES`). Without the held-back replies, every reply is a write of its own.
pub(crate) fn on_one_cpu_replies_to_requests_read_together_leave_in_one_write(kind: Kind) -> Outcome {
    let mut peer = on_one_cpu(|| Peer::spawn_with_env(kind, &[(COUNT_WRITES_ENV, "1".into())]));
    let mut transport = peer.transport();
    let counts = Arc::new(Counts::default());
    transport.sender = Box::new(CountingSender {
        inner: transport.sender,
        counts: Arc::clone(&counts),
    });
    let client = Client::connect(transport, info()).expect("connect and handshake");
    const CALLS: u64 = 800;
    let tasks = (0..8i64)
        .map(|t| {
            let client = client.clone();
            Box::pin(async move {
                for i in 0..CALLS as i64 / 8 {
                    let sum: i64 = client.call_async(ADD, &(t, i), soon()).await.expect("awaited call");
                    assert_eq!(sum, t + i);
                }
            }) as Task<'_>
        })
        .collect();
    run_all(tasks);
    let (writes, frames): (u64, u64) = client.call(WRITES, &(), soon())?;
    // The handshake's welcome, then the replies.
    assert_eq!(frames, 1 + CALLS, "every reply was written");
    let replies = writes - 1;
    assert!(
        replies * 2 <= CALLS,
        "{CALLS} replies in {replies} writes: few were written together"
    );
    let sent = counts.writes.load(std::sync::atomic::Ordering::SeqCst) as u64;
    assert!(
        sent * 2 <= CALLS,
        "{CALLS} calls in {sent} client writes: few left together"
    );
    Ok(())
}

/// A reply held back for the next write is not held up by the next call when that call
/// blocks: on one CPU, an `add` and a `hold` arrive in one write (so in one read); the
/// add's reply waits for the hold's, and the backlog timer's helper writes it once the
/// hold has blocked for the grace period. Without the helper's flush, the add would be
/// answered only once the hold is released, after its deadline.
pub(crate) fn on_one_cpu_a_reply_held_back_is_not_held_up_by_a_call_that_blocks(kind: Kind) -> Outcome {
    let mut peer = on_one_cpu(|| Peer::spawn(kind));
    let watch = connect(&mut peer);
    for token in 0..5u64 {
        let mut transport = peer.transport();
        transport.sender = Box::new(GatherSender {
            inner: transport.sender,
            // The hello, two holds and an add as usual; then the two calls together.
            pass: 4,
            gather: 2,
            held: Vec::new(),
        });
        let client = Client::connect(transport, info()).expect("connect and handshake");
        // Replies are held back only while a thread sleeps to be woken for them: give the
        // connection spare threads, and let them settle through a round trip.
        start_spare_threads(&client, &watch, 2, 800 + token * 10)?;
        assert_eq!(client.call::<_, i64>(ADD, &(1i64, 1i64), soon())?, 2);
        let sum = client.start::<_, i64>(ADD, &(40i64, 2i64), Some(Instant::now() + Duration::from_secs(10)))?;
        let held = client.start::<_, bool>(HOLD, &(700 + token), soon())?;
        assert_eq!(sum.wait()?, 42, "the add was answered while the hold blocked");
        watch.call::<_, ()>(RELEASE, &(700 + token), soon())?;
        assert!(held.wait()?, "the hold {token} was released");
    }
    Ok(())
}

/// Megabyte echoes between a server pinned to one CPU and a caller pinned to another, where
/// each large frame is published as it is encoded and copied out meanwhile: every one comes
/// back intact, whatever its pieces' sizes (a payload that is no whole number of pieces
/// included).
pub(crate) fn megabyte_echoes_between_two_cpus_come_back_intact(kind: Kind) -> Outcome {
    let Some((server_cpu, client_cpu)) = two_cpus() else {
        return Ok(());
    };
    let mut peer = on_cpu(server_cpu, || Peer::spawn(kind));
    on_cpu(client_cpu, || -> Outcome {
        let client = connect(&mut peer);
        for round in 0..40u32 {
            let len = (1 << 20) - 4099 * (round as usize % 7) + round as usize;
            let data = ByteBuf::from(
                (0..len as u32)
                    .map(|i| (i ^ (i >> 11) ^ round) as u8)
                    .collect::<Vec<u8>>(),
            );
            let back: ByteBuf = client.call(ECHO, &data, soon())?;
            assert!(back == data, "echo {round} of {len} bytes came back different");
        }
        Ok(())
    })
}

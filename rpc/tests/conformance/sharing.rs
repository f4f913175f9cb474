//! Many callers on one connection: whoever reads for the others may give up (its deadline)
//! and the others still get their replies; a server on one CPU still serves a request read
//! behind a call that blocks.

use std::time::{Duration, Instant};

use procwire_rpc::RpcError;

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
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let before = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let cpu = (0..CpuSet::count())
        .find(|&c| before.is_set(c).unwrap_or(false))
        .expect("a CPU");
    let mut one = CpuSet::new();
    one.set(cpu).expect("a CPU in the set");
    sched_setaffinity(Pid::from_raw(0), &one).expect("pin");
    let out = f();
    sched_setaffinity(Pid::from_raw(0), &before).expect("unpin");
    out
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

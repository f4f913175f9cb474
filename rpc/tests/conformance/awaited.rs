//! Awaited calls on every transport: many in flight on one thread's executor, beside
//! blocking callers on the same connection, large replies, deadlines.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use procwire_rpc::serde_bytes::ByteBuf;
use procwire_rpc::{Client, RpcError};

use super::{connect, soon, Outcome};
use crate::support::*;

/// Wakes the thread that runs [`run_all`], and says it did.
struct Unpark(std::thread::Thread, AtomicBool);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.1.store(true, Ordering::SeqCst);
        self.0.unpark();
    }
}

/// How long the executor waits for a wake-up before it calls one lost: far longer than any
/// reply takes, even on a loaded machine.
const LOST: Duration = Duration::from_secs(20);

pub(crate) type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// A minimal executor: polls every task on this thread until all are done, parking until
/// one is woken. No runtime, no reactor of its own. A wake-up that never comes fails the
/// test instead of hanging it.
pub(crate) fn run_all(mut tasks: Vec<Task<'_>>) {
    let unpark = Arc::new(Unpark(std::thread::current(), AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    while !tasks.is_empty() {
        unpark.1.store(false, Ordering::SeqCst);
        tasks.retain_mut(|task| task.as_mut().poll(&mut cx).is_pending());
        let parked = Instant::now();
        while !tasks.is_empty() && !unpark.1.load(Ordering::SeqCst) {
            assert!(parked.elapsed() < LOST, "a pending call was never woken");
            std::thread::park_timeout(LOST);
        }
    }
}

/// Marks its task woken, and wakes the thread that runs [`run_woken`].
struct Mark {
    task: usize,
    woken: Arc<std::sync::Mutex<Vec<bool>>>,
    thread: std::thread::Thread,
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.woken.lock().unwrap()[self.task] = true;
        self.thread.unpark();
    }
}

/// An executor as tokio's: each task has its own waker, and only tasks woken are polled
/// again (where [`run_all`] polls every task on any wake-up). A wake-up that never comes
/// fails the test.
pub(crate) fn run_woken(mut tasks: Vec<Task<'_>>) {
    let woken = Arc::new(std::sync::Mutex::new(vec![true; tasks.len()]));
    let wakers: Vec<Waker> = (0..tasks.len())
        .map(|task| {
            Waker::from(Arc::new(Mark {
                task,
                woken: Arc::clone(&woken),
                thread: std::thread::current(),
            }))
        })
        .collect();
    let mut done = vec![false; tasks.len()];
    while done.iter().any(|d| !d) {
        let parked = Instant::now();
        let ready: Vec<usize> = loop {
            let ready: Vec<usize> = {
                let mut woken = woken.lock().unwrap();
                (0..woken.len()).filter(|&t| std::mem::take(&mut woken[t])).collect()
            };
            if !ready.is_empty() {
                break ready;
            }
            assert!(parked.elapsed() < LOST, "a pending call was never woken");
            std::thread::park_timeout(LOST);
        };
        for t in ready {
            if !done[t] {
                let mut cx = Context::from_waker(&wakers[t]);
                done[t] = tasks[t].as_mut().poll(&mut cx).is_ready();
            }
        }
    }
}

pub fn awaited_calls_share_a_connection_with_blocking_ones(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    std::thread::scope(|s| {
        for t in 0..2i64 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..300i64 {
                    let sum: i64 = client.call(ADD, &(t, i), soon()).expect("blocking call");
                    assert_eq!(sum, t + i);
                }
            });
        }
        for t in 2..4i64 {
            let client = client.clone();
            s.spawn(move || {
                let tasks = (0..8i64)
                    .map(|k| {
                        let client = client.clone();
                        Box::pin(async move {
                            for i in 0..40i64 {
                                let sum: i64 = client
                                    .call_async(ADD, &(t * 100 + k, i), soon())
                                    .await
                                    .expect("awaited call");
                                assert_eq!(sum, t * 100 + k + i);
                            }
                        }) as Task<'_>
                    })
                    .collect();
                run_all(tasks);
            });
        }
    });
    // A large reply, read by the awaiting task itself.
    let data = ByteBuf::from(vec![9u8; 1 << 20]);
    let mut back = None;
    run_all(vec![Box::pin(async {
        back = Some(client.call_async::<_, ByteBuf>(ECHO, &data, soon()).await);
    })]);
    assert!(back.expect("ran")? == data, "the echo came back different");
    // A missed deadline, then the connection goes on.
    let mut late = None;
    run_all(vec![Box::pin(async {
        let deadline = Some(Instant::now() + Duration::from_millis(100));
        late = Some(client.call_async::<_, u64>(SLOW, &(1u64, 3_000u64), deadline).await);
    })]);
    let err = late.expect("ran").unwrap_err();
    assert!(
        matches!(err, RpcError::DeadlineExceeded { method: "slow", .. }),
        "{err}"
    );
    let mut after = None;
    run_all(vec![Box::pin(async {
        after = Some(client.call_async::<_, i64>(ADD, &(1i64, 2i64), soon()).await);
    })]);
    assert_eq!(after.expect("ran")?, 3);
    Ok(())
}

pub fn an_awaited_call_to_a_peer_that_dies_fails_promptly(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let pid = nix::unistd::Pid::from_raw(peer.pid() as i32);
    let mut held = None;
    std::thread::scope(|s| {
        // Once the server holds the awaited call, it is SIGKILLed: no blocking caller reads
        // the connection afterwards, so the awaited call must see the death itself.
        s.spawn(|| {
            assert!(client
                .call::<_, bool>(WAIT_HELD, &1u64, soon())
                .expect("wait until held"));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the server");
        });
        // No deadline: only the peer's death can end it, and the executor fails the test if
        // nothing wakes it.
        run_all(vec![Box::pin(async {
            held = Some(client.call_async::<_, bool>(HOLD, &1u64, None).await);
        })]);
    });
    let err = held.expect("ran").unwrap_err();
    assert!(matches!(err, RpcError::Disconnected { method: "hold", .. }), "{err}");
    Ok(())
}

/// Eight tasks on one thread's executor, each calling in turn: the replies one read brings
/// wake their tasks, and the calls those tasks make next leave together, in one write,
/// once the last of them has taken its reply. Without that, every call is a write of its
/// own (one thread never finds the writer busy).
pub fn awaited_calls_made_on_waking_leave_in_one_write(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let mut transport = peer.transport();
    let counts = Arc::new(Counts::default());
    transport.sender = Box::new(CountingSender {
        inner: transport.sender,
        counts: Arc::clone(&counts),
    });
    let client = Client::connect(transport, info()).expect("connect and handshake");
    let tasks = (0..8i64)
        .map(|t| {
            let client = client.clone();
            Box::pin(async move {
                for i in 0..100i64 {
                    let sum: i64 = client.call_async(ADD, &(t, i), soon()).await.expect("awaited call");
                    assert_eq!(sum, t + i);
                }
            }) as Task<'_>
        })
        .collect();
    run_all(tasks);
    let (writes, frames) = (
        counts.writes.load(Ordering::SeqCst),
        counts.frames.load(Ordering::SeqCst),
    );
    // The handshake's hello and the 800 calls.
    assert_eq!(frames, 801, "every frame was written");
    assert!(writes < frames, "{frames} frames in {writes} writes: none was combined");
    Ok(())
}

/// Tasks that end, or go on to wait for something else, right after taking their reply do
/// not strand the calls other tasks made meanwhile: the last woken task leaves the write of
/// the frames deferred behind it to the next poll of a call, and wakes a waiting task to
/// make it should it start none itself. Task `t` of eight makes `1 + 3 * (7 - t)` calls, so
/// that tasks end while others still call, each often the last of its batch to be polled;
/// without the wake-up, a stranded call is never written and its deadline fails the test.
/// The executor polls only the tasks woken ([`run_woken`]), as tokio's does.
pub fn tasks_that_end_do_not_strand_the_calls_deferred_behind_them(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    for round in 0..20i64 {
        let tasks = (0..8i64)
            .map(|t| {
                let client = client.clone();
                Box::pin(async move {
                    for i in 0..1 + 3 * (7 - t) {
                        let deadline = Some(Instant::now() + Duration::from_secs(10));
                        let sum: i64 = client
                            .call_async(ADD, &(round * 100 + t, i), deadline)
                            .await
                            .expect("awaited call");
                        assert_eq!(sum, round * 100 + t + i);
                    }
                }) as Task<'_>
            })
            .collect();
        run_woken(tasks);
    }
    Ok(())
}

/// A thread blocked in `Runner::Local`'s `block_on` polls the connection its awaited calls
/// watch itself: 200 calls one after another wake the reactor thread hardly at all (a
/// child process makes them, so that no other test's calls use its reactor). Left to the
/// reactor thread, each call's watch woke it twice: once to add the watch, once when the
/// reply came.
pub fn a_blocked_local_runner_polls_its_calls_connection_itself(kind: Kind) -> Outcome {
    let peer = Peer::spawn(kind);
    let out = run_child("local-awaits", &[(SERVER_ENV, peer.addr().to_owned())]);
    let switches: u64 = out
        .strip_prefix("reactor-switches ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the child printed {out:?}"));
    assert!(
        switches <= 20,
        "the reactor thread was switched to {switches} times in 200 calls"
    );
    Ok(())
}

/// A call left pending when the `block_on` that polled it returns is watched by the
/// reactor thread from then on: awaited on another thread under an executor that only
/// parks, it is still woken when its reply comes. Were the watch left with the ended
/// `block_on`, nobody would poll the connection and the executor would report the lost
/// wake-up.
pub fn a_call_outliving_its_local_runner_is_still_woken(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let watch = connect(&mut peer);
    let mut call = Box::pin(client.call_async::<_, bool>(HOLD, &900u64, soon()));
    // Polled once inside, so that it watches the connection from there; then left pending.
    let first = procwire_rpc::Runner::Local.block_on(std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))));
    assert!(first.is_pending(), "the hold was answered before it was released");
    assert!(watch.call::<_, bool>(WAIT_HELD, &900u64, soon())?);
    std::thread::scope(|s| -> Outcome {
        let waiter = s.spawn(move || {
            let mut released = None;
            run_all(vec![Box::pin(async {
                released = Some(call.await);
            })]);
            released.expect("ran")
        });
        watch.call::<_, ()>(RELEASE, &900u64, soon())?;
        assert!(waiter.join().expect("the waiting thread")?, "the hold was released");
        Ok(())
    })
}

/// Blocking calls made while the write of deferred frames is owed to the next poll (the
/// last woken task took its reply: see `tasks_that_end_do_not_strand_...`) are deferred
/// too, and write them before they wait: else a blocking caller would wait for the reply to
/// a call it never sent. Two threads call blocking while eight tasks on a third, polled only
/// when woken, call awaited, on one client; every call has a deadline far past what it
/// takes. Without the write before the wait, four runs of the suite's seven transports in
/// five lost a call somewhere (`awaited_calls_share_a_connection_with_blocking_ones`, whose
/// executor polls every task on any wake-up, one run in twelve).
pub fn blocking_calls_made_while_a_write_is_owed_write_it_before_waiting(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let deadline = || Some(Instant::now() + Duration::from_secs(10));
    std::thread::scope(|s| {
        for t in 0..2i64 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..1000i64 {
                    let sum: i64 = client.call(ADD, &(t, i), deadline()).expect("blocking call");
                    assert_eq!(sum, t + i);
                }
            });
        }
        let client = client.clone();
        s.spawn(move || {
            for round in 0..10i64 {
                let tasks = (0..8i64)
                    .map(|k| {
                        let client = client.clone();
                        Box::pin(async move {
                            for i in 0..1 + 3 * (7 - k) {
                                let sum: i64 = client
                                    .call_async(ADD, &(round * 100 + k, i), deadline())
                                    .await
                                    .expect("awaited call");
                                assert_eq!(sum, round * 100 + k + i);
                            }
                        }) as Task<'_>
                    })
                    .collect();
                run_woken(tasks);
            }
        });
    });
    Ok(())
}

/// An executor run inside `Runner::Local`'s `block_on` (a handler's sync code awaiting with
/// another executor) waits for its calls' replies with its own waker: their connection is
/// watched by the reactor thread, not left to the `block_on` around it, which cannot poll
/// while the inner executor parks. Were it left there, nothing would wake the inner one.
pub fn an_executor_inside_a_local_runner_is_woken_for_its_calls(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let watch = connect(&mut peer);
    std::thread::scope(|s| -> Outcome {
        let releaser = s.spawn(|| -> Outcome {
            assert!(watch.call::<_, bool>(WAIT_HELD, &960u64, soon())?);
            watch.call::<_, ()>(RELEASE, &960u64, soon())?;
            Ok(())
        });
        let released = procwire_rpc::Runner::Local.block_on(async {
            let mut released = None;
            run_all(vec![Box::pin(async {
                released = Some(client.call_async::<_, bool>(HOLD, &960u64, soon()).await);
            })]);
            released.expect("ran")
        });
        assert!(released?, "the hold was released");
        releaser.join().expect("the releasing thread")
    })
}

/// A `block_on` inside a `block_on` awaits a call on a connection the outer one's task
/// watches: the outer's watches go to the reactor thread while the inner runs (the outer
/// cannot poll meanwhile), so the inner call is woken. Were they left with the outer, the
/// inner call would see the connection watched and wait for a wake-up nobody sends.
pub fn a_local_runner_inside_another_is_woken_for_its_calls(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let watch = connect(&mut peer);
    std::thread::scope(|s| -> Outcome {
        let releaser = s.spawn(|| -> Outcome {
            assert!(watch.call::<_, bool>(WAIT_HELD, &970u64, soon())?);
            assert!(watch.call::<_, bool>(WAIT_HELD, &971u64, soon())?);
            watch.call::<_, ()>(RELEASE, &971u64, soon())?;
            Ok(())
        });
        let local = procwire_rpc::Runner::Local;
        let (outer, inner) = local.block_on(async {
            let mut outer = Box::pin(client.call_async::<_, bool>(HOLD, &970u64, soon()));
            // Polled once: its task now watches the connection.
            let first = std::future::poll_fn(|cx| Poll::Ready(outer.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "the outer hold was answered before it was released");
            let inner = local.block_on(client.call_async::<_, bool>(HOLD, &971u64, soon()));
            (outer, inner)
        });
        assert!(inner?, "the inner hold was released");
        releaser.join().expect("the releasing thread")?;
        watch.call::<_, ()>(RELEASE, &970u64, soon())?;
        let mut done = None;
        run_all(vec![Box::pin(async {
            done = Some(outer.await);
        })]);
        assert!(done.expect("ran")?, "the outer hold was released");
        Ok(())
    })
}

/// A task on another thread that waits behind a watch a `Runner::Local` thread holds takes
/// the watch over to the reactor thread: that driver polls only while its own thread waits,
/// and here it is blocked (synchronously, inside its future) until the other task is done.
/// The `block_on`'s own call is dropped after one poll, so that the other task is the only
/// one waiting; left with the blocked driver, its reply would never be read.
pub fn a_task_waiting_behind_a_busy_local_runners_watch_is_woken(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let client = connect(&mut peer);
    let watch = connect(&mut peer);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (watching_tx, watching_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| -> Outcome {
        let client = &client;
        s.spawn(move || {
            procwire_rpc::Runner::Local.block_on(async {
                let mut held = Box::pin(client.call_async::<_, bool>(HOLD, &980u64, soon()));
                let first = std::future::poll_fn(|cx| Poll::Ready(held.as_mut().poll(cx))).await;
                assert!(first.is_pending(), "the hold was answered before it was released");
                drop(held);
                watching_tx.send(()).expect("tell the other thread");
                // Busy until the other task is done: this thread cannot poll meanwhile.
                done_rx.recv_timeout(LOST).expect("the other task finished");
            });
        });
        watching_rx
            .recv_timeout(LOST)
            .expect("the block_on watches the connection");
        let mut sum = None;
        run_all(vec![Box::pin(async {
            sum = Some(client.call_async::<_, i64>(ADD, &(20i64, 22i64), soon()).await);
        })]);
        done_tx.send(()).expect("release the block_on");
        assert_eq!(sum.expect("ran")?, 42);
        Ok(())
    })?;
    watch.call::<_, ()>(RELEASE, &980u64, soon())?;
    Ok(())
}

//! The async client against the same child server: on a tokio runtime, and on a bare
//! executor of a few lines, to show the futures need no runtime of their own.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use procwire::rpc::{CallError, RpcError};

use super::{CalcAsyncClient, DivError, Kind, Outcome, Peer};

impl Peer {
    fn async_client(&mut self) -> CalcAsyncClient {
        CalcAsyncClient::connect(self.transport.take().expect("one connection per peer")).expect("connect")
    }
}

fn tokio() -> tokio::runtime::Runtime {
    // With the I/O driver, which the `tokio` feature (on for these tests) waits on.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .expect("a tokio runtime")
}

pub fn awaited_calls_round_trip_on_tokio_from_many_tasks(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.async_client();
    tokio().block_on(async move {
        assert_eq!(calc.add(2, 3).await?, 5);
        assert_eq!(calc.greet("procwire").await?, "hello, procwire");
        assert_eq!(calc.checksum(&[1, 2, 3]).await?, 6);
        assert_eq!(calc.reverse(vec![1, 2, 3]).await?, vec![3, 2, 1]);
        // A typed application error, as from the blocking client.
        assert!(matches!(
            calc.div(1, 0).await,
            Err(CallError::Application(DivError::DivideByZero))
        ));
        // One-way calls arrive.
        for _ in 0..3 {
            calc.log("line".into()).await?;
        }
        assert!(calc.logged(3).await? >= 3);
        let tasks: Vec<_> = (0..8i64)
            .map(|t| {
                let calc = calc.clone();
                tokio::spawn(async move {
                    for i in 0..200i64 {
                        assert_eq!(calc.add(t, i).await.expect("add"), t + i);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        Ok(())
    })
}

pub fn an_awaited_call_keeps_its_deadline_and_the_client_goes_on(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.async_client();
    tokio().block_on(async move {
        let err = calc
            .with_timeout(Duration::from_millis(100))
            .slow(3_000)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RpcError::DeadlineExceeded { method: "slow", .. }),
            "{err}"
        );
        assert_eq!(calc.add(1, 1).await?, 2);
        Ok(())
    })
}

pub fn dropping_an_awaited_call_cancels_it_on_the_server(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.async_client();
    tokio().block_on(async move {
        {
            // Polled once: the call is sent, and waits on the server until released or
            // cancelled. Then the future is dropped.
            let mut held = pin!(calc.hold(77));
            let first = std::future::poll_fn(|cx| Poll::Ready(held.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "held until released");
        }
        assert!(calc.was_cancelled(77).await?, "the server saw the cancel");
        Ok(())
    })
}

/// The smallest executor: this thread, parked between wake-ups (procwire's local runner,
/// which no runtime is behind).
pub fn block_on<F: Future>(future: F) -> F::Output {
    procwire::rpc::Runner::Local.block_on(future)
}

pub fn awaited_calls_need_no_runtime_of_their_own(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    let calc = peer.async_client();
    block_on(async {
        for i in 0..100i64 {
            assert_eq!(calc.add(i, 1).await?, i + 1);
        }
        // A started call of the blocking API is a future too.
        let blocking = super::CalcClient::from_client(calc.client().clone());
        let pending = blocking.start().add(40, 2)?;
        assert_eq!(pending.await?, 42);
        let err = calc
            .with_timeout(Duration::from_millis(100))
            .slow(3_000)
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::DeadlineExceeded { .. }), "{err}");
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

pub fn one_client_is_awaited_in_one_runtime_then_outside_it_and_in_another(kind: Kind) -> Outcome {
    let mut peer = Peer::spawn(kind);
    // A deadline far beyond any reply, so that a wait on a reactor nobody drives fails the
    // test instead of hanging it.
    let calc = peer.async_client().with_timeout(Duration::from_secs(20));
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a tokio runtime")
    };
    let first = current();
    first.block_on(async {
        for i in 0..20i64 {
            assert_eq!(calc.add(i, 1).await?, i + 1);
        }
        Ok::<_, RpcError>(())
    })?;
    // The first runtime lives on, idle: its reactor is not driven while these wait.
    block_on(async {
        for i in 0..20i64 {
            assert_eq!(calc.add(i, 2).await?, i + 2);
        }
        Ok::<_, RpcError>(())
    })?;
    current().block_on(async {
        for i in 0..20i64 {
            assert_eq!(calc.add(i, 3).await?, i + 3);
        }
        Ok::<_, RpcError>(())
    })?;
    drop(first);
    Ok(())
}

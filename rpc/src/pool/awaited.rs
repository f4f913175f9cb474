//! Awaited calls on a pool: the same routing, retries and health tracking as the blocking
//! calls, with wakers where those wait on the pool's condition variable, so that no
//! executor thread is ever blocked (not even while no worker is connected yet).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::{no_worker_in_time, unreachable, Link, Pool, Shared, Tracker};
use crate::client::{Client, Timer};
use crate::error::RpcError;

impl Pool {
    /// [`call`](Self::call), awaited: `call` is given a worker's client and the call's
    /// deadline, and returns the future of the call (typically [`Client::call_async`]).
    pub async fn call_async<R, F, Fut>(
        &self,
        method: &'static str,
        idempotent: bool,
        deadline: Option<Instant>,
        call: F,
    ) -> Result<R, RpcError>
    where
        F: Fn(Client, Option<Instant>) -> Fut,
        Fut: Future<Output = Result<R, RpcError>>,
    {
        self.attempts_async(method, idempotent, deadline, true, call).await
    }

    /// [`notify`](Self::notify), awaited. Its success is no answer, so it tells nothing of
    /// the worker's health.
    pub async fn notify_async<F, Fut>(
        &self,
        method: &'static str,
        idempotent: bool,
        deadline: Option<Instant>,
        send: F,
    ) -> Result<(), RpcError>
    where
        F: Fn(Client, Option<Instant>) -> Fut,
        Fut: Future<Output = Result<(), RpcError>>,
    {
        self.attempts_async(method, idempotent, deadline, false, send).await
    }

    /// Runs `attempt` on one worker after another, as the blocking calls do; `observe`: the
    /// result tells of the worker's health (it is an answer).
    async fn attempts_async<R, F, Fut>(
        &self,
        method: &'static str,
        idempotent: bool,
        deadline: Option<Instant>,
        observe: bool,
        attempt: F,
    ) -> Result<R, RpcError>
    where
        F: Fn(Client, Option<Instant>) -> Fut,
        Fut: Future<Output = Result<R, RpcError>>,
    {
        let sh = &self.shared();
        let deadline = sh.config.deadline(deadline);
        let mut tried = Vec::new();
        loop {
            let (client, tracker) = sh.pick_async(method, &tried, deadline).await?;
            let slot = tracker.slot;
            let result = attempt(client.clone(), deadline).await;
            if observe {
                sh.observe(&tracker, &client, &result);
            }
            drop(tracker);
            if let Some(done) = sh.after_attempt(slot, &client, result, &mut tried, idempotent, deadline) {
                return done;
            }
        }
    }
}

impl Shared {
    /// [`pick`](Self::pick), awaited: where it waits for a worker to be connected, this
    /// leaves a waker; where it would connect on the caller's time (every worker down), it
    /// has them all tried again at once in the background, and waits for that.
    async fn pick_async(
        self: &Arc<Self>,
        method: &'static str,
        avoid: &[usize],
        deadline: Option<Instant>,
    ) -> Result<(Client, Tracker), RpcError> {
        let mut retried = false;
        let mut timer = Timer::default();
        std::future::poll_fn(|cx| self.poll_pick(cx, method, avoid, deadline, &mut retried, &mut timer)).await
    }

    fn poll_pick(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        method: &'static str,
        avoid: &[usize],
        deadline: Option<Instant>,
        retried: &mut bool,
        timer: &mut Timer,
    ) -> Poll<Result<(Client, Tracker), RpcError>> {
        if self.endpoints.is_empty() {
            return Poll::Ready(Err(unreachable(
                method,
                "an empty pool",
                "the pool has no worker".into(),
            )));
        }
        let mut links = self.lock();
        loop {
            let now = Instant::now();
            self.connect_in_background(&mut links, now);
            if let Some(slot) = self.least_loaded(&links, avoid, now) {
                match self.take(links, slot) {
                    Ok(picked) => return Poll::Ready(Ok(picked)),
                    Err(relocked) => links = relocked,
                }
                continue;
            }
            if links.iter().any(|l| matches!(l, Link::Connecting)) {
                if deadline.is_some_and(|d| d <= now) {
                    return Poll::Ready(Err(no_worker_in_time(method)));
                }
                // Registered under the links' lock: a change made after it wakes this task.
                self.wakers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(cx.waker().clone());
                if let Some(d) = deadline {
                    timer.arm(d, cx);
                }
                return Poll::Pending;
            }
            if *retried {
                return Poll::Ready(Err(self.all_down(&links, method)));
            }
            // Every worker is down: each is tried again now, in the background, once.
            *retried = true;
            for link in links.iter_mut() {
                if let Link::Down { retry_at, .. } = link {
                    *retry_at = now;
                }
            }
        }
    }
}

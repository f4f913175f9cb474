//! Awaited calls: [`PendingCall`] as a `Future`, and the client's `async` calls.
//!
//! An awaited call takes part in the client's leader/followers reading like a blocking one,
//! with wakers for condition variables: polled, it takes its reply if it has arrived; else,
//! if nobody is reading, it reads what the connection holds without waiting, filing each
//! reply and waking its task; if its own is not among them, it stores its waker and has the
//! connection watched for readability. When the connection is readable, one waiting task is
//! woken to read it. No thread reads for it and none is borrowed: the woken task reads the
//! reply itself, on its own thread.
//!
//! What watches the connection is the runtime's reactor when there is one to use (with the
//! `tokio` feature, inside a tokio runtime with its I/O driver: an `AsyncFd`, which wakes the
//! watching task itself), else one process-wide thread (`reactor.rs`) that only polls and
//! wakes. Deadlines are kept by that thread (a tokio runtime may have no timers). So the
//! futures run on any executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{reactor, Client, Inner, PendingCall};
use crate::error::{Delivery, Ending, RpcError};
use crate::service::Method;
use crate::transport::Payload;
use crate::wait::Wait;

impl<R: DeserializeOwned> Future for PendingCall<R> {
    type Output = Result<R, RpcError>;

    /// Polls for the reply; until the call's deadline if it has one. Dropping the future
    /// before it is ready cancels the call, as dropping a `PendingCall` does.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Err(this.client.inner.finished(this.method)));
        }
        if this.deadline.is_some_and(|d| Instant::now() >= d) {
            this.finish();
            this.client.inner.abandon(this.id, this.method);
            return Poll::Ready(Err(RpcError::DeadlineExceeded {
                method: this.method.name,
                peer: this.client.inner.peer.name.clone(),
            }));
        }
        match this.client.poll_reply(this.id, this.method, cx) {
            Poll::Pending => {
                if let Some(deadline) = this.deadline {
                    this.timer.arm(deadline, cx);
                }
                Poll::Pending
            }
            Poll::Ready(Ok(payload)) => {
                this.finish();
                if let Some(tracker) = this.tracker.take() {
                    tracker.answered();
                }
                Poll::Ready(this.decode(payload))
            }
            Poll::Ready(Err(e)) => {
                this.finish();
                Poll::Ready(Err(e))
            }
        }
    }
}

impl Client {
    /// [`call`](Self::call), awaited: sends the call (yielding while the outgoing queue is
    /// full, never blocking the thread) and awaits its reply, until `deadline` if one is given
    /// (else within the configured [`call_timeout`](super::ClientConfig::call_timeout)).
    /// Dropping the future before it is ready cancels the call.
    pub async fn call_async<A, R>(&self, method: Method, args: &A, deadline: Option<Instant>) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.start_async(method, args, deadline).await?.await
    }

    /// [`start`](Self::start), awaited: returns once the call is sent, yielding while the
    /// outgoing queue is full; the [`PendingCall`] is a future of the reply.
    pub async fn start_async<A, R>(
        &self,
        method: Method,
        args: &A,
        deadline: Option<Instant>,
    ) -> Result<PendingCall<R>, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        // Fixed once, so that a retry after a full queue keeps the call's deadline.
        let deadline = crate::typed::__private::deadline(deadline, self.inner.call_timeout);
        loop {
            match self.try_start(method, args, deadline) {
                Err(RpcError::WouldBlock { .. }) => yield_now().await,
                started => return started,
            }
        }
    }

    /// [`notify`](Self::notify), awaited: a one-way call, sent once there is room, until
    /// `deadline` if one is given.
    pub async fn notify_async<A: Serialize + ?Sized>(
        &self,
        method: Method,
        args: &A,
        deadline: Option<Instant>,
    ) -> Result<(), RpcError> {
        loop {
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return Err(RpcError::DeadlineExceeded {
                    method: method.name,
                    peer: self.inner.peer.name.clone(),
                });
            }
            match self.notify(method, args, Wait::NonBlock) {
                Err(RpcError::WouldBlock { .. }) => yield_now().await,
                sent => return sent,
            }
        }
    }

    /// Takes call `id`'s reply if it is there; else reads what the connection holds if
    /// nobody is reading, and if the reply is still not there, leaves the task's waker and
    /// has the connection watched.
    ///
    /// The waker is left only when returning `Pending`, so that the reply this task reads
    /// itself wakes nobody; a task that read leaves after filing every frame already
    /// buffered, which wakes their tasks (and defers their next calls' frames, to leave in
    /// one write: `State::woken_tasks`).
    fn poll_reply(&self, id: u64, method: Method, cx: &mut Context<'_>) -> Poll<Result<Payload, RpcError>> {
        let inner = &self.inner;
        // Written before this task looks for its reply (or waits for it): its frame,
        // deferred after the last woken task took its reply, goes with the others.
        let mut st = inner.write_owed(inner.lock());
        // Left by an earlier poll; stored again below if this one waits.
        st.wakers.remove(&id);
        let mut read = false;
        loop {
            match st.pending.get_mut(&id) {
                Some(Some(_)) => {
                    if read {
                        st = inner.drain_buffered(st);
                    }
                    if st.watching == Watch::Task(id) {
                        st.watching = Watch::Nobody;
                    }
                    let payload = st.pending.remove(&id).flatten().expect("the reply is there");
                    let flush = inner.took_woken(&mut st, id) && !inner.owe_flush(&mut st);
                    // If this task was the one to read next, another waiting one takes over.
                    inner.notify(&mut st);
                    drop(st);
                    if flush {
                        inner.flush_deferred();
                    }
                    return Poll::Ready(Ok(payload));
                }
                Some(None) => {}
                None => return Poll::Ready(Err(inner.finished(method))),
            }
            if let Some(failure) = st.failed.clone() {
                st.pending.remove(&id);
                st.woken_tasks.remove(&id);
                // A stopping server answers every call it read before it says goodbye.
                let delivery = match failure.ending {
                    Ending::Stopped => Delivery::NotSent,
                    _ => Delivery::Unknown,
                };
                return Poll::Ready(Err(inner.disconnected(method, &failure, delivery)));
            }
            match st.watching {
                // This task's watch saw the connection readable: its turn to read.
                Watch::Task(watcher) if watcher == id => st.watching = Watch::Nobody,
                Watch::Nobody => {}
                // The watch wakes one waiting task to read.
                Watch::Reactor | Watch::Task(_) => {
                    if st.watching == Watch::Reactor {
                        if let Some(reactor) = reactor::get() {
                            reactor.share(key(inner), cx.waker());
                        }
                    }
                    st.wakers.insert(id, cx.waker().clone());
                    return Poll::Pending;
                }
            }
            if st.reading {
                // The reader files the reply and wakes this task.
                st.wakers.insert(id, cx.waker().clone());
                return Poll::Pending;
            }
            let (next, ran_out) = inner.read_once(st, Wait::NonBlock);
            st = next;
            read = true;
            if !ran_out {
                // A frame was filed (perhaps this call's reply): look again, and read on.
                continue;
            }
            if st.sleepers.keys().any(|id| matches!(st.pending.get(id), Some(None))) {
                // A blocked caller waits for its reply too: it reads on, blocking, and files
                // this call's reply with its waker, so no watch is needed.
                st.wakers.insert(id, cx.waker().clone());
                inner.notify(&mut st);
                return Poll::Pending;
            }
            // Nothing more to read without waiting. A transport that may make progress
            // without its descriptor showing it (bytes already buffered, the shm rings' last
            // look before sleeping) says so here, and is read again at once.
            let mut receiver = inner.receiver.lock().unwrap_or_else(|e| e.into_inner());
            if receiver.prepare_wait() {
                drop(receiver);
                continue;
            }
            st.wakers.insert(id, cx.waker().clone());
            #[cfg(feature = "tokio")]
            if let Some(fd) = tokio_readiness(inner, &**receiver) {
                match fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut ready)) => {
                        // Readable, yet nothing to read: the readiness is stale.
                        ready.clear_ready();
                        drop(receiver);
                        st.wakers.remove(&id);
                        continue;
                    }
                    Poll::Pending => {
                        st.watching = Watch::Task(id);
                        return Poll::Pending;
                    }
                    // The runtime is shutting down: the reactor below watches instead.
                    Poll::Ready(Err(_)) => {}
                }
            }
            let fd = inner
                .readiness
                .get_or_init(|| reactor::watchable(&**receiver).map(Arc::new));
            drop(receiver);
            match fd {
                Some(fd) if self.watch(fd, cx.waker()) => st.watching = Watch::Reactor,
                // No descriptor to wait on, or nothing to wait with: poll again soon.
                _ => cx.waker().wake_by_ref(),
            }
            return Poll::Pending;
        }
    }

    /// Has the connection watched: once readable, it is marked unwatched and a waiting task
    /// is woken to read it. False if there is nothing to watch with.
    fn watch(&self, fd: &Arc<std::os::fd::OwnedFd>, waker: &std::task::Waker) -> bool {
        let Some(reactor) = reactor::get() else { return false };
        let weak = Arc::downgrade(&self.inner);
        reactor.watch(
            key(&self.inner),
            Arc::clone(fd),
            Box::new(move || {
                if let Some(inner) = weak.upgrade() {
                    let mut st = inner.lock();
                    if st.watching == Watch::Reactor {
                        st.watching = Watch::Nobody;
                    }
                    inner.notify(&mut st);
                }
            }),
            waker,
        );
        true
    }
}

/// Who watches a connection for readability on behalf of its awaited calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Watch {
    /// Nobody: the next awaited call to find nobody reading reads, then watches.
    Nobody,
    /// The reactor thread: once readable, it wakes one waiting call to read.
    Reactor,
    /// The runtime's reactor (tokio), for this call, which reads when woken.
    Task(u64),
}

/// The connection's readiness descriptor registered with the tokio runtime this is called
/// in, made on the first awaited call that runs in one; `None` outside tokio, inside another
/// runtime than the one it was registered with (whose driver may not be running: the reactor
/// thread watches then), or if it could not be made.
#[cfg(feature = "tokio")]
fn tokio_readiness<'a>(
    inner: &'a Inner,
    receiver: &dyn crate::transport::FrameReceiver,
) -> Option<&'a tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // Only inside a runtime: elsewhere the reactor thread watches. Like tokio's own sockets,
    // this needs the runtime's I/O driver (`Runtime::new`, or `enable_io` on its builder).
    let runtime = tokio::runtime::Handle::try_current().ok()?.id();
    let (registered, fd) = inner
        .tokio_readiness
        .get_or_init(|| {
            let fd = reactor::watchable(receiver)?;
            // SAFETY: the `OwnedFd` is open, owned by the `AsyncFd` for its whole life, and
            // always returns the same descriptor.
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map(|fd| (runtime, fd))
                .map_err(|e| tracing::debug!(error = %e, "cannot register with tokio; the reactor thread watches"))
                .ok()
        })
        .as_ref()?;
    (*registered == runtime).then_some(fd)
}

/// A client's key in the reactor.
fn key(inner: &Arc<Inner>) -> usize {
    Arc::as_ptr(inner) as usize
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A watch outliving its client would only wake nobody; forget it.
        if matches!(self.readiness.get(), Some(Some(_))) {
            if let Some(reactor) = reactor::get() {
                reactor.unwatch(self as *const Inner as usize);
            }
        }
    }
}

/// A call's deadline as a wake-up: armed on the first poll that waits, cancelled when the
/// call is done or dropped.
#[derive(Debug, Default)]
pub(crate) struct Timer(Option<reactor::TimerKey>);

impl Timer {
    /// Wakes the task at `deadline`, unless armed already.
    pub(crate) fn arm(&mut self, deadline: Instant, cx: &mut Context<'_>) {
        if self.0.is_none() {
            if let Some(reactor) = reactor::get() {
                self.0 = Some(reactor.timer(deadline, cx.waker().clone()));
            }
        }
    }

    /// Cancels the wake-up, if armed and not fired.
    pub(crate) fn cancel(&mut self) {
        if let (Some(key), Some(reactor)) = (self.0.take(), reactor::get()) {
            reactor.cancel(key);
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Returns `Pending` once, having woken its task: lets other tasks run before trying again.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

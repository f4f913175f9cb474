//! How a server runs the `async fn` methods of a service: each call's future is run to
//! completion on the server thread that took the call, so an async method is served exactly
//! as a blocking one is (bounded per connection, cancellable through its `CallContext`,
//! answered before a graceful stop says goodbye); only the handler's body is async.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Where a generated server runs the futures of a service's `async fn` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Runner {
    /// Polled on the server thread itself, which sleeps between wake-ups: for handlers that
    /// need no runtime of their own.
    Local,
    /// Inside a tokio runtime (`Handle::block_on` on the server thread): the handlers may use
    /// tokio's I/O and timers, if the runtime has them enabled.
    #[cfg(feature = "tokio")]
    Tokio(tokio::runtime::Handle),
}

impl Runner {
    /// The tokio runtime this is called in, with the `tokio` feature; else [`Runner::Local`].
    pub fn current() -> Self {
        #[cfg(feature = "tokio")]
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return Runner::Tokio(handle);
        }
        Runner::Local
    }

    /// Runs `future` to completion on this thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self {
            Runner::Local => block_on(future),
            #[cfg(feature = "tokio")]
            Runner::Tokio(handle) => handle.block_on(future),
        }
    }
}

/// Wakes the thread that runs [`block_on`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread, parked between wake-ups.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_runner_runs_a_future_woken_from_another_thread() {
        let (tx, rx) = std::sync::mpsc::channel::<Waker>();
        let mut sent = false;
        let value = Runner::Local.block_on(std::future::poll_fn(|cx| {
            if sent {
                return Poll::Ready(7);
            }
            sent = true;
            tx.send(cx.waker().clone()).unwrap();
            let waker = rx.recv().unwrap();
            std::thread::spawn(move || waker.wake());
            Poll::Pending
        }));
        assert_eq!(value, 7);
    }
}

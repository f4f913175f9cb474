//! How a server runs the `async fn` methods of a service: each call's future is run to
//! completion on the server thread that took the call, so an async method is served exactly
//! as a blocking one is (bounded per connection, cancellable through its `CallContext`,
//! answered before a graceful stop says goodbye); only the handler's body is async.

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::client::reactor::Driver;

/// Where a generated server runs the futures of a service's `async fn` methods.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Runner {
    /// Polled on the server thread itself, which sleeps between wake-ups: for handlers that
    /// need no runtime of their own. While it sleeps it polls the connections of the
    /// procwire calls its future awaits itself, as a runtime's own thread would, rather
    /// than wait to be woken by procwire's reactor thread.
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

/// What a thread in [`block_on`] is doing, for its waker.
const RUNNING: u8 = 0;
const PARKED: u8 = 1;
const POLLING: u8 = 2;

/// Wakes the thread that runs [`block_on`]: unparks it, or rings its eventfd while it polls
/// the connections its tasks watch; nothing while it runs (it polls again before waiting).
struct Signal {
    thread: std::thread::Thread,
    woken: AtomicBool,
    state: AtomicU8,
    ring: Option<Arc<EventFd>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst, with the sleeper's store of `state` then swap of `woken`: one of the two
        // sees the other.
        self.woken.store(true, Ordering::SeqCst);
        match self.state.load(Ordering::SeqCst) {
            PARKED => self.thread.unpark(),
            POLLING => {
                if let Some(ring) = &self.ring {
                    let _ = ring.write(1);
                }
            }
            _ => {}
        }
    }
}

thread_local! {
    /// This thread's eventfd for [`Signal`], made on first need and kept.
    static RING: Option<Arc<EventFd>> = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map(Arc::new)
        .ok();
}

/// Polls `future` on this thread; between wake-ups it polls the connections its awaited
/// calls watch itself (`reactor::Driver`), or parks if they watch none.
fn block_on<F: Future>(future: F) -> F::Output {
    let ring = RING.with(Clone::clone);
    let signal = Arc::new(Signal {
        thread: std::thread::current(),
        woken: AtomicBool::new(false),
        state: AtomicU8::new(RUNNING),
        ring: ring.clone(),
    });
    let waker = Waker::from(Arc::clone(&signal));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    // Without an eventfd to be woken through, the reactor thread watches for it.
    let driver = ring.is_some().then(|| Driver::enter(&waker));
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        signal.state.store(POLLING, Ordering::SeqCst);
        if signal.woken.swap(false, Ordering::SeqCst) {
            signal.state.store(RUNNING, Ordering::SeqCst);
            continue;
        }
        // Running again before the watches that fired wake this thread's tasks, so that
        // they do not ring the eventfd.
        let awake = || signal.state.store(RUNNING, Ordering::SeqCst);
        let polled = match (&driver, &ring) {
            (Some(driver), Some(ring)) => match driver.wait(ring.as_fd(), awake) {
                Some(rung) => {
                    if rung {
                        let _ = ring.read();
                    }
                    true
                }
                None => false,
            },
            _ => false,
        };
        if !polled {
            signal.state.store(PARKED, Ordering::SeqCst);
            if !signal.woken.swap(false, Ordering::SeqCst) {
                std::thread::park();
            }
        }
        signal.state.store(RUNNING, Ordering::SeqCst);
        signal.woken.store(false, Ordering::SeqCst);
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

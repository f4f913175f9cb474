//! The wake-ups an awaited call needs when no runtime of its own provides them: one
//! process-wide thread that polls the connections async callers wait on and keeps their
//! deadlines, and wakes them. It never reads a connection: the woken task does, on its own
//! thread, so a reply's bytes go from the kernel to the caller with no hand-off.
//!
//! Started on first use. With the `tokio` feature, calls awaited inside a tokio runtime use
//! tokio's own reactor and timers instead (see `client/future.rs`).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// What a readable connection calls: marks it unwatched and wakes a caller to read it.
pub(crate) type OnReadable = Box<dyn FnOnce() + Send>;

/// A deadline's registration, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey(Instant, u64);

pub(crate) struct Reactor {
    state: Mutex<State>,
    /// Written to make the thread look at its registrations again.
    kick: EventFd,
}

#[derive(Default)]
struct State {
    /// Connections watched for readability, by the client's key: once, then forgotten. The
    /// descriptor is shared, so that it stays open while it is polled.
    watched: HashMap<usize, (Arc<OwnedFd>, OnReadable)>,
    timers: BTreeMap<TimerKey, Waker>,
    next_timer: u64,
}

static REACTOR: OnceLock<Option<Reactor>> = OnceLock::new();

/// The process's reactor, started on first use; `None` if its thread or eventfd could not be
/// made (callers then wait by yielding).
pub(crate) fn get() -> Option<&'static Reactor> {
    REACTOR
        .get_or_init(|| {
            let kick = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| tracing::warn!(error = %e, "cannot make the async reactor's eventfd"))
                .ok()?;
            let spawned = std::thread::Builder::new()
                .name("procwire-reactor".into())
                .spawn(|| run(get().expect("the reactor is made before its thread runs")));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the async reactor's thread");
                return None;
            }
            Some(Reactor {
                state: Mutex::new(State::default()),
                kick,
            })
        })
        .as_ref()
}

impl Reactor {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kick(&self) {
        // EAGAIN only if the counter is full, which means a kick is pending anyway.
        let _ = self.kick.write(1);
    }

    /// Calls `then` once `fd` is readable (or hung up), replacing an earlier watch of `key`.
    pub(crate) fn watch(&self, key: usize, fd: Arc<OwnedFd>, then: OnReadable) {
        let replaced = self.lock().watched.insert(key, (fd, then));
        drop(replaced);
        self.kick();
    }

    /// Forgets `key`'s watch, if any; for a connection about to close.
    pub(crate) fn unwatch(&self, key: usize) {
        if self.lock().watched.remove(&key).is_some() {
            self.kick();
        }
    }

    /// Wakes `waker` at `deadline`.
    pub(crate) fn timer(&self, deadline: Instant, waker: Waker) -> TimerKey {
        let mut st = self.lock();
        let key = TimerKey(deadline, st.next_timer);
        st.next_timer += 1;
        let earliest = st.timers.keys().next().is_none_or(|first| key < *first);
        st.timers.insert(key, waker);
        drop(st);
        if earliest {
            self.kick();
        }
        key
    }

    /// Cancels a timer that has not fired.
    pub(crate) fn cancel(&self, key: TimerKey) {
        let removed = self.lock().timers.remove(&key);
        // Dropped after the lock: the last waker of a task may drop the task, and with it
        // another call's timer, which cancels itself here.
        drop(removed);
    }
}

fn run(reactor: &'static Reactor) {
    loop {
        let (fds, timeout): (Vec<(usize, Arc<OwnedFd>)>, PollTimeout) = {
            let st = reactor.lock();
            let fds = st.watched.iter().map(|(key, (fd, _))| (*key, Arc::clone(fd))).collect();
            let timeout = match st.timers.keys().next() {
                None => PollTimeout::NONE,
                Some(TimerKey(at, _)) => {
                    let ms = at.saturating_duration_since(Instant::now()).as_millis();
                    // Rounded up, so that a timer is never woken early and spun on.
                    PollTimeout::try_from(ms.saturating_add(1).min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
                }
            };
            (fds, timeout)
        };
        // A watch removed meanwhile is polled once more, which at worst wakes nobody: its
        // descriptor stays open until this list is dropped.
        let mut set: Vec<PollFd<'_>> = Vec::with_capacity(fds.len() + 1);
        set.push(PollFd::new(reactor.kick.as_fd(), PollFlags::POLLIN));
        set.extend(fds.iter().map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)));
        if let Err(e) = poll(&mut set, timeout) {
            if e != nix::errno::Errno::EINTR {
                tracing::warn!(error = %e, "the async reactor's poll failed");
            }
        }
        let ready: Vec<usize> = set[1..]
            .iter()
            .zip(&fds)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, (key, _))| *key)
            .collect();
        if set[0].revents().is_some_and(|r| !r.is_empty()) {
            let _ = reactor.kick.read();
        }
        let mut fire: Vec<OnReadable> = Vec::new();
        let mut wake: Vec<Waker> = Vec::new();
        {
            let mut st = reactor.lock();
            for key in ready {
                if let Some((_, then)) = st.watched.remove(&key) {
                    fire.push(then);
                }
            }
            let now = Instant::now();
            while let Some(entry) = st.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                wake.push(entry.remove());
            }
        }
        // Outside the lock: a woken task may register again at once.
        fire.into_iter().for_each(|then| then());
        wake.into_iter().for_each(Waker::wake);
    }
}

/// A descriptor that polls readable when `receiver` may make progress or its peer is gone,
/// owned so that the reactor (or tokio) can poll it without borrowing the receiver: a
/// duplicate of its readiness descriptor, or, where the peer's death shows on a second one
/// (the liveness socket of `shm:` and `mq:`), an epoll set holding both. Waiting on the
/// readiness descriptor alone, an awaited call to a server that died would wait forever.
pub(crate) fn watchable(receiver: &dyn crate::transport::FrameReceiver) -> Option<OwnedFd> {
    let readiness = receiver.readiness_fd()?;
    let Some(liveness) = receiver.liveness_fd() else {
        return dup(readiness);
    };
    let both = || -> nix::Result<OwnedFd> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // Level-triggered: readable for as long as either is.
        epoll.add(readiness, EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        epoll.add(liveness, EpollEvent::new(EpollFlags::EPOLLIN, 1))?;
        Ok(epoll.0)
    };
    both()
        .map_err(|e| tracing::warn!(error = %e, "cannot make the async reactor's epoll set for a connection"))
        .ok()
}

/// A connection's readiness descriptor, duplicated so that the reactor can poll it without
/// borrowing the receiver.
fn dup(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    fd.try_clone_to_owned()
        .map_err(|e| tracing::warn!(error = %e, "cannot duplicate a connection's descriptor for the async reactor"))
        .ok()
}

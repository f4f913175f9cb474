//! The wake-ups an awaited call needs when no runtime of its own provides them: one
//! process-wide thread that polls the connections async callers wait on and keeps their
//! deadlines, and wakes them. It never reads a connection: the woken task does, on its own
//! thread, so a reply's bytes go from the kernel to the caller with no hand-off.
//!
//! Started on first use. With the `tokio` feature, calls awaited inside a tokio runtime use
//! tokio's own reactor and timers instead (see `client/future.rs`).
//!
//! A thread blocked in [`Runner::Local`](crate::Runner::Local)'s `block_on` polls the
//! connections its own tasks watch itself, while it waits ([`Driver`]), as a tokio
//! current-thread runtime does: the reactor thread then leaves them alone, and a reply wakes
//! the blocked thread directly, not the reactor thread first (on one CPU, two context
//! switches a wake-up less).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A connection watched for readability: polled once, then forgotten.
struct Watched {
    /// Shared, so that it stays open while it is polled.
    fd: Arc<OwnedFd>,
    then: OnReadable,
    /// The [`Driver`] that polls it, or `None`: the reactor thread.
    driver: Option<u64>,
}

#[derive(Default)]
struct State {
    /// Connections watched for readability, by the client's key.
    watched: HashMap<usize, Watched>,
    timers: BTreeMap<TimerKey, Waker>,
    next_timer: u64,
}

impl State {
    /// The connections `driver` polls (`None`: the reactor thread), by key.
    fn polled_by(&self, driver: Option<u64>) -> Vec<(usize, Arc<OwnedFd>)> {
        self.watched
            .iter()
            .filter(|(_, w)| w.driver == driver)
            .map(|(key, w)| (*key, Arc::clone(&w.fd)))
            .collect()
    }

    /// Forgets the watches of `ready` that `driver` polled, and returns what they call;
    /// those given to another poller meanwhile stay.
    fn fired(&mut self, ready: Vec<usize>, driver: Option<u64>) -> Vec<OnReadable> {
        let mut fire = Vec::with_capacity(ready.len());
        for key in ready {
            if self.watched.get(&key).is_some_and(|w| w.driver == driver) {
                fire.extend(self.watched.remove(&key).map(|w| w.then));
            }
        }
        fire
    }
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

    /// Calls `then` once `fd` is readable (or hung up), replacing an earlier watch of `key`;
    /// polled by this thread's [`Driver`] if the watching task is that driver's own (`waker`
    /// wakes its `block_on`: not a task of another executor run inside it), else by the
    /// reactor thread.
    pub(crate) fn watch(&self, key: usize, fd: Arc<OwnedFd>, then: OnReadable, waker: &Waker) {
        let driver = own_driver(waker, true);
        let replaced = self.lock().watched.insert(key, Watched { fd, then, driver });
        drop(replaced);
        if driver.is_none() {
            self.kick();
        }
    }

    /// A task woken by `waker` waits behind `key`'s watch: if a driver other than its own
    /// holds the watch, the reactor thread takes it over, since that driver polls only while
    /// its own thread waits (its thread may be busy, or blocked in this very task).
    pub(crate) fn share(&self, key: usize, waker: &Waker) {
        let mine = own_driver(waker, false);
        let mut st = self.lock();
        let Some(w) = st.watched.get_mut(&key) else { return };
        if w.driver.is_some() && w.driver != mine {
            w.driver = None;
            drop(st);
            self.kick();
        }
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
            let fds = st.polled_by(None);
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
        let (kicked, ready) = poll_watched(reactor.kick.as_fd(), &fds, timeout, || {}).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the async reactor's poll failed");
            (false, Vec::new())
        });
        if kicked {
            let _ = reactor.kick.read();
        }
        let mut wake: Vec<Waker> = Vec::new();
        let fire = {
            let mut st = reactor.lock();
            let fire = st.fired(ready, None);
            let now = Instant::now();
            while let Some(entry) = st.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                wake.push(entry.remove());
            }
            fire
        };
        // Outside the lock: a woken task may register again at once.
        fire.into_iter().for_each(|then| then());
        wake.into_iter().for_each(Waker::wake);
    }
}

/// Polls `kick` and `fds` for readability (or hang-up) until one is or `timeout` passes,
/// then calls `awake`: whether `kick` was readable, and the keys of the `fds` that were.
/// An interrupted poll is nothing readable.
fn poll_watched(
    kick: BorrowedFd<'_>,
    fds: &[(usize, Arc<OwnedFd>)],
    timeout: PollTimeout,
    awake: impl FnOnce(),
) -> nix::Result<(bool, Vec<usize>)> {
    let mut set: Vec<PollFd<'_>> = Vec::with_capacity(fds.len() + 1);
    set.push(PollFd::new(kick, PollFlags::POLLIN));
    set.extend(fds.iter().map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)));
    let polled = poll(&mut set, timeout);
    awake();
    match polled {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok((false, Vec::new())),
        Err(e) => return Err(e),
    }
    let readable = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
    let ready = set[1..]
        .iter()
        .zip(fds)
        .filter(|(p, _)| readable(p))
        .map(|(_, (key, _))| *key)
        .collect();
    Ok((readable(&set[0]), ready))
}

/// The [`Driver`] of a thread.
struct Driving {
    id: u64,
    /// A watch was left with it.
    made: bool,
    /// What wakes its `block_on`: the watches of tasks woken so are its.
    waker: Waker,
}

thread_local! {
    static DRIVING: RefCell<Option<Driving>> = const { RefCell::new(None) };
}

/// A thread blocked on a future polls what its tasks watch itself, rather than leave it to
/// the reactor thread (see the module's docs). While one exists, the watches its tasks make
/// are its. A driver made inside another (a `block_on` inside a `block_on`) first hands the
/// outer one's watches to the reactor thread: the outer cannot poll while the inner runs.
/// When a driver ends, its watches go to the reactor thread too.
pub(crate) struct Driver {
    id: u64,
    outer: Option<Driving>,
}

impl Driver {
    /// `waker` wakes the `block_on` this driver waits for.
    pub(crate) fn enter(waker: &Waker) -> Driver {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut outer = DRIVING.with(|driving| {
            driving.borrow_mut().replace(Driving {
                id,
                made: false,
                waker: waker.clone(),
            })
        });
        if let Some(outer) = outer.as_mut().filter(|outer| outer.made) {
            outer.made = false;
            hand_to_reactor(outer.id);
        }
        Driver { id, outer }
    }

    /// Waits until `wake` or a connection this driver watches is readable (or hung up),
    /// then calls `awake` and runs the watches that fired: `Some(true)` if `wake` was
    /// readable. `None` at once if it watches nothing: the caller sleeps another way.
    pub(crate) fn wait(&self, wake: BorrowedFd<'_>, awake: impl FnOnce()) -> Option<bool> {
        let made = DRIVING.with(|driving| driving.borrow().as_ref().is_some_and(|d| d.made));
        let reactor = get().filter(|_| made)?;
        let fds = reactor.lock().polled_by(Some(self.id));
        if fds.is_empty() {
            return None;
        }
        let (rung, ready) = match poll_watched(wake, &fds, PollTimeout::NONE, awake) {
            Ok(polled) => polled,
            Err(e) => {
                tracing::warn!(error = %e, "a blocked thread's poll failed");
                return Some(true);
            }
        };
        let fire = reactor.lock().fired(ready, Some(self.id));
        fire.into_iter().for_each(|then| then());
        Some(rung)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let made = DRIVING
            .with(|driving| std::mem::replace(&mut *driving.borrow_mut(), self.outer.take()))
            .is_some_and(|d| d.made);
        if made {
            hand_to_reactor(self.id);
        }
    }
}

/// This thread's driver, if `waker` wakes its `block_on` (a task of its own, not of another
/// executor run inside it); with `made`, marked as holding a watch from now on.
fn own_driver(waker: &Waker, made: bool) -> Option<u64> {
    DRIVING
        .try_with(|driving| {
            let mut driving = driving.borrow_mut();
            let own = driving.as_mut().filter(|d| d.waker.will_wake(waker))?;
            own.made |= made;
            Some(own.id)
        })
        .ok()
        .flatten()
}

/// Gives the watches of driver `id` to the reactor thread, and kicks it if there were any.
fn hand_to_reactor(id: u64) {
    let Some(reactor) = get() else { return };
    let mut handed = false;
    for w in reactor.lock().watched.values_mut().filter(|w| w.driver == Some(id)) {
        w.driver = None;
        handed = true;
    }
    if handed {
        reactor.kick();
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

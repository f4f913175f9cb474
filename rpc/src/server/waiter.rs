//! A connection thread's epoll set: where it sleeps while it has nothing to do.
//!
//! On one CPU (where the backlog is deferred) only one idle thread at a time, the watcher,
//! sleeps with the connection's descriptor; the others sleep in a reserve set without it.
//! A large frame arrives in several socket buffers, and each one's wake-up goes to another
//! exclusive waiter whose wait is still armed: with every idle thread on the descriptor, a
//! 1 MiB request woke each of them in turn, each a context switch for nothing (the one-CPU
//! echo spent about a fifth of its time so). A reserve thread takes over when the backlog
//! timer fires, which the thread taking a request arms when nobody else watches (see
//! `Conn::run`).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;

use super::backlog::Backlog;

/// Token of the "more buffered" eventfd in a [`Waiter`].
const WAKE: u64 = 1;
/// Token of the backlog's timer in a [`Waiter`].
const BACKLOG_TIMER: u64 = 5;

/// One thread's epoll sets.
pub(super) struct Waiter {
    /// With the connection's descriptor.
    epoll: Epoll,
    /// Without it: where the thread sleeps while another watches (one CPU only).
    reserve: Option<Epoll>,
}

impl Waiter {
    /// The connection's descriptor `fd`, the "more buffered" eventfd `wake` and the
    /// backlog's `timer`, if any, each registered exclusive (one event wakes one thread);
    /// and the `ends` (the server's and the connection's) and the peer's death (`liveness`,
    /// if the transport shows it apart), shared: every thread leaves. With a `timer` (one
    /// CPU), also a reserve set of the same without `fd`.
    pub(super) fn new(
        fd: BorrowedFd<'_>,
        wake: &EventFd,
        timer: Option<BorrowedFd<'_>>,
        ends: &[BorrowedFd<'_>; 2],
        liveness: Option<BorrowedFd<'_>>,
    ) -> nix::Result<Waiter> {
        let reserve = match timer {
            Some(_) => Some(Self::set(None, wake, timer, ends, liveness)?),
            None => None,
        };
        Ok(Waiter {
            epoll: Self::set(Some(fd), wake, timer, ends, liveness)?,
            reserve,
        })
    }

    fn set(
        fd: Option<BorrowedFd<'_>>,
        wake: &EventFd,
        timer: Option<BorrowedFd<'_>>,
        ends: &[BorrowedFd<'_>; 2],
        liveness: Option<BorrowedFd<'_>>,
    ) -> nix::Result<Epoll> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let exclusive = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        if let Some(fd) = fd {
            epoll.add(fd, EpollEvent::new(exclusive, 0))?;
        }
        epoll.add(wake.as_fd(), EpollEvent::new(exclusive, WAKE))?;
        if let Some(timer) = timer {
            epoll.add(timer, EpollEvent::new(exclusive, BACKLOG_TIMER))?;
        }
        for (token, end) in (2..).zip(ends) {
            epoll.add(end, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        }
        if let Some(liveness) = liveness {
            epoll.add(liveness, EpollEvent::new(EpollFlags::EPOLLIN, 4))?;
        }
        Ok(epoll)
    }

    /// True if this thread has a reserve set, and so sleeps with the descriptor only while
    /// no other thread does.
    pub(super) fn shares_watch(&self) -> bool {
        self.reserve.is_some()
    }

    /// Sleeps until there may be something to do, or `until` passes; false if it passed.
    /// With a reserve set, the thread watches the descriptor only if `watching` was clear
    /// (it sets it, and clears it on waking), and otherwise sleeps in the reserve set.
    pub(super) fn wait(
        &self,
        watching: &AtomicBool,
        wake: &EventFd,
        backlog: &Backlog,
        until: Option<Instant>,
    ) -> nix::Result<bool> {
        let (epoll, watches) = match &self.reserve {
            Some(reserve) if watching.swap(true, Ordering::SeqCst) => (reserve, false),
            Some(_) => (&self.epoll, true),
            None => (&self.epoll, false),
        };
        let woken = Self::sleep(epoll, wake, backlog, until);
        if watches {
            watching.store(false, Ordering::SeqCst);
        }
        woken
    }

    fn sleep(epoll: &Epoll, wake: &EventFd, backlog: &Backlog, until: Option<Instant>) -> nix::Result<bool> {
        let mut events = [EpollEvent::empty(); 6];
        let timeout = match until {
            None => EpollTimeout::NONE,
            Some(at) => {
                // Round up so that the wait never ends early and spins.
                let ms = at.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
                EpollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(EpollTimeout::MAX)
            }
        };
        let n = loop {
            match epoll.wait(&mut events, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other?,
            }
        };
        if events[..n].iter().any(|e| e.data() == WAKE) {
            // Semaphore mode: take one wake-up; another thread may take the next.
            let _ = wake.read();
        }
        if events[..n].iter().any(|e| e.data() == BACKLOG_TIMER) {
            backlog.fired();
        }
        Ok(n > 0)
    }
}

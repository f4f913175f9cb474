//! A connection thread's epoll set: where it sleeps while it has nothing to do.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;

use super::backlog::Backlog;

/// Token of the "more buffered" eventfd in a [`Waiter`].
const WAKE: u64 = 1;
/// Token of the backlog's timer in a [`Waiter`].
const BACKLOG_TIMER: u64 = 5;

/// One thread's epoll set.
pub(super) struct Waiter {
    epoll: Epoll,
}

impl Waiter {
    /// The connection's descriptor `fd`, the "more buffered" eventfd `wake` and the
    /// backlog's `timer`, if any, each registered exclusive (one event wakes one thread);
    /// and the `ends` (the server's and the connection's) and the peer's death (`liveness`,
    /// if the transport shows it apart), shared: every thread leaves.
    pub(super) fn new(
        fd: BorrowedFd<'_>,
        wake: &EventFd,
        timer: Option<BorrowedFd<'_>>,
        ends: &[BorrowedFd<'_>; 2],
        liveness: Option<BorrowedFd<'_>>,
    ) -> nix::Result<Waiter> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let exclusive = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        epoll.add(fd, EpollEvent::new(exclusive, 0))?;
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
        Ok(Waiter { epoll })
    }

    /// Sleeps until there may be something to do, or `until` passes; false if it passed.
    pub(super) fn wait(&self, wake: &EventFd, backlog: &Backlog, until: Option<Instant>) -> nix::Result<bool> {
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
            match self.epoll.wait(&mut events, timeout) {
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

//! Requests already read from a connection but not yet taken: when another of its threads
//! is woken to take them.
//!
//! One read often brings several requests (callers sharing a connection send them close
//! together). With more than one CPU, an idle thread is woken at once, so that they run in
//! parallel. On one CPU a second thread cannot run beside the first, only instead of it:
//! waking it at once costs two context switches per request and runs nothing sooner. There
//! the thread that read them takes them one after another, and a helper is woken only if a
//! call holds the backlog up for [`GRACE`] (a handler that blocks or runs long), by a timer
//! that every taken request pushes back.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::eventfd::EventFd;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::unistd::Pid;

/// How long requests may wait behind a running call on one CPU before a helper takes one.
pub(super) const GRACE: Duration = Duration::from_millis(2);

/// How a connection's threads learn of requests waiting in its receiver.
#[derive(Debug)]
pub(super) enum Backlog {
    /// Wake an idle thread at once (more than one CPU).
    Immediate,
    /// Wake one when the timer fires (one CPU); `armed` while it is set.
    Deferred { timer: TimerFd, armed: AtomicBool },
}

impl Backlog {
    /// Deferred if this process may run on one CPU only (and a timer can be made).
    pub(super) fn new() -> Backlog {
        let one_cpu = nix::sched::sched_getaffinity(Pid::from_raw(0))
            .map(|set| {
                (0..nix::sched::CpuSet::count())
                    .filter(|&c| set.is_set(c).unwrap_or(false))
                    .count()
                    == 1
            })
            .unwrap_or(false);
        if !one_cpu {
            return Backlog::Immediate;
        }
        match TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        ) {
            Ok(timer) => Backlog::Deferred {
                timer,
                armed: AtomicBool::new(false),
            },
            Err(_) => Backlog::Immediate,
        }
    }

    /// The timer's descriptor, for the threads' epoll sets (readable once it fires).
    pub(super) fn timer_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Backlog::Immediate => None,
            Backlog::Deferred { timer, .. } => Some(timer.as_fd()),
        }
    }

    /// A request was taken and more are buffered: wake a thread now, or (re)start the timer.
    pub(super) fn waiting(&self, wake: &EventFd) {
        match self {
            Backlog::Immediate => {
                let _ = wake.write(1);
            }
            Backlog::Deferred { timer, armed } => {
                armed.store(true, Ordering::SeqCst);
                let grace = Expiration::OneShot(TimeSpec::from_duration(GRACE));
                if timer.set(grace, TimerSetTimeFlags::empty()).is_err() {
                    let _ = wake.write(1);
                }
            }
        }
    }

    /// A request was taken and no thread watches the descriptor (one CPU): wake a reserve
    /// thread once the grace period has passed, to watch it. The timer is not pushed back if
    /// set already: calls in a steady stream, each shorter than the grace period, then cost
    /// one wake-up per period rather than a system call each.
    pub(super) fn unwatched(&self, wake: &EventFd) {
        match self {
            Backlog::Deferred { armed, .. } if armed.load(Ordering::SeqCst) => {}
            _ => self.waiting(wake),
        }
    }

    /// A request was taken and nothing more is buffered: no helper is needed.
    pub(super) fn drained(&self) {
        if let Backlog::Deferred { timer, armed } = self {
            if armed.swap(false, Ordering::SeqCst) {
                let _ = timer.unset();
            }
        }
    }

    /// The timer woke this thread: clear it, so that it wakes no other.
    pub(super) fn fired(&self) {
        if let Backlog::Deferred { timer, armed } = self {
            armed.store(false, Ordering::SeqCst);
            let mut expirations = [0u8; 8];
            let _ = nix::unistd::read(timer.as_fd().as_raw_fd(), &mut expirations);
        }
    }
}

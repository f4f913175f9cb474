//! Requests already read from a connection but not yet taken: when another of its threads
//! is woken to take them.
//!
//! One read often brings several requests (callers sharing a connection send them close
//! together). With more than one CPU, an idle thread is woken at once, so that they run in
//! parallel. On one CPU a second thread cannot run beside the first, only instead of it:
//! waking it at once costs two context switches per request and runs nothing sooner. There
//! the thread that read them takes them one after another, and a helper is woken only if a
//! call holds the backlog up for [`GRACE`] (a handler that blocks or runs long), by a timer
//! that taken requests push back. Not every one: resetting a timer is a system call, so a
//! request taken within [`REARM`] of the last reset leaves it, and a helper is woken after
//! `GRACE - REARM` to `GRACE` without progress.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::eventfd::EventFd;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::unistd::Pid;

/// How long requests may wait behind a running call on one CPU before a helper takes one.
pub(super) const GRACE: Duration = Duration::from_millis(2);

/// How often, at most, taken requests push the timer back.
pub(super) const REARM: Duration = Duration::from_micros(500);

/// How a connection's threads learn of requests waiting in its receiver.
#[derive(Debug)]
pub(super) enum Backlog {
    /// Wake an idle thread at once (more than one CPU).
    Immediate,
    /// Wake one when the timer fires (one CPU); `armed` while it is set, last set at
    /// `set_at` (microseconds after `epoch`).
    Deferred {
        timer: TimerFd,
        armed: AtomicBool,
        epoch: Instant,
        set_at: AtomicU64,
    },
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
                epoch: Instant::now(),
                set_at: AtomicU64::new(0),
            },
            Err(_) => Backlog::Immediate,
        }
    }

    /// True on one CPU, where requests read together are taken by one thread and, so, only
    /// one idle thread at a time watches the descriptor (see `server/waiter.rs`).
    pub(super) fn is_deferred(&self) -> bool {
        matches!(self, Backlog::Deferred { .. })
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
            Backlog::Deferred {
                timer,
                armed,
                epoch,
                set_at,
            } => {
                let now = epoch.elapsed().as_micros() as u64;
                // Set lately: it fires at most GRACE, at least GRACE - REARM, after now.
                if armed.swap(true, Ordering::SeqCst)
                    && now.saturating_sub(set_at.load(Ordering::Relaxed)) < REARM.as_micros() as u64
                {
                    return;
                }
                set_at.store(now, Ordering::Relaxed);
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
        if let Backlog::Deferred { timer, armed, .. } = self {
            if armed.swap(false, Ordering::SeqCst) {
                let _ = timer.unset();
            }
        }
    }

    /// The timer woke this thread: clear it, so that it wakes no other.
    pub(super) fn fired(&self) {
        if let Backlog::Deferred { timer, armed, .. } = self {
            armed.store(false, Ordering::SeqCst);
            let mut expirations = [0u8; 8];
            let _ = nix::unistd::read(timer.as_fd().as_raw_fd(), &mut expirations);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deferred() -> Backlog {
        Backlog::Deferred {
            timer: TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC).expect("a timerfd"),
            armed: AtomicBool::new(false),
            epoch: Instant::now(),
            set_at: AtomicU64::new(0),
        }
    }

    /// What is left of the timer, if it is set and has not fired.
    fn left(backlog: &Backlog) -> Option<Duration> {
        let Backlog::Deferred { timer, .. } = backlog else {
            return None;
        };
        match timer.get().expect("read the timer") {
            Some(Expiration::OneShot(left)) => Some(Duration::from(left)),
            _ => None,
        }
    }

    #[test]
    fn requests_taken_close_together_set_the_timer_once() {
        let backlog = deferred();
        let wake = EventFd::new().expect("an eventfd");
        backlog.waiting(&wake);
        // The timer was set before this.
        let set = Instant::now();
        while set.elapsed() < Duration::from_micros(200) {
            std::hint::spin_loop();
        }
        // A second request, taken well within REARM of the first (checked below).
        let second = Instant::now();
        backlog.waiting(&wake);
        if second.duration_since(set) >= REARM {
            // Descheduled past REARM: this run says nothing.
            return;
        }
        if let Some(left) = left(&backlog) {
            // Not set again, at most GRACE less the time since `set` is left; set again by
            // the second request, nearly all of GRACE.
            let most = GRACE - second.duration_since(set);
            assert!(
                left <= most,
                "the timer was set again: {left:?} left, at most {most:?} expected"
            );
        }
        backlog.drained();
        assert_eq!(left(&backlog), None, "drained, the timer is unset");
    }
}

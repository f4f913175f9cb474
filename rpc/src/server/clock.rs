//! The clock that cuts a connection whose frame, or silence, lasts too long.
//!
//! Every receive reports to it, so its per-frame path is a relaxed load and store of a
//! counter: no clock read and no lock (on the shared-memory rings a small call costs about
//! a microsecond, of which a `clock_gettime` and a mutex were a measurable part). The clock
//! is read, and the lock taken, only where time matters: when a frame begins without
//! ending (a partial read) and when a thread is about to sleep or has woken at its deadline.
//! The idle timeout therefore runs from the first moment a thread going to sleep finds no
//! frame received and no call running since the last look, which is when the connection
//! fell idle, not from when its last frame arrived: a long call does not use up the idle
//! time of the silence after it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a connection is cut for its timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overdue {
    /// A frame began and did not end within the frame timeout.
    Frame(Duration),
    /// Nothing arrived, and no call ran, for the idle timeout.
    Idle(Duration),
}

impl std::fmt::Display for Overdue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overdue::Frame(limit) => write!(f, "a frame took longer than the frame timeout of {limit:?} to arrive"),
            Overdue::Idle(limit) => write!(
                f,
                "the connection was idle for longer than the idle timeout of {limit:?}"
            ),
        }
    }
}

/// When the current frame began and the connection fell idle, for one connection's
/// receiver. [`saw`](Self::saw) is called by the thread holding the receiver's lock, and
/// [`overdue`](Self::overdue) is checked under it, so the lock orders the two.
#[derive(Debug)]
pub(super) struct ReadClock {
    frame_timeout: Duration,
    idle_timeout: Option<Duration>,
    /// Whole frames received so far. Written only under the receiver's lock (a load and a
    /// store, no read-modify-write); looked at by threads about to sleep.
    frames: AtomicU64,
    /// A frame is under way (when it began is in `times`): lets a receive that returned a
    /// whole frame, with none begun after it, skip the lock.
    partial: AtomicBool,
    times: Mutex<Times>,
}

#[derive(Debug)]
struct Times {
    /// When the frame under way began.
    frame_started: Option<Instant>,
    /// When the connection was first seen idle, and how many frames it had received then.
    idle_since: Option<(u64, Instant)>,
}

impl ReadClock {
    pub(super) fn new(frame_timeout: Duration, idle_timeout: Option<Duration>) -> Self {
        ReadClock {
            frame_timeout,
            idle_timeout,
            frames: AtomicU64::new(0),
            partial: AtomicBool::new(false),
            times: Mutex::new(Times {
                frame_started: None,
                idle_since: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a receive: whether it returned a frame, and whether one is now under way.
    /// Called under the receiver's lock.
    pub(super) fn saw(&self, got_frame: bool, in_frame: bool) {
        if got_frame {
            // Relaxed: one writer at a time (the receiver's lock), and the readers that must
            // see it (`overdue`) hold that lock too.
            self.frames
                .store(self.frames.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        let partial = self.partial.load(Ordering::Relaxed);
        match (in_frame, partial && !got_frame) {
            // The same frame is still under way.
            (true, true) => {}
            // A frame began (after the one returned, if any): it is timed from now.
            (true, false) => {
                self.lock().frame_started = Some(Instant::now());
                self.partial.store(true, Ordering::Relaxed);
            }
            (false, _) if partial => {
                self.lock().frame_started = None;
                self.partial.store(false, Ordering::Relaxed);
            }
            (false, _) => {}
        }
    }

    /// The next moment something must have arrived, and what it is overdue as then; `busy`
    /// says whether a call runs (an idle timeout does not apply while one does, and starts
    /// again after it).
    pub(super) fn deadline(&self, busy: bool) -> Option<(Instant, Overdue)> {
        let mut times = self.lock();
        if let Some(started) = times.frame_started {
            return Some((started + self.frame_timeout, Overdue::Frame(self.frame_timeout)));
        }
        let idle = self.idle_timeout?;
        if busy {
            times.idle_since = None;
            return None;
        }
        let frames = self.frames.load(Ordering::Relaxed);
        let since = match times.idle_since {
            Some((seen, since)) if seen == frames => since,
            _ => {
                let now = Instant::now();
                times.idle_since = Some((frames, now));
                now
            }
        };
        Some((since + idle, Overdue::Idle(idle)))
    }

    /// What is overdue now, if anything. Called under the receiver's lock.
    pub(super) fn overdue(&self, busy: bool) -> Option<Overdue> {
        self.deadline(busy)
            .and_then(|(at, why)| (Instant::now() >= at).then_some(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns once the monotonic clock has moved past `t`.
    fn after(t: Instant) {
        while Instant::now() <= t {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_frame_under_way_has_a_deadline_and_a_finished_one_clears_it() {
        let clock = ReadClock::new(Duration::ZERO, None);
        assert_eq!(clock.deadline(false), None);
        clock.saw(false, true);
        assert_eq!(clock.overdue(false), Some(Overdue::Frame(Duration::ZERO)));
        clock.saw(true, false);
        assert_eq!(clock.overdue(false), None);
    }

    #[test]
    fn a_frame_still_under_way_keeps_the_time_it_began() {
        let clock = ReadClock::new(Duration::from_secs(30), None);
        clock.saw(false, true);
        let (first, _) = clock.deadline(false).expect("a frame is under way");
        after(first - Duration::from_secs(30));
        clock.saw(false, true);
        assert_eq!(clock.deadline(false).map(|(at, _)| at), Some(first));
        // A whole frame, then the next begun: timed from its own start.
        clock.saw(true, true);
        assert!(clock.deadline(false).expect("the next frame").0 > first);
    }

    #[test]
    fn the_idle_timeout_does_not_apply_while_a_call_runs() {
        let clock = ReadClock::new(Duration::from_secs(30), Some(Duration::ZERO));
        assert_eq!(clock.overdue(true), None);
        assert_eq!(clock.overdue(false), Some(Overdue::Idle(Duration::ZERO)));
    }

    #[test]
    fn the_idle_time_runs_from_the_first_idle_look_and_restarts_after_a_frame_or_a_call() {
        let idle = Duration::from_secs(60);
        let clock = ReadClock::new(Duration::from_secs(30), Some(idle));
        let (first, _) = clock.deadline(false).expect("an idle deadline");
        after(first - idle);
        assert_eq!(clock.deadline(false).map(|(at, _)| at), Some(first), "nothing happened");
        clock.saw(true, false);
        let (second, _) = clock.deadline(false).expect("an idle deadline");
        assert!(second > first, "a frame arrived: the idle time starts again");
        after(second - idle);
        assert_eq!(clock.deadline(true), None);
        assert!(
            clock.deadline(false).expect("an idle deadline").0 > second,
            "a call ran"
        );
    }

    #[test]
    fn recording_a_whole_frame_takes_no_lock() {
        let clock = std::sync::Arc::new(ReadClock::new(Duration::from_secs(30), Some(Duration::from_secs(60))));
        let held = clock.lock();
        let (done, finished) = std::sync::mpsc::channel();
        let c = std::sync::Arc::clone(&clock);
        std::thread::spawn(move || {
            for _ in 0..1000 {
                c.saw(true, false);
            }
            let _ = done.send(());
        });
        let took = finished.recv_timeout(Duration::from_secs(60));
        drop(held);
        assert!(took.is_ok(), "saw waited for the clock's lock");
        assert_eq!(clock.frames.load(Ordering::Relaxed), 1000);
    }
}

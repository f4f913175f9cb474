//! The calls a connection runs now: what a cancel looks for, and what keeps the idle
//! timeout off.
//!
//! A connection thread runs one call at a time, so each thread has a [`Seat`] of its own,
//! listed in the connection's [`Calls`] while the thread lives: starting and finishing a call
//! are stores to the thread's own seat (no lock, no hashing, no allocation: a per-call
//! `Mutex<HashMap>` and a fresh cancel flag showed in the shared-memory round trip's profile),
//! and a cancel, which is rare, walks the few seats under the list's lock. A seat's cancel
//! flag is reused from call to call: handlers only borrow it through their `CallContext`,
//! which does not outlive the call.
//!
//! A seat also says whether its thread sleeps, and until when ([`Seat::sleeping`]): a thread
//! woken for nothing leaves only while another sleeps with a deadline no later than the one
//! that applies now ([`Calls::timed_by_another`]). Threads that went to sleep before a frame
//! began, or while a call ran, sleep with none; had the thread that saw the frame begin left
//! too, nothing would time the frame (or the idle connection) at all.
//!
//! Ordering: a call starts, and cancels are looked up, under the receiver's lock (a call is
//! registered before the thread lets go of the receiver, so a cancel read right after by
//! another thread finds it), so relaxed stores suffice; a call finishes outside it, and a
//! lookup that still sees it running only sets a flag nobody reads any more, which the
//! seat's next call clears.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::service::Cancel;

/// The seats of one connection's threads.
#[derive(Debug)]
pub(super) struct Calls {
    seats: Arc<Mutex<Vec<Arc<Place>>>>,
    /// What [`Place::asleep`] counts from.
    epoch: Instant,
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            seats: Arc::default(),
            epoch: Instant::now(),
        }
    }
}

/// [`Place::asleep`] of a thread that is awake.
const AWAKE: u64 = 0;
/// [`Place::asleep`] of a thread that sleeps with no deadline.
const UNTIMED: u64 = u64::MAX;

/// One thread's place in [`Calls`]: the call it runs, if any.
#[derive(Debug, Default)]
struct Place {
    id: AtomicU64,
    running: AtomicBool,
    cancel: Arc<Cancel>,
    /// [`AWAKE`], [`UNTIMED`], or the deadline the thread sleeps until, in nanoseconds past
    /// [`Calls::epoch`], plus one.
    asleep: AtomicU64,
}

/// A connection thread's seat; leaves the list when dropped.
#[derive(Debug)]
pub(super) struct Seat {
    place: Arc<Place>,
    seats: Arc<Mutex<Vec<Arc<Place>>>>,
    epoch: Instant,
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Place>>> {
        self.seats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A seat for a new connection thread.
    pub(super) fn seat(&self) -> Seat {
        let place = Arc::new(Place::default());
        self.lock().push(Arc::clone(&place));
        Seat {
            place,
            seats: Arc::clone(&self.seats),
            epoch: self.epoch,
        }
    }

    /// True if a thread other than `seat`'s sleeps with a deadline no later than `until`:
    /// it will look at the clock in time, so `seat`'s thread may leave.
    pub(super) fn timed_by_another(&self, seat: &Seat, until: Instant) -> bool {
        let until = seat.encode(Some(until));
        self.lock().iter().any(|p| {
            let asleep = p.asleep.load(Ordering::SeqCst);
            !Arc::ptr_eq(p, &seat.place) && asleep != AWAKE && asleep <= until
        })
    }

    /// Sets the cancel flag of call `id`, if it runs. Called under the receiver's lock.
    pub(super) fn cancel(&self, id: u64) {
        let seats = self.lock();
        let running = seats
            .iter()
            .find(|p| p.running.load(Ordering::Relaxed) && p.id.load(Ordering::Relaxed) == id);
        if let Some(place) = running {
            place.cancel.set();
        }
    }

    /// True while a call runs.
    pub(super) fn busy(&self) -> bool {
        self.lock().iter().any(|p| p.running.load(Ordering::Relaxed))
    }
}

impl Seat {
    /// The seat's cancel flag, the same for each of its calls: the thread's `CallContext`
    /// holds it.
    pub(super) fn cancel_flag(&self) -> Arc<Cancel> {
        Arc::clone(&self.place.cancel)
    }

    /// Starts call `id` on this seat: clears the cancel flag, which [`Calls::cancel`] sets
    /// if `cancellable` (a call; a one-way call has nobody to cancel it). Called under the
    /// receiver's lock.
    pub(super) fn start(&self, id: u64, cancellable: bool) {
        self.place.cancel.reset();
        if cancellable {
            self.place.id.store(id, Ordering::Relaxed);
            self.place.running.store(true, Ordering::Relaxed);
        }
    }

    /// The seat's call has finished.
    pub(super) fn finish(&self) {
        self.place.running.store(false, Ordering::Relaxed);
    }

    /// The seat's thread goes to sleep until `until` (`None`: until woken), or, with
    /// [`awake`](Self::awake), has woken.
    pub(super) fn sleeping(&self, until: Option<Instant>) {
        self.place.asleep.store(self.encode(until), Ordering::SeqCst);
    }

    /// The seat's thread has woken.
    pub(super) fn awake(&self) {
        self.place.asleep.store(AWAKE, Ordering::SeqCst);
    }

    /// `until` as [`Place::asleep`] holds it.
    fn encode(&self, until: Option<Instant>) -> u64 {
        until.map_or(UNTIMED, |at| {
            let nanos = at.saturating_duration_since(self.epoch).as_nanos();
            u64::try_from(nanos).map_or(UNTIMED - 1, |n| n.saturating_add(1).min(UNTIMED - 1))
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.seats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !Arc::ptr_eq(p, &self.place));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_reaches_the_running_call_with_its_id_and_no_other() {
        let calls = Calls::default();
        let (a, b) = (calls.seat(), calls.seat());
        let (ca, cb) = (a.cancel_flag(), b.cancel_flag());
        a.start(7, true);
        b.start(8, true);
        calls.cancel(8);
        assert!(!ca.is_set() && cb.is_set());
        assert!(calls.busy());
        a.finish();
        b.finish();
        assert!(!calls.busy());
        calls.cancel(7);
        a.start(9, true);
        assert!(!ca.is_set(), "a finished call is not cancelled");
    }

    #[test]
    fn a_thread_may_leave_only_while_another_sleeps_with_a_deadline_as_early() {
        let calls = Calls::default();
        let (leaving, other) = (calls.seat(), calls.seat());
        let now = Instant::now();
        let soon = now + std::time::Duration::from_secs(1);
        let later = now + std::time::Duration::from_secs(2);
        assert!(!calls.timed_by_another(&leaving, soon), "the other is awake");
        other.sleeping(None);
        assert!(!calls.timed_by_another(&leaving, soon), "the other sleeps untimed");
        other.sleeping(Some(later));
        assert!(!calls.timed_by_another(&leaving, soon), "the other wakes too late");
        other.sleeping(Some(soon));
        assert!(calls.timed_by_another(&leaving, soon));
        assert!(calls.timed_by_another(&leaving, later));
        leaving.sleeping(Some(now));
        other.awake();
        assert!(!calls.timed_by_another(&leaving, soon), "a seat does not count itself");
    }

    #[test]
    fn a_seat_reused_after_a_cancelled_call_starts_uncancelled() {
        let calls = Calls::default();
        let seat = calls.seat();
        let flag = seat.cancel_flag();
        seat.start(1, true);
        calls.cancel(1);
        assert!(flag.is_set());
        seat.finish();
        seat.start(2, true);
        assert!(!flag.is_set());
    }

    #[test]
    fn one_way_calls_cannot_be_cancelled_and_do_not_count_as_running() {
        let calls = Calls::default();
        let seat = calls.seat();
        let flag = seat.cancel_flag();
        seat.start(3, false);
        calls.cancel(3);
        assert!(!flag.is_set() && !calls.busy());
    }

    #[test]
    fn a_thread_that_leaves_takes_its_seat_with_it() {
        let calls = Calls::default();
        let seat = calls.seat();
        seat.start(4, true);
        drop(seat);
        assert!(
            !calls.busy(),
            "a running call of a gone thread would hold off the idle timeout"
        );
    }
}

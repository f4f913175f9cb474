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
//! Ordering: a call starts, and cancels are looked up, under the receiver's lock (a call is
//! registered before the thread lets go of the receiver, so a cancel read right after by
//! another thread finds it), so relaxed stores suffice; a call finishes outside it, and a
//! lookup that still sees it running only sets a flag nobody reads any more, which the
//! seat's next call clears.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::service::Cancel;

/// The seats of one connection's threads.
#[derive(Debug, Default)]
pub(super) struct Calls {
    seats: Arc<Mutex<Vec<Arc<Place>>>>,
}

/// One thread's place in [`Calls`]: the call it runs, if any.
#[derive(Debug, Default)]
struct Place {
    id: AtomicU64,
    running: AtomicBool,
    cancel: Arc<Cancel>,
}

/// A connection thread's seat; leaves the list when dropped.
#[derive(Debug)]
pub(super) struct Seat {
    place: Arc<Place>,
    seats: Arc<Mutex<Vec<Arc<Place>>>>,
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
        }
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

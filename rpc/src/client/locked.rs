//! The client's state under its lock, with the wake-ups queued while it was held delivered
//! once it is released.
//!
//! A caller unparked while the lock is still held would, on one CPU, often run at once, find
//! the lock taken, sleep on it, and wake again when it is released: two context switches and
//! two futex calls for nothing. Queued wake-ups leave after the unlock.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, MutexGuard};
use std::thread::Thread;
use std::time::Duration;

use super::State;

/// The locked state; dropping it unlocks, then unparks the threads queued in `State::wake`.
pub(super) struct Locked<'a> {
    /// Always `Some` until dropped.
    guard: Option<MutexGuard<'a, State>>,
}

impl<'a> Locked<'a> {
    pub(super) fn new(guard: MutexGuard<'a, State>) -> Self {
        Locked { guard: Some(guard) }
    }

    /// Waits on `changed` for at most `left`, releasing the lock meanwhile.
    pub(super) fn wait_timeout(mut self, changed: &Condvar, left: Duration) -> Locked<'a> {
        let mut guard = self.guard.take().expect("the state is locked until dropped");
        // The lock is released only inside the wait: deliver now (a rare path).
        std::mem::take(&mut guard.wake).iter().for_each(Thread::unpark);
        let guard = changed.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner()).0;
        Locked::new(guard)
    }
}

impl Deref for Locked<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        self.guard.as_ref().expect("the state is locked until dropped")
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("the state is locked until dropped")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            let wake = std::mem::take(&mut guard.wake);
            drop(guard);
            wake.iter().for_each(Thread::unpark);
        }
    }
}

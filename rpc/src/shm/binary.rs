//! [`BinarySemaphore`]: a signal between processes, on one futex word.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::error::ShmError;
use super::futex::{self, Woke};
use super::header::{self, Claim, Kind, HEADER};
use super::region::Region;

const KIND: Kind = Kind {
    name: "binary semaphore",
    magic: 0x5057_4253, // "PWBS"
};

/// A binary semaphore in a [`Region`]: [`post`](BinarySemaphore::post) makes it 1 (it stays
/// 1 if it was), [`wait`](BinarySemaphore::wait) waits for 1 and takes it back to 0. For
/// signalling ("the data is ready") between any processes that map the region.
///
/// Nobody holds it, so nothing comes back when a process dies: for permits that must come
/// back, use a [`Semaphore`](super::Semaphore) (with one permit, it is binary too).
///
/// Orderings: `post` stores with `Release` and a successful `wait` takes the value with
/// `Acquire`, so what the poster wrote before posting is visible to the waiter after. The
/// waiter count and the state are `SeqCst` on both sides, so either the poster sees a
/// waiter and wakes it, or the waiter's futex wait sees the 1 and does not sleep.
#[derive(Debug)]
pub struct BinarySemaphore<'r> {
    state: &'r AtomicU32,
    waiters: &'r AtomicU32,
}

impl<'r> BinarySemaphore<'r> {
    /// The bytes it occupies in a region.
    pub const SIZE: usize = HEADER + 8;

    /// Creates it at `offset` (a multiple of 8) of `region`, posted if `posted`, before any
    /// other process uses it there.
    pub fn create(region: &'r Region, offset: usize, posted: bool) -> Result<BinarySemaphore<'r>, ShmError> {
        header::reserve(region, offset, Self::SIZE, KIND)?;
        Self::init(region, offset, posted)
    }

    /// Opens the binary semaphore at `offset` of a region that starts zeroed (one a supervisor
    /// created), creating it, posted if `posted`, if nothing is there yet: of several processes that call
    /// this at once, exactly one creates and the others wait for it, then open; if it dies
    /// half-way, a waiter takes over (one that hangs is given 10 s).
    pub fn open_or_create(region: &'r Region, offset: usize, posted: bool) -> Result<BinarySemaphore<'r>, ShmError> {
        match header::claim(region, offset, Self::SIZE, KIND)? {
            Claim::Create => Self::init(region, offset, posted),
            Claim::Open => Self::open(region, offset),
        }
    }

    /// Initialises the state of a reserved or claimed header, and publishes it.
    fn init(region: &'r Region, offset: usize, posted: bool) -> Result<BinarySemaphore<'r>, ShmError> {
        let sem = Self::at(region, offset)?;
        sem.state.store(u32::from(posted), Ordering::Relaxed);
        sem.waiters.store(0, Ordering::Relaxed);
        header::publish(region, offset, KIND)?;
        Ok(sem)
    }

    /// Opens the one another process created at `offset` of `region`, checking its header.
    pub fn open(region: &'r Region, offset: usize) -> Result<BinarySemaphore<'r>, ShmError> {
        header::check(region, offset, Self::SIZE, KIND)?;
        let sem = Self::at(region, offset)?;
        let state = sem.state.load(Ordering::Relaxed);
        if state > 1 {
            return Err(ShmError::Corrupt {
                what: KIND.name,
                offset,
                detail: format!("its state is {state}, not 0 or 1"),
            });
        }
        Ok(sem)
    }

    fn at(region: &'r Region, offset: usize) -> Result<BinarySemaphore<'r>, ShmError> {
        let words = region.atomics::<AtomicU32>(offset + HEADER, 2, KIND.name)?;
        Ok(BinarySemaphore {
            state: &words[0],
            waiters: &words[1],
        })
    }

    /// Makes it 1, waking the waiters (one of them takes it).
    ///
    /// All of them, not one: a woken waiter that is killed before it takes the 1 would
    /// otherwise take the wake-up with it, leaving the 1 there and the others asleep.
    pub fn post(&self) {
        if self.state.swap(1, Ordering::SeqCst) == 0 && self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(self.state, u32::MAX);
        }
    }

    /// Takes it from 1 to 0 if it is 1; whether it was.
    pub fn try_wait(&self) -> bool {
        self.state
            .compare_exchange(1, 0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Waits for it to be 1 and takes it to 0.
    pub fn wait(&self) {
        let taken = self.wait_inner(None);
        debug_assert!(taken, "a wait without a deadline ends taken");
    }

    /// As [`wait`](BinarySemaphore::wait), at most `timeout`; whether it was taken.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_inner(Some(Instant::now() + timeout))
    }

    /// As [`wait`](BinarySemaphore::wait), until `deadline` at most; whether it was taken.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        self.wait_inner(Some(deadline))
    }

    fn wait_inner(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.try_wait() {
                return true;
            }
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let woke = futex::wait(self.state, 0, deadline);
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if woke == Woke::TimedOut {
                return self.try_wait();
            }
        }
    }
}

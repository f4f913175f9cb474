//! [`Spinlock`]: a lock for very short critical sections, in a region.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::access::View;
use super::error::ShmError;
use super::header::{self, Claim, Kind, HEADER};
use super::region::Region;

const KIND: Kind = Kind {
    name: "spinlock",
    magic: 0x5057_534c, // "PWSL"
};

/// How many times a locker checks the lock, pausing the CPU between, before it yields.
const SPINS: u32 = 100;

/// A spinlock protecting a `T` in a [`Region`], for critical sections of a few hundred
/// nanoseconds at most (a few loads and stores): a locker spins a bounded number of times
/// (`spin_loop`, which tells the CPU), then gives up its time slice (`sched_yield`) and
/// tries again, so a holder that was preempted gets the CPU back instead of being starved
/// by spinners. It never sleeps in the kernel and costs CPU while it waits: for anything
/// longer, or that may block, use a [`RobustMutex`](super::RobustMutex).
///
/// It is not robust: a process that dies holding it leaves it held (the lock word holds the
/// holder's pid, see [`holder`](Spinlock::holder)); use the timeout forms where that can
/// happen.
///
/// Orderings: locking is a compare-exchange with `Acquire`, unlocking a store of 0 with
/// `Release`, so each holder sees what the previous one wrote.
#[derive(Debug)]
pub struct Spinlock<'r, T> {
    region: &'r Region,
    word: &'r AtomicU32,
    data: usize,
    _type: PhantomData<fn() -> T>,
}

impl<'r, T: Pod> Spinlock<'r, T> {
    /// The offset of the data from the start of the lock.
    const DATA_AT: usize = header::data_at::<T>(HEADER + 4);

    /// The bytes the lock and its data occupy in a region.
    pub const SIZE: usize = Self::DATA_AT + size_of::<T>();

    /// Creates a spinlock holding `value` at `offset` (a multiple of 8 and of `T`'s
    /// alignment) of `region`, before any other process uses it there.
    pub fn create(region: &'r Region, offset: usize, value: T) -> Result<Spinlock<'r, T>, ShmError> {
        header::reserve(region, offset, Self::SIZE, KIND)?;
        Self::init(region, offset, value)
    }

    /// Opens the spinlock at `offset` of a region that starts zeroed (one a supervisor
    /// created), creating it holding `value` if nothing is there yet: of several processes that call
    /// this at once, exactly one creates and the others wait for it, then open; if it dies
    /// half-way, a waiter takes over (one that hangs is given 10 s).
    pub fn open_or_create(region: &'r Region, offset: usize, value: T) -> Result<Spinlock<'r, T>, ShmError> {
        region.check(offset, Self::SIZE, header::align_for::<T>(), KIND.name)?;
        match header::claim(region, offset, Self::SIZE, KIND)? {
            Claim::Create => Self::init(region, offset, value),
            Claim::Open => Self::open(region, offset),
        }
    }

    /// Initialises the state of a reserved or claimed header, and publishes it.
    fn init(region: &'r Region, offset: usize, value: T) -> Result<Spinlock<'r, T>, ShmError> {
        let lock = Self::at(region, offset)?;
        lock.word.store(0, Ordering::Relaxed);
        region.write(lock.data, &value)?;
        header::publish(region, offset, KIND)?;
        Ok(lock)
    }

    /// Opens the spinlock another process created at `offset` of `region`, checking its
    /// header.
    pub fn open(region: &'r Region, offset: usize) -> Result<Spinlock<'r, T>, ShmError> {
        header::check(region, offset, Self::SIZE, KIND)?;
        Self::at(region, offset)
    }

    fn at(region: &'r Region, offset: usize) -> Result<Spinlock<'r, T>, ShmError> {
        region.check(offset, Self::SIZE, header::align_for::<T>(), KIND.name)?;
        Ok(Spinlock {
            region,
            word: region.atomic(offset + HEADER)?,
            data: offset + Self::DATA_AT,
            _type: PhantomData,
        })
    }

    /// The pid of the process holding it, if any (a snapshot).
    pub fn holder(&self) -> Option<u32> {
        Some(self.word.load(Ordering::Relaxed)).filter(|pid| *pid != 0)
    }

    /// Takes it if it is free.
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        let me = std::process::id();
        self.word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then(|| SpinGuard {
                data: self
                    .region
                    .view(self.data)
                    .expect("the data lies inside the checked lock"),
                word: self.word,
            })
    }

    /// Takes it, spinning and yielding as long as it takes.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        self.lock_inner(None).expect("a lock without a deadline ends locked")
    }

    /// Takes it, trying for at most `timeout`; `None` if it stayed held.
    pub fn lock_timeout(&self, timeout: Duration) -> Option<SpinGuard<'_, T>> {
        self.lock_inner(Some(Instant::now() + timeout))
    }

    /// Takes it, trying until `deadline`; `None` if it stayed held.
    pub fn lock_until(&self, deadline: Instant) -> Option<SpinGuard<'_, T>> {
        self.lock_inner(Some(deadline))
    }

    fn lock_inner(&self, deadline: Option<Instant>) -> Option<SpinGuard<'_, T>> {
        loop {
            for _ in 0..SPINS {
                // Load first: spinning on a plain load keeps the cache line shared until it
                // is free, instead of bouncing it with failed compare-exchanges.
                if self.word.load(Ordering::Relaxed) == 0 {
                    if let Some(guard) = self.try_lock() {
                        return Some(guard);
                    }
                }
                std::hint::spin_loop();
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return self.try_lock();
            }
            let _ = nix::sched::sched_yield();
        }
    }
}

/// The lock on a [`Spinlock`]; unlocks on drop. Derefs to a [`View`] of the data.
#[derive(Debug)]
#[must_use = "dropping it unlocks at once"]
pub struct SpinGuard<'a, T: Pod> {
    data: View<'a, T>,
    word: &'a AtomicU32,
}

impl<'a, T: Pod> Deref for SpinGuard<'a, T> {
    type Target = View<'a, T>;

    fn deref(&self) -> &View<'a, T> {
        &self.data
    }
}

impl<T: Pod> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // Release: the next holder's Acquire sees every store made under the lock.
        self.word.store(0, Ordering::Release);
    }
}

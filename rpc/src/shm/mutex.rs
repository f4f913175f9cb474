//! [`RobustMutex`]: a mutex in a region that survives the death of its holder.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::access::View;
use super::error::ShmError;
use super::header::{self, Claim, Kind, HEADER};
use super::region::Region;
use super::robust::{self, Acquired, RawRobust, Wait};

const KIND: Kind = Kind {
    name: "robust mutex",
    magic: 0x5057_4d58, // "PWMX"
};

/// Where the mutex sits after the header and the data-size word.
const MUTEX_AT: usize = 16;

/// A mutex protecting a `T` in a [`Region`], usable by every process that maps the region,
/// that survives the death of its holder (POSIX `PTHREAD_MUTEX_ROBUST`).
///
/// When a process (or thread) dies holding it, the next locker gets
/// [`Locked::OwnerDied`]: the lock, and a [`Recovery`] to repair the data (which the dead
/// holder may have left half updated) before calling [`Recovery::consistent`]. Dropping a
/// `Recovery` without it makes the mutex unusable for good
/// ([`ShmError::Unrecoverable`]), as POSIX says, since nobody vouched for the data.
///
/// It is glibc's process-shared robust `pthread_mutex_t` (see the module's `robust.rs` for
/// why, and for the trust it assumes between the processes). The data is read and written
/// by copy through the guard, which derefs to a [`View`] ([`View::load`],
/// [`View::store`], [`View::update`]); locking
/// acquires and unlocking releases, so every copy made under the lock sees the last holder's.
///
/// ```
/// use procwire_rpc::shm::{Locked, Region, RobustMutex};
///
/// # fn main() -> Result<(), procwire_rpc::shm::ShmError> {
/// let region = Region::create(4096)?;
/// let counter = RobustMutex::create(&region, 0, 0u64)?; // other processes: RobustMutex::<u64>::open
/// let guard = match counter.lock()? {
///     Locked::Held(guard) => guard,
///     Locked::OwnerDied(recovery) => {
///         let count = recovery.load(); // repair what the dead holder left, then:
///         recovery.store(&count);
///         recovery.consistent()?
///     }
/// };
/// guard.update(|n| *n += 1);
/// assert_eq!(guard.load(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RobustMutex<'r, T> {
    region: &'r Region,
    offset: usize,
    raw: RawRobust<'r>,
    data: usize,
    _type: PhantomData<fn() -> T>,
}

impl<'r, T: Pod> RobustMutex<'r, T> {
    /// The offset of the data from the start of the mutex.
    const DATA_AT: usize = header::data_at::<T>(MUTEX_AT + robust::SIZE);

    /// The bytes the mutex and its data occupy in a region.
    pub const SIZE: usize = Self::DATA_AT + size_of::<T>();

    /// Creates a mutex holding `value` at `offset` (a multiple of 8, and of `T`'s alignment)
    /// of `region`, before any other process uses it there.
    pub fn create(region: &'r Region, offset: usize, value: T) -> Result<RobustMutex<'r, T>, ShmError> {
        region.check(offset, Self::SIZE, header::align_for::<T>(), KIND.name)?;
        header::reserve(region, offset, Self::SIZE, KIND)?;
        Self::init(region, offset, value)
    }

    /// Opens the mutex at `offset` of a region that starts zeroed (one a supervisor
    /// created), creating it holding `value` if nothing is there yet: of several processes that call
    /// this at once, exactly one creates and the others wait for it, then open; if it dies
    /// half-way, a waiter takes over (one that hangs is given 10 s).
    pub fn open_or_create(region: &'r Region, offset: usize, value: T) -> Result<RobustMutex<'r, T>, ShmError> {
        region.check(offset, Self::SIZE, header::align_for::<T>(), KIND.name)?;
        match header::claim(region, offset, Self::SIZE, KIND)? {
            Claim::Create => Self::init(region, offset, value),
            Claim::Open => Self::open(region, offset),
        }
    }

    /// Initialises the state of a reserved or claimed header, and publishes it.
    fn init(region: &'r Region, offset: usize, value: T) -> Result<RobustMutex<'r, T>, ShmError> {
        let mutex = Self::at(region, offset)?;
        region
            .atomic::<AtomicU32>(offset + HEADER)?
            .store(size_of::<T>() as u32, Ordering::Relaxed);
        mutex.raw.init()?;
        region.write(mutex.data, &value)?;
        header::publish(region, offset, KIND)?;
        Ok(mutex)
    }

    /// Opens the mutex another process created at `offset` of `region`, checking its header
    /// and that it holds a value of `T`'s size.
    pub fn open(region: &'r Region, offset: usize) -> Result<RobustMutex<'r, T>, ShmError> {
        region.check(offset, Self::SIZE, header::align_for::<T>(), KIND.name)?;
        header::check(region, offset, Self::SIZE, KIND)?;
        let size = region.atomic::<AtomicU32>(offset + HEADER)?.load(Ordering::Relaxed);
        if size as usize != size_of::<T>() {
            return Err(ShmError::Corrupt {
                what: KIND.name,
                offset,
                detail: format!("it holds {size} bytes of data, not the {} of this type", size_of::<T>()),
            });
        }
        Self::at(region, offset)
    }

    fn at(region: &'r Region, offset: usize) -> Result<RobustMutex<'r, T>, ShmError> {
        Ok(RobustMutex {
            region,
            offset,
            raw: RawRobust::at(region, offset + MUTEX_AT, offset)?,
            data: offset + Self::DATA_AT,
            _type: PhantomData,
        })
    }

    /// Locks, waiting as long as it takes.
    pub fn lock(&self) -> Result<Locked<'_, T>, ShmError> {
        Ok(self.acquire(Wait::Block)?.expect("a blocking lock always ends locked"))
    }

    /// Locks if nobody holds the mutex; `None` if somebody does.
    pub fn try_lock(&self) -> Result<Option<Locked<'_, T>>, ShmError> {
        self.acquire(Wait::Try)
    }

    /// Locks, waiting at most `timeout`; `None` if it did not get the lock in time.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<Locked<'_, T>>, ShmError> {
        self.acquire(Wait::Until(Instant::now() + timeout))
    }

    /// Locks, waiting until `deadline` at most; `None` if it did not get the lock in time.
    pub fn lock_until(&self, deadline: Instant) -> Result<Option<Locked<'_, T>>, ShmError> {
        self.acquire(Wait::Until(deadline))
    }

    /// The guard of a lock this thread just took.
    fn guard(&self) -> MutexGuard<'_, T> {
        MutexGuard {
            data: self
                .region
                .view(self.data)
                .expect("the data lies inside the checked mutex"),
            raw: &self.raw,
            _not_send: PhantomData,
        }
    }

    fn acquire(&self, wait: Wait) -> Result<Option<Locked<'_, T>>, ShmError> {
        Ok(match self.raw.lock(wait)? {
            Acquired::Locked => Some(Locked::Held(self.guard())),
            Acquired::OwnerDied => Some(Locked::OwnerDied(Recovery {
                guard: Some(self.guard()),
                offset: self.offset,
            })),
            Acquired::Busy | Acquired::TimedOut => None,
        })
    }
}

/// What locking a [`RobustMutex`] gave: the lock, and whether its last holder died holding
/// it. Both hold the lock; match to find out which.
#[derive(Debug)]
#[must_use = "dropping it unlocks the mutex (and, for OwnerDied, makes it unrecoverable)"]
pub enum Locked<'a, T: Pod> {
    /// The lock, with consistent data.
    Held(MutexGuard<'a, T>),
    /// The lock, from a holder that died: repair the data, then [`Recovery::consistent`].
    OwnerDied(Recovery<'a, T>),
}

impl<'a, T: Pod> Locked<'a, T> {
    /// The guard, after calling `repair` on the data if the last holder died (and then
    /// marking the mutex consistent).
    pub fn recover(self, repair: impl FnOnce(&mut T)) -> Result<MutexGuard<'a, T>, ShmError> {
        match self {
            Locked::Held(guard) => Ok(guard),
            Locked::OwnerDied(recovery) => {
                recovery.update(repair);
                recovery.consistent()
            }
        }
    }

    /// Whether the last holder died holding the lock.
    pub fn owner_died(&self) -> bool {
        matches!(self, Locked::OwnerDied(_))
    }
}

/// The lock on a [`RobustMutex`]; unlocks on drop. It stays on the thread that locked
/// (glibc's robust list is per thread), so it is not `Send`.
#[derive(Debug)]
pub struct MutexGuard<'a, T: Pod> {
    data: View<'a, T>,
    raw: &'a RawRobust<'a>,
    _not_send: PhantomData<*const ()>,
}

impl<'a, T: Pod> Deref for MutexGuard<'a, T> {
    type Target = View<'a, T>;

    /// The data, to [`load`](View::load), [`store`](View::store) or
    /// [`update`](View::update) while the lock is held.
    fn deref(&self) -> &View<'a, T> {
        &self.data
    }
}

impl<T: Pod> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.raw.unlock();
    }
}

/// The lock on a [`RobustMutex`] whose last holder died holding it. Read and repair the
/// data, then call [`consistent`](Recovery::consistent). Dropped without that, the mutex
/// becomes unusable for every process ([`ShmError::Unrecoverable`]).
#[derive(Debug)]
pub struct Recovery<'a, T: Pod> {
    guard: Option<MutexGuard<'a, T>>,
    offset: usize,
}

impl<'a, T: Pod> Deref for Recovery<'a, T> {
    type Target = View<'a, T>;

    /// The data as the dead holder left it, to repair.
    fn deref(&self) -> &View<'a, T> {
        &self.guard.as_ref().expect("present until consumed").data
    }
}

impl<'a, T: Pod> Recovery<'a, T> {
    /// Declares the data repaired: the mutex works normally again, and the lock goes on as
    /// an ordinary guard.
    pub fn consistent(mut self) -> Result<MutexGuard<'a, T>, ShmError> {
        let guard = self.guard.take().expect("present until consumed");
        guard.raw.consistent()?;
        Ok(guard)
    }

    /// Where the mutex is in its region.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

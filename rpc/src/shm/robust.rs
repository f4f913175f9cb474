//! glibc's robust, process-shared `pthread_mutex_t`, in a region: the only code that calls
//! into it.
//!
//! Why glibc's and not a futex of our own: a robust mutex needs the kernel's robust list
//! (`set_robust_list(2)`), which the kernel walks when a thread dies to mark each mutex it
//! held as "owner died" and wake a waiter. glibc already registers that list for every
//! thread, and a second registration would replace glibc's; so the standard mutex is both
//! the least code and the only one that coexists with glibc's own robust mutexes.
//!
//! A lost wake-up: a waiter that the unlocker woke, killed before it takes the lock, takes
//! the wake-up with it, and if a newcomer took the lock meanwhile the kernel's robust-list
//! handling (which covers holders, and a dying waiter only while the lock is free) does not
//! make up for it: the other waiters would sleep until the lock is contended again, which
//! may be never. So a blocking lock waits in slices of [`SLICE`] (`pthread_mutex_timedlock`)
//! and tries again after each: a lost wake-up costs at most one slice, and a blocked locker
//! one system call per slice.
//!
//! Trust: glibc links a held mutex into the locking thread's robust list through pointers
//! stored in the mutex itself, and follows them on unlock. A process that maps the region
//! and writes garbage into a held mutex can therefore corrupt the memory of the process
//! holding it. Share a robust mutex only among processes that trust each other (the workers
//! of one program); this is glibc's model too.

use std::marker::PhantomData;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::libc;

use super::error::ShmError;
use super::region::Region;

/// The bytes a mutex occupies.
pub(crate) const SIZE: usize = size_of::<libc::pthread_mutex_t>();
/// The alignment it needs.
pub(crate) const ALIGN: usize = align_of::<libc::pthread_mutex_t>();

/// The longest a blocked locker sleeps before it tries the lock again (see the module docs).
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// How long to wait for the lock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Until it is free.
    Block,
    /// Not at all.
    Try,
    /// Until the deadline.
    Until(Instant),
}

/// What locking gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The lock is held, and the data is consistent.
    Locked,
    /// The lock is held, but its previous holder died holding it: the data may be half
    /// updated; the mutex must be marked consistent before it is unlocked, or it becomes
    /// unusable.
    OwnerDied,
    /// Another holds it (for [`Wait::Try`]).
    Busy,
    /// The deadline passed.
    TimedOut,
}

/// A robust process-shared mutex at a fixed place in a region. Lock and unlock on the same
/// thread (glibc's robust list is per thread): the guards built on it are not `Send`.
#[derive(Debug)]
pub(crate) struct RawRobust<'r> {
    ptr: *mut libc::pthread_mutex_t,
    /// The offset of the primitive it is part of.
    offset: usize,
    _region: PhantomData<&'r Region>,
}

// SAFETY: the mutex is made for use from many threads and processes at once; the pointer is
// only ever passed to the pthread functions, which synchronise internally.
unsafe impl Send for RawRobust<'_> {}
// SAFETY: as above.
unsafe impl Sync for RawRobust<'_> {}

impl<'r> RawRobust<'r> {
    /// The mutex at `at` of `region` (checked to be inside it and aligned), part of the
    /// primitive at `owner` (named in errors).
    pub(crate) fn at(region: &'r Region, at: usize, owner: usize) -> Result<RawRobust<'r>, ShmError> {
        region.check(at, SIZE, ALIGN, "a robust mutex")?;
        Ok(RawRobust {
            // The pointer stays inside the mapping (checked above).
            ptr: region.as_ptr().wrapping_add(at).cast(),
            offset: owner,
            _region: PhantomData,
        })
    }

    /// Initialises the mutex: process-shared and robust. Only the creator calls this, before
    /// any other process can use the mutex.
    pub(crate) fn init(&self) -> Result<(), ShmError> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let os = |op, r: libc::c_int| match r {
            0 => Ok(()),
            e => Err(ShmError::os(op, Errno::from_raw(e))),
        };
        // SAFETY: `attr` is written by pthread_mutexattr_init before any other use and
        // destroyed after; `self.ptr` points to SIZE writable, aligned bytes of the mapping
        // (see `at`) that nobody else uses yet (the primitive is not published).
        unsafe {
            os(
                "pthread_mutexattr_init",
                libc::pthread_mutexattr_init(attr.as_mut_ptr()),
            )?;
            let result = os(
                "pthread_mutexattr_setpshared",
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED),
            )
            .and_then(|()| {
                os(
                    "pthread_mutexattr_setrobust",
                    libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST),
                )
            })
            .and_then(|()| os("pthread_mutex_init", libc::pthread_mutex_init(self.ptr, attr.as_ptr())));
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            result
        }
    }

    /// Locks, waiting as `wait` says.
    pub(crate) fn lock(&self, wait: Wait) -> Result<Acquired, ShmError> {
        loop {
            let slice = Instant::now() + SLICE;
            let until = match wait {
                Wait::Block => Some(slice),
                Wait::Try => None,
                Wait::Until(deadline) => Some(deadline.min(slice)),
            };
            // SAFETY: `self.ptr` points to a mutex initialised by `init` (the primitive's
            // header was checked before this was built) that stays mapped while 'r lives.
            let r = unsafe {
                match until {
                    None => libc::pthread_mutex_trylock(self.ptr),
                    Some(until) => libc::pthread_mutex_timedlock(self.ptr, &realtime(until)),
                }
            };
            return match r {
                0 => Ok(Acquired::Locked),
                libc::EOWNERDEAD => Ok(Acquired::OwnerDied),
                libc::EBUSY => Ok(Acquired::Busy),
                libc::ETIMEDOUT => match wait {
                    Wait::Until(deadline) if Instant::now() >= deadline => Ok(Acquired::TimedOut),
                    // The end of a slice, not of the wait: try again.
                    _ => continue,
                },
                libc::EINTR => continue,
                libc::ENOTRECOVERABLE => Err(ShmError::Unrecoverable { offset: self.offset }),
                e => Err(ShmError::os("locking a robust mutex", Errno::from_raw(e))),
            };
        }
    }

    /// Marks the state protected by a mutex locked with [`Acquired::OwnerDied`] consistent.
    pub(crate) fn consistent(&self) -> Result<(), ShmError> {
        // SAFETY: as in `lock`; this thread holds the mutex.
        match unsafe { libc::pthread_mutex_consistent(self.ptr) } {
            0 => Ok(()),
            e => Err(ShmError::os("pthread_mutex_consistent", Errno::from_raw(e))),
        }
    }

    /// Unlocks a mutex this thread holds.
    pub(crate) fn unlock(&self) {
        // SAFETY: as in `lock`; the callers unlock only what this thread locked.
        let r = unsafe { libc::pthread_mutex_unlock(self.ptr) };
        debug_assert_eq!(r, 0, "unlocking a robust mutex this thread holds");
    }
}

/// `deadline` as the absolute CLOCK_REALTIME time `pthread_mutex_timedlock` wants.
fn realtime(deadline: Instant) -> libc::timespec {
    let left = deadline.saturating_duration_since(Instant::now());
    let at = SystemTime::now() + left;
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    libc::timespec {
        tv_sec: since.as_secs() as libc::time_t,
        tv_nsec: since.subsec_nanos() as libc::c_long,
    }
}

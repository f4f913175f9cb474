//! [`Semaphore`]: a counting semaphore in a region whose permits come back when a holder
//! dies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::error::ShmError;
use super::futex::{self, Woke};
use super::header::{self, Claim, Kind, HEADER};
use super::region::Region;
use super::robust::{Acquired, RawRobust, Wait};

const KIND: Kind = Kind {
    name: "semaphore",
    magic: 0x5057_534d, // "PWSM"
};

/// The words after the header: permits, seq (the futex word), waiters, slot count.
const PERMITS: usize = 0;
const SEQ: usize = 1;
const WAITERS: usize = 2;
const SLOT_COUNT: usize = 3;
/// Where the table's lock sits, after the header and those four words.
const LOCK_AT: usize = HEADER + 16;
/// Where the table of holders starts.
const TABLE_AT: usize = 64;

/// How often a waiter that sleeps checks whether the holders are still alive.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// A counting semaphore in a [`Region`], for every process that maps the region, that gives
/// back the permits of a process that died holding them.
///
/// No POSIX semaphore does that (`SEM_UNDO` exists only for System V semaphores). Here each
/// permit is recorded against the process that holds it, in a table of
/// [`MAX_HOLDERS`](Semaphore::MAX_HOLDERS) slots `(pid, count)` in the region, and the
/// number available is always `permits - sum(counts)`: one source of truth, changed by one
/// store per acquire or release under a robust mutex, so a holder that dies at any point
/// leaves the table consistent (it may leave its own slot, never a half-done count). Its
/// permits then come back:
///
/// - at once, when whoever reaps the process calls [`reclaim`](Semaphore::reclaim)`(pid)`.
///   Call it after the process exited and before reaping it (a pidfd's readiness, or
///   `waitid` with `WNOWAIT`), so its pid cannot have been reused by a new holder. (procwire's
///   supervisor does not: it would have to know where the semaphores are, and taking the
///   table's lock runs glibc's robust-mutex code on memory its workers can write, which a
///   worker could use to corrupt the supervisor; see `robust.rs`);
/// - otherwise within about a second of the process's death, as soon as somebody waits:
///   waiters check about once a second that the holders still exist (`kill(pid, 0)`), and
///   always before giving up on a timeout
///   ([`reclaim_dead`](Semaphore::reclaim_dead) does the same on demand). A dead holder
///   whose pid was reused by a live process is not detected this way: its permits are then
///   late, never doubled.
///
/// Permits belong to processes, not threads: the threads of one process share its slot.
/// Holders are told apart by pid, so every process that uses one semaphore must be in the
/// same pid namespace.
/// Acquiring takes the table's lock, so this is no lock-free fast path; waiting sleeps on a
/// futex word bumped by every release (shared futex, see the module docs), at most a second
/// at a time, so a wake-up lost with a waiter killed as it was woken costs at most that.
#[derive(Debug)]
pub struct Semaphore<'r> {
    region: &'r Region,
    offset: usize,
    words: &'r [AtomicU32],
    table: &'r [AtomicU32],
    lock: RawRobust<'r>,
}

impl<'r> Semaphore<'r> {
    /// How many processes can hold permits at once.
    pub const MAX_HOLDERS: usize = 64;

    /// The bytes a semaphore occupies in a region.
    pub const SIZE: usize = TABLE_AT + Self::MAX_HOLDERS * 8;

    /// Creates a semaphore with `permits` permits (at least 1; 1 makes it binary) at `offset`
    /// (a multiple of 8) of `region`, before any other process uses it there.
    pub fn create(region: &'r Region, offset: usize, permits: u32) -> Result<Semaphore<'r>, ShmError> {
        Self::check_permits(permits)?;
        header::reserve(region, offset, Self::SIZE, KIND)?;
        Self::init(region, offset, permits)
    }

    /// Opens the semaphore at `offset` of a region that starts zeroed (one a supervisor
    /// created), creating it with `permits` permits if nothing is there yet: of several processes that call
    /// this at once, exactly one creates and the others wait for it, then open; if it dies
    /// half-way, a waiter takes over (one that hangs is given 10 s).
    pub fn open_or_create(region: &'r Region, offset: usize, permits: u32) -> Result<Semaphore<'r>, ShmError> {
        Self::check_permits(permits)?;
        match header::claim(region, offset, Self::SIZE, KIND)? {
            Claim::Create => Self::init(region, offset, permits),
            Claim::Open => Self::open(region, offset),
        }
    }

    fn check_permits(permits: u32) -> Result<(), ShmError> {
        if permits == 0 {
            return Err(ShmError::Invalid {
                what: KIND.name,
                detail: "a semaphore needs at least one permit".into(),
            });
        }
        Ok(())
    }

    /// Initialises the state of a reserved or claimed header, and publishes it.
    fn init(region: &'r Region, offset: usize, permits: u32) -> Result<Semaphore<'r>, ShmError> {
        let sem = Self::at(region, offset)?;
        sem.words[PERMITS].store(permits, Ordering::Relaxed);
        sem.words[SEQ].store(0, Ordering::Relaxed);
        sem.words[WAITERS].store(0, Ordering::Relaxed);
        sem.words[SLOT_COUNT].store(Self::MAX_HOLDERS as u32, Ordering::Relaxed);
        for word in sem.table {
            word.store(0, Ordering::Relaxed);
        }
        sem.lock.init()?;
        header::publish(region, offset, KIND)?;
        Ok(sem)
    }

    /// Opens the semaphore another process created at `offset` of `region`, checking its
    /// header.
    pub fn open(region: &'r Region, offset: usize) -> Result<Semaphore<'r>, ShmError> {
        header::check(region, offset, Self::SIZE, KIND)?;
        let sem = Self::at(region, offset)?;
        let slots = sem.words[SLOT_COUNT].load(Ordering::Relaxed);
        if sem.permits() == 0 || slots as usize != Self::MAX_HOLDERS {
            return Err(sem.corrupt(format!("{} permits and {slots} holder slots", sem.permits())));
        }
        Ok(sem)
    }

    fn at(region: &'r Region, offset: usize) -> Result<Semaphore<'r>, ShmError> {
        Ok(Semaphore {
            region,
            offset,
            words: region.atomics(offset + HEADER, 4, KIND.name)?,
            table: region.atomics(offset + TABLE_AT, Self::MAX_HOLDERS * 2, KIND.name)?,
            lock: RawRobust::at(region, offset + LOCK_AT, offset)?,
        })
    }

    fn corrupt(&self, detail: String) -> ShmError {
        ShmError::Corrupt {
            what: KIND.name,
            offset: self.offset,
            detail,
        }
    }

    /// The number of permits it was created with.
    pub fn permits(&self) -> u32 {
        self.words[PERMITS].load(Ordering::Relaxed)
    }

    /// The permits free now (a snapshot).
    pub fn available(&self) -> Result<u32, ShmError> {
        self.with_table(|table| self.free(table))?
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) -> Result<Permit<'_>, ShmError> {
        Ok(self
            .acquire_inner(None)?
            .expect("a blocking acquire always ends with a permit"))
    }

    /// Takes a permit if one is free; `None` if none is.
    pub fn try_acquire(&self) -> Result<Option<Permit<'_>>, ShmError> {
        // Lazily: a Permit made and dropped would give back a permit never taken.
        Ok(self.take()?.then(|| Permit { sem: self }))
    }

    /// Takes a permit, waiting at most `timeout`; `None` if none came free in time.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<Permit<'_>>, ShmError> {
        self.acquire_inner(Some(Instant::now() + timeout))
    }

    /// Takes a permit, waiting until `deadline` at most; `None` if none came free in time.
    pub fn acquire_until(&self, deadline: Instant) -> Result<Option<Permit<'_>>, ShmError> {
        self.acquire_inner(Some(deadline))
    }

    fn acquire_inner(&self, deadline: Option<Instant>) -> Result<Option<Permit<'_>>, ShmError> {
        let seq = &self.words[SEQ];
        let waiters = &self.words[WAITERS];
        let mut last_check = Instant::now();
        loop {
            // Read before looking, so that a release after the look changes it and the wait
            // below returns at once (FUTEX_WAIT compares atomically with the sleep).
            let seen = seq.load(Ordering::SeqCst);
            if self.take()? {
                return Ok(Some(Permit { sem: self }));
            }
            let slice = Instant::now() + LIVENESS_EVERY;
            let until = deadline.map_or(slice, |d| d.min(slice));
            // SeqCst on the waiter count and on seq (here and in `release`): either the
            // releaser sees this waiter and wakes it, or this wait sees the new seq.
            waiters.fetch_add(1, Ordering::SeqCst);
            let woke = futex::wait(seq, seen, Some(until));
            waiters.fetch_sub(1, Ordering::SeqCst);
            if woke == Woke::TimedOut || last_check.elapsed() >= LIVENESS_EVERY {
                last_check = Instant::now();
                self.reclaim_dead()?;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                if self.take()? {
                    return Ok(Some(Permit { sem: self }));
                }
                // A wake meant for a waiter may have come to us as we gave up: pass it on.
                if waiters.load(Ordering::SeqCst) > 0 {
                    futex::wake(seq, 1);
                }
                return Ok(None);
            }
        }
    }

    /// The free permits given the table.
    fn free(&self, table: &[AtomicU32]) -> Result<u32, ShmError> {
        let held: u64 = table
            .chunks(2)
            .map(|slot| u64::from(slot[1].load(Ordering::Relaxed)))
            .sum();
        let permits = u64::from(self.permits());
        if held > permits {
            return Err(self.corrupt(format!("its holders hold {held} of {permits} permits")));
        }
        Ok((permits - held) as u32)
    }

    /// Records a permit for this process if one is free.
    fn take(&self) -> Result<bool, ShmError> {
        let me = std::process::id();
        self.with_table(|table| {
            if self.free(table)? == 0 {
                return Ok(false);
            }
            let slots = || table.chunks(2);
            if let Some(slot) = slots().find(|s| s[0].load(Ordering::Relaxed) == me) {
                slot[1].fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
            // A slot is free when it holds nothing; its pid may be stale (a holder that
            // died between claiming it and counting), which is harmless.
            let Some(slot) = slots().find(|s| s[1].load(Ordering::Relaxed) == 0) else {
                return Err(ShmError::HoldersFull {
                    offset: self.offset,
                    slots: Self::MAX_HOLDERS,
                });
            };
            // Pid first, then the count: a death between the two leaves a slot holding 0.
            slot[0].store(me, Ordering::Relaxed);
            slot[1].store(1, Ordering::Relaxed);
            Ok(true)
        })?
    }

    /// Gives back one permit of this process.
    fn release(&self) -> Result<(), ShmError> {
        let me = std::process::id();
        self.with_table(|table| {
            let slot = table.chunks(2).find(|s| s[0].load(Ordering::Relaxed) == me);
            // No slot: it was reclaimed while this process held it (a wrong `reclaim`);
            // giving it back again would make one permit two.
            if let Some(slot) = slot {
                let held = slot[1].load(Ordering::Relaxed);
                slot[1].store(held.saturating_sub(1), Ordering::Relaxed);
            }
        })?;
        self.bump(1);
        Ok(())
    }

    /// Tells waiters that `n` permits came free.
    fn bump(&self, n: u32) {
        let seq = &self.words[SEQ];
        // After the table's lock was released (which published the new counts).
        seq.fetch_add(1, Ordering::SeqCst);
        if self.words[WAITERS].load(Ordering::SeqCst) > 0 {
            futex::wake(seq, n);
        }
    }

    /// Gives back every permit held by process `pid`, which must have exited (see the type's
    /// docs for when to call it). Returns how many came back.
    pub fn reclaim(&self, pid: u32) -> Result<u32, ShmError> {
        self.reclaim_where(|holder| holder == pid)
    }

    /// Gives back the permits of every holder that no longer exists. Returns how many came
    /// back.
    pub fn reclaim_dead(&self) -> Result<u32, ShmError> {
        self.reclaim_where(|pid| !header::exists(pid))
    }

    fn reclaim_where(&self, mut gone: impl FnMut(u32) -> bool) -> Result<u32, ShmError> {
        let back = self.with_table(|table| {
            let mut back = 0u32;
            for slot in table.chunks(2) {
                let held = slot[1].load(Ordering::Relaxed);
                if held > 0 && gone(slot[0].load(Ordering::Relaxed)) {
                    slot[1].store(0, Ordering::Relaxed);
                    back = back.saturating_add(held);
                }
            }
            back
        })?;
        if back > 0 {
            self.bump(back);
        }
        Ok(back)
    }

    /// Runs `f` on the table of holders under its lock. The table is consistent after any
    /// death (see the type's docs), so a lock whose holder died is marked consistent at once.
    fn with_table<R>(&self, f: impl FnOnce(&[AtomicU32]) -> R) -> Result<R, ShmError> {
        match self.lock.lock(Wait::Block)? {
            Acquired::Locked => {}
            Acquired::OwnerDied => self.lock.consistent()?,
            Acquired::Busy | Acquired::TimedOut => unreachable!("a blocking lock ends locked"),
        }
        struct Unlock<'a, 'r>(&'a RawRobust<'r>);
        impl Drop for Unlock<'_, '_> {
            fn drop(&mut self) {
                self.0.unlock();
            }
        }
        let _unlock = Unlock(&self.lock);
        Ok(f(self.table))
    }

    /// The region it lives in.
    pub fn region(&self) -> &'r Region {
        self.region
    }
}

/// A permit of a [`Semaphore`], given back on drop (or by [`release`](Permit::release)).
#[derive(Debug)]
#[must_use = "dropping a permit gives it back at once"]
pub struct Permit<'a> {
    sem: &'a Semaphore<'a>,
}

impl Permit<'_> {
    /// Gives the permit back, reporting a failure that drop would ignore.
    pub fn release(self) -> Result<(), ShmError> {
        let sem = self.sem;
        std::mem::forget(self);
        sem.release()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.sem.release() {
            tracing::warn!("giving back a semaphore permit failed: {e}");
        }
    }
}

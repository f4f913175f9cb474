//! [`Barrier`]: a reusable barrier for N processes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::ShmError;
use super::futex::{self, Woke};
use super::header::{self, Claim, Kind, HEADER};
use super::region::Region;

const KIND: Kind = Kind {
    name: "barrier",
    magic: 0x5057_4252, // "PWBR"
};

/// A barrier in a [`Region`] for `parties` processes (or threads), reusable: once all have
/// arrived they all pass, and the next generation starts.
///
/// The state is one 64-bit word, generation in the high half and arrivals in the low, so an
/// arrival, the last arrival's "next generation" and a timed-out waiter's leaving are each
/// one atomic operation and cannot be confused with another generation's. Waiters sleep on
/// a 32-bit futex copy of the generation, stored after the state.
///
/// Orderings: each arrival is a `AcqRel` read-modify-write, so the last arrival acquires
/// what every earlier arrival wrote before arriving; it then stores the next generation with
/// `Release`, which every waiter loads with `Acquire`: after passing, each process sees what
/// all of them wrote before arriving.
///
/// A process that dies while the others wait leaves them waiting: use the timeout forms
/// where that can happen. A waiter that times out leaves the barrier as if it had not
/// arrived (unless the generation completed meanwhile, and then it passed).
#[derive(Debug)]
pub struct Barrier<'r> {
    offset: usize,
    parties: u32,
    futex: &'r AtomicU32,
    state: &'r AtomicU64,
}

/// What passing a [`Barrier`] tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Passed {
    /// The generation passed (0 for the first).
    pub generation: u32,
    /// Whether this was the last to arrive (one per generation).
    pub leader: bool,
}

impl<'r> Barrier<'r> {
    /// The bytes it occupies in a region.
    pub const SIZE: usize = HEADER + 16;

    /// Creates a barrier for `parties` (at least 1) at `offset` (a multiple of 8) of
    /// `region`, before any other process uses it there.
    pub fn create(region: &'r Region, offset: usize, parties: u32) -> Result<Barrier<'r>, ShmError> {
        Self::check_parties(parties)?;
        header::reserve(region, offset, Self::SIZE, KIND)?;
        Self::init(region, offset, parties)
    }

    /// Opens the barrier at `offset` of a region that starts zeroed (one a supervisor
    /// created), creating it for `parties` if nothing is there yet: of several processes that call
    /// this at once, exactly one creates and the others wait for it, then open; if it dies
    /// half-way, a waiter takes over (one that hangs is given 10 s).
    pub fn open_or_create(region: &'r Region, offset: usize, parties: u32) -> Result<Barrier<'r>, ShmError> {
        Self::check_parties(parties)?;
        match header::claim(region, offset, Self::SIZE, KIND)? {
            Claim::Create => Self::init(region, offset, parties),
            Claim::Open => Self::open(region, offset),
        }
    }

    fn check_parties(parties: u32) -> Result<(), ShmError> {
        if parties == 0 {
            return Err(ShmError::Invalid {
                what: KIND.name,
                detail: "a barrier needs at least one party".into(),
            });
        }
        Ok(())
    }

    /// Initialises the state of a reserved or claimed header, and publishes it.
    fn init(region: &'r Region, offset: usize, parties: u32) -> Result<Barrier<'r>, ShmError> {
        let words = region.atomics::<AtomicU32>(offset + HEADER, 2, KIND.name)?;
        words[0].store(parties, Ordering::Relaxed);
        words[1].store(0, Ordering::Relaxed);
        region
            .atomic::<AtomicU64>(offset + HEADER + 8)?
            .store(0, Ordering::Relaxed);
        header::publish(region, offset, KIND)?;
        Self::open(region, offset)
    }

    /// Opens the barrier another process created at `offset` of `region`, checking its
    /// header.
    pub fn open(region: &'r Region, offset: usize) -> Result<Barrier<'r>, ShmError> {
        header::check(region, offset, Self::SIZE, KIND)?;
        let words = region.atomics::<AtomicU32>(offset + HEADER, 2, KIND.name)?;
        let barrier = Barrier {
            offset,
            parties: words[0].load(Ordering::Relaxed),
            futex: &words[1],
            state: region.atomic::<AtomicU64>(offset + HEADER + 8)?,
        };
        let arrived = barrier.state.load(Ordering::Relaxed) as u32;
        if barrier.parties == 0 || arrived >= barrier.parties {
            return Err(barrier.corrupt(arrived));
        }
        Ok(barrier)
    }

    fn corrupt(&self, arrived: u32) -> ShmError {
        ShmError::Corrupt {
            what: KIND.name,
            offset: self.offset,
            detail: format!("{arrived} arrivals for {} parties", self.parties),
        }
    }

    /// How many processes it waits for.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// Arrives and waits for the others.
    pub fn wait(&self) -> Result<Passed, ShmError> {
        Ok(self.wait_inner(None)?.expect("a wait without a deadline ends passed"))
    }

    /// Arrives and waits at most `timeout`; `None` if the others did not all arrive in time
    /// (this process then no longer counts as arrived).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<Passed>, ShmError> {
        self.wait_inner(Some(Instant::now() + timeout))
    }

    /// As [`wait_timeout`](Barrier::wait_timeout), until `deadline`.
    pub fn wait_until(&self, deadline: Instant) -> Result<Option<Passed>, ShmError> {
        self.wait_inner(Some(deadline))
    }

    fn wait_inner(&self, deadline: Option<Instant>) -> Result<Option<Passed>, ShmError> {
        let before = self.state.fetch_add(1, Ordering::AcqRel);
        let generation = (before >> 32) as u32;
        let arrived = before as u32 + 1;
        if arrived > self.parties {
            return Err(self.corrupt(arrived));
        }
        if arrived == self.parties {
            let next = generation.wrapping_add(1);
            // Release: the waiters' Acquire load of the state sees all the arrivals' writes.
            self.state.store(u64::from(next) << 32, Ordering::Release);
            self.futex.store(next, Ordering::Release);
            futex::wake(self.futex, u32::MAX);
            return Ok(Some(Passed {
                generation,
                leader: true,
            }));
        }
        let passed = Some(Passed {
            generation,
            leader: false,
        });
        loop {
            if (self.state.load(Ordering::Acquire) >> 32) as u32 != generation {
                return Ok(passed);
            }
            if futex::wait(self.futex, generation, deadline) != Woke::TimedOut {
                continue;
            }
            // Leave, unless the generation completed: then we passed after all.
            let mut current = self.state.load(Ordering::Acquire);
            loop {
                if (current >> 32) as u32 != generation {
                    return Ok(passed);
                }
                if current as u32 == 0 {
                    return Err(self.corrupt(0));
                }
                match self
                    .state
                    .compare_exchange(current, current - 1, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Ok(None),
                    Err(now) => current = now,
                }
            }
        }
    }
}

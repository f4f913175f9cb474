//! The header every primitive starts with: a magic number naming its kind and a layout
//! version, so that opening one at the wrong offset, in memory that was overwritten, or made
//! by another version is a clear error rather than undefined behaviour of the algorithm.
//!
//! The creator initialises the primitive's state first and stores the magic last, with
//! `Release`; an opener loads it with `Acquire`, so an opener that sees the magic also sees
//! the initialised state.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::error::ShmError;
use super::futex;
use super::region::Region;

/// The layout version of every primitive in this module.
pub(crate) const VERSION: u32 = 1;

/// The header's size; the primitive's state follows it.
pub(crate) const HEADER: usize = 8;

/// The alignment of a primitive that holds a `T`: its own (8) or `T`'s if larger.
pub(crate) const fn align_for<T>() -> usize {
    if align_of::<T>() > 8 {
        align_of::<T>()
    } else {
        8
    }
}

/// The offset, from the primitive's start, of the `T` it holds after `after` bytes of its own.
pub(crate) const fn data_at<T>(after: usize) -> usize {
    after.div_ceil(align_for::<T>()) * align_for::<T>()
}

/// A primitive's identity: its name (for errors) and magic number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kind {
    pub(crate) name: &'static str,
    pub(crate) magic: u32,
}

/// The header's two words at `offset` (checked to be inside the region and aligned to 8,
/// which every primitive's state is aligned to at most).
fn words(region: &Region, offset: usize, kind: Kind) -> Result<(&AtomicU32, &AtomicU32), ShmError> {
    region.check(offset, HEADER, 8, kind.name)?;
    let words = region.atomics::<AtomicU32>(offset, 2, kind.name)?;
    Ok((&words[0], &words[1]))
}

/// Checks that `size` bytes at `offset` are inside the region and that nothing is published
/// there yet, before the creator initialises the state.
pub(crate) fn reserve(region: &Region, offset: usize, size: usize, kind: Kind) -> Result<(), ShmError> {
    region.check(offset, size, 8, kind.name)?;
    let (magic, version) = words(region, offset, kind)?;
    // Clear a previous magic, so that nobody opens it while the state is rewritten.
    magic.store(0, Ordering::Relaxed);
    version.store(VERSION, Ordering::Relaxed);
    Ok(())
}

/// The magic word while a process initialises the primitive for `open_or_create`; no
/// primitive's magic.
const INITIALISING: u32 = u32::MAX;

/// How long `open_or_create` waits for another process to finish initialising a primitive
/// (it takes microseconds; only a process that died half-way makes it last).
const INIT_WAIT: Duration = Duration::from_secs(10);

/// What `open_or_create` must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Nothing was there: this process initialises it, then publishes it.
    Create,
    /// Another process created it: open it.
    Open,
}

/// For `open_or_create` in a region that starts zeroed (a supervisor's): the first process
/// to find the magic word 0 takes it (compare-exchange to a marker), writes its pid in the
/// version word and initialises; the others wait for the magic, then open. A waiter that
/// finds the initialiser dead (its pid gone) takes the work over, so a crash half-way
/// through does not leave the offset unusable.
pub(crate) fn claim(region: &Region, offset: usize, size: usize, kind: Kind) -> Result<Claim, ShmError> {
    region.check(offset, size, 8, kind.name)?;
    // While the magic word holds the marker, the version word holds the initialiser's pid.
    let (magic, initialiser) = words(region, offset, kind)?;
    let me = std::process::id();
    match magic.compare_exchange(0, INITIALISING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            initialiser.store(me, Ordering::Relaxed);
            return Ok(Claim::Create);
        }
        Err(INITIALISING) => {
            let deadline = Instant::now() + INIT_WAIT;
            while magic.load(Ordering::Acquire) == INITIALISING {
                let slice = (Instant::now() + LIVENESS_CHECK).min(deadline);
                if futex::wait(magic, INITIALISING, Some(slice)) != futex::Woke::TimedOut {
                    continue;
                }
                let pid = initialiser.load(Ordering::Relaxed);
                let dead = pid != 0 && pid != me && !exists(pid);
                if dead
                    && initialiser
                        .compare_exchange(pid, me, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    return Ok(Claim::Create);
                }
                if Instant::now() >= deadline {
                    return Err(ShmError::Corrupt {
                        what: kind.name,
                        offset,
                        detail: format!("process {pid} began initialising it and did not finish within {INIT_WAIT:?}"),
                    });
                }
            }
        }
        Err(_) => {}
    }
    check(region, offset, size, kind)?;
    Ok(Claim::Open)
}

/// How often a process waiting for another's initialisation checks that it still exists.
const LIVENESS_CHECK: Duration = Duration::from_millis(100);

/// Whether process `pid` exists (a zombie counts), by `kill(pid, 0)`. Pids are compared in
/// the caller's pid namespace, which the processes sharing a region must share.
pub(crate) fn exists(pid: u32) -> bool {
    match i32::try_from(pid) {
        Ok(raw) if raw > 0 => kill(Pid::from_raw(raw), None) != Err(Errno::ESRCH),
        _ => false,
    }
}

/// Publishes a primitive whose state is initialised.
pub(crate) fn publish(region: &Region, offset: usize, kind: Kind) -> Result<(), ShmError> {
    let (magic, version) = words(region, offset, kind)?;
    version.store(VERSION, Ordering::Relaxed);
    // Release: whoever loads the magic with Acquire sees every store of the initialisation.
    magic.store(kind.magic, Ordering::Release);
    // After the store: processes waiting in `claim` for it.
    futex::wake(magic, u32::MAX);
    Ok(())
}

/// Checks the header of a primitive of `kind` and `size` bytes at `offset`.
pub(crate) fn check(region: &Region, offset: usize, size: usize, kind: Kind) -> Result<(), ShmError> {
    region.check(offset, size, 8, kind.name)?;
    let (magic, version) = words(region, offset, kind)?;
    let found = magic.load(Ordering::Acquire);
    if found != kind.magic {
        return Err(ShmError::BadMagic {
            what: kind.name,
            offset,
            found,
            expected: kind.magic,
        });
    }
    let found = version.load(Ordering::Relaxed);
    if found != VERSION {
        return Err(ShmError::BadVersion {
            what: kind.name,
            offset,
            found,
            expected: VERSION,
        });
    }
    Ok(())
}

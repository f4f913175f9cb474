//! The header every primitive starts with: a magic number naming its kind and a layout
//! version, so that opening one at the wrong offset, in memory that was overwritten, or made
//! by another version is a clear error rather than undefined behaviour of the algorithm.
//!
//! The creator initialises the primitive's state first and stores the magic last, with
//! `Release`; an opener loads it with `Acquire`, so an opener that sees the magic also sees
//! the initialised state.

use std::sync::atomic::{AtomicU32, Ordering};

use super::error::ShmError;
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

/// Publishes a primitive whose state is initialised.
pub(crate) fn publish(region: &Region, offset: usize, kind: Kind) -> Result<(), ShmError> {
    let (magic, _) = words(region, offset, kind)?;
    // Release: whoever loads the magic with Acquire sees every store of the initialisation.
    magic.store(kind.magic, Ordering::Release);
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

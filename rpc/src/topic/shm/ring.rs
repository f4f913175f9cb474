//! The broadcast ring in a shared region: its layout, the one writer and a reader per
//! subscriber. Safe code only: every access goes through [`Region`]'s bounds-checked atomics
//! and byte copies, so whatever another process writes into the region, this process reads
//! integers, never undefined behaviour; what it reads is then checked as hostile input.
//!
//! ```text
//! 0        header: magic, published (the last number fully written), publisher_waiting
//! 64       cursors: max_subscribers x 64 bytes: cursor (next number wanted, written only by
//!          its subscriber), parked (1 while it sleeps on its doorbell), cut (set by the
//!          publisher when it ends the subscription: at once, or after the ring)
//! 64+64*M  slots: capacity x (16 + message_size rounded up to 8): number, length, bytes
//! ```
//!
//! Message `n` (1, 2, ...) goes to slot `(n - 1) % capacity`. Each slot is a seqlock: the
//! writer stores [`WRITING`] in its number, then the bytes, then `n` (release); a reader
//! loads the number (acquire), copies, fences (acquire) and loads it again: the copy is
//! message `n` only if both loads say `n`. A reader the writer lapped finds a later number
//! (or `WRITING`) in the slot, or `published` a whole ring ahead: that is a gap.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::shm::{Region, ShmError};

/// "TOPICRNG", at offset 0.
const MAGIC: u64 = u64::from_le_bytes(*b"TOPICRNG");
/// In a slot's number while the writer fills it.
pub(super) const WRITING: u64 = u64::MAX;
const HEADER: usize = 64;
const CURSOR: usize = 64;
const SLOT_HEADER: usize = 16;
/// In a cursor's cut word: the subscriber is cut off at once (too slow).
pub(super) const CUT_NOW: u32 = 1;
/// In a cursor's cut word: the publisher stopped; the subscriber reads what is left first.
pub(super) const CUT_AFTER_RING: u32 = 2;
/// How often a reader tries again a slot torn under it before it waits for the doorbell.
const TRIES: usize = 8;

/// Where everything is, from the three numbers both sides agree on (sent in the welcome).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) capacity: usize,
    pub(super) message_size: usize,
    pub(super) max_subscribers: usize,
}

impl Layout {
    fn stride(&self) -> usize {
        SLOT_HEADER + self.message_size.div_ceil(8) * 8
    }

    fn slots(&self) -> usize {
        HEADER + CURSOR * self.max_subscribers
    }

    /// The region's size, or `None` if it overflows.
    pub(super) fn len(&self) -> Option<usize> {
        self.stride().checked_mul(self.capacity)?.checked_add(self.slots())
    }

    fn slot(&self, seq: u64) -> usize {
        self.slots() + ((seq - 1) % self.capacity as u64) as usize * self.stride()
    }

    fn cursor(&self, index: usize) -> usize {
        HEADER + CURSOR * index
    }
}

/// The header and one subscriber's words, as atomics in the region.
pub(super) struct Words<'r> {
    pub(super) published: &'r AtomicU64,
    pub(super) publisher_waiting: &'r AtomicU32,
}

pub(super) fn words(region: &Region) -> Result<Words<'_>, ShmError> {
    Ok(Words {
        published: region.atomic(8)?,
        publisher_waiting: region.atomic(16)?,
    })
}

/// One subscriber's cursor entry.
pub(super) struct Cursor<'r> {
    /// The next number it wants.
    pub(super) next: &'r AtomicU64,
    /// 1 while it sleeps on its doorbell.
    pub(super) parked: &'r AtomicU32,
    /// [`CUT_NOW`] or [`CUT_AFTER_RING`] once the publisher ended its subscription.
    pub(super) cut: &'r AtomicU32,
}

pub(super) fn cursor<'r>(region: &'r Region, layout: &Layout, index: usize) -> Result<Cursor<'r>, ShmError> {
    if index >= layout.max_subscribers {
        return Err(ShmError::OutOfBounds {
            offset: layout.cursor(index),
            len: CURSOR,
            size: region.len(),
        });
    }
    let at = layout.cursor(index);
    Ok(Cursor {
        next: region.atomic(at)?,
        parked: region.atomic(at + 8)?,
        cut: region.atomic(at + 16)?,
    })
}

/// Lays out a fresh (zeroed) region.
pub(super) fn init(region: &Region) -> Result<(), ShmError> {
    region.atomic::<AtomicU64>(0)?.store(MAGIC, Ordering::Release);
    Ok(())
}

/// Writes message `seq` (the next number: the writer's own count, never read back from the
/// region) into its slot and publishes it.
pub(super) fn write(region: &Region, layout: &Layout, seq: u64, bytes: &[u8]) -> Result<(), ShmError> {
    let at = layout.slot(seq);
    let number = region.atomic::<AtomicU64>(at)?;
    number.store(WRITING, Ordering::Relaxed);
    fence(Ordering::Release);
    region
        .atomic::<AtomicU64>(at + 8)?
        .store(bytes.len() as u64, Ordering::Relaxed);
    region.write_bytes(at + SLOT_HEADER, bytes)?;
    number.store(seq, Ordering::Release);
    words(region)?.published.store(seq, Ordering::Release);
    Ok(())
}

/// What a reader found at its cursor.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Read {
    /// The message numbered as asked.
    Message(Vec<u8>),
    /// It was lapped: the oldest message still in the ring is numbered so.
    Lapped(u64),
    /// Nothing new (or nothing readable yet): wait for the doorbell.
    Empty,
}

/// Reads message `next`, treating everything in the region as possibly scribbled on: a
/// length larger than a slot, a `published` in the future or the past.
pub(super) fn read(region: &Region, layout: &Layout, next: u64) -> Result<Read, ShmError> {
    let capacity = layout.capacity as u64;
    let published = words(region)?.published;
    for _ in 0..TRIES {
        let last = published.load(Ordering::Acquire);
        if next > last || next == 0 {
            return Ok(Read::Empty);
        }
        if last - next >= capacity {
            return Ok(Read::Lapped(last - capacity + 1));
        }
        let at = layout.slot(next);
        let number = region.atomic::<AtomicU64>(at)?;
        let before = number.load(Ordering::Acquire);
        if before != next {
            if before > next {
                // Overwritten (or being overwritten, WRITING) by a later lap.
                return Ok(Read::Lapped(
                    last.saturating_add(1)
                        .saturating_sub(capacity)
                        .max(next.saturating_add(1)),
                ));
            }
            // Older than asked, though `published` says it is written: scribbled on.
            return Ok(Read::Empty);
        }
        let len = region.atomic::<AtomicU64>(at + 8)?.load(Ordering::Relaxed);
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(layout.message_size);
        let mut bytes = vec![0; len];
        region.read_bytes(at + SLOT_HEADER, &mut bytes)?;
        fence(Ordering::Acquire);
        if number.load(Ordering::Relaxed) == next {
            return Ok(Read::Message(bytes));
        }
    }
    Ok(Read::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(capacity: usize) -> (Region, Layout) {
        let layout = Layout {
            capacity,
            message_size: 16,
            max_subscribers: 2,
        };
        let region = Region::create(layout.len().unwrap()).unwrap();
        init(&region).unwrap();
        (region, layout)
    }

    #[test]
    fn a_reader_gets_each_message_then_empty_and_a_lapped_reader_the_oldest_left() {
        let (region, layout) = ring(4);
        assert_eq!(read(&region, &layout, 1).unwrap(), Read::Empty);
        for seq in 1..=3 {
            write(&region, &layout, seq, &[seq as u8; 3]).unwrap();
        }
        assert_eq!(read(&region, &layout, 2).unwrap(), Read::Message(vec![2; 3]));
        assert_eq!(read(&region, &layout, 4).unwrap(), Read::Empty);
        for seq in 4..=10 {
            write(&region, &layout, seq, &[seq as u8]).unwrap();
        }
        assert_eq!(read(&region, &layout, 2).unwrap(), Read::Lapped(7));
        assert_eq!(read(&region, &layout, 7).unwrap(), Read::Message(vec![7]));
    }

    #[test]
    fn scribbled_numbers_and_lengths_give_gaps_or_nothing_never_a_read_past_the_slot() {
        let (region, layout) = ring(4);
        write(&region, &layout, 1, b"one").unwrap();
        let at = layout.slot(1);
        region
            .atomic::<AtomicU64>(at + 8)
            .unwrap()
            .store(u64::MAX, Ordering::Relaxed);
        let Read::Message(bytes) = read(&region, &layout, 1).unwrap() else {
            panic!("the slot is still number 1")
        };
        assert_eq!(bytes.len(), layout.message_size, "the length clamped to the slot");
        words(&region).unwrap().published.store(u64::MAX - 1, Ordering::Relaxed);
        assert!(matches!(read(&region, &layout, 1).unwrap(), Read::Lapped(_)));
        words(&region).unwrap().published.store(3, Ordering::Relaxed);
        assert_eq!(read(&region, &layout, 2).unwrap(), Read::Empty, "slot 2 never written");
    }

    #[test]
    fn a_reader_of_a_region_full_of_random_bytes_never_panics_and_never_reads_past_a_slot() {
        let (region, layout) = ring(4);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2000 {
            let mut bytes = vec![0; region.len()];
            bytes.iter_mut().for_each(|b| *b = next() as u8);
            if round % 3 == 0 {
                // Numbers at their extremes, where arithmetic overflows.
                for at in (0..bytes.len()).step_by(8) {
                    let pick = next();
                    if pick % 2 == 0 {
                        continue;
                    }
                    let n = [0, 1, u64::MAX, u64::MAX - 1][(pick / 2 % 4) as usize];
                    bytes[at..at + 8].copy_from_slice(&n.to_ne_bytes());
                }
            }
            region.write_bytes(0, &bytes).unwrap();
            for cursor in [0, 1, 2, 5, u64::MAX - 1, u64::MAX, next()] {
                match read(&region, &layout, cursor).unwrap() {
                    Read::Message(bytes) => assert!(bytes.len() <= layout.message_size),
                    Read::Lapped(oldest) => assert!(oldest > cursor),
                    Read::Empty => {}
                }
            }
        }
    }
}

//! The connection's shared layout and its two single-producer single-consumer byte rings:
//! the only code of the shm transport that touches shared memory.
//!
//! ```text
//! offset 0      header: magic, version, ring capacity             (written once, by the creator)
//! offset 256    ring 0 control (client -> server)                 two cache lines per side:
//! offset 512    ring 1 control (server -> client)                 producer's line, consumer's line
//! offset 4096   ring 0 data, `capacity` bytes
//! ...           ring 1 data, `capacity` bytes
//! ```
//!
//! A ring carries a byte stream: each frame is its 4-byte little-endian length and its
//! payload, exactly as on a socket, so a frame larger than the ring goes through in pieces.
//! `tail` (written by the producer) and `head` (written by the consumer) count bytes ever
//! written and read; a position's offset in the data area is `position % capacity`, and
//! `capacity` is a power of two taken from our own copy, never re-read from shared memory.
//! A frame the sender encodes in place ([`Producer::encode_in_place`]) lies in one piece: if
//! it would cross the end, a [`PADDING`] prefix covers the rest and the frame starts at
//! offset 0, both published by one `tail` store. For a consumer on another CPU a large one
//! is published as it is encoded instead: the exact length first, then a `tail` store per
//! piece, so the consumer copies the first pieces out while the producer writes the rest.
//!
//! # Orderings
//!
//! The producer copies bytes in, then publishes them with a `Release` store of `tail`; the
//! consumer loads `tail` with `Acquire`, so the bytes before it are visible, copies them out,
//! then frees them with a `Release` store of `head`, which the producer loads with `Acquire`
//! before it overwrites them. The parked flags and the fences around them are in
//! [`super::conn`].
//!
//! # A hostile peer
//!
//! The peer can write every byte of the region. Indices it writes are checked before use:
//! `tail - head` must lie in `0..=capacity`, or the ring is [`Corrupt`]. Offsets are reduced
//! modulo our own capacity, so no access leaves the data area whatever the indices say. Frame
//! bytes are only ever copied out, never referenced in place, so a peer that scribbles on
//! them can corrupt its own messages (which the decoder then refuses), not this process.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::protocol::HEADROOM;
use crate::transport::Sink;

/// The first eight bytes of a connection's region.
const MAGIC: u64 = u64::from_le_bytes(*b"PWSHMRNG");
/// The layout's version (2: frames may be followed by [`PADDING`]).
const VERSION: u32 = 2;
/// Where the ring control blocks start and how far apart they are.
const CTL_BASE: usize = 256;
const CTL_SIZE: usize = 256;
/// The consumer's fields sit on their own cache line, away from the producer's.
const CONSUMER_LINE: usize = 128;
/// Where the data areas start.
const DATA_BASE: usize = 4096;
/// The smallest and largest ring capacity.
pub(crate) const MIN_CAPACITY: usize = 4096;
pub(crate) const MAX_CAPACITY: usize = 1 << 30;

/// A length prefix that is no frame: the rest of the ring, to its end, is padding (this
/// marker included), and the next frame starts at the ring's start. Written by a producer
/// that encodes a frame in place which would cross the end (frames of `u32::MAX` bytes and
/// more cannot be sent: the maximum frame length is below).
pub(crate) const PADDING: u32 = u32::MAX;

/// The two directions of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client to server: ring 0.
    ToServer = 0,
    /// Server to client: ring 1.
    ToClient = 1,
}

/// The peer wrote indices that cannot be right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt ring indices: head {head}, tail {tail}, capacity {capacity}")]
pub(crate) struct Corrupt {
    pub head: u64,
    pub tail: u64,
    pub capacity: u64,
}

/// The region is not a connection's layout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadLayout {
    #[error("the region does not start with the shm transport's magic number")]
    Magic,
    #[error("the region's layout is version {0}, this build speaks version {VERSION}")]
    Version(u32),
    #[error("ring capacity {0} is not a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}")]
    Capacity(u64),
    #[error("a region of {len} bytes cannot hold two rings of {capacity} bytes")]
    Size { len: usize, capacity: usize },
}

/// Memory shared with the peer that the rings live in.
///
/// # Safety
///
/// `base()` must point to `len()` bytes, aligned to 4096, readable and writable, that stay
/// mapped (and never change size) for as long as the value lives.
pub(crate) unsafe trait Memory: Send + Sync + 'static {
    /// The first byte.
    fn base(&self) -> *mut u8;
    /// The size in bytes.
    fn len(&self) -> usize;
}

// SAFETY: a region is a sealed memfd mapped shared, read-write and page-aligned for its whole
// length; it stays mapped while the `Region` lives and its size can never change (the seals).
unsafe impl Memory for crate::shm::Region {
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }

    fn len(&self) -> usize {
        crate::shm::Region::len(self)
    }
}

/// The region size for two rings of `capacity` bytes.
pub(crate) fn region_len(capacity: usize) -> usize {
    DATA_BASE + 2 * capacity
}

/// A connection's mapped layout.
#[derive(Clone)]
pub(crate) struct Layout {
    mem: Arc<dyn Memory>,
    /// `mem.base()`, read once: every index and byte access starts here, and a call through
    /// the trait object per access showed in the round trip's profile.
    base: Base,
    capacity: usize,
}

/// The first byte of the memory a [`Layout`] holds.
#[derive(Clone, Copy)]
struct Base(*mut u8);

// SAFETY: the pointer is only dereferenced through `Layout`, whose `Arc<dyn Memory>` (Send +
// Sync) keeps the memory mapped; shared accesses go through atomics or the ring protocol.
unsafe impl Send for Base {}
// SAFETY: as above.
unsafe impl Sync for Base {}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout").field("capacity", &self.capacity).finish()
    }
}

impl Layout {
    fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset + 8 <= DATA_BASE && offset % 8 == 0);
        // SAFETY: `offset` is 8-aligned inside the header page, which every layout has (the
        // constructors check the length); the memory is valid for the layout's lifetime
        // (`Memory`'s contract) and only ever accessed atomically, so shared mutation by the
        // peer is no data race.
        unsafe { &*self.base.0.add(offset).cast::<AtomicU64>() }
    }

    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= DATA_BASE && offset % 4 == 0);
        // SAFETY: as in `atomic_u64`, for a 4-aligned offset.
        unsafe { &*self.base.0.add(offset).cast::<AtomicU32>() }
    }

    /// Writes a fresh header into zeroed memory of [`region_len`]`(capacity)` bytes.
    pub(crate) fn create(mem: Arc<dyn Memory>, capacity: usize) -> Layout {
        assert!(capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity));
        assert!(mem.len() >= region_len(capacity) && mem.base() as usize % 4096 == 0);
        let base = Base(mem.base());
        let layout = Layout { mem, base, capacity };
        layout.atomic_u32(8).store(VERSION, Ordering::Relaxed);
        layout.atomic_u64(16).store(capacity as u64, Ordering::Relaxed);
        for dir in [Direction::ToServer, Direction::ToClient] {
            // Nobody watches a new ring: the first frame kicks.
            layout.ring(dir).consumer_parked().store(1, Ordering::Relaxed);
        }
        layout.atomic_u64(0).store(MAGIC, Ordering::Release);
        layout
    }

    /// Checks the header a peer wrote and adopts its capacity.
    pub(crate) fn open(mem: Arc<dyn Memory>) -> Result<Layout, BadLayout> {
        let len = mem.len();
        if len < DATA_BASE + 2 * MIN_CAPACITY || mem.base() as usize % 4096 != 0 {
            return Err(BadLayout::Size {
                len,
                capacity: MIN_CAPACITY,
            });
        }
        let base = Base(mem.base());
        let probe = Layout { mem, base, capacity: 0 };
        if probe.atomic_u64(0).load(Ordering::Acquire) != MAGIC {
            return Err(BadLayout::Magic);
        }
        let version = probe.atomic_u32(8).load(Ordering::Relaxed);
        if version != VERSION {
            return Err(BadLayout::Version(version));
        }
        let capacity = probe.atomic_u64(16).load(Ordering::Relaxed);
        if !capacity.is_power_of_two() || !(MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&capacity) {
            return Err(BadLayout::Capacity(capacity));
        }
        let capacity = capacity as usize;
        if len < region_len(capacity) {
            return Err(BadLayout::Size { len, capacity });
        }
        Ok(Layout {
            mem: probe.mem,
            base,
            capacity,
        })
    }

    /// One ring's view.
    pub(crate) fn ring(&self, dir: Direction) -> Ring {
        Ring {
            layout: self.clone(),
            ctl: CTL_BASE + dir as usize * CTL_SIZE,
            data: DATA_BASE + dir as usize * self.capacity,
        }
    }
}

/// One ring: its control block and data area.
#[derive(Clone, Debug)]
pub(crate) struct Ring {
    layout: Layout,
    ctl: usize,
    data: usize,
}

impl Ring {
    /// Bytes the ring holds.
    pub(crate) fn capacity(&self) -> usize {
        self.layout.capacity
    }

    /// Bytes ever written (producer's line).
    pub(crate) fn tail(&self) -> &AtomicU64 {
        self.layout.atomic_u64(self.ctl)
    }

    /// 1 while the producer waits for space (producer's line).
    pub(crate) fn producer_parked(&self) -> &AtomicU32 {
        self.layout.atomic_u32(self.ctl + 8)
    }

    /// 1 once the producer closed the direction (producer's line).
    pub(crate) fn closed(&self) -> &AtomicU32 {
        self.layout.atomic_u32(self.ctl + 12)
    }

    /// The CPU the producer last ran on, plus one; 0 if unknown (producer's line).
    pub(crate) fn producer_cpu(&self) -> &AtomicU32 {
        self.layout.atomic_u32(self.ctl + 16)
    }

    /// 1 when a frame should kick the consumer's doorbell (producer's line: the producer
    /// sets it when it kicks, the consumer clears it when it drains the doorbell).
    pub(crate) fn kicked(&self) -> &AtomicU32 {
        self.layout.atomic_u32(self.ctl + 20)
    }

    /// Bytes ever read (consumer's line).
    pub(crate) fn head(&self) -> &AtomicU64 {
        self.layout.atomic_u64(self.ctl + CONSUMER_LINE)
    }

    /// 1 unless a consumer thread is watching the ring right now (consumer's line).
    pub(crate) fn consumer_parked(&self) -> &AtomicU32 {
        self.layout.atomic_u32(self.ctl + CONSUMER_LINE + 8)
    }

    /// The CPU the consumer last ran on, plus one; 0 if unknown (consumer's line).
    pub(crate) fn consumer_cpu(&self) -> &AtomicU32 {
        self.layout.atomic_u32(self.ctl + CONSUMER_LINE + 12)
    }

    /// Checks indices read from shared memory: `tail - head` must be `0..=capacity`.
    fn check(&self, head: u64, tail: u64) -> Result<usize, Corrupt> {
        match tail.checked_sub(head) {
            Some(used) if used <= self.capacity() as u64 => Ok(used as usize),
            _ => Err(Corrupt {
                head,
                tail,
                capacity: self.capacity() as u64,
            }),
        }
    }

    /// The pieces of the data area for `len` bytes from position `pos`: at most two, split
    /// where the ring wraps. `len` is at most the capacity.
    fn pieces(&self, pos: u64, len: usize) -> [(usize, usize); 2] {
        debug_assert!(len <= self.capacity());
        let offset = (pos % self.capacity() as u64) as usize;
        let first = len.min(self.capacity() - offset);
        [(offset, first), (0, len - first)]
    }

    /// Writes `bytes` into the data area at `offset`, as a hostile peer may.
    #[cfg(test)]
    pub(crate) fn write_for_test(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.capacity());
        // SAFETY: the range lies inside the data area (asserted); tests only.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data_ptr(offset), bytes.len()) }
    }

    fn data_ptr(&self, offset: usize) -> *mut u8 {
        assert!(offset < self.capacity());
        // SAFETY: `offset < capacity` and the data area lies inside the mapping (checked at
        // construction: the region holds `region_len(capacity)` bytes).
        unsafe { self.layout.base.0.add(self.data + offset) }
    }
}

/// What [`Producer::encode_in_place`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InPlace {
    /// The frame is published.
    Sent,
    /// Nothing was published.
    NotSent,
    /// Part of a frame published as it was encoded, whose payload then failed to encode or
    /// came out another size than announced: the ring's stream cannot go on.
    Broken,
}

/// The writing end of a ring. One per ring: the sender that owns it.
#[derive(Debug)]
pub(crate) struct Producer {
    ring: Ring,
    /// Our own copy of `tail`: only we write it.
    tail: u64,
    /// The consumer's `head` as last loaded (and checked): at least that much space is
    /// free, so a write that fits needs no look at the consumer's cache line.
    head_seen: u64,
}

impl Producer {
    /// The producer of a fresh ring: positions start at 0, whatever the peer wrote there.
    pub(crate) fn new(ring: Ring) -> Producer {
        Producer {
            ring,
            tail: 0,
            head_seen: 0,
        }
    }

    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Bytes that can be written now.
    pub(crate) fn free(&self) -> Result<usize, Corrupt> {
        self.look().map(|(free, _)| free)
    }

    /// Loads and checks the consumer's `head`: the bytes free, and the head.
    fn look(&self) -> Result<(usize, u64), Corrupt> {
        // Acquire: the consumer's reads of the bytes it freed happened before we overwrite.
        let head = self.ring.head().load(Ordering::Acquire);
        Ok((self.ring.capacity() - self.ring.check(head, self.tail)?, head))
    }

    /// Bytes that can be written now, or at least `want` of them: the space known free
    /// from the last look at `head` if that is enough, else a fresh look.
    fn room(&mut self, want: usize) -> Result<usize, Corrupt> {
        // `tail - head_seen` was checked to be within the capacity when `head_seen` was
        // loaded, and only writes that fit have moved `tail` since.
        let known = self.ring.capacity() - (self.tail - self.head_seen) as usize;
        if known >= want {
            return Ok(known);
        }
        let (free, head) = self.look()?;
        self.head_seen = head;
        Ok(free)
    }

    /// Copies as much of `bytes` as fits and publishes it; returns how much was taken.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<usize, Corrupt> {
        let n = bytes.len().min(self.room(bytes.len())?);
        if n == 0 {
            return Ok(0);
        }
        let mut from = 0;
        for (offset, len) in self.ring.pieces(self.tail, n) {
            if len > 0 {
                // SAFETY: `offset + len <= capacity` (`pieces`), so the destination lies in
                // our data area; these `n <= free` bytes are not readable by the consumer
                // until the `tail` store below, and a peer writing them anyway only spoils
                // its own input. `bytes` is ours, so the ranges do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes[from..].as_ptr(), self.ring.data_ptr(offset), len);
                }
                from += len;
            }
        }
        self.tail += n as u64;
        // Release: the bytes copied above are visible to whoever acquires this tail.
        self.ring.tail().store(self.tail, Ordering::Release);
        Ok(n)
    }

    /// Writes one frame in place: its payload, at most `len` bytes, by `encode` straight into
    /// the ring's free space, then its length prefix, then publishes both. [`InPlace::Sent`]
    /// if sent; [`InPlace::NotSent`], with nothing published, if the ring has no room for
    /// `HEADROOM + len` bytes in one piece now or `encode` failed. A frame that would cross
    /// the ring's end goes to its start, behind a [`PADDING`] marker over the rest (published
    /// with the frame's first bytes), if that leaves room for the marker.
    ///
    /// With `published`, the frame is published as it is encoded, so that a consumer on
    /// another CPU copies it out meanwhile: its prefix, which must then be exactly `len`,
    /// goes first, and every [`REPORT_EVERY`](crate::transport::sink::REPORT_EVERY) bytes
    /// encoded are published (with the prefix, the first time), each time calling
    /// `published` (to kick the consumer). Never all `len` bytes before the payload is
    /// whole, so a payload that comes out longer than measured cannot pass for a frame. If
    /// `encode` fails or the payload comes out another size than `len` once part of it is
    /// out, the consumer is left with a frame it can never complete: [`InPlace::Broken`];
    /// before that, nothing was published ([`InPlace::NotSent`]).
    pub(crate) fn encode_in_place(
        &mut self,
        len: usize,
        published: Option<&mut dyn FnMut(&Ring)>,
        encode: impl FnOnce(&mut Sink<'_>) -> bool,
    ) -> Result<InPlace, Corrupt> {
        let need = HEADROOM + len;
        let capacity = self.ring.capacity();
        let offset = (self.tail % capacity as u64) as usize;
        let before_end = capacity - offset;
        let (skip, at) = match need <= before_end {
            true => (0, offset),
            false if before_end >= HEADROOM => (before_end, 0),
            false => return Ok(InPlace::NotSent),
        };
        if skip + need > self.room(skip + need)? {
            return Ok(InPlace::NotSent);
        }
        let write_prefix = |ring: &Ring, used: usize| {
            let prefix = u32::try_from(used).unwrap_or(u32::MAX).to_le_bytes();
            // SAFETY: the prefix's 4 bytes before the payload and, with padding, the marker's
            // 4 bytes at `offset` (`before_end >= HEADROOM`) lie in the free space checked
            // above, not readable by the consumer until the `tail` store that publishes them.
            unsafe {
                std::ptr::copy_nonoverlapping(prefix.as_ptr(), ring.data_ptr(at), HEADROOM);
                if skip > 0 {
                    std::ptr::copy_nonoverlapping(PADDING.to_le_bytes().as_ptr(), ring.data_ptr(offset), HEADROOM);
                }
            }
        };
        // `at + need <= capacity` (it fits before the end, or from the start, and `need <=
        // free <= capacity`), so the payload's `len` bytes lie in our data area.
        // SAFETY: `at + HEADROOM <= capacity`, so the pointer stays inside the data area (or
        // one past its end, for an empty payload at the end: still inside the mapping).
        let payload = unsafe { self.ring.data_ptr(at).add(HEADROOM) };
        let start = self.tail + (skip + HEADROOM) as u64;
        let Some(published) = published.filter(|_| len > 0 && len < PADDING as usize) else {
            // SAFETY: the payload's `len` bytes lie in our data area (above); they are free,
            // not readable by the consumer until a `tail` store covers them, and none is
            // written after that; nothing refers to them (a peer writing them anyway only
            // spoils its own input).
            let mut sink = unsafe { Sink::from_raw(payload, len) };
            if !encode(&mut sink) {
                return Ok(InPlace::NotSent);
            }
            let used = sink.written();
            write_prefix(&self.ring, used);
            self.tail = start + used as u64;
            // Release: the bytes written above are visible to whoever acquires this tail.
            self.ring.tail().store(self.tail, Ordering::Release);
            return Ok(InPlace::Sent);
        };
        write_prefix(&self.ring, len);
        let ring = &self.ring;
        // How far the frame was published: short of its end until it is whole.
        let mut reached = None;
        let mut report = |pos: usize| {
            let pos = pos.min(len - 1);
            // Release: the prefix, the marker and the bytes reported are visible to whoever
            // acquires this tail.
            ring.tail().store(start + pos as u64, Ordering::Release);
            reached = Some(pos);
            published(ring);
        };
        // SAFETY: as for the sink above; each piece is written before the `tail` store
        // that reports it.
        let mut sink = unsafe { Sink::reporting(payload, len, &mut report) };
        let whole = encode(&mut sink) && sink.written() == len;
        match (whole, reached) {
            (true, _) => {
                self.tail = start + len as u64;
                // Release: as above, for the rest of the payload.
                self.ring.tail().store(self.tail, Ordering::Release);
                Ok(InPlace::Sent)
            }
            // The prefix lies in free space nobody can read yet: as if never written.
            (false, None) => Ok(InPlace::NotSent),
            (false, Some(pos)) => {
                self.tail = start + pos as u64;
                Ok(InPlace::Broken)
            }
        }
    }

    /// Marks the direction closed: the consumer sees the end once it has read everything.
    pub(crate) fn close(&self) {
        self.ring.closed().store(1, Ordering::Release);
    }
}

/// The reading end of a ring. One per ring: the receiver that owns it.
#[derive(Debug)]
pub(crate) struct Consumer {
    ring: Ring,
    /// Our own copy of `head`: only we write it.
    head: u64,
}

impl Consumer {
    /// The consumer of a fresh ring: positions start at 0, whatever the peer wrote there.
    pub(crate) fn new(ring: Ring) -> Consumer {
        Consumer { ring, head: 0 }
    }

    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Bytes that can be read now.
    pub(crate) fn available(&self) -> Result<usize, Corrupt> {
        // Acquire: the producer's writes of these bytes are visible to the copy-out.
        let tail = self.ring.tail().load(Ordering::Acquire);
        self.ring.check(self.head, tail)
    }

    /// True once the producer closed the direction; bytes it wrote before are available.
    pub(crate) fn is_closed(&self) -> bool {
        self.ring.closed().load(Ordering::Acquire) != 0
    }

    /// Copies `out.len()` bytes from `skip` bytes past the head into `out`, without consuming
    /// them. The caller has checked that `skip + out.len() <= available()`.
    pub(crate) fn peek(&self, skip: usize, out: &mut [u8]) {
        // SAFETY: the destination is `out`, valid for its length.
        unsafe { self.copy_out(skip, out.as_mut_ptr(), out.len()) }
    }

    /// Moves `n` bytes (at most what is available) to the spare capacity of `buf` and
    /// consumes them.
    pub(crate) fn take_into(&mut self, buf: &mut Vec<u8>, n: usize) {
        buf.reserve(n);
        // SAFETY: `reserve` made room for `n` bytes after the current length.
        unsafe {
            self.copy_out(0, buf.as_mut_ptr().add(buf.len()), n);
            // The `n` bytes were just written.
            buf.set_len(buf.len() + n);
        }
        self.consume(n);
    }

    /// Bytes from the head to the ring's end (what a [`PADDING`] marker there covers).
    pub(crate) fn until_end(&self) -> usize {
        self.ring.capacity() - (self.head % self.ring.capacity() as u64) as usize
    }

    /// Frees `n` bytes for the producer.
    pub(crate) fn consume(&mut self, n: usize) {
        self.head += n as u64;
        // Release: our reads of the freed bytes happen before the producer overwrites them.
        self.ring.head().store(self.head, Ordering::Release);
    }

    /// # Safety
    ///
    /// `dst` must be valid for `len` writes; `skip + len` must not exceed the bytes
    /// available (checked by the caller with `available`).
    unsafe fn copy_out(&self, skip: usize, dst: *mut u8, len: usize) {
        let mut to = 0;
        for (offset, piece) in self.ring.pieces(self.head + skip as u64, len) {
            if piece > 0 {
                // SAFETY: the source lies inside our data area (`pieces`); the producer
                // published these bytes (the caller's `available`) and will not overwrite
                // them before we move `head` past them. A hostile producer writing them anyway
                // changes only the bytes we copy, which are validated by whoever decodes
                // them. `dst` is valid for `len` (the caller's contract) and is not shared
                // memory, so the ranges do not overlap.
                unsafe { std::ptr::copy_nonoverlapping(self.ring.data_ptr(offset), dst.add(to), piece) };
                to += piece;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Page-aligned heap memory, for unit tests of the rings without a region.
    pub(crate) struct Heap {
        ptr: *mut u8,
        layout: std::alloc::Layout,
    }

    // SAFETY: the allocation is owned by the value and only accessed through `Memory`.
    unsafe impl Send for Heap {}
    // SAFETY: as above; concurrent access goes through atomics and the ring protocol.
    unsafe impl Sync for Heap {}

    impl Heap {
        pub(crate) fn new(len: usize) -> Arc<Heap> {
            let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!ptr.is_null());
            Arc::new(Heap { ptr, layout })
        }
    }

    impl Drop for Heap {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.ptr, self.layout) }
        }
    }

    // SAFETY: `ptr` is a live, 4096-aligned allocation of `layout.size()` bytes.
    unsafe impl Memory for Heap {
        fn base(&self) -> *mut u8 {
            self.ptr
        }

        fn len(&self) -> usize {
            self.layout.size()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Heap;
    use super::*;

    fn rings(capacity: usize) -> (Layout, Producer, Consumer) {
        let layout = Layout::create(Heap::new(region_len(capacity)), capacity);
        let ring = layout.ring(Direction::ToServer);
        (layout, Producer::new(ring.clone()), Consumer::new(ring))
    }

    #[test]
    fn bytes_wrap_around_the_end_of_the_ring_intact() {
        let (_layout, mut tx, mut rx) = rings(MIN_CAPACITY);
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for round in 0..50u32 {
            let chunk: Vec<u8> = (0..1000 + round * 37).map(|i| (i ^ round) as u8).collect();
            assert_eq!(tx.push(&chunk).unwrap(), chunk.len());
            expected.extend_from_slice(&chunk);
            let n = rx.available().unwrap();
            rx.take_into(&mut got, n);
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn a_full_ring_takes_only_what_fits_until_the_consumer_frees_space() {
        let (_layout, mut tx, mut rx) = rings(MIN_CAPACITY);
        assert_eq!(tx.push(&[1; 3000]).unwrap(), 3000);
        assert_eq!(tx.push(&[2; 3000]).unwrap(), MIN_CAPACITY - 3000);
        assert_eq!(tx.push(&[3; 10]).unwrap(), 0);
        let mut got = Vec::new();
        rx.take_into(&mut got, 100);
        assert_eq!(tx.free().unwrap(), 100);
        let mut peeked = [0; 4];
        rx.peek(2898, &mut peeked);
        assert_eq!(peeked, [1, 1, 2, 2]);
    }

    #[test]
    fn a_tail_behind_the_head_or_too_far_ahead_is_corrupt() {
        let (layout, mut tx, rx) = rings(MIN_CAPACITY);
        tx.push(&[0; 10]).unwrap();
        let ring = layout.ring(Direction::ToServer);
        ring.tail().store(MIN_CAPACITY as u64 + 11, Ordering::Relaxed);
        assert!(matches!(rx.available(), Err(Corrupt { tail, .. }) if tail == MIN_CAPACITY as u64 + 11));
        ring.head().store(u64::MAX, Ordering::Relaxed);
        assert!(tx.free().is_err(), "a head past the tail is refused");
    }

    #[test]
    fn a_header_that_is_not_ours_is_refused() {
        let mem = Heap::new(region_len(MIN_CAPACITY));
        assert_eq!(Layout::open(mem.clone()).unwrap_err(), BadLayout::Magic);
        let layout = Layout::create(mem.clone(), MIN_CAPACITY);
        assert_eq!(Layout::open(mem.clone()).unwrap().capacity, MIN_CAPACITY);
        layout.atomic_u64(16).store(3 << 20, Ordering::Relaxed);
        assert_eq!(Layout::open(mem.clone()).unwrap_err(), BadLayout::Capacity(3 << 20));
        layout.atomic_u64(16).store(1 << 20, Ordering::Relaxed);
        assert!(matches!(Layout::open(mem).unwrap_err(), BadLayout::Size { .. }));
    }
}

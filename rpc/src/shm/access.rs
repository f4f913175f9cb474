//! Copy-in/copy-out access to plain-old-data in a [`Region`], through atomics only.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use bytemuck::{NoUninit, Pod};

use super::error::ShmError;
use super::region::Region;

const WORD: usize = size_of::<usize>();

impl Region {
    /// Copies `out.len()` bytes at `offset` out of the region.
    ///
    /// Each byte is read with an atomic (relaxed) load, a machine word at a time where
    /// aligned, so a concurrent write by another process is no data race; but the bytes are
    /// not read as one atomic unit, so without a lock (a [`RobustMutex`](super::RobustMutex),
    /// a [`Spinlock`](super::Spinlock)) a concurrent write can leave them torn: part old, part
    /// new.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<(), ShmError> {
        let bytes = self.atomics::<AtomicU8>(offset, out.len(), "bytes")?;
        let mut i = 0;
        while i < out.len() && (offset + i) % WORD != 0 {
            out[i] = bytes[i].load(Ordering::Relaxed);
            i += 1;
        }
        let words = (out.len() - i) / WORD;
        if words > 0 {
            for w in self.atomics::<AtomicUsize>(offset + i, words, "words")? {
                out[i..i + WORD].copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
                i += WORD;
            }
        }
        for (o, b) in out[i..].iter_mut().zip(&bytes[i..]) {
            *o = b.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies `data` into the region at `offset`, with atomic (relaxed) stores as
    /// [`read_bytes`](Region::read_bytes) reads.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), ShmError> {
        let bytes = self.atomics::<AtomicU8>(offset, data.len(), "bytes")?;
        let mut i = 0;
        while i < data.len() && (offset + i) % WORD != 0 {
            bytes[i].store(data[i], Ordering::Relaxed);
            i += 1;
        }
        let words = (data.len() - i) / WORD;
        if words > 0 {
            for w in self.atomics::<AtomicUsize>(offset + i, words, "words")? {
                let chunk: [u8; WORD] = data[i..i + WORD].try_into().expect("a word of bytes");
                w.store(usize::from_ne_bytes(chunk), Ordering::Relaxed);
                i += WORD;
            }
        }
        for (b, d) in bytes[i..].iter().zip(&data[i..]) {
            b.store(*d, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reads a `T` at `offset` (a copy). Any bytes are a valid `T` (`Pod`), so whatever
    /// another process wrote there, even a torn value, is one.
    pub fn read<T: Pod>(&self, offset: usize) -> Result<T, ShmError> {
        let mut value = T::zeroed();
        self.read_bytes(offset, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// Writes `value` at `offset` (a copy of its bytes; `NoUninit` means it has no padding).
    pub fn write<T: NoUninit>(&self, offset: usize, value: &T) -> Result<(), ShmError> {
        self.write_bytes(offset, bytemuck::bytes_of(value))
    }

    /// A typed handle on the `T` at `offset`, checked once to lie inside the region.
    pub fn view<T: Pod>(&self, offset: usize) -> Result<View<'_, T>, ShmError> {
        self.check(offset, size_of::<T>(), 1, "a view")?;
        Ok(View {
            region: self,
            offset,
            _type: PhantomData,
        })
    }
}

/// A `T` at a fixed offset of a [`Region`], read and written by copy
/// ([`load`](View::load), [`store`](View::store)); never a reference.
#[derive(Debug)]
pub struct View<'r, T> {
    region: &'r Region,
    offset: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pod> View<'_, T> {
    /// Copies the value out.
    pub fn load(&self) -> T {
        self.region.read(self.offset).expect("checked when the view was made")
    }

    /// Copies `value` in.
    pub fn store(&self, value: &T) {
        self.region
            .write(self.offset, value)
            .expect("checked when the view was made")
    }

    /// Changes the value with `f` (on a copy, then written back); returns what `f` returns.
    /// It is one load and one store, not atomic as a whole: hold a lock around it when
    /// others write the value too.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut value = self.load();
        let r = f(&mut value);
        self.store(&value);
        r
    }

    /// The offset of the value in the region.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

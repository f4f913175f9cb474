//! A small process-wide pool of large buffers.
//!
//! A 1 MiB frame allocated fresh for every call costs more in page faults than in copying:
//! the allocator returns big blocks to the kernel and every new one is faulted in page by
//! page. Frames of 64 KiB and more therefore borrow their buffers from here and give them
//! back once sent or decoded. The pool keeps at most `MAX_KEPT` buffers and `MAX_BYTES` in
//! all, so an idle process holds little.

use std::sync::Mutex;

/// Buffers smaller than this are not worth pooling.
pub(crate) const POOLED_MIN: usize = 64 * 1024;
const MAX_KEPT: usize = 8;
const MAX_BYTES: usize = 32 * 1024 * 1024;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for at least `capacity` bytes.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    if capacity >= POOLED_MIN {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest buffer that fits.
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= capacity)
            .min_by_key(|(_, b)| b.capacity());
        if let Some((i, _)) = best {
            return pool.swap_remove(i);
        }
    }
    Vec::with_capacity(capacity)
}

/// Returns a buffer for reuse; small ones, and any beyond the pool's limits, are freed.
pub(crate) fn give(mut buf: Vec<u8>) {
    if buf.capacity() < POOLED_MIN || buf.capacity() > MAX_BYTES {
        return;
    }
    buf.clear();
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let held: usize = pool.iter().map(Vec::capacity).sum();
    if pool.len() < MAX_KEPT && held + buf.capacity() <= MAX_BYTES {
        pool.push(buf);
    } else if let Some((i, smallest)) = pool.iter().enumerate().min_by_key(|(_, b)| b.capacity()) {
        // Prefer keeping the larger buffer: it serves more requests.
        if smallest.capacity() < buf.capacity() && held - smallest.capacity() + buf.capacity() <= MAX_BYTES {
            pool[i] = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_and_small_ones_are_not_kept() {
        let buf = Vec::<u8>::with_capacity(3 * POOLED_MIN + 17);
        let ptr = buf.as_ptr();
        give(buf);
        let again = take(3 * POOLED_MIN);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
        give(Vec::with_capacity(16));
        assert!(take(16).capacity() >= 16);
    }
}

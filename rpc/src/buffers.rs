//! A small process-wide pool of large buffers.
//!
//! A 1 MiB frame allocated fresh for every call costs more in page faults than in copying:
//! the allocator returns big blocks to the kernel and every new one is faulted in page by
//! page. Frames of 64 KiB and more therefore borrow their buffers from here and give them
//! back once sent or decoded. The pool keeps at most `MAX_KEPT` buffers and `MAX_BYTES` in
//! all, so an idle process holds little.
//!
//! Small buffers (a small call's frame or reply) are kept one per thread instead: a caller
//! that receives its reply, decodes it and sends its next call on one thread then takes
//! back the buffer it gave, without the allocator. On one CPU, where every round trip
//! switches between two processes and each comes back to cold caches, `malloc` and `free`
//! were about 3% of a small call over shared memory.

use std::cell::Cell;
use std::sync::Mutex;

/// Buffers smaller than this are not worth pooling.
pub(crate) const POOLED_MIN: usize = 64 * 1024;
const MAX_KEPT: usize = 8;
const MAX_BYTES: usize = 32 * 1024 * 1024;

/// Buffers of at most this many bytes are kept one per thread.
const SMALL_MAX: usize = 4096;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's last small buffer given back (empty if none).
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// An empty buffer with room for at least `capacity` bytes.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    if capacity <= SMALL_MAX {
        // A thread being torn down has no spare: it allocates.
        if let Ok(spare) = SPARE.try_with(Cell::take) {
            // Whatever its size: a caller that keeps what it takes (a payload) holds at most
            // 4 KiB more than it asked for.
            if spare.capacity() >= capacity {
                return spare;
            }
            let _ = SPARE.try_with(|slot| slot.set(spare));
        }
        return Vec::with_capacity(capacity);
    }
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

/// Returns a buffer for reuse: a small one becomes this thread's spare (the one it held is
/// freed); one between small and pooled, and any beyond the pool's limits, are freed.
pub(crate) fn give(mut buf: Vec<u8>) {
    if buf.capacity() > 0 && buf.capacity() <= SMALL_MAX {
        buf.clear();
        let _ = SPARE.try_with(|slot| slot.set(buf));
        return;
    }
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
    fn a_given_large_buffer_is_taken_again() {
        let buf = Vec::<u8>::with_capacity(3 * POOLED_MIN + 17);
        let ptr = buf.as_ptr();
        give(buf);
        let again = take(3 * POOLED_MIN);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
    }

    #[test]
    fn a_small_buffer_given_back_is_taken_again_on_its_own_thread_only() {
        let mut buf = Vec::<u8>::with_capacity(64);
        buf.extend_from_slice(b"old bytes");
        let ptr = buf.as_ptr();
        give(buf);
        let elsewhere = std::thread::spawn(|| {
            let theirs = take(16);
            theirs.as_ptr() as usize
        })
        .join()
        .unwrap();
        assert_ne!(elsewhere, ptr as usize, "another thread's spare is its own");
        let bigger = take(100);
        assert!(
            bigger.capacity() >= 100 && bigger.as_ptr() != ptr,
            "too small a spare is not handed out"
        );
        let again = take(16);
        assert_eq!(again.as_ptr(), ptr, "the spare, kept past the take it could not serve");
        assert!(again.is_empty());
    }
}

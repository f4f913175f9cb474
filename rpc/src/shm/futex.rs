//! The futex system call on a word in a shared mapping: the one place the shared-memory
//! primitives wait in the kernel.
//!
//! The operations are the shared ones (no `FUTEX_PRIVATE_FLAG`): the kernel then keys the
//! wait queue by the page's backing object (the memfd) and offset, not by this process's
//! address, so a waker in another process that maps the same region at another address
//! finds the waiter. `FUTEX_WAIT_BITSET` takes an absolute `CLOCK_MONOTONIC` deadline, so
//! retrying after a signal never stretches the wait.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use nix::errno::Errno;
use nix::libc;

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Woken, by a waker, a signal, or spuriously: the caller re-checks its condition.
    Maybe,
    /// The word no longer held the expected value when the kernel looked: re-check.
    Changed,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `word` holds `expected`, until woken or `deadline`.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Woke {
    let timeout = deadline.map(monotonic_timespec);
    if let Some(None) = timeout {
        return Woke::TimedOut;
    }
    let ts = timeout.flatten();
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call (a reference), and
    // the kernel only reads it; `ts_ptr` is null or points to a timespec that outlives the
    // call. FUTEX_WAIT_BITSET ignores the second address (null) and uses the bitset.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if r == 0 {
        return Woke::Maybe;
    }
    match Errno::last() {
        Errno::EAGAIN => Woke::Changed,
        Errno::ETIMEDOUT => Woke::TimedOut,
        // EINTR (a signal) and anything else: the caller re-checks and waits again.
        _ => Woke::Maybe,
    }
}

/// Wakes up to `n` processes or threads waiting on `word`; returns how many woke.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `word` is a valid, aligned u32 (a reference); FUTEX_WAKE does not access it,
    // only uses its address as the key, and ignores the remaining arguments.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    r.max(0) as usize
}

/// `deadline` as an absolute CLOCK_MONOTONIC time (which `Instant` is on Linux), or `None`
/// if it has passed.
fn monotonic_timespec(deadline: Instant) -> Option<libc::timespec> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let nanos = now.tv_nsec() as u64 + u64::from(left.subsec_nanos());
    Some(libc::timespec {
        tv_sec: now.tv_sec() + left.as_secs() as libc::time_t + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    })
}

//! A budget for the bytes held in partly received frames, shared by many connections.
//!
//! A frame small enough for a receiver's fixed staging buffer (64 KiB) costs nothing beyond
//! that buffer, which every connection has anyway. A larger frame gets a buffer of its own
//! as soon as its length prefix arrives; a peer that sends the prefix and half the body, then
//! stalls, holds that buffer. A [`FrameBudget`] caps the sum of such buffers over every
//! receiver it is given to: a frame whose length would exceed what is left is refused with
//! [`TransportError::BudgetExhausted`](crate::TransportError::BudgetExhausted) (the
//! connection ends), rather than waited for, so that no connection can wait on another's
//! stall.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The default limit of [`FrameBudget::process`]: 64 MiB.
pub const DEFAULT_FRAME_BUDGET: usize = 64 << 20;

/// A cap on the bytes held in partly received large frames; clones share it.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    held: AtomicUsize,
}

impl FrameBudget {
    /// A budget of `limit` bytes of its own.
    pub fn new(limit: usize) -> Self {
        FrameBudget {
            inner: Arc::new(Inner {
                limit,
                held: AtomicUsize::new(0),
            }),
        }
    }

    /// The budget every server of this process shares unless configured otherwise:
    /// [`DEFAULT_FRAME_BUDGET`] bytes.
    pub fn process() -> Self {
        static PROCESS: OnceLock<FrameBudget> = OnceLock::new();
        PROCESS.get_or_init(|| FrameBudget::new(DEFAULT_FRAME_BUDGET)).clone()
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// The bytes reserved now.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::SeqCst)
    }

    /// Reserves `n` bytes, or returns `None` if fewer are left.
    pub(crate) fn reserve(&self, n: usize) -> Option<Reservation> {
        let held = &self.inner.held;
        let mut now = held.load(Ordering::SeqCst);
        loop {
            let next = now.checked_add(n).filter(|&next| next <= self.inner.limit)?;
            match held.compare_exchange_weak(now, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    return Some(Reservation {
                        budget: self.clone(),
                        n,
                    })
                }
                Err(actual) => now = actual,
            }
        }
    }
}

/// Bytes taken from a [`FrameBudget`], given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: FrameBudget,
    n: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.inner.held.fetch_sub(self.n, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_past_the_limit_is_refused_and_dropping_one_gives_its_bytes_back() {
        let budget = FrameBudget::new(100);
        let a = budget.reserve(60).expect("60 of 100");
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).expect("the last 40");
        assert_eq!(budget.held(), 100);
        drop(a);
        assert_eq!(budget.held(), 40);
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}

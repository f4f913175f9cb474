//! What followers stream (`procwire logs -f`, `procwire events`): a bounded ring of numbered
//! items that the event loop appends to and never waits on, and that followers read by
//! long-polling from a cursor ([`Feed::read`]).
//!
//! The loop only ever takes the lock to append: a follower that falls behind, or never reads
//! again, costs it nothing, and loses the oldest items instead; its next read says how many
//! ([`Batch::missed`]).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// At most this many items come in one [`Batch`], so that a reply stays small.
pub const BATCH_MAX: usize = 500;

/// The longest a follower's read waits for something new (bounded well below the control
/// client's call timeout, [`super::REPLY_TIMEOUT`]).
pub const WAIT_MAX: Duration = Duration::from_secs(5);

/// How many events the supervisor keeps for followers of `procwire events`.
pub const EVENTS_KEPT: usize = 1000;

/// How many output lines (of every worker together) it keeps for followers of
/// `procwire logs -f`.
pub const LINES_KEPT: usize = 4096;

/// The supervisor's feeds, shared by its event loop (which appends) and its control socket
/// (whose followers read).
#[derive(Debug)]
pub struct Feeds {
    /// Lifecycle events.
    pub events: Feed<super::events::Event>,
    /// Workers' output lines.
    pub logs: Feed<LogLine>,
}

impl Default for Feeds {
    fn default() -> Self {
        Feeds {
            events: Feed::new(EVENTS_KEPT),
            logs: Feed::new(LINES_KEPT),
        }
    }
}

impl Feeds {
    /// The supervisor is ending: followers get what is left, then the end.
    pub fn end(&self) {
        self.events.end();
        self.logs.end();
    }
}

/// One output line of a worker, in the log feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The worker's pool.
    pub pool: String,
    /// The worker's index.
    pub index: u32,
    /// The line, without its newline.
    pub text: String,
}

/// What one read of a feed gives a follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, procwire_macros::Schema)]
pub struct Batch<T> {
    /// The items past the cursor (those the follower asked for), oldest first.
    pub items: Vec<T>,
    /// The cursor of the next read.
    pub next: u64,
    /// How many items were dropped, the follower being too slow, between its cursor and the
    /// first it gets (of every worker, for a follower of only some).
    pub missed: u64,
    /// The supervisor is ending: nothing more will come.
    pub ended: bool,
}

/// A bounded ring of numbered items; see the module docs.
#[derive(Debug)]
pub struct Feed<T> {
    ring: Mutex<Ring<T>>,
    grew: Condvar,
}

#[derive(Debug)]
struct Ring<T> {
    items: VecDeque<T>,
    /// The number of `items[0]`.
    first: u64,
    capacity: usize,
    ended: bool,
}

impl<T: Clone> Feed<T> {
    /// A feed that keeps the last `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        Feed {
            ring: Mutex::new(Ring {
                items: VecDeque::new(),
                first: 0,
                capacity: capacity.max(1),
                ended: false,
            }),
            grew: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring<T>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the item `make` builds from its number, dropping the oldest past the bound.
    pub fn push(&self, make: impl FnOnce(u64) -> T) {
        let mut ring = self.lock();
        if ring.items.len() == ring.capacity {
            ring.items.pop_front();
            ring.first += 1;
        }
        let number = ring.first + ring.items.len() as u64;
        ring.items.push_back(make(number));
        drop(ring);
        self.grew.notify_all();
    }

    /// The cursor that reads only what comes after now.
    pub fn head(&self) -> u64 {
        let ring = self.lock();
        ring.first + ring.items.len() as u64
    }

    /// Nothing more will be pushed: readers return at once.
    pub fn end(&self) {
        self.lock().ended = true;
        self.grew.notify_all();
    }

    /// The items from `cursor` on that `keep` accepts, at most [`BATCH_MAX`]; waits up to
    /// `wait` (at most [`WAIT_MAX`]) for one while there is none.
    pub fn read(&self, cursor: u64, wait: Duration, keep: impl Fn(&T) -> bool) -> Batch<T> {
        let deadline = Instant::now() + wait.min(WAIT_MAX);
        let mut ring = self.lock();
        let mut cursor = cursor;
        let mut missed = 0;
        loop {
            let head = ring.first + ring.items.len() as u64;
            // A cursor from the future (another supervisor's) reads from now on.
            cursor = cursor.min(head);
            if cursor < ring.first {
                missed += ring.first - cursor;
                cursor = ring.first;
            }
            let mut items = Vec::new();
            let mut next = cursor;
            for item in ring.items.iter().skip((cursor - ring.first) as usize) {
                next += 1;
                if keep(item) {
                    items.push(item.clone());
                    if items.len() == BATCH_MAX {
                        break;
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !items.is_empty() || missed > 0 || ring.ended || left.is_zero() {
                return Batch {
                    items,
                    next,
                    missed,
                    ended: ring.ended,
                };
            }
            // Nothing for this follower up to the head: wait there.
            cursor = next;
            ring = self.grew.wait_timeout(ring, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_gets_what_came_after_its_cursor_and_the_cursor_of_its_next_read() {
        let feed = Feed::new(10);
        let start = feed.head();
        for i in 0..3 {
            feed.push(|n| (n, i));
        }
        let batch = feed.read(start, Duration::ZERO, |_| true);
        assert_eq!(batch.items, [(0, 0), (1, 1), (2, 2)]);
        assert_eq!((batch.next, batch.missed, batch.ended), (3, 0, false));
        let filtered = feed.read(start, Duration::ZERO, |(_, i)| *i == 1);
        assert_eq!(filtered.items, [(1, 1)]);
        assert_eq!(filtered.next, 3, "the cursor passes what the filter skipped");
        assert!(feed.read(3, Duration::ZERO, |_| true).items.is_empty());
    }

    #[test]
    fn a_reader_that_fell_behind_is_told_how_many_it_missed_and_never_holds_the_writer_up() {
        let feed = Feed::new(4);
        for i in 0..10u64 {
            feed.push(|_| i);
        }
        let batch = feed.read(0, Duration::ZERO, |_| true);
        assert_eq!(batch.items, [6, 7, 8, 9]);
        assert_eq!((batch.next, batch.missed), (10, 6));
    }

    #[test]
    fn a_waiting_reader_wakes_for_a_new_item_and_at_the_end() {
        let feed = std::sync::Arc::new(Feed::new(4));
        let writer = std::sync::Arc::clone(&feed);
        let pushed = std::thread::spawn(move || {
            // The reader may be waiting already, or not yet: it gets the item either way.
            writer.push(|_| "new");
        });
        let batch = feed.read(0, WAIT_MAX, |_| true);
        assert_eq!(batch.items, ["new"]);
        pushed.join().unwrap();
        let ender = std::sync::Arc::clone(&feed);
        let ended = std::thread::spawn(move || ender.end());
        let batch = feed.read(1, WAIT_MAX, |_| true);
        ended.join().unwrap();
        // Either it saw the end while waiting, or it timed out before the end came.
        if batch.ended {
            assert!(batch.items.is_empty());
        }
        assert!(feed.read(1, WAIT_MAX, |_| true).ended);
    }
}

//! How long an operation may wait.

use std::time::{Duration, Instant};

/// How long a send, receive, accept or call may wait before it gives up.
///
/// Every operation in procwire that can wait takes a `Wait`, so the same transport, client and
/// server code serves blocking, deadline-bound and non-blocking use:
///
/// | `Wait`           | when nothing can be done yet                          |
/// |------------------|-------------------------------------------------------|
/// | [`Wait::Block`]  | waits as long as it takes                             |
/// | [`Wait::Until`]  | waits until the deadline, then fails with "timed out" |
/// | [`Wait::NonBlock`] | fails at once with "would block"                    |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Wait for as long as it takes.
    Block,
    /// Wait until this instant at most.
    Until(Instant),
    /// Do not wait at all.
    NonBlock,
}

impl Wait {
    /// Waits at most `timeout` from now.
    pub fn timeout(timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Block,
        }
    }

    /// Waits until `deadline` if there is one, else blocks.
    pub fn deadline(deadline: Option<Instant>) -> Self {
        deadline.map_or(Wait::Block, Wait::Until)
    }

    /// The deadline, if this is [`Wait::Until`].
    pub fn as_deadline(self) -> Option<Instant> {
        match self {
            Wait::Until(d) => Some(d),
            _ => None,
        }
    }

    /// The time still left: `None` for "forever", `Some(ZERO)` for "not at all".
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Wait::Block => None,
            Wait::NonBlock => Some(Duration::ZERO),
            Wait::Until(d) => Some(d.saturating_duration_since(Instant::now())),
        }
    }

    /// True when no more waiting is allowed: non-blocking, or the deadline has passed.
    pub fn expired(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

//! The kernel's limits on message queues, and errors that name them.
//!
//! `mq_open(3)` answers a queue above `fs.mqueue.msg_max` or `msgsize_max` with a bare
//! `EINVAL`, one more queue than `queues_max` with `ENOSPC`, and a queue that does not fit
//! the user's `RLIMIT_MSGQUEUE` with `EMFILE`, the same code as "too many open files". This
//! module reads the knobs back when that happens and says which one it was, its value, and
//! what was asked for.

use std::io;

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, Resource};

use super::queue::Attrs;

/// Where the kernel's knobs are.
pub const MSG_MAX: &str = "/proc/sys/fs/mqueue/msg_max";
/// The largest message a queue may be created for.
pub const MSGSIZE_MAX: &str = "/proc/sys/fs/mqueue/msgsize_max";
/// How many queues the whole IPC namespace may hold.
pub const QUEUES_MAX: &str = "/proc/sys/fs/mqueue/queues_max";
/// What a queue created without attributes holds.
pub const MSG_DEFAULT: &str = "/proc/sys/fs/mqueue/msg_default";
/// The message size of a queue created without attributes.
pub const MSGSIZE_DEFAULT: &str = "/proc/sys/fs/mqueue/msgsize_default";

/// The kernel's bookkeeping per message slot: a `struct msg_msg` (48 bytes) and a priority
/// tree node (48 bytes), counted against `RLIMIT_MSGQUEUE` with the messages themselves.
const OVERHEAD_PER_MESSAGE: u64 = 96;

/// A message queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqError {
    /// A queue name is not `/` followed by 1 to 255 characters other than `/`.
    #[error("bad message queue name {name:?}: {why}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A queue was asked for with zero messages or a zero message size.
    #[error("message queue {queue}: {what} must be at least 1")]
    Zero {
        /// The queue.
        queue: String,
        /// `max_messages` or `message_size`.
        what: &'static str,
    },
    /// A queue was asked for with more than a system limit allows.
    #[error("message queue {queue}: {asked} {what} asked for, above {knob} = {value}")]
    Limit {
        /// The queue.
        queue: String,
        /// What was asked for too much of: `messages` or `bytes per message`.
        what: &'static str,
        /// The knob, as a path under `/proc/sys`.
        knob: &'static str,
        /// The knob's value.
        value: u64,
        /// What was asked for.
        asked: u64,
    },
    /// The IPC namespace holds as many queues as `fs.mqueue.queues_max` allows.
    #[error("message queue {queue}: the system already holds {knob} = {value} queues, its limit")]
    TooManyQueues {
        /// The queue.
        queue: String,
        /// The knob.
        knob: &'static str,
        /// The knob's value.
        value: u64,
    },
    /// The queue does not fit in what is left of the user's `RLIMIT_MSGQUEUE`.
    #[error(
        "message queue {queue}: its {asked} bytes ({messages} messages of {size} bytes, and the kernel's \
         bookkeeping) do not fit in what this user's queues leave of RLIMIT_MSGQUEUE = {limit} bytes"
    )]
    MemoryLimit {
        /// The queue.
        queue: String,
        /// The soft limit, in bytes.
        limit: u64,
        /// The bytes the queue would be counted for.
        asked: u64,
        /// Messages asked for.
        messages: u64,
        /// Bytes per message asked for.
        size: u64,
    },
    /// A message is larger than the queue's message size; nothing was sent.
    #[error("a message of {len} bytes does not fit message queue {queue}, whose messages hold at most {max} bytes")]
    TooLarge {
        /// The queue.
        queue: String,
        /// The message's length.
        len: usize,
        /// The queue's message size.
        max: usize,
    },
    /// The queue is full and the caller asked not to wait.
    #[error("message queue {queue} is full")]
    Full {
        /// The queue.
        queue: String,
    },
    /// The queue is empty and the caller asked not to wait.
    #[error("message queue {queue} is empty")]
    Empty {
        /// The queue.
        queue: String,
    },
    /// The deadline passed first.
    #[error("waiting on message queue {queue} timed out")]
    TimedOut {
        /// The queue.
        queue: String,
    },
    /// A message could not be encoded or decoded as the type asked for.
    #[error("message on queue {queue} cannot be {what}: {source}")]
    Codec {
        /// The queue.
        queue: String,
        /// `encoded` or `decoded`.
        what: &'static str,
        /// The codec's error.
        #[source]
        source: postcard::Error,
    },
    /// The environment variable naming an inherited queue is wrong.
    #[error("{var} does not name an inherited message queue: {problem}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        problem: crate::shm::EnvProblem,
    },
    /// A system call failed for another reason.
    #[error("{op} on message queue {queue} failed: {source}")]
    Io {
        /// The call.
        op: &'static str,
        /// The queue.
        queue: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl MqError {
    pub(crate) fn io(op: &'static str, queue: &str, e: impl Into<io::Error>) -> Self {
        MqError::Io {
            op,
            queue: queue.to_owned(),
            source: e.into(),
        }
    }
}

/// Reads a knob; `None` if it cannot be read (no /proc, another kernel).
pub fn read_knob(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What the kernel counts against `RLIMIT_MSGQUEUE` for a queue of `attrs`, approximately.
pub fn cost(attrs: Attrs) -> u64 {
    let messages = attrs.max_messages as u64;
    messages.saturating_mul(attrs.message_size as u64 + OVERHEAD_PER_MESSAGE)
}

/// Explains a failed `mq_open(O_CREAT)` of `queue` with `attrs`: the limit it hit, if the
/// error code and the knobs show one; else the plain OS error.
pub(crate) fn explain_create(queue: &str, attrs: Attrs, e: Errno) -> MqError {
    let limit = |what, knob, value, asked| MqError::Limit {
        queue: queue.to_owned(),
        what,
        knob,
        value,
        asked,
    };
    match e {
        Errno::EINVAL => {
            let (messages, size) = (attrs.max_messages as u64, attrs.message_size as u64);
            if let Some(max) = read_knob(MSG_MAX).filter(|max| messages > *max) {
                return limit("messages", MSG_MAX, max, messages);
            }
            if let Some(max) = read_knob(MSGSIZE_MAX).filter(|max| size > *max) {
                return limit("bytes per message", MSGSIZE_MAX, max, size);
            }
        }
        Errno::ENOSPC => {
            if let Some(value) = read_knob(QUEUES_MAX) {
                return MqError::TooManyQueues {
                    queue: queue.to_owned(),
                    knob: QUEUES_MAX,
                    value,
                };
            }
        }
        Errno::EMFILE if !out_of_descriptors() => {
            if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_MSGQUEUE) {
                return MqError::MemoryLimit {
                    queue: queue.to_owned(),
                    limit: soft,
                    asked: cost(attrs),
                    messages: attrs.max_messages as u64,
                    size: attrs.message_size as u64,
                };
            }
        }
        _ => {}
    }
    MqError::io("mq_open", queue, e)
}

/// True if this process has as many descriptors open as `RLIMIT_NOFILE` allows, the other
/// reason for `EMFILE`.
fn out_of_descriptors() -> bool {
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return false;
    };
    match std::fs::read_dir("/proc/self/fd") {
        // The directory's own descriptor is one of those listed.
        Ok(dir) => dir.count() as u64 > soft,
        Err(e) => e.raw_os_error() == Some(nix::libc::EMFILE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_einval_becomes_the_knob_its_value_and_what_was_asked() {
        let Some(max) = read_knob(MSG_MAX) else {
            eprintln!("skipped: {MSG_MAX} cannot be read");
            return;
        };
        let err = explain_create("/q", Attrs::new(max as usize + 1, 8), Errno::EINVAL);
        let text = err.to_string();
        assert!(
            text.contains(&format!("{} messages asked for, above {MSG_MAX} = {max}", max + 1)),
            "{text}"
        );
        let size = read_knob(MSGSIZE_MAX).unwrap();
        let text = explain_create("/q", Attrs::new(1, size as usize + 1), Errno::EINVAL).to_string();
        assert!(text.contains(&format!("above {MSGSIZE_MAX} = {size}")), "{text}");
    }

    #[test]
    fn enospc_names_queues_max_and_other_codes_keep_the_os_text() {
        let text = explain_create("/q", Attrs::new(1, 8), Errno::ENOSPC).to_string();
        if read_knob(QUEUES_MAX).is_some() {
            assert!(text.contains(QUEUES_MAX), "{text}");
        }
        let text = explain_create("/q", Attrs::new(1, 8), Errno::EACCES).to_string();
        assert!(text.contains("Permission denied"), "{text}");
    }
}

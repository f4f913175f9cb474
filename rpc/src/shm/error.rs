//! The error of the shared-memory module.

use std::io;
use std::os::fd::RawFd;

/// Creating, opening, passing or using a shared region, or a primitive in one, failed.
///
/// Its `{}` text includes the operating system's reason where there is one, so a `main`
/// that prints it says why; the same cause is also the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// An operating-system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// The call and what it was for (`memfd_create`, `mmap of the region`, ...).
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A region's size is zero, or too large to map.
    #[error("a shared region must have between 1 and {max} bytes, not {size}")]
    BadSize {
        /// The size asked for or found.
        size: u64,
        /// The largest size this machine can map.
        max: u64,
    },
    /// A descriptor handed over as a region is not a sealable memfd.
    #[error("fd {fd} is not a memfd that can be sealed (only memfds are accepted as shared regions)")]
    NotAMemfd {
        /// The descriptor.
        fd: RawFd,
    },
    /// A memfd handed over as a region can still shrink or grow, so a mapping of it could
    /// fault (SIGBUS) after the sender shrinks it.
    #[error("memfd {fd} is not sealed against shrinking and growing")]
    NotSealed {
        /// The descriptor.
        fd: RawFd,
    },
    /// An access falls outside the region.
    #[error("an access of {len} bytes at offset {offset} is outside the shared region of {size} bytes")]
    OutOfBounds {
        /// Where the access starts.
        offset: usize,
        /// How many bytes it covers.
        len: usize,
        /// The region's size.
        size: usize,
    },
    /// An atomic or a primitive was placed at an offset that is not aligned for it.
    #[error("offset {offset} is not a multiple of {align}, the alignment {what} needs")]
    Misaligned {
        /// The offset asked for.
        offset: usize,
        /// The alignment needed.
        align: usize,
        /// What was to be placed there.
        what: &'static str,
    },
    /// A region name is empty or has characters other than ASCII letters, digits, `_` and `-`.
    #[error("{name:?} is not a valid region name (ASCII letters, digits, `_` and `-`)")]
    BadName {
        /// The name.
        name: String,
    },
    /// The environment variable that should name an inherited region is missing or not a
    /// descriptor number.
    #[error("{var} does not name an inherited region: {problem}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        problem: EnvProblem,
    },
    /// A message on a socket came without the descriptors it should have carried.
    #[error("the message on fd {socket} carried {got} descriptors, not the {expected} expected")]
    MissingFds {
        /// The socket.
        socket: RawFd,
        /// Descriptors that arrived.
        got: usize,
        /// Descriptors expected.
        expected: usize,
    },
    /// A message on a socket carried more descriptors than the receiver takes
    /// ([`MAX_FDS`](super::MAX_FDS)); those that did not fit were closed by the kernel, and
    /// those that did by the receiver.
    #[error("a message on fd {socket} carried more than the {max} descriptors a receiver takes")]
    TooManyFds {
        /// The socket.
        socket: RawFd,
        /// The most a message may carry.
        max: usize,
    },
    /// The peer closed the socket before a descriptor arrived.
    #[error("the peer closed socket fd {socket} before sending a descriptor")]
    PeerClosed {
        /// The socket.
        socket: RawFd,
    },
    /// A primitive's header in the region does not hold what its creator writes there: the
    /// offset is wrong, the memory was overwritten, or it was never initialised.
    #[error("no {what} at offset {offset} of the region: found magic {found:#010x}, expected {expected:#010x}")]
    BadMagic {
        /// The kind of primitive looked for.
        what: &'static str,
        /// Where it was looked for.
        offset: usize,
        /// The magic number found.
        found: u32,
        /// The magic number of that primitive.
        expected: u32,
    },
    /// A primitive's header says it was made by another version of this library.
    #[error("the {what} at offset {offset} has layout version {found}; this library reads version {expected}")]
    BadVersion {
        /// The kind of primitive.
        what: &'static str,
        /// Where it is.
        offset: usize,
        /// The version found.
        found: u32,
        /// The version this library writes.
        expected: u32,
    },
    /// A primitive's header or state holds a value it can never hold (a corrupt or hostile
    /// writer).
    #[error("the {what} at offset {offset} is corrupt: {detail}")]
    Corrupt {
        /// The kind of primitive.
        what: &'static str,
        /// Where it is.
        offset: usize,
        /// What is wrong.
        detail: String,
    },
    /// A robust mutex whose holder died was unlocked without being marked consistent, so
    /// POSIX makes it unusable for good; recreate it (and its data) to go on.
    #[error("the robust mutex at offset {offset} is not recoverable: a holder died and the next one did not mark it consistent")]
    Unrecoverable {
        /// Where the mutex is.
        offset: usize,
    },
    /// A semaphore's table of holders is full: more processes hold permits at once than it
    /// has slots for.
    #[error("the semaphore at offset {offset} already has {slots} processes holding permits, its maximum")]
    HoldersFull {
        /// Where the semaphore is.
        offset: usize,
        /// The table's size.
        slots: usize,
    },
    /// A primitive was created with a parameter it cannot have.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The kind of primitive.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// What is wrong with the environment variable naming an inherited region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvProblem {
    /// It is not set (the parent did not pass a region by that name).
    #[error("it is not set")]
    Unset,
    /// It is set, but not to a descriptor number.
    #[error("its value {0:?} is not a descriptor number")]
    NotAnFd(String),
    /// The descriptor it names is not open in this process.
    #[error("fd {0} is not open")]
    Closed(RawFd),
    /// The descriptor it names is close-on-exec, so it was not inherited but opened by this
    /// process for something else.
    #[error("fd {0} was not inherited (it is close-on-exec)")]
    NotInherited(RawFd),
    /// This process already claimed it.
    #[error("this process already claimed it")]
    AlreadyClaimed,
}

impl ShmError {
    pub(crate) fn os(op: &'static str, errno: nix::errno::Errno) -> ShmError {
        ShmError::Os {
            op,
            source: io::Error::from(errno),
        }
    }
}

//! Topics over shared memory (in progress).

/// The largest message of a shared-memory topic unless its options say otherwise: 4 KiB.
pub const DEFAULT_MESSAGE_SIZE: usize = 4096;

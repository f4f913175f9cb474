//! Support for the code `#[procwire::service]` generates.

use crate::error::RpcError;

/// The error of a generated client method whose trait method returns `Result<T, E>`: either
/// the service's own error `E`, typed, or a failure of the call itself.
///
/// It is a [`std::error::Error`] (so `?` takes it into `anyhow` or a `Box<dyn Error>`) when
/// `E` is `Debug + Display`; it prints as `E` prints, or as the [`RpcError`] with its causes.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The method ran and returned `Err(E)`.
    #[error("{0}")]
    Application(E),
    /// The call itself failed: connection, deadline, protocol, remote fault.
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

impl<E> CallError<E> {
    /// The service's error, if that is what this is.
    pub fn application(self) -> Option<E> {
        match self {
            CallError::Application(e) => Some(e),
            CallError::Rpc(_) => None,
        }
    }

    /// The call's failure, if that is what this is.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            CallError::Application(_) => None,
            CallError::Rpc(e) => Some(e),
        }
    }
}

/// Paths the generated code uses; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use postcard;
    pub use serde;
    pub use serde_bytes;

    /// Compile-time check, spanned to the user's type, that it can cross the wire.
    pub fn assert_wire<T: serde::Serialize + serde::de::DeserializeOwned>() {}

    /// A generated client's deadline for a call starting now: its fixed deadline, else its
    /// timeout from now, else none.
    pub fn deadline(
        deadline: Option<std::time::Instant>,
        timeout: Option<std::time::Duration>,
    ) -> Option<std::time::Instant> {
        deadline.or_else(|| timeout.and_then(|t| std::time::Instant::now().checked_add(t)))
    }

    /// The address of the buffer this thread last received a reply's byte string into, in a
    /// buffer of its own (0 if never): for tests that check the `Vec<u8>` a call returns is
    /// that buffer, not a copy of it. A blocking caller alone on its client reads its own
    /// reply.
    pub fn last_split_bytes() -> usize {
        crate::transport::last_split_bytes()
    }

    /// As [`last_split_bytes`], for any thread of this process: for a server's tests (the
    /// thread that began reading a frame need not be the one that finished it), where one
    /// call at a time is in flight.
    pub fn last_split_bytes_in_process() -> usize {
        crate::transport::last_split_bytes_in_process()
    }
}

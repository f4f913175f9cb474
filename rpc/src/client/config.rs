//! How a client behaves: [`ClientConfig`].

use std::time::{Duration, Instant};

use crate::outbox::Buffering;
use crate::protocol::DEFAULT_MAX_FRAME_LEN;

/// How a [`Client`](super::Client) behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Largest frame payload sent or accepted; default 16 MiB.
    pub max_frame_len: usize,
    /// How many outgoing frames may queue while the transport is busy.
    pub buffering: Buffering,
    /// How long the opening handshake may take.
    pub handshake_timeout: Duration,
    /// How long a call given no deadline of its own may take; `None` (the default for a
    /// single client) lets it wait as long as it takes. A pool client defaults to
    /// [`pool::DEFAULT_CALL_TIMEOUT`](crate::pool::DEFAULT_CALL_TIMEOUT): see
    /// [`for_pool`](Self::for_pool).
    pub call_timeout: Option<Duration>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            buffering: Buffering::default(),
            handshake_timeout: Duration::from_secs(10),
            call_timeout: None,
        }
    }
}

impl ClientConfig {
    /// Sets [`max_frame_len`](Self::max_frame_len).
    pub fn max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets [`buffering`](Self::buffering).
    pub fn buffering(mut self, buffering: Buffering) -> Self {
        self.buffering = buffering;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`call_timeout`](Self::call_timeout).
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The defaults of a pool client: the defaults, with a call timeout of
    /// [`pool::DEFAULT_CALL_TIMEOUT`](crate::pool::DEFAULT_CALL_TIMEOUT).
    pub fn for_pool() -> Self {
        Self::default().call_timeout(Some(crate::pool::DEFAULT_CALL_TIMEOUT))
    }

    /// The deadline of a call that starts now with `deadline` of its own, if any.
    pub(crate) fn deadline(&self, deadline: Option<Instant>) -> Option<Instant> {
        crate::typed::__private::deadline(deadline, self.call_timeout)
    }
}

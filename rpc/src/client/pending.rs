//! [`PendingCall`]: a call sent whose reply has not been taken yet.

use std::marker::PhantomData;
use std::time::Instant;

use serde::de::DeserializeOwned;

use super::future::Timer;
use super::Client;
use crate::error::RpcError;
use crate::protocol::{Envelope, Fault, Kind};
use crate::service::Method;
use crate::transport::Payload;
use crate::wait::Wait;

/// A call that has been sent and whose reply has not been taken yet.
///
/// Wait for it ([`wait`](Self::wait)), poll it ([`try_wait`](Self::try_wait)), or `.await`
/// it: it is a `Future` of the reply, on any executor, without a thread of its own. Awaited
/// calls take turns reading their connection for each other, so a future that is woken
/// must be polled (or dropped), as futures are meant to be: one left unpolled after its
/// wake-up holds up the other awaited calls' replies until it is (blocking callers read for
/// themselves).
///
/// Dropping it before the reply is taken abandons the call and tells the server, which may
/// stop working on it (see [`CallContext::is_cancelled`](crate::CallContext::is_cancelled)).
#[must_use = "dropping a PendingCall cancels the call"]
pub struct PendingCall<R> {
    pub(super) client: Client,
    pub(super) id: u64,
    pub(super) method: Method,
    pub(super) deadline: Option<Instant>,
    pub(super) done: bool,
    /// A pool's count of this call as outstanding on its worker, released with the call.
    pub(super) tracker: Option<crate::pool::Tracker>,
    /// The deadline's wake-up, while the call is awaited.
    pub(super) timer: Timer,
    _reply: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for PendingCall<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall")
            .field("id", &self.id)
            .field("method", &self.method.name)
            .finish_non_exhaustive()
    }
}

impl<R> PendingCall<R> {
    pub(super) fn new(client: Client, id: u64, method: Method, deadline: Option<Instant>) -> Self {
        PendingCall {
            client,
            id,
            method,
            deadline,
            done: false,
            tracker: None,
            timer: Timer::default(),
            _reply: PhantomData,
        }
    }

    /// Marks the call finished, its deadline's wake-up cancelled.
    pub(super) fn finish(&mut self) {
        self.done = true;
        self.timer.cancel();
    }

    /// Counts the call as outstanding on a pool's worker until it is finished or dropped.
    pub(crate) fn track(mut self, tracker: crate::pool::Tracker) -> Self {
        self.tracker = Some(tracker);
        self
    }
}

impl<R: DeserializeOwned> PendingCall<R> {
    /// The request id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the reply, until the call's deadline if it has one.
    pub fn wait(mut self) -> Result<R, RpcError> {
        let reply = self
            .client
            .inner
            .wait_reply(self.id, self.method, Wait::deadline(self.deadline));
        // On a missed deadline `done` stays false, so that dropping `self` cancels the call.
        self.done = !matches!(reply, Err(RpcError::DeadlineExceeded { .. }));
        let payload = reply?.expect("a blocking wait returns a reply or an error");
        if let Some(tracker) = &self.tracker {
            tracker.answered();
        }
        self.decode(payload)
    }

    /// Returns the reply if it has arrived, `Ok(None)` if not, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<R>, RpcError> {
        if self.done {
            return Err(self.client.inner.finished(self.method));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.done = true;
            self.client.inner.abandon(self.id, self.method);
            return Err(RpcError::DeadlineExceeded {
                method: self.method.name,
                peer: self.client.inner.peer.name.clone(),
            });
        }
        match self.client.inner.wait_reply(self.id, self.method, Wait::NonBlock) {
            Ok(None) => Ok(None),
            Ok(Some(payload)) => {
                self.done = true;
                if let Some(tracker) = self.tracker.take() {
                    tracker.answered();
                }
                self.decode(payload).map(Some)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    /// Decodes the reply (a byte string received in a buffer of its own becomes the value
    /// as it is: see `reply.rs`) and gives its buffers back.
    pub(super) fn decode(&self, payload: Payload) -> Result<R, RpcError> {
        let peer = || self.client.inner.peer.name.clone();
        let decode_error = |source| RpcError::Decode {
            method: self.method.name,
            peer: peer(),
            source,
        };
        let (kind, at) = match Envelope::decode(payload.head()) {
            Ok((envelope, body)) => (envelope.kind, payload.head().len() - body.len()),
            Err(source) => {
                payload.give_back();
                return Err(decode_error(source));
            }
        };
        match kind {
            Kind::Error => {
                let whole = payload.into_whole();
                let fault = postcard::from_bytes::<Fault>(&whole[at..]);
                Payload::Whole(whole).give_back();
                let fault = fault.map_err(decode_error)?;
                Err(RpcError::Remote {
                    method: self.method.name,
                    peer: peer(),
                    kind: fault.kind,
                    message: fault.message,
                })
            }
            _ => super::reply::decode_body(payload, at).map_err(decode_error),
        }
    }
}

impl<R> Drop for PendingCall<R> {
    fn drop(&mut self) {
        self.timer.cancel();
        if !self.done {
            self.client.inner.abandon(self.id, self.method);
        }
    }
}

//! What a pool does around each attempt of a call: taking the worker picked, learning from
//! the result, and deciding whether to try another worker.

use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::{unreachable, Link, Shared, Tracker};
use crate::client::Client;
use crate::error::{Delivery, RpcError};

impl Shared {
    /// Takes `slot`, picked among `links`, counted as outstanding; if its connection has gone
    /// away since its last call (noticed before sending), drops it and gives the lock back.
    pub(super) fn take<'a>(
        self: &'a Arc<Self>,
        links: MutexGuard<'a, Vec<Link>>,
        slot: usize,
    ) -> Result<(Client, Tracker), MutexGuard<'a, Vec<Link>>> {
        let Link::Up(client) = &links[slot] else {
            unreachable!("least_loaded picks a connected worker")
        };
        let client = client.clone();
        let tracker = self.track(slot);
        drop(links);
        if client.is_connected() {
            return Ok((client, tracker));
        }
        drop(tracker);
        self.lost(slot, &client);
        Err(self.lock())
    }

    /// What follows an attempt on `slot`: its result, or `None` to try another worker (a
    /// call that did not run, or any idempotent one, after a disconnection; a call the worker
    /// lacks or has changed), each worker at most once.
    pub(super) fn after_attempt<T>(
        &self,
        slot: usize,
        client: &Client,
        result: Result<T, RpcError>,
        tried: &mut Vec<usize>,
        idempotent: bool,
        deadline: Option<Instant>,
    ) -> Option<Result<T, RpcError>> {
        let late = deadline.is_some_and(|d| d <= Instant::now());
        match result {
            Err(RpcError::Disconnected {
                method,
                peer,
                reason,
                delivery,
                ending,
            }) => {
                self.lost(slot, client);
                tried.push(slot);
                let retry = idempotent || delivery == Delivery::NotSent;
                if !retry || late || tried.len() >= self.endpoints.len() {
                    let reason = format!("worker {} {ending}: {reason}", self.names[slot]);
                    return Some(Err(RpcError::Disconnected {
                        method,
                        peer,
                        reason,
                        delivery,
                        ending,
                    }));
                }
                tracing::debug!(method, worker = %self.names[slot], %ending, %delivery, "trying the call on another worker");
                None
            }
            // A worker of another build (a rolling upgrade under way) lacks the method or
            // has changed it: the call was not sent, and another worker may have it.
            Err(e @ RpcError::Incompatible { .. }) => {
                tried.push(slot);
                if late || tried.len() >= self.endpoints.len() {
                    return Some(Err(e));
                }
                tracing::debug!(worker = %self.names[slot], "the worker lacks the method or has changed it; trying another");
                None
            }
            other => Some(other),
        }
    }

    /// What a call's result tells of its worker's health: an answer resets its failures; a
    /// call that timed out while the worker answered nothing puts it aside for a while.
    pub(super) fn observe<T>(&self, tracker: &Tracker, client: &Client, result: &Result<T, RpcError>) {
        match result {
            Ok(_) | Err(RpcError::Remote { .. } | RpcError::Decode { .. }) => tracker.answered(),
            Err(RpcError::DeadlineExceeded { .. }) if tracker.silent_since_sent() => {
                self.timed_out(tracker.slot, client)
            }
            _ => {}
        }
    }

    /// The error of a call for which every worker is down, with each one's reason.
    pub(super) fn all_down(&self, links: &[Link], method: &'static str) -> RpcError {
        let reasons: Vec<String> = links
            .iter()
            .zip(&self.names)
            .filter_map(|(l, e)| match l {
                Link::Down { reason, .. } => Some(format!("{e}: {reason}")),
                _ => None,
            })
            .collect();
        unreachable(method, "every worker of the pool", reasons.join("; "))
    }

    /// Tells the callers waiting for a link to change, blocked and awaited.
    pub(super) fn notify_changed(&self) {
        self.changed.notify_all();
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        wakers.into_iter().for_each(std::task::Waker::wake);
    }
}

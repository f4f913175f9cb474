//! Calls to every worker of a pool at once (scatter/gather): [`Pool::all`].

use std::time::Instant;

use super::{ConnectFailure, Link, Pool, Shared};
use crate::client::{Client, PendingCall};
use crate::error::{Ending, RpcError};

/// One worker's part of a call to the whole pool.
#[derive(Debug)]
#[non_exhaustive]
pub struct WorkerReply<R, E = RpcError> {
    /// The worker's index in the pool (its place in the endpoints, `PROCWIRE_INDEX` under a
    /// supervisor).
    pub index: usize,
    /// The worker's endpoint, as printed.
    pub endpoint: String,
    /// What the worker answered, or why it did not: unreachable or gone (the call did not
    /// run there), died during the call, or silent until the deadline.
    pub result: Result<R, E>,
}

impl<R, E> WorkerReply<R, E> {
    /// The same reply with its result mapped by `f` (the typed pools split a method's own
    /// error out of the reply with it).
    pub fn map<S, F>(self, f: impl FnOnce(Result<R, E>) -> Result<S, F>) -> WorkerReply<S, F> {
        WorkerReply {
            index: self.index,
            endpoint: self.endpoint,
            result: f(self.result),
        }
    }
}

impl Pool {
    /// Runs `start` on every worker of the pool at once, with one deadline for all (its
    /// own, else the configured call timeout from now), and returns each worker's reply in
    /// index order.
    ///
    /// Connected workers get the call at once; the others are connected meanwhile, each on
    /// a thread of its own, and get it when they answer. A worker that cannot be reached
    /// (its socket refuses, or it failed to answer lately and the pool is backing off from
    /// it) is reported at once, not waited for, and one that dies during the call as soon
    /// as its connection ends. Only a worker that takes the call, or the connection, and says
    /// nothing (hung, stopped with SIGSTOP, a socket a supervisor holds while the worker
    /// restarts) holds its own answer until the deadline, never the others'. Nothing is
    /// tried twice: a worker that failed is the caller's to see.
    pub fn all<R: serde::de::DeserializeOwned + Send>(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        start: impl Fn(&Client, Option<Instant>) -> Result<PendingCall<R>, RpcError> + Sync,
    ) -> Vec<WorkerReply<R>> {
        let sh = &self.shared();
        let deadline = sh.config.deadline(deadline);
        let begin = |slot: usize, client: Client| {
            let started = start(&client, deadline).map(|pending| pending.track(sh.track(slot)));
            (client, started)
        };
        let finish = |slot: usize, (client, started): (Client, Result<PendingCall<R>, RpcError>)| {
            sh.after_call(slot, &client, started.and_then(PendingCall::wait))
        };
        let run = |slot: usize, client: Client| finish(slot, begin(slot, client));
        let results = sh.scatter(method, deadline, begin, finish, &run);
        sh.replies(results)
    }

    /// Sends a one-way call with `send` to every worker at once, like [`all`](Self::all);
    /// each worker's result says whether the call was sent to it.
    pub fn notify_all(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        send: impl Fn(&Client, Option<Instant>) -> Result<(), RpcError> + Sync,
    ) -> Vec<WorkerReply<()>> {
        let sh = &self.shared();
        let deadline = sh.config.deadline(deadline);
        let run = |slot: usize, client: Client| {
            let sent = send(&client, deadline);
            sh.after_call(slot, &client, sent)
        };
        let results = sh.scatter(method, deadline, run, |_, sent| sent, &run);
        sh.replies(results)
    }
}

/// How a worker is reached for a call to the whole pool.
enum Reach {
    /// Connected: the call goes at once.
    Ready(Client),
    /// Not connected: this call connects it.
    Connect,
    /// Another thread is connecting it: its outcome is awaited.
    Awaited,
    /// Not reachable now; reported as it is.
    Failed(RpcError),
}

impl Shared {
    /// Runs a call on every worker: `begin` on each connected one at once (on this thread),
    /// then `finish` on each in turn; `run` (begin and finish at once) on a thread of its own
    /// for each worker that must be connected first.
    fn scatter<B, R: Send>(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        begin: impl Fn(usize, Client) -> B,
        finish: impl Fn(usize, B) -> Result<R, RpcError>,
        run: &(impl Fn(usize, Client) -> Result<R, RpcError> + Sync),
    ) -> Vec<Result<R, RpcError>> {
        let plan = self.plan(method);
        std::thread::scope(|s| {
            let mut results: Vec<Option<Result<R, RpcError>>> = Vec::with_capacity(plan.len());
            let mut begun = Vec::new();
            let mut threads = Vec::new();
            for (slot, reach) in plan.into_iter().enumerate() {
                results.push(None);
                match reach {
                    Reach::Ready(client) => begun.push((slot, begin(slot, client))),
                    Reach::Failed(e) => results[slot] = Some(Err(e)),
                    reach => threads.push((
                        slot,
                        s.spawn(move || {
                            let client = match reach {
                                Reach::Connect => self.connect_now(slot, method, deadline),
                                _ => self.await_link(slot, method, deadline),
                            };
                            client.and_then(|client| run(slot, client))
                        }),
                    )),
                }
            }
            for (slot, begun) in begun {
                results[slot] = Some(finish(slot, begun));
            }
            for (slot, thread) in threads {
                results[slot] = Some(thread.join().unwrap_or_else(|_| {
                    Err(super::unreachable(
                        method,
                        &self.names[slot],
                        "the calling thread panicked".into(),
                    ))
                }));
            }
            results
                .into_iter()
                .map(|r| r.expect("every slot has a result"))
                .collect()
        })
    }

    /// How each worker is reached; the workers to connect are marked as being connected.
    fn plan(&self, method: &'static str) -> Vec<Reach> {
        let now = Instant::now();
        let mut links = self.lock();
        links
            .iter_mut()
            .enumerate()
            .map(|(slot, link)| match link {
                Link::Up(client) if client.is_connected() => Reach::Ready(client.clone()),
                Link::Connecting => Reach::Awaited,
                // Failed to answer lately: reported as it is, not waited for again.
                Link::Down { retry_at, reason } if *retry_at > now => {
                    Reach::Failed(super::unreachable(method, &self.names[slot], reason.clone()))
                }
                _ => {
                    *link = Link::Connecting;
                    Reach::Connect
                }
            })
            .collect()
    }

    /// Connects worker `slot` on this thread, within `deadline`, and files the outcome.
    fn connect_now(&self, slot: usize, method: &'static str, deadline: Option<Instant>) -> Result<Client, RpcError> {
        let config = self.config_within(deadline);
        let result = self.connect(slot, config);
        let outcome = match &result {
            Ok(client) => Ok(client.clone()),
            Err(ConnectFailure::Unreachable(reason)) => Err(reason.clone()),
            Err(ConnectFailure::Refused(e)) => Err(crate::error::chain(e)),
        };
        self.settle(slot, result);
        outcome.map_err(|reason| super::unreachable(method, &self.names[slot], reason))
    }

    /// Waits, until `deadline`, for another thread's connection to worker `slot`.
    fn await_link(&self, slot: usize, method: &'static str, deadline: Option<Instant>) -> Result<Client, RpcError> {
        let mut links = self.lock();
        loop {
            match &links[slot] {
                Link::Up(client) => return Ok(client.clone()),
                Link::Down { reason, .. } => return Err(super::unreachable(method, &self.names[slot], reason.clone())),
                Link::Idle => return Err(super::unreachable(method, &self.names[slot], "not connected".into())),
                Link::Connecting => {}
            }
            let now = Instant::now();
            links = match deadline {
                Some(d) if d <= now => return Err(super::no_worker_in_time(method)),
                Some(d) => {
                    self.changed
                        .wait_timeout(links, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(links).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Files a lost connection to `slot` (to be connected again), and passes the result on.
    /// A missed deadline is not held against the worker: it may only have been busy.
    fn after_call<T>(&self, slot: usize, client: &Client, result: Result<T, RpcError>) -> Result<T, RpcError> {
        if let Err(RpcError::Disconnected { .. }) = &result {
            self.lost(slot, client);
        }
        result
    }

    /// The results, named by worker.
    fn replies<R>(&self, results: Vec<Result<R, RpcError>>) -> Vec<WorkerReply<R>> {
        results
            .into_iter()
            .enumerate()
            .map(|(index, result)| WorkerReply {
                index,
                endpoint: self.names[index].clone(),
                result: result.map_err(|e| self.named(index, e)),
            })
            .collect()
    }

    /// `e`, naming worker `slot` where it does not already.
    fn named(&self, slot: usize, e: RpcError) -> RpcError {
        match e {
            RpcError::Disconnected {
                method,
                peer,
                reason,
                delivery,
                ending,
            } if ending != Ending::Unreachable => RpcError::Disconnected {
                method,
                peer,
                reason: format!("worker {} {ending}: {reason}", self.names[slot]),
                delivery,
                ending,
            },
            other => other,
        }
    }
}

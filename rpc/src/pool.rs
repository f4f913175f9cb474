//! A client for a whole pool of workers: one connection to each worker's endpoint, calls
//! spread round robin.
//!
//! Each worker of the pool listens on an endpoint of its own (with `procwire up`, a pool's
//! `listen = ["unix:run/calc-{index}.sock"]`: the supervisor binds one socket per worker and
//! keeps it across restarts). The pool client connects to each lazily, sends each call to
//! the next worker in turn, skips a worker whose connection it knows is gone, and connects
//! to it again on its next turn, which the replacement answers once it serves.
//!
//! A call in flight on a worker that dies fails with [`RpcError::Disconnected`] naming the
//! worker; it never hangs and is never dropped silently. A call marked idempotent is tried
//! again on another worker, each worker at most once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::client::{Client, ClientConfig};
use crate::error::RpcError;
use crate::service::ServiceInfo;
use crate::transport::{tcp, unix, Transport};

/// An untyped pool client; `#[procwire::service]` generates a typed one (`CalcPool`).
#[derive(Debug)]
pub struct Pool {
    service: ServiceInfo,
    config: ClientConfig,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct Slot {
    endpoint: String,
    client: Mutex<Option<Client>>,
}

impl Pool {
    /// A pool of the workers at `endpoints` (`unix:PATH` or `tcp:HOST:PORT`, one per
    /// worker) serving `service`. Nothing is connected until the first call.
    pub fn new(service: ServiceInfo, endpoints: impl IntoIterator<Item = String>, config: ClientConfig) -> Self {
        Pool {
            service,
            config,
            slots: endpoints
                .into_iter()
                .map(|endpoint| Slot {
                    endpoint,
                    client: Mutex::new(None),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// How many workers the pool has.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if the pool has no worker.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Runs `call` on the next worker. If that worker's connection fails, the error names
    /// it; if `idempotent`, the call is first tried on the other workers, each at most once.
    pub fn call<R>(
        &self,
        method: &'static str,
        idempotent: bool,
        call: impl Fn(&Client) -> Result<R, RpcError>,
    ) -> Result<R, RpcError> {
        // An idempotent call goes to each other worker at most once until one answers: a
        // connection that went stale while others were restarting (a rolling restart) must
        // not fail a call that another live worker could have answered.
        let attempts = if idempotent { self.slots.len().max(1) } else { 1 };
        let mut tried = Vec::new();
        let mut failure = None;
        for _ in 0..attempts {
            let (slot, client) = self.pick(method, &tried)?;
            match call(&client) {
                Err(RpcError::Disconnected { method, peer, reason }) => {
                    self.forget(slot, &client);
                    tried.push(slot);
                    let reason = format!("worker {} died: {reason}", self.slots[slot].endpoint);
                    failure = Some(RpcError::Disconnected { method, peer, reason });
                }
                other => return other,
            }
        }
        Err(failure.expect("at least one attempt was made"))
    }

    /// The next worker with a live connection, connecting where there is none; workers in
    /// `avoid` are skipped while there are others.
    fn pick(&self, method: &'static str, avoid: &[usize]) -> Result<(usize, Client), RpcError> {
        let n = self.slots.len();
        if n == 0 {
            return Err(RpcError::Disconnected {
                method,
                peer: "an empty pool".into(),
                reason: "the pool has no worker".into(),
            });
        }
        let mut last_error = None;
        for _ in 0..n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            if avoid.contains(&i) && avoid.len() < n {
                continue;
            }
            let slot = &self.slots[i];
            let mut guard = slot.client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(client) = guard.as_ref() {
                if client.is_connected() {
                    return Ok((i, client.clone()));
                }
            }
            match connect(&slot.endpoint)
                .and_then(|t| Client::connect_with(t, self.service.clone(), self.config.clone()))
            {
                Ok(client) => {
                    *guard = Some(client.clone());
                    return Ok((i, client));
                }
                Err(e) => {
                    *guard = None;
                    last_error = Some(e);
                }
            }
        }
        Err(match last_error {
            Some(RpcError::Handshake(e)) => RpcError::Handshake(e),
            Some(e) => RpcError::Disconnected {
                method,
                peer: "every worker of the pool".into(),
                reason: e.to_string(),
            },
            None => RpcError::Disconnected {
                method,
                peer: "the pool".into(),
                reason: "no worker to call".into(),
            },
        })
    }

    /// Drops a dead connection, unless another caller already replaced it.
    fn forget(&self, slot: usize, dead: &Client) {
        let mut guard = self.slots[slot].client.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_some_and(|c| c.same_connection(dead)) {
            *guard = None;
        }
    }
}

fn connect(endpoint: &str) -> Result<Transport, RpcError> {
    let transport = if let Some(path) = endpoint.strip_prefix("unix:") {
        unix::connect(path)
    } else if let Some(addr) = endpoint.strip_prefix("tcp:") {
        tcp::connect(addr)
    } else {
        return Err(RpcError::Disconnected {
            method: "connect",
            peer: endpoint.to_owned(),
            reason: "expected unix:PATH or tcp:HOST:PORT".into(),
        });
    };
    transport.map_err(|e| RpcError::Disconnected {
        method: "connect",
        peer: endpoint.to_owned(),
        reason: crate::error::chain(&e),
    })
}

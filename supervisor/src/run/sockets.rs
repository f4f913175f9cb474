//! The sockets of workers added or removed by hand: a pool with a socket per worker
//! (`listen = ["unix:run/calc-{index}.sock"]`) scaled up gets its new workers' sockets bound
//! before they start; scaled down, the removed workers' sockets close at once, so that a pool
//! client still trying them is refused there at once and calls another worker.

use std::collections::BTreeSet;

use super::{bind_endpoint, Runner};
use crate::manifest::Endpoint;
use crate::policy::{PoolId, WorkerId};

impl Runner {
    /// The endpoints of `pool` that differ per worker (`{index}` in them).
    fn per_worker(&self, pool: PoolId) -> Vec<Endpoint> {
        self.policy
            .pool(pool)
            .listen
            .iter()
            .filter(|e| e.for_worker(0) != e.for_worker(1))
            .cloned()
            .collect()
    }

    /// Binds the per-worker sockets of `pool`'s workers `0..workers` that are not bound;
    /// on an error, none of those it bound stays, and the error names the socket.
    pub(super) fn bind_worker_sockets(&mut self, pool: PoolId, workers: u32) -> Result<(), String> {
        let (mode, group) = {
            let pool = self.policy.pool(pool);
            (pool.mode, super::socket_group(pool))
        };
        let mut bound = Vec::new();
        for index in 0..workers {
            for endpoint in self.per_worker(pool) {
                let endpoint = endpoint.for_worker(index);
                if self.listeners.contains_key(&endpoint) {
                    continue;
                }
                match bind_endpoint(&endpoint, mode, group) {
                    Ok(fd) => {
                        self.listeners.insert(endpoint.clone(), fd);
                        bound.push(endpoint);
                    }
                    Err(e) => {
                        self.unbind(&bound);
                        return Err(format!("listen {endpoint}: {e}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// A worker of `pool` below `workers` that still runs without its own socket: one
    /// scaled away a moment ago and still stopping, which would not accept on a new one.
    pub(super) fn still_stopping(&self, pool: PoolId, workers: u32) -> Option<u32> {
        let per_worker = self.per_worker(pool);
        (0..workers).find(|&index| {
            self.workers.contains_key(&WorkerId { pool, index })
                && per_worker
                    .iter()
                    .any(|e| !self.listeners.contains_key(&e.for_worker(index)))
        })
    }

    /// Closes the per-worker sockets of `pool`'s workers from `from` on (up to `to`).
    pub(super) fn close_worker_sockets(&mut self, pool: PoolId, from: u32, to: u32) {
        let endpoints: Vec<Endpoint> = (from..to)
            .flat_map(|index| self.per_worker(pool).into_iter().map(move |e| e.for_worker(index)))
            .collect();
        self.unbind(&endpoints);
    }

    fn unbind(&mut self, endpoints: &[Endpoint]) {
        for endpoint in endpoints {
            if self.listeners.remove(endpoint).is_some() {
                if let Endpoint::Unix(path) | Endpoint::Shm(path) | Endpoint::Mq(path) = endpoint {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }

    /// Every socket a pool's current workers use, scaled ones included.
    pub(super) fn worker_endpoints(&self) -> BTreeSet<Endpoint> {
        self.policy
            .views()
            .into_iter()
            .flat_map(|pool| {
                let count = self.policy.worker_count(pool.id);
                self.policy
                    .pool(pool.id)
                    .listen
                    .iter()
                    .flat_map(move |e| (0..count).map(move |index| e.for_worker(index)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Each worker's endpoint of `pool` for a pool client, in index order: its first `listen`
    /// endpoint, for each current worker.
    pub(super) fn client_endpoints(&self, pool: PoolId) -> Vec<Endpoint> {
        match self.policy.pool(pool).listen.first() {
            Some(endpoint) => (0..self.policy.worker_count(pool))
                .map(|index| endpoint.for_worker(index))
                .collect(),
            None => Vec::new(),
        }
    }
}

//! Shared memory: regions that several processes map, and the synchronisation primitives
//! that live in them.
//!
//! - [`Region`]: an unnamed memfd, sealed so its size never changes, mapped shared. Nothing
//!   is named in `/dev/shm`, so nothing is left behind by a crash. It reaches another process
//!   by inheritance ([`Region::pass_to`], [`Region::from_env`]) or over a Unix socket
//!   ([`send_region`], [`recv_region`]; [`send_fds`], [`recv_fds`] for any descriptors).
//! - Typed access by copy ([`Region::read`], [`Region::write`], [`View`]) for
//!   plain-old-data (`bytemuck`'s `Pod`), and atomics in place ([`Region::atomic`]).
//!
//! # The rule: no `&T` into shared memory
//!
//! Another process may write the region at any moment, and the compiler cannot see it. A
//! `&T` (or `&mut T`) to such memory would promise the compiler that the bytes do not change
//! while it lives, which the other process breaks: undefined behaviour, even for a `u32`.
//! So this module never hands out a reference to shared bytes except to atomics, whose every
//! access is an atomic operation and which allow shared mutation. Everything else is copied
//! in and out, with atomic loads and stores (a word at a time where aligned), so a concurrent
//! write is no data race; the copied value may be torn (part old, part new) unless the
//! writers and readers hold a lock, and is always a valid value since any bytes are a valid
//! `Pod`. A value whose parts must agree is read and written under a lock.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use procwire_rpc::shm::Region;
//!
//! # fn main() -> Result<(), procwire_rpc::shm::ShmError> {
//! let region = Region::create(4096)?;
//! region.write(8, &[1u32, 2, 3])?;
//! assert_eq!(region.read::<[u32; 3]>(8)?, [1, 2, 3]);
//! let hits: &AtomicU64 = region.atomic(0)?;
//! hits.fetch_add(1, Ordering::Relaxed);
//! // A child spawned with `region.pass_to(&mut cmd, "stats")?` opens it with
//! // `Region::from_env("stats")?`.
//! # Ok(()) }
//! ```
//!
//! # Where the unsafe code is
//!
//! - `region.rs`: mapping the memfd and turning its address into atomics (bounds and
//!   alignment checked); the `pre_exec` hook that lets a child inherit the descriptor.
//! - `pass.rs`: owning descriptors that arrived with `SCM_RIGHTS`.

mod access;
mod error;
mod pass;
mod region;

pub use access::View;
pub use error::{EnvProblem, ShmError};
pub use pass::{recv_fds, recv_region, send_fds, send_region, MAX_FDS};
pub use region::{env_var, Region, SharedAtomic, ENV_PREFIX};

#[cfg(test)]
mod tests;

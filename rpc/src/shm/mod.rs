//! Shared memory: regions that several processes map, and the synchronisation primitives
//! that live in them.
//!
//! - [`Region`]: an unnamed memfd, sealed so its size never changes, mapped shared. Nothing
//!   is named in `/dev/shm`, so nothing is left behind by a crash. It reaches another process
//!   by inheritance ([`Region::pass_to`], [`Region::from_env`]) or over a Unix socket
//!   ([`send_region`], [`recv_region`]; [`send_fds`], [`recv_fds`] for any descriptors).
//! - Typed access by copy ([`Region::read`], [`Region::write`], [`View`]) for
//!   plain-old-data (`bytemuck`'s `Pod`), and atomics in place ([`Region::atomic`]).
//! - Primitives placed at an offset of a region, so that every process that maps it uses
//!   them; each has blocking, `try_` and timeout forms, and each is created once (`create`)
//!   and checked when opened (`open`: a magic number and layout version, then its state):
//!   - [`RobustMutex`]: a mutex whose holder may die; the next locker is told
//!     ([`Locked::OwnerDied`]) and repairs the data before [`Recovery::consistent`];
//!   - [`Semaphore`]: counting (binary with one permit), whose permits come back when a
//!     holder dies ([`Semaphore::reclaim`] for whoever reaps it, or a liveness check);
//!   - [`BinarySemaphore`]: a post/wait signal on one futex word;
//!   - [`Barrier`]: N processes, reusable;
//!   - [`Spinlock`]: for critical sections of a few hundred nanoseconds.
//!
//! The creator lays the primitives out (each has a `SIZE`; offsets are multiples of 8),
//! creates them, and only then hands the region to other processes, which `open` them at
//! the same offsets.
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
//! # Orderings, and why they are correct
//!
//! - Publishing a primitive: its state is stored first, its magic last with `Release`;
//!   `open` loads the magic with `Acquire`, so whoever sees the magic sees the state.
//! - Locks ([`RobustMutex`], [`Spinlock`], the semaphore's table): taking the lock acquires,
//!   releasing it releases, so the data copied in under the lock by one holder is what the
//!   next holder copies out; the copies themselves can then be `Relaxed`.
//! - Sleeping and waking (futexes): a waiter publishes "I am waiting" and the waker publishes
//!   the change, both `SeqCst`, then each reads the other's: at least one sees the other, so
//!   either the waker wakes or the waiter's `FUTEX_WAIT` (which compares the word with the
//!   expected value atomically with going to sleep) returns at once. The wake always comes
//!   after the store it announces.
//! - [`Barrier`]: arrivals are `AcqRel` read-modify-writes of one word, so the last arrival
//!   acquires everybody's earlier writes; its `Release` store of the next generation, loaded
//!   with `Acquire` by the waiters, passes them on.
//!
//! The futexes are the shared kind (no `FUTEX_PRIVATE_FLAG`), which the kernel keys by the
//! memfd and offset, so a waker in another process finds the waiter.
//!
//! # Where the unsafe code is
//!
//! - `region.rs`: mapping the memfd and turning its address into atomics (bounds and
//!   alignment checked); the `pre_exec` hook that lets a child inherit the descriptor.
//! - `pass.rs`: owning descriptors that arrived with `SCM_RIGHTS`.
//! - `futex.rs`: the `futex(2)` system call.
//! - `robust.rs`: glibc's robust process-shared `pthread_mutex_t`.

mod access;
mod barrier;
mod binary;
mod error;
mod futex;
mod header;
mod mutex;
mod pass;
mod region;
mod robust;
mod semaphore;
mod spin;

pub use access::View;
pub use barrier::{Barrier, Passed};
pub use binary::BinarySemaphore;
pub use error::{EnvProblem, ShmError};
pub use mutex::{Locked, MutexGuard, Recovery, RobustMutex};
pub use pass::{recv_fds, recv_region, send_fds, send_region, MAX_FDS};
pub(crate) use region::{claim_inherited, claim_inherited_owned};
pub use region::{env_var, Region, SharedAtomic, ENV_PREFIX};
pub use semaphore::{Permit, Semaphore};
pub use spin::{SpinGuard, Spinlock};

#[cfg(test)]
mod primitive_tests;
#[cfg(test)]
mod tests;

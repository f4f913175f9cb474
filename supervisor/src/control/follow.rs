//! Pool clients that follow their pool: a thread that watches the supervisor's events and,
//! whenever the pool is scaled or the manifest reloaded, tells the pool client the endpoints
//! of the workers there are now ([`procwire_rpc::pool::Pool::set_endpoints`]).
//!
//! The embedded supervisor does it in process ([`crate::Supervisor::follow`]); any program
//! can do it through the control socket ([`follow_pool`]).

use std::path::Path;
use std::thread::JoinHandle;

use procwire_rpc::pool::Pool;

use super::client::{self, ClientError};
use super::feed::Batch;
use super::{Event, What};

/// Runs the follower of the pool `name` on a thread of its own: `next(cursor)` gives the
/// events after `cursor` (`None`: from now on; `None` back when the supervisor cannot be
/// asked any more), `endpoints()` the pool's current endpoints. It ends with the
/// supervisor, leaving the pool client with the workers it had last.
pub(crate) fn spawn(
    pool: Pool,
    name: String,
    mut next: impl FnMut(Option<u64>) -> Option<Batch<Event>> + Send + 'static,
    mut endpoints: impl FnMut() -> Option<Vec<String>> + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("procwire-follow-{name}"))
        .spawn(move || {
            let mut cursor = None;
            loop {
                let Some(batch) = next(cursor) else { return };
                // The first answer fixes where the events start; the members are read after
                // it, so that no change between the two is missed.
                let changed = cursor.is_none() || batch.missed > 0 || batch.items.iter().any(|e| changes(e, &name));
                if changed {
                    match endpoints() {
                        Some(endpoints) => pool.set_endpoints(endpoints),
                        None => return,
                    }
                }
                if batch.ended {
                    return;
                }
                cursor = Some(batch.next);
            }
        })
}

/// Whether `event` may change the workers of the pool `name`.
fn changes(event: &Event, name: &str) -> bool {
    match &event.what {
        What::Scaled { .. } => event.pool.as_deref() == Some(name),
        What::Reloaded(_) => true,
        _ => false,
    }
}

/// Keeps `pool`, a pool client of the pool `name` of the supervisor whose control socket is
/// at `socket`, calling that pool's current workers: after `procwire scale` (or a reload), it
/// calls the new workers and stops calling removed ones, without being rebuilt. Its
/// endpoints are set at once; a thread keeps them up to date until the supervisor ends.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use procwire_rpc::{pool::Pool, ClientConfig, ServiceInfo};
/// let socket = std::path::Path::new("/run/user/1000/procwire/shop.sock");
/// let pool = Pool::new(ServiceInfo::new("calc"), Vec::<String>::new(), ClientConfig::for_pool());
/// procwire_supervisor::control::follow::follow_pool(socket, "calc", &pool)?;
/// # Ok(()) }
/// ```
pub fn follow_pool(socket: &Path, name: &str, pool: &Pool) -> Result<JoinHandle<()>, ClientError> {
    let control = client::connect(socket)?.with_timeout(super::feed::WAIT_MAX + super::REPLY_TIMEOUT);
    // A pool that is not there is the caller's error, said now.
    let first = control.endpoints(name.to_owned()).map_err(|e| match e {
        procwire_rpc::CallError::Application(e) => ClientError::Refused(e),
        procwire_rpc::CallError::Rpc(e) => ClientError::Rpc(e),
    })?;
    pool.set_endpoints(&first);
    let (events, members, name) = (control.clone(), control, name.to_owned());
    let asked = name.clone();
    let thread_name = name.clone();
    let wait_ms = super::feed::WAIT_MAX.as_millis() as u32;
    spawn(
        pool.clone(),
        name,
        move |cursor| {
            events
                .next_events(cursor, if cursor.is_some() { wait_ms } else { 0 })
                .ok()
        },
        move || members.endpoints(asked.clone()).ok(),
    )
    .map_err(|source| ClientError::Thread {
        pool: thread_name,
        source,
    })
}

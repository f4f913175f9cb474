//! Pool clients that follow their pool: a thread that watches the supervisor's events and,
//! whenever the pool is scaled or the manifest reloaded, tells the pool client the endpoints
//! of the workers there are now ([`procwire_rpc::pool::Pool::set_endpoints`]).
//!
//! The embedded supervisor does it in process ([`crate::Supervisor::follow`]); any program
//! can do it through the control socket ([`follow_pool`]).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use procwire_rpc::pool::{Pool, WeakPool};

use super::client::{self, ClientError};
use super::feed::Batch;
use super::{ControlClient, Event, What};

/// What a follower got when it asked its supervisor.
#[derive(Debug)]
pub(crate) enum Asked<T> {
    Got(T),
    /// The question failed (a supervisor that is gone, or one that did not answer in
    /// time): asked again after a back-off, from scratch.
    Failed(String),
    /// The supervisor has ended for good: the follower ends.
    Ended,
}

/// The first wait after a failed question; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two questions while the supervisor does not answer.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Runs the follower of the pool `name` on a thread of its own: `next(cursor)` gives the
/// events after `cursor` (`None`: from now on), `endpoints()` the pool's current endpoints.
/// It ends when the supervisor ends (its last event says so) or when no one holds the pool
/// client any more. A question that fails is asked again, with a growing back-off, and the
/// follower starts over (reading the endpoints again): so it outlives a supervisor that was
/// killed and started again, and then follows the new one.
pub(crate) fn spawn(
    pool: WeakPool,
    name: String,
    mut next: impl FnMut(Option<u64>) -> Asked<Batch<Event>> + Send + 'static,
    mut endpoints: impl FnMut() -> Asked<Vec<String>> + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("procwire-follow-{name}"))
        .spawn(move || {
            let mut cursor = None;
            // While questions fail: the wait before the next one.
            let mut retry: Option<Duration> = None;
            loop {
                let round = match next(cursor) {
                    Asked::Failed(why) => Err(why),
                    Asked::Ended => return,
                    Asked::Got(batch) => {
                        // The first answer fixes where the events start; the members are
                        // read after it, so that no change between the two is missed.
                        let changed =
                            cursor.is_none() || batch.missed > 0 || batch.items.iter().any(|e| changes(e, &name));
                        match changed.then(&mut endpoints) {
                            None => Ok((batch, None)),
                            Some(Asked::Got(members)) => Ok((batch, Some(members))),
                            Some(Asked::Failed(why)) => Err(why),
                            Some(Asked::Ended) => return,
                        }
                    }
                };
                match round {
                    Ok((batch, members)) => {
                        let Some(pool) = pool.upgrade() else { return };
                        if let Some(members) = members {
                            pool.set_endpoints(members);
                        }
                        if batch.ended {
                            return;
                        }
                        cursor = Some(batch.next);
                        if retry.take().is_some() {
                            tracing::info!(pool = %name, "following the pool again");
                        }
                    }
                    Err(why) => {
                        if retry.is_none() {
                            tracing::warn!(pool = %name, "cannot follow the pool ({why}); trying again");
                        }
                        if pool.upgrade().is_none() {
                            return;
                        }
                        let wait = retry.unwrap_or(RETRY_FIRST);
                        // A back-off between retries, not a synchronisation.
                        std::thread::sleep(wait);
                        retry = Some((wait * 2).min(RETRY_MAX));
                        cursor = None;
                    }
                }
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
/// endpoints are set at once; a thread keeps them up to date until the supervisor ends
/// or no one holds the pool client any more. If the supervisor stops answering (killed, say)
/// the thread asks again with a back-off, and follows the supervisor started next.
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
    let remote = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        socket: socket.to_owned(),
        client: Some(control),
    }));
    let (events, members, name) = (std::sync::Arc::clone(&remote), remote, name.to_owned());
    let asked = name.clone();
    let thread_name = name.clone();
    let wait_ms = super::feed::WAIT_MAX.as_millis() as u32;
    spawn(
        pool.downgrade(),
        name,
        move |cursor| {
            let wait = if cursor.is_some() { wait_ms } else { 0 };
            Remote::ask(&events, |control| control.next_events(cursor, wait))
        },
        move || Remote::ask(&members, |control| control.endpoints(asked.clone())),
    )
    .map_err(|source| ClientError::Thread {
        pool: thread_name,
        source,
    })
}

/// The follower's connection to the control socket, made again after a failure.
#[derive(Debug)]
struct Remote {
    socket: PathBuf,
    client: Option<ControlClient>,
}

impl Remote {
    /// Asks `call` of the supervisor, connecting first if the last question failed.
    fn ask<T>(
        remote: &std::sync::Mutex<Remote>,
        call: impl FnOnce(&ControlClient) -> Result<T, procwire_rpc::CallError<super::ControlError>>,
    ) -> Asked<T> {
        let mut remote = remote.lock().unwrap_or_else(|e| e.into_inner());
        let control = match remote.client.take() {
            Some(control) => control,
            None => match client::connect(&remote.socket) {
                Ok(control) => control.with_timeout(super::feed::WAIT_MAX + super::REPLY_TIMEOUT),
                Err(e) => return Asked::Failed(e.to_string()),
            },
        };
        match call(&control) {
            Ok(answer) => {
                remote.client = Some(control);
                Asked::Got(answer)
            }
            // The supervisor answered: the connection is good, the question was refused
            // (a reloaded manifest without the pool, say).
            Err(procwire_rpc::CallError::Application(why)) => {
                remote.client = Some(control);
                Asked::Failed(why.to_string())
            }
            Err(procwire_rpc::CallError::Rpc(e)) => Asked::Failed(e.to_string()),
        }
    }
}

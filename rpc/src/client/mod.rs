//! The multiplexed client.
//!
//! One [`Client`] is one connection, shared by any number of threads: each call gets a fresh
//! request id, and replies are matched by id in whatever order they arrive. There is no
//! reader thread: a caller waiting for its reply reads the connection itself when nobody else
//! is, and hands other callers their replies as it meets them ("leader/followers"). A lone
//! caller without a deadline therefore costs exactly one write and one read per call, like a plain socket
//! ping-pong.
//!
//! Wake-ups are targeted, so that eight callers cost no more per call than one: the reader
//! wakes a blocked caller only when that caller's own reply is filed, and when it stops
//! reading it first files every frame already buffered (one read brings many replies), then
//! wakes one caller still waiting, to read next. Nobody is woken to find nothing to do.

use rustc_hash::{FxHashMap, FxHashSet};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::Waker;
use std::thread::Thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Delivery, Ending, RpcError, TransportError};
use crate::outbox::{Outbox, SendError};
use crate::protocol::{serialized_size, Envelope, Fault, FaultKind, Frame, Kind};
use crate::service::{Method, ServiceInfo};
use crate::transport::{FrameReceiver, Payload, PeerInfo, Transport};
use crate::wait::Wait;

mod config;
mod future;
mod handshake;
mod locked;
mod pending;
pub(crate) mod reactor;
mod reading;
pub(crate) mod reply;

pub(crate) use future::Timer;
use handshake::{handshake, Refusals};
use locked::Locked;

pub use config::ClientConfig;
pub use pending::PendingCall;

/// How long a send that found the connection closed waits for another caller to read the
/// peer's last frames (its goodbye, say) before saying how the connection ended.
const LAST_WORDS_WAIT: Duration = Duration::from_millis(100);

/// The largest payload queued unwritten for a woken caller to write with others: larger
/// ones gain little from sharing a write, and are encoded under the client's lock.
const DEFER_MAX: usize = 1024;

/// A handle to one connection to a service. Cheap to clone; clones share the connection,
/// and the connection closes when the last clone is dropped, once the frames it already
/// accepted (one-way calls, say) are written. If the peer never reads them, a background
/// flusher keeps the connection until the peer reads or goes away.
///
/// # Blocking and non-blocking calls
///
/// | you want                               | call                                              |
/// |----------------------------------------|---------------------------------------------------|
/// | blocking send, blocking receive        | [`call`](Self::call)                              |
/// | blocking send, non-blocking receive    | [`start`](Self::start), then [`PendingCall::try_wait`] |
/// | non-blocking send, blocking receive    | [`try_start`](Self::try_start), then [`PendingCall::wait`] |
/// | non-blocking send, non-blocking receive| [`try_start`](Self::try_start), then [`PendingCall::try_wait`] |
///
/// A deadline bounds both the send and the wait for the reply.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    outbox: Outbox,
    state: Mutex<State>,
    replies: Condvar,
    receiver: Mutex<Box<dyn FrameReceiver>>,
    next_id: AtomicU64,
    peer: PeerInfo,
    service: ServiceInfo,
    /// Methods of ours the server lacks or has changed.
    refusals: Refusals,
    call_timeout: Option<Duration>,
    /// The receiver's readiness descriptor, duplicated on the first awaited call (`None`
    /// inside: the transport has none).
    readiness: OnceLock<Option<Arc<OwnedFd>>>,
    /// The same, registered with the tokio runtime the first awaited call ran in (that
    /// runtime's id beside it: calls awaited elsewhere are watched by the reactor thread).
    #[cfg(feature = "tokio")]
    tokio_readiness: OnceLock<Option<(tokio::runtime::Id, tokio::io::unix::AsyncFd<OwnedFd>)>>,
}

struct State {
    /// Some caller is reading the connection.
    reading: bool,
    /// Calls awaiting replies: `None` until the reply payload arrives. The maps keyed by
    /// call id hash with FxHash: the keys are our own ids (a peer's reply only looks one
    /// up), so there is no flooding to defend against, and SipHash cost more per call than
    /// the rest of the bookkeeping.
    pending: FxHashMap<u64, Option<Payload>>,
    /// Why the connection is gone.
    failed: Option<Failure>,
    /// Callers waiting on `replies` for the reader to finish (see `read_what_is_left`); a
    /// notify is a system call, so it is skipped when zero.
    waiters: usize,
    /// Blocked callers waiting for their replies, by call id: each is unparked alone, when
    /// its reply is filed or when it is to read next.
    sleepers: FxHashMap<u64, Thread>,
    /// The sleeper woken to read next, until it wakes or somebody else reads: no second one
    /// is woken meanwhile.
    next_reader: Option<u64>,
    /// Threads to unpark once the lock is released (see `locked.rs`).
    wake: Vec<Thread>,
    /// Blocked callers unparked for their filed replies that have not yet taken them.
    /// While any has not, a new call's frame is queued unwritten (`Outbox::defer`): the
    /// last of them to take its reply writes every frame queued so, in one write.
    woken: usize,
    /// Awaited calls waiting for their replies: woken when theirs is filed, and one of them
    /// when the connection needs a reader (see `future.rs`).
    wakers: FxHashMap<u64, Waker>,
    /// Awaited calls woken for their filed replies that have not yet taken them: like
    /// `woken`, while any has not, a new small call's frame is queued unwritten, and the last
    /// of them to take its reply (or give up on it) writes them all in one write.
    woken_tasks: FxHashSet<u64>,
    /// The last woken task took its reply with frames deferred, and left their write to the
    /// next poll of a call (see `Inner::owe_flush`): until then new small frames are
    /// deferred too.
    flush_owed: bool,
    /// Who watches the connection for readability on behalf of the awaited calls.
    watching: future::Watch,
}

/// Why a connection is gone, and how it ended.
#[derive(Clone, Debug)]
struct Failure {
    reason: String,
    ending: Ending,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.inner.service)
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a client over `transport` with the default configuration, after a handshake that
    /// checks both sides speak the same protocol and serve the same `service`, and learns
    /// the server's methods: a call to one of `service`'s methods that the server lacks or
    /// has with another signature then fails with [`RpcError::Incompatible`], unsent.
    pub fn connect(transport: Transport, service: ServiceInfo) -> Result<Client, RpcError> {
        Self::connect_with(transport, service, ClientConfig::default())
    }

    /// Opens a client with `config`.
    pub fn connect_with(
        mut transport: Transport,
        service: ServiceInfo,
        config: ClientConfig,
    ) -> Result<Client, RpcError> {
        transport.set_max_frame_len(config.max_frame_len);
        let refusals = handshake(&mut transport, &service, config.handshake_timeout)?;
        let Transport { sender, receiver, peer } = transport;
        Ok(Client {
            inner: Arc::new(Inner {
                outbox: Outbox::new(sender, config.buffering, peer.name.clone(), config.max_frame_len, None),
                state: Mutex::new(State {
                    reading: false,
                    pending: FxHashMap::default(),
                    failed: None,
                    waiters: 0,
                    sleepers: FxHashMap::default(),
                    next_reader: None,
                    wake: Vec::new(),
                    woken: 0,
                    wakers: FxHashMap::default(),
                    woken_tasks: FxHashSet::default(),
                    flush_owed: false,
                    watching: future::Watch::Nobody,
                }),
                replies: Condvar::new(),
                receiver: Mutex::new(receiver),
                // Id 0 is reserved for connection-level errors.
                next_id: AtomicU64::new(1),
                peer,
                service,
                refusals,
                call_timeout: config.call_timeout,
                readiness: OnceLock::new(),
                #[cfg(feature = "tokio")]
                tokio_readiness: OnceLock::new(),
            }),
        })
    }

    /// False once the connection is known to be gone (the peer closed it, died, or broke
    /// the protocol); calls then fail at once.
    ///
    /// If no call is reading the connection, this looks at it without waiting, so that a
    /// peer that has gone away is noticed before the next call is sent to it.
    pub fn is_connected(&self) -> bool {
        let inner = &self.inner;
        let mut st = inner.lock();
        if st.failed.is_none() && !st.reading {
            st = inner.read_once(st, Wait::NonBlock).0;
            inner.notify(&mut st);
        }
        st.failed.is_none()
    }

    /// True if both handles share one connection.
    pub fn same_connection(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The peer this client is connected to.
    pub fn peer(&self) -> &PeerInfo {
        &self.inner.peer
    }

    /// The service this client speaks.
    pub fn service(&self) -> &ServiceInfo {
        &self.inner.service
    }

    /// Calls `method` with `args` and waits for its reply, until `deadline` if one is given
    /// (else within the configured [`call_timeout`](ClientConfig::call_timeout), if any).
    pub fn call<A, R>(&self, method: Method, args: &A, deadline: Option<Instant>) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.start_inner(method, args, deadline, Wait::deadline(deadline))?
            .wait()
    }

    /// Sends a call and returns without waiting for the reply. The send itself waits for room
    /// in the outgoing queue, until `deadline` if one is given.
    pub fn start<A, R>(&self, method: Method, args: &A, deadline: Option<Instant>) -> Result<PendingCall<R>, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.start_inner(method, args, deadline, Wait::deadline(deadline))
    }

    /// Like [`start`](Self::start), but fails with [`RpcError::WouldBlock`] instead of
    /// waiting for room in the outgoing queue.
    pub fn try_start<A, R>(
        &self,
        method: Method,
        args: &A,
        deadline: Option<Instant>,
    ) -> Result<PendingCall<R>, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.start_inner(method, args, deadline, Wait::NonBlock)
    }

    /// Sends a one-way call: no reply is awaited, and none comes. `wait` bounds the wait for
    /// room in the outgoing queue.
    pub fn notify<A: Serialize + ?Sized>(&self, method: Method, args: &A, wait: Wait) -> Result<(), RpcError> {
        self.inner.refusals.check(method, &self.inner.peer.name)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(id, Kind::OneWay, method, args, None)?;
        self.inner.send(frame, wait, method)
    }

    fn start_inner<A, R>(
        &self,
        method: Method,
        args: &A,
        deadline: Option<Instant>,
        wait: Wait,
    ) -> Result<PendingCall<R>, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.inner.refusals.check(method, &self.inner.peer.name)?;
        let deadline = crate::typed::__private::deadline(deadline, self.inner.call_timeout);
        let wait = match wait {
            Wait::NonBlock => Wait::NonBlock,
            _ => Wait::deadline(deadline),
        };
        // One clock read for both: a clock read costs more than most of a call's other steps.
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            // Nothing is sent for a call that is already late.
            return Err(RpcError::DeadlineExceeded {
                method: method.name,
                peer: self.inner.peer.name.clone(),
            });
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let envelope = envelope(id, Kind::Call, method, left);
        // Sized first, so that a value that cannot be encoded is refused before anything is
        // registered or sent.
        let len = serialized_size(&envelope)
            .and_then(|n| Ok(n + serialized_size(args)?))
            .map_err(|source| RpcError::Encode {
                method: method.name,
                source,
            })?;
        let encode = || {
            envelope.frame_with(args).map_err(|source| RpcError::Encode {
                method: method.name,
                source,
            })
        };
        // A small frame is queued unwritten while callers are being woken, for the last of
        // them to write with the others (`State::woken`); else it is sent as usual.
        let mut small = None;
        // Set if the write of the frames deferred is owed (`State::flush_owed`) and nobody
        // else is to make it: this call's frame goes last in it, now.
        let mut owed = false;
        let deferred = {
            let mut st = self.inner.lock();
            if let Some(failure) = &st.failed {
                return Err(self.inner.disconnected(method, failure, Delivery::NotSent));
            }
            if (st.woken > 0 || !st.woken_tasks.is_empty() || st.flush_owed) && len <= DEFER_MAX {
                small = Some(encode()?);
                owed = st.woken == 0 && st.woken_tasks.is_empty() && self.inner.take_owed(&mut st);
            }
            st.pending.insert(id, None);
            // Under the lock: the last woken caller flushes after `woken` drops to zero
            // under it, so a frame queued while it is above zero is always written.
            match small.take() {
                Some(frame) => match self.inner.outbox.defer(frame) {
                    Ok(None) => Some(Ok(())),
                    Ok(Some(frame)) => {
                        small = Some(frame);
                        None
                    }
                    Err(e) => Some(Err(e)),
                },
                None => None,
            }
        };
        // Made before sending, so that a failed send cancels the call when it is dropped.
        let call = PendingCall::new(self.clone(), id, method, deadline);
        if owed {
            self.inner.flush_deferred();
        }
        if let Some(sent) = deferred {
            self.inner.sent(sent, method)?;
            return Ok(call);
        }
        // Straight into the transport where it can take the frame in place (shared memory).
        let sent = self.inner.outbox.send_encoded(
            len,
            &mut |sink| {
                postcard::serialize_with_flavor(&envelope, &mut *sink)?;
                postcard::serialize_with_flavor(args, &mut *sink)
            },
            || small.take().map_or_else(encode, Ok),
            wait,
        )?;
        self.inner.sent(sent, method)?;
        Ok(call)
    }
}

/// A call's envelope, with the time `left` until its deadline.
fn envelope(id: u64, kind: Kind, method: Method, left: Option<Duration>) -> Envelope {
    Envelope {
        id,
        kind,
        method: method.id,
        timeout_us: left.map(|left| left.as_micros() as u64),
    }
}

fn encode<A: Serialize + ?Sized>(
    id: u64,
    kind: Kind,
    method: Method,
    args: &A,
    left: Option<Duration>,
) -> Result<Frame, RpcError> {
    envelope(id, kind, method, left)
        .frame_with(args)
        .map_err(|source| RpcError::Encode {
            method: method.name,
            source,
        })
}

/// The client's side of the handshake; also [`crate::fuzz::handshake`]'s.
pub(crate) fn fuzz_handshake(
    transport: &mut Transport,
    service: &ServiceInfo,
    timeout: Duration,
) -> Result<(), crate::HandshakeError> {
    handshake(transport, service, timeout).map(|_| ())
}

impl Inner {
    fn lock(&self) -> Locked<'_> {
        Locked::new(self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hands the reading on, if nobody is reading: wakes one blocked caller still waiting for
    /// its reply, to read next; with none, and nobody watching, an awaited call, to take over
    /// (`future.rs`). Callers waiting for a reader to finish are told too.
    fn notify(&self, st: &mut State) {
        if st.reading {
            return;
        }
        if st.waiters > 0 {
            self.replies.notify_all();
        }
        if st.next_reader.is_some_and(|id| st.sleepers.contains_key(&id)) {
            // Already woken, not yet running.
            return;
        }
        let next = st
            .sleepers
            .iter()
            .find(|(id, _)| matches!(st.pending.get(id), Some(None)));
        if let Some((&id, thread)) = next {
            let thread = thread.clone();
            st.next_reader = Some(id);
            st.wake.push(thread);
        } else if !st.wakers.is_empty() && st.watching == future::Watch::Nobody {
            if let Some(waker) = st.wakers.values().next() {
                waker.wake_by_ref();
            }
        }
    }

    fn disconnected(&self, method: Method, failure: &Failure, delivery: Delivery) -> RpcError {
        RpcError::Disconnected {
            method: method.name,
            peer: self.peer.name.clone(),
            reason: failure.reason.clone(),
            delivery,
            ending: failure.ending,
        }
    }

    /// The error of a call this handle already finished (a programming error of the caller).
    fn finished(&self, method: Method) -> RpcError {
        let failure = Failure {
            reason: "the call was already finished".into(),
            ending: Ending::Broken,
        };
        self.disconnected(method, &failure, Delivery::Unknown)
    }

    fn send(&self, frame: Frame, wait: Wait, method: Method) -> Result<(), RpcError> {
        self.sent(self.outbox.send(frame, wait), method)
    }

    /// What became of a frame given to the outbox, as the caller of `method` sees it.
    fn sent(&self, sent: Result<(), SendError>, method: Method) -> Result<(), RpcError> {
        sent.map_err(|e| match e {
            SendError::WouldBlock => RpcError::WouldBlock {
                method: method.name,
                peer: self.peer.name.clone(),
            },
            SendError::TimedOut => RpcError::DeadlineExceeded {
                method: method.name,
                peer: self.peer.name.clone(),
            },
            SendError::TooLarge(source) => RpcError::TooLarge {
                method: method.name,
                source,
            },
            SendError::Closed(reason) => {
                // The frame was not taken, so it was not sent. Why the connection closed may
                // be waiting unread (a stopping server's goodbye): look before saying.
                let st = self.read_what_is_left(self.lock());
                let failure = st.failed.clone().unwrap_or(Failure {
                    reason,
                    ending: Ending::Died,
                });
                self.disconnected(method, &failure, Delivery::NotSent)
            }
        })
    }

    /// Marks the connection failed: every waiting and future call gets `reason`.
    fn fail(&self, st: &mut State, reason: String, ending: Ending) {
        tracing::debug!(peer = %self.peer.name, %reason, %ending, "client connection failed");
        self.outbox.close(&reason);
        st.failed.get_or_insert(Failure { reason, ending });
        st.wakers.drain().for_each(|(_, waker)| waker.wake());
        // The outbox is closed: nothing deferred is left to write.
        st.woken_tasks.clear();
        st.flush_owed = false;
        let all: Vec<Thread> = st.sleepers.values().cloned().collect();
        st.wake.extend(all);
        self.notify(st);
    }

    /// The peer broke the protocol.
    fn violation(&self, st: &mut State, reason: String) {
        self.fail(
            st,
            format!("protocol violation by {}: {reason}", self.peer.name),
            Ending::Broken,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_handle_is_clone_send_and_sync() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<Client>();
    }
}

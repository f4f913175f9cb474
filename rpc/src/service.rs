//! What a server serves: the [`Service`] trait, and the context each call runs in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::outbox::Replies;
use crate::protocol::{fault_frame, serialized_size, Envelope, Fault, FaultKind, Frame, Kind};
use crate::schema::Describe;
use crate::transport::PeerInfo;

mod args;

pub use args::Args;

/// A service's identity, checked by the handshake on every connection: its name, and the
/// signature of each of its methods.
///
/// The handshake refuses a peer of another service name; it does not compare the methods.
/// Each side learns the other's, and a client refuses, without sending it, a call to a
/// method the server lacks or has with another signature (see [`schema`](crate::schema)
/// for the rule). A client with no methods listed (an untyped [`Client`](crate::Client))
/// sends every call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceInfo {
    /// The service name, e.g. `"Calc"`.
    pub name: String,
    /// Its methods' signatures, in declaration order.
    pub methods: Vec<MethodSignature>,
}

impl ServiceInfo {
    /// A service called `name` with no methods listed yet.
    pub fn new(name: impl Into<String>) -> Self {
        ServiceInfo {
            name: name.into(),
            methods: Vec::new(),
        }
    }

    /// Lists a method.
    pub fn with_method(mut self, method: MethodSignature) -> Self {
        self.methods.push(method);
        self
    }

    /// The method with id `id`, if listed.
    pub fn method(&self, id: u32) -> Option<&MethodSignature> {
        self.methods.iter().find(|m| m.id == id)
    }
}

/// One method's signature as the handshake carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodSignature {
    /// The method's id on the wire (a hash of its name).
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its signature, e.g. `fn add(i64, i64) -> i64` (see [`schema::signature`](crate::schema::signature)).
    pub signature: String,
    /// The signature's fingerprint ([`schema::fingerprint`](crate::schema::fingerprint)):
    /// what the two sides compare.
    pub fingerprint: u64,
}

impl MethodSignature {
    /// Method `method` with signature `signature`.
    pub fn new(method: Method, signature: impl Into<String>) -> Self {
        let signature = signature.into();
        MethodSignature {
            id: method.id,
            name: method.name.to_owned(),
            fingerprint: crate::schema::fingerprint(&signature),
            signature,
        }
    }

    /// Method `method`, whose arguments (as they travel) and result are described by `args`
    /// and `result`: what `#[procwire::service]` generates.
    pub fn of(method: Method, oneway: bool, args: &[Describe], result: Describe) -> Self {
        Self::new(method, crate::schema::signature(method.name, oneway, args, result))
    }
}

/// One method of a service: its stable id on the wire and its name for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method {
    /// The id carried in each call's envelope.
    pub id: u32,
    /// The name, for error messages.
    pub name: &'static str,
}

impl Method {
    /// A method with id `id` called `name`.
    pub const fn new(id: u32, name: &'static str) -> Self {
        Method { id, name }
    }
}

/// The server side of a service: decodes a call's arguments, runs it, encodes the reply.
///
/// `#[procwire::service]` generates implementations; it can also be written by hand.
///
/// - [`call`](Self::call) runs on a server thread, possibly on several at once for one
///   connection, so implementations must be `Sync`.
/// - A method id the service does not know is answered with [`FaultKind::UnknownMethod`];
///   arguments that do not decode with [`FaultKind::BadRequest`] (see [`decode_args`]).
/// - A panic in `call` is caught: the caller gets [`FaultKind::Panicked`] and the server
///   goes on.
/// - The reply is built with [`CallContext::reply`]; for a one-way call it is discarded.
pub trait Service: Send + Sync + 'static {
    /// The name and method signatures the handshake exchanges.
    fn info(&self) -> ServiceInfo;

    /// The name of method `id`, for messages.
    fn method_name(&self, id: u32) -> Option<&'static str>;

    /// Runs one call with the postcard-encoded `args`.
    fn call(&self, ctx: &CallContext, args: &[u8]) -> Result<Frame, Fault>;

    /// Runs one call with its arguments as the server received them: what the server calls.
    /// The default runs [`call`](Self::call) on them in one buffer (joined, a copy, if the
    /// transport split a large byte string off them). Generated servers hand such a string
    /// to a method whose one argument is a `Vec<u8>` as the buffer it was read into.
    fn call_args(&self, ctx: &CallContext, args: &mut Args) -> Result<Frame, Fault> {
        self.call(ctx, args.bytes())
    }
}

impl<S: Service + ?Sized> Service for Arc<S> {
    fn info(&self) -> ServiceInfo {
        (**self).info()
    }
    fn method_name(&self, id: u32) -> Option<&'static str> {
        (**self).method_name(id)
    }
    fn call(&self, ctx: &CallContext, args: &[u8]) -> Result<Frame, Fault> {
        (**self).call(ctx, args)
    }
    fn call_args(&self, ctx: &CallContext, args: &mut Args) -> Result<Frame, Fault> {
        (**self).call_args(ctx, args)
    }
}

/// Decodes a call's arguments; a failure is a [`FaultKind::BadRequest`] fault.
pub fn decode_args<'de, T: Deserialize<'de>>(ctx: &CallContext, args: &'de [u8]) -> Result<T, Fault> {
    crate::protocol::decode_exact(args).map_err(|e| {
        Fault::new(
            FaultKind::BadRequest,
            format!("cannot decode the arguments of method {}: {e}", ctx.method()),
        )
    })
}

/// Everything a handler may want to know about the call it is running.
#[derive(Debug)]
pub struct CallContext {
    pub(crate) envelope: Envelope,
    pub(crate) deadline: Option<Instant>,
    pub(crate) peer: Arc<PeerInfo>,
    pub(crate) key_name: Option<Arc<str>>,
    pub(crate) cancelled: Arc<Cancel>,
    /// Where a generated handler sends its reply in place (`__reply`); `None` where replies
    /// are not sent (datagrams).
    pub(crate) replies: Option<Replies>,
}

impl CallContext {
    /// The name of the key the client authenticated with, on an authenticated transport
    /// ([`transport::noise`](crate::transport::noise)); `None` on others.
    pub fn key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    /// The request id.
    pub fn id(&self) -> u64 {
        self.envelope.id
    }

    /// The method id.
    pub fn method(&self) -> u32 {
        self.envelope.method
    }

    /// True for a one-way call, whose reply nobody reads.
    pub fn is_oneway(&self) -> bool {
        self.envelope.kind == Kind::OneWay
    }

    /// When the caller stops waiting, if it set a deadline (measured on this host's clock
    /// from the time left when the call arrived).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once the caller has given up on the call (dropped it, or its deadline passed
    /// and it sent a cancel). A long handler may check it and stop early.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_set()
    }

    /// Waits until the caller gives up on the call or `timeout` passes; true if it gave up.
    /// For handlers that wait on something else, to stop early when nobody is waiting.
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        self.cancelled.wait(timeout)
    }

    /// The caller's connection: name, and pid/uid/gid where the transport knows them.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Encodes `value` as this call's reply.
    pub fn reply<T: Serialize + ?Sized>(&self, value: &T) -> Result<Frame, Fault> {
        self.reply_envelope().frame_with(value).map_err(|e| {
            Fault::new(
                FaultKind::BadReply,
                format!("cannot encode the reply of method {}: {e}", self.method()),
            )
        })
    }

    /// What generated handlers return: as [`reply`](Self::reply), but the reply goes
    /// straight into the transport, encoded in place, where it can (the shared-memory rings,
    /// when the connection is idle), saving the copy from a [`Frame`]; the frame returned
    /// then says so, and the server sends nothing more. The handler must return what this
    /// gives (the reply may already be on its way).
    #[doc(hidden)]
    pub fn __reply<T: Serialize + ?Sized>(&self, value: &T) -> Result<Frame, Fault> {
        if let (Kind::Call, Some(replies)) = (self.envelope.kind, &self.replies) {
            let envelope = self.reply_envelope();
            if let Ok(len) = serialized_size(&envelope).and_then(|n| Ok(n + serialized_size(value)?)) {
                let sent = replies.try_send_encoded(len, &mut |sink| {
                    postcard::serialize_with_flavor(&envelope, &mut *sink)?;
                    postcard::serialize_with_flavor(value, &mut *sink)
                });
                if sent {
                    return Ok(Frame::already_sent());
                }
            }
        }
        self.reply(value)
    }

    fn reply_envelope(&self) -> Envelope {
        Envelope {
            id: self.envelope.id,
            kind: Kind::Reply,
            method: self.envelope.method,
            timeout_us: None,
        }
    }

    /// Encodes `fault` as this call's reply.
    pub fn fault(&self, fault: &Fault) -> Frame {
        fault_frame(self.envelope.id, self.envelope.method, fault)
    }
}

/// A call's cancel flag: cheap to test, and waitable.
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    set: AtomicBool,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Cancel {
    pub(crate) fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Clears the flag for the next call that uses it (the server reuses one per thread).
    /// A store only if it was set: a `SeqCst` store is a full fence, paid on every call.
    pub(crate) fn reset(&self) {
        // Relaxed: the server orders resets and sets by the receiver's lock.
        if self.set.load(Ordering::Relaxed) {
            self.set.store(false, Ordering::Relaxed);
        }
    }

    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.is_set() {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return false;
            }
            guard = self
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

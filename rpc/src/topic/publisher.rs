//! [`Publisher`]: one topic's writer, a queue and a writing thread per subscriber.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use nix::sys::socket::{shutdown, Shutdown};
use serde::Serialize;

use super::{Control, Options, Overflow, TopicError, CONTROL, MESSAGE, SETUP_TIMEOUT};
use crate::protocol::Frame;
use crate::transport::{unix, FrameSender, Interrupt, Listener as _, Transport};
use crate::wait::Wait;

/// A message as queued: its number and its encoded value, shared by every queue.
type Queued = (u64, Arc<Vec<u8>>);

/// Where a subscriber's connection is.
#[derive(Debug, PartialEq, Eq)]
enum Link {
    /// Its writer sends what is queued.
    Open,
    /// The publisher ends it, with this reason, after nothing more.
    Cut(String),
    /// Gone: the subscriber left or died.
    Gone,
}

/// One subscriber's queue.
#[derive(Debug)]
struct Sub {
    state: Mutex<(VecDeque<Queued>, Link)>,
    changed: Condvar,
    /// A copy of its socket, to shut down when it is cut off for being slow: its writer may
    /// be blocked on a socket it does not read.
    socket: Option<OwnedFd>,
}

/// The topic's state, under one lock so that a joining subscriber's start and the messages
/// published around it agree.
#[derive(Debug, Default)]
struct State {
    /// The last number given.
    seq: u64,
    last: Option<Queued>,
    subs: Vec<Arc<Sub>>,
    stopping: bool,
}

#[derive(Debug)]
struct Shared {
    topic: String,
    type_name: &'static str,
    epoch: u64,
    options: Options,
    state: Mutex<State>,
    /// Subscriber connections whose thread runs (see `Options::max_subscribers`).
    connections: std::sync::atomic::AtomicUsize,
}

/// Publishes messages of type `T` on one topic, to every subscriber of a Unix socket. Its
/// socket file is removed and its subscribers are told it ended when it is dropped.
#[derive(Debug)]
pub struct Publisher<T> {
    shared: Arc<Shared>,
    interrupt: Interrupt,
    stopped: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
    _type: PhantomData<fn(&T)>,
}

impl<T: Serialize> Publisher<T> {
    /// Binds `path` for the topic `topic`. A socket file left by a publisher that is gone
    /// is replaced; a live one is "address in use".
    pub fn bind(path: impl AsRef<Path>, topic: &str, options: Options) -> Result<Self, TopicError> {
        let listener = unix::Listener::bind(path).map_err(|source| TopicError::Transport {
            topic: topic.to_owned(),
            source,
        })?;
        Self::from_listener(listener, topic, options)
    }

    /// Publishes on a Unix socket this process was handed (a supervisor's `listen`).
    pub fn from_listener(mut listener: unix::Listener, topic: &str, options: Options) -> Result<Self, TopicError> {
        let transport = |source| TopicError::Transport {
            topic: topic.to_owned(),
            source,
        };
        let interrupt =
            Interrupt::new().map_err(|e| transport(crate::error::TransportError::io("eventfd", topic, e)))?;
        listener.set_interrupt(interrupt.clone());
        let epoch = super::new_epoch();
        let shared = Arc::new(Shared {
            topic: topic.to_owned(),
            type_name: std::any::type_name::<T>(),
            epoch,
            options,
            state: Mutex::new(State::default()),
            connections: std::sync::atomic::AtomicUsize::new(0),
        });
        let stopped = Arc::new(AtomicBool::new(false));
        let accept = {
            let (shared, interrupt) = (Arc::clone(&shared), interrupt.clone());
            std::thread::Builder::new()
                .name("procwire-topic-accept".into())
                .spawn(move || accept_loop(listener, shared, &interrupt))
                .map_err(|e| transport(crate::error::TransportError::io("spawn", topic, e)))?
        };
        Ok(Publisher {
            shared,
            interrupt,
            stopped,
            accept: Some(accept),
            _type: PhantomData,
        })
    }

    /// This publisher run's epoch, which its subscribers see.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        let state = self.shared.lock();
        state.subs.iter().filter(|s| s.lock().1 == Link::Open).count()
    }

    /// Publishes `value` to every subscriber and returns its sequence number. A full
    /// subscriber queue is handled by the [`Overflow`] policy; under `Block` this waits for
    /// room as `wait` allows, and fails with [`TopicError::Full`] when it runs out.
    pub fn publish(&self, value: &T, wait: Wait) -> Result<u64, TopicError> {
        let body = postcard::to_stdvec(value).map_err(|source| TopicError::Codec {
            topic: self.shared.topic.clone(),
            what: "encoded",
            source,
        })?;
        let mut state = self.shared.lock();
        let (capacity, overflow) = (self.shared.options.capacity, self.shared.options.overflow);
        state.subs.retain(|sub| sub.lock().1 != Link::Gone);
        if overflow == Overflow::Block {
            // Room for it in every queue first, so that a message that times out goes to no
            // one and uses up no number (as over shared memory). Only this publisher fills
            // the queues, under the state lock held here, so room found stays.
            for sub in &state.subs {
                let mut guard = sub.lock();
                while guard.0.len() >= capacity && guard.1 == Link::Open {
                    let left = match wait.remaining() {
                        Some(left) if left.is_zero() => {
                            return Err(TopicError::Full {
                                topic: self.shared.topic.clone(),
                            })
                        }
                        Some(left) => left,
                        None => std::time::Duration::from_secs(3600),
                    };
                    guard = sub
                        .changed
                        .wait_timeout(guard, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        state.seq += 1;
        let message: Queued = (state.seq, Arc::new(body));
        state.last = Some(message.clone());
        for sub in &state.subs {
            let mut guard = sub.lock();
            while guard.0.len() >= capacity && guard.1 == Link::Open {
                match overflow {
                    // Made room for above.
                    Overflow::Block => break,
                    Overflow::DropOldest => {
                        guard.0.pop_front();
                    }
                    Overflow::DropNewest => break,
                    Overflow::Disconnect => {
                        guard.1 = Link::Cut(format!(
                            "too slow: its queue of {capacity} messages was full (overflow policy: disconnect)"
                        ));
                        guard.0.clear();
                        // Its writer may be stuck on the full socket: the reason goes if it
                        // can, the end in any case.
                        if let Some(socket) = &sub.socket {
                            let _ = shutdown(socket.as_raw_fd(), Shutdown::Both);
                        }
                    }
                }
            }
            if guard.0.len() < capacity && guard.1 == Link::Open {
                guard.0.push_back(message.clone());
            }
            drop(guard);
            sub.changed.notify_all();
        }
        Ok(message.0)
    }

    /// Stops: every subscriber gets what was queued for it, then the end, with `reason`;
    /// returns once they have, or after 10 s, cutting the connection of one that has not
    /// read it all by then.
    pub fn stop(mut self, reason: &str) {
        self.end(reason, true);
    }
}

impl<T> Publisher<T> {
    /// Ends every subscription; with `flush`, waits for their writers to finish.
    fn end(&mut self, reason: &str, flush: bool) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let subs = {
            let mut state = self.shared.lock();
            state.stopping = true;
            std::mem::take(&mut state.subs)
        };
        for sub in &subs {
            let mut guard = sub.lock();
            if guard.1 == Link::Open {
                guard.1 = Link::Cut(reason.to_owned());
            }
            drop(guard);
            sub.changed.notify_all();
        }
        // What was queued, and the end, reach each subscriber before this returns (a process
        // that stops its publisher and exits would otherwise cut the writers short), unless
        // one does not read for SETUP_TIMEOUT.
        let deadline = Instant::now() + SETUP_TIMEOUT;
        for sub in subs.iter().filter(|_| flush) {
            let mut guard = sub.lock();
            while guard.1 != Link::Gone {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                guard = sub
                    .changed
                    .wait_timeout(guard, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            // One that did not read in time: its writer may be stuck on the full socket
            // for good, holding a thread and the connection; shutting the socket ends both.
            if guard.1 != Link::Gone {
                if let Some(socket) = &sub.socket {
                    let _ = shutdown(socket.as_raw_fd(), Shutdown::Both);
                }
            }
        }
        self.interrupt.fire();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        self.end("the publisher stopped", false);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sub {
    fn lock(&self) -> MutexGuard<'_, (VecDeque<Queued>, Link)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn accept_loop(mut listener: unix::Listener, shared: Arc<Shared>, interrupt: &Interrupt) {
    loop {
        match listener.accept(Wait::Block) {
            Ok(mut transport) => {
                let max = shared.options.max_subscribers;
                if shared.connections.fetch_add(1, Ordering::SeqCst) >= max {
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                    // Said without waiting (the socket is empty), so that a peer that never
                    // reads cannot hold up the accepting.
                    let reason = format!("the publisher has {max} subscribers already (its max_subscribers)");
                    let _ = transport.send(&mut control(&Control::Refused { reason }), Wait::NonBlock);
                    tracing::warn!(
                        topic = %shared.topic,
                        peer = %transport.peer.name,
                        "refused a subscriber: {max} connections already (max_subscribers)"
                    );
                    continue;
                }
                let spawned = std::thread::Builder::new().name("procwire-topic-sub".into()).spawn({
                    let shared = Arc::clone(&shared);
                    move || {
                        subscriber(transport, &shared);
                        shared.connections.fetch_sub(1, Ordering::SeqCst);
                    }
                });
                if spawned.is_err() {
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(crate::error::TransportError::Interrupted { .. }) => return,
            Err(e) => {
                // Out of descriptors, say: back off rather than spin, but stay stoppable.
                tracing::warn!(topic = %shared.topic, error = %e, "accepting a subscriber failed; retrying in 100 ms");
                if crate::transport::wait_interrupt(interrupt, std::time::Duration::from_millis(100)) {
                    return;
                }
            }
        }
    }
}

fn control(control: &Control) -> Frame {
    let mut frame = Frame::from_payload(&[CONTROL]);
    frame.encode(control).expect("a control message encodes");
    frame
}

/// One subscriber's life: the setup, then its queue written out.
fn subscriber(mut transport: Transport, shared: &Shared) {
    let Some(last) = hello(&mut transport, shared) else {
        return;
    };
    let socket = transport
        .receiver
        .readiness_fd()
        .and_then(|fd| fd.try_clone_to_owned().ok());
    let sub = Arc::new(Sub {
        state: Mutex::new((VecDeque::new(), Link::Open)),
        changed: Condvar::new(),
        socket,
    });
    let welcome = {
        let mut state = shared.lock();
        if state.stopping {
            return;
        }
        let next = match (&state.last, last) {
            (Some(message), true) if shared.options.last_value => {
                sub.lock().0.push_back(message.clone());
                message.0
            }
            _ => state.seq + 1,
        };
        state.subs.push(Arc::clone(&sub));
        Control::Welcome {
            epoch: shared.epoch,
            next,
        }
    };
    let sender = &mut transport.sender;
    if sender
        .send(&mut control(&welcome), Wait::timeout(SETUP_TIMEOUT))
        .is_err()
    {
        sub.lock().1 = Link::Gone;
        return;
    }
    write_queue(&sub, sender.as_mut());
    sub.changed.notify_all();
}

/// Reads the subscriber's hello and answers a refusal; `Some(wants the last value)` if it
/// may subscribe.
fn hello(transport: &mut Transport, shared: &Shared) -> Option<bool> {
    let payload = transport.recv(Wait::timeout(SETUP_TIMEOUT)).ok()?;
    let refuse = |transport: &mut Transport, reason: String| {
        let _ = transport.send(&mut control(&Control::Refused { reason }), Wait::timeout(SETUP_TIMEOUT));
        None
    };
    match payload.split_first() {
        Some((&CONTROL, rest)) => match postcard::from_bytes::<Control>(rest) {
            Ok(Control::Hello { topic, type_name, last }) => {
                match super::refusal(&shared.topic, shared.type_name, &topic, &type_name) {
                    Some(reason) => refuse(transport, reason),
                    None => Some(last),
                }
            }
            _ => refuse(transport, "expected a hello".into()),
        },
        _ => refuse(transport, "expected a hello".into()),
    }
}

/// Writes the queue out until the subscriber is gone or cut off.
fn write_queue(sub: &Sub, sender: &mut dyn FrameSender) {
    loop {
        let next = {
            let mut guard = sub.lock();
            loop {
                let (queue, link) = &mut *guard;
                match (&*link, queue.pop_front()) {
                    (Link::Gone, _) => return,
                    (Link::Cut(reason), None) => break Err(reason.clone()),
                    (_, Some(message)) => break Ok(message),
                    (Link::Open, None) => {
                        guard = sub.changed.wait(guard).unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
        };
        sub.changed.notify_all();
        match next {
            Ok((seq, body)) => {
                let mut frame = Frame::with_capacity(9 + body.len());
                frame.extend_from_slice(&[MESSAGE]);
                frame.extend_from_slice(&seq.to_le_bytes());
                frame.extend_from_slice(&body);
                if sender.send(&mut frame, Wait::Block).is_err() {
                    sub.lock().1 = Link::Gone;
                    return;
                }
            }
            Err(reason) => {
                let deadline = Wait::Until(Instant::now() + SETUP_TIMEOUT);
                let _ = sender.send(&mut control(&Control::Ended { reason }), deadline);
                sender.close();
                sub.lock().1 = Link::Gone;
                return;
            }
        }
    }
}

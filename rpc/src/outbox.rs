//! A connection's outgoing queue, shared by every thread that sends on it.
//!
//! The thread that finds the connection idle writes its own frame straight to the transport
//! (no hand-off, no extra wake-up on the fast path) and then drains whatever other threads
//! queued meanwhile. A frame that cannot be written without waiting, for a sender that may
//! not wait, goes to a flusher thread started on first need.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::TransportError;
use crate::protocol::Frame;
use crate::transport::FrameSender;
use crate::wait::Wait;

/// How many outgoing frames a connection holds while its transport is busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffering {
    /// None: a send returns only once the transport has taken its frame (rendezvous).
    Zero,
    /// Up to this many frames wait; a sender that finds the queue full waits for room, or
    /// gets "would block" if it may not wait.
    Bounded(usize),
    /// Any number of frames wait; a send never waits for room.
    Unbounded,
}

impl Default for Buffering {
    fn default() -> Self {
        Buffering::Bounded(64)
    }
}

#[derive(Debug)]
struct State {
    queue: VecDeque<(u64, Frame)>,
    /// Sequence number of the next queued frame.
    next_seq: u64,
    /// Every frame with a smaller sequence number has left the queue.
    taken: u64,
    /// Some thread owns the transport and will drain the queue before letting go.
    writing: bool,
    /// The writer handed the queue to the flusher thread.
    flush_wanted: bool,
    flusher_started: bool,
    /// Why the connection can no longer send.
    closed: Option<String>,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    sender: Mutex<Option<Box<dyn FrameSender>>>,
    buffering: Buffering,
    peer: String,
    max: usize,
}

/// A send failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The caller may not wait and the frame could not be taken.
    WouldBlock,
    /// The deadline passed before the frame could be taken.
    TimedOut,
    /// The frame exceeds the transport's maximum; the connection is intact.
    TooLarge(TransportError),
    /// The connection cannot send any more.
    Closed(String),
}

/// The outgoing side of one connection. Dropping it closes the sending direction.
pub(crate) struct Outbox {
    inner: Arc<Inner>,
}

impl Outbox {
    pub(crate) fn new(mut sender: Box<dyn FrameSender>, buffering: Buffering, peer: String, max: usize) -> Self {
        sender.set_max_frame_len(max);
        Outbox {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    next_seq: 0,
                    taken: 0,
                    writing: false,
                    flush_wanted: false,
                    flusher_started: false,
                    closed: None,
                }),
                changed: Condvar::new(),
                sender: Mutex::new(Some(sender)),
                buffering,
                peer,
                max,
            }),
        }
    }

    /// Sends `frame`, waiting as `wait` and the buffering allow.
    pub(crate) fn send(&self, frame: Frame, wait: Wait) -> Result<(), SendError> {
        let inner = &self.inner;
        if frame.payload_len() > inner.max {
            return Err(SendError::TooLarge(TransportError::FrameTooLarge {
                peer: inner.peer.clone(),
                len: frame.payload_len() as u64,
                max: inner.max,
            }));
        }
        let mut st = inner.lock();
        loop {
            if let Some(reason) = &st.closed {
                return Err(SendError::Closed(reason.clone()));
            }
            if !st.writing {
                st.writing = true;
                drop(st);
                return inner.write_as_owner(Some(frame), wait);
            }
            let room = match inner.buffering {
                Buffering::Unbounded => true,
                Buffering::Bounded(n) => st.queue.len() < n,
                Buffering::Zero => wait != Wait::NonBlock,
            };
            if room {
                let seq = st.next_seq;
                st.next_seq += 1;
                st.queue.push_back((seq, frame));
                if inner.buffering != Buffering::Zero {
                    return Ok(());
                }
                // Rendezvous: wait until the writer takes it.
                while st.taken <= seq && st.closed.is_none() {
                    let (next, timed_out) = inner.wait(st, wait);
                    st = next;
                    if timed_out && st.taken <= seq {
                        st.queue.retain(|(s, _)| *s != seq);
                        return Err(SendError::TimedOut);
                    }
                }
                return match &st.closed {
                    Some(reason) if st.taken <= seq => Err(SendError::Closed(reason.clone())),
                    _ => Ok(()),
                };
            }
            if wait == Wait::NonBlock {
                return Err(SendError::WouldBlock);
            }
            let (next, timed_out) = inner.wait(st, wait);
            st = next;
            if timed_out {
                return Err(SendError::TimedOut);
            }
        }
    }

    /// Refuses further sends and closes the transport's sending direction. Frames still
    /// queued are dropped.
    pub(crate) fn close(&self, reason: &str) {
        let mut st = self.inner.lock();
        if st.closed.is_none() {
            st.closed = Some(reason.to_owned());
        }
        st.queue.clear();
        self.inner.changed.notify_all();
        let writing = st.writing;
        drop(st);
        if !writing {
            self.inner.drop_sender();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close("connection dropped");
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change; the flag is true when `wait` ran out.
    fn wait<'a>(&self, st: MutexGuard<'a, State>, wait: Wait) -> (MutexGuard<'a, State>, bool) {
        match wait.remaining() {
            None => (self.changed.wait(st).unwrap_or_else(|e| e.into_inner()), false),
            Some(left) if left.is_zero() => (st, true),
            Some(left) => {
                let (st, _) = self.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner());
                (st, wait.expired())
            }
        }
    }

    fn drop_sender(&self) {
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut s) = sender.take() {
            s.close();
        }
    }

    /// Runs while this thread owns the transport (`writing` is set): writes `first`, then
    /// drains the queue, then lets go, or hands off to the flusher if `wait` runs out.
    fn write_as_owner(self: &Arc<Self>, first: Option<Frame>, wait: Wait) -> Result<(), SendError> {
        let mut guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let mut result = Ok(());
        let mut item = first.map(|f| (true, f));
        loop {
            let Some(sender) = guard.as_mut() else {
                drop(guard);
                return self.release(Err(SendError::Closed("connection closed".into())));
            };
            if let Some((own, mut frame)) = item.take() {
                match sender.send(&mut frame, wait) {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => {
                        // Not taken. Our own frame may queue if the buffering has room; a
                        // queued frame goes back to the head of the queue.
                        let mut st = self.lock();
                        let room = match self.buffering {
                            Buffering::Unbounded => true,
                            Buffering::Bounded(n) => !own || st.queue.len() < n,
                            Buffering::Zero => !own,
                        };
                        if room {
                            let seq = if own {
                                let seq = st.next_seq;
                                st.next_seq += 1;
                                seq
                            } else {
                                st.taken - 1
                            };
                            if !own {
                                st.taken = seq;
                            }
                            st.queue.push_front((seq, frame));
                        } else {
                            result = Err(match wait {
                                Wait::NonBlock => SendError::WouldBlock,
                                _ => SendError::TimedOut,
                            });
                        }
                        if st.queue.is_empty() && !sender.has_pending() {
                            st.writing = false;
                            self.changed.notify_all();
                            return result;
                        }
                        drop(guard);
                        self.hand_to_flusher(st);
                        return result;
                    }
                    Err(e @ TransportError::FrameTooLarge { .. }) if own => {
                        result = Err(SendError::TooLarge(e));
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        if let Some(mut s) = guard.take() {
                            s.close();
                        }
                        drop(guard);
                        let mut st = self.lock();
                        st.closed.get_or_insert(reason.clone());
                        st.queue.clear();
                        st.writing = false;
                        self.changed.notify_all();
                        return Err(SendError::Closed(reason));
                    }
                }
            }
            let mut st = self.lock();
            if st.closed.is_some() {
                st.writing = false;
                self.changed.notify_all();
                drop(st);
                if let Some(mut s) = guard.take() {
                    s.close();
                }
                return result;
            }
            if wait != Wait::Block && sender.has_pending() {
                drop(guard);
                self.hand_to_flusher(st);
                return result;
            }
            match st.queue.pop_front() {
                Some((seq, frame)) => {
                    st.taken = seq + 1;
                    self.changed.notify_all();
                    item = Some((false, frame));
                }
                None => {
                    st.writing = false;
                    self.changed.notify_all();
                    return result;
                }
            }
        }
    }

    fn release(&self, result: Result<(), SendError>) -> Result<(), SendError> {
        let mut st = self.lock();
        st.writing = false;
        self.changed.notify_all();
        result
    }

    /// Passes ownership of the transport (still `writing`) to the flusher thread.
    fn hand_to_flusher(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        st.flush_wanted = true;
        if !st.flusher_started {
            st.flusher_started = true;
            let inner = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("procwire-flush".into())
                .spawn(move || inner.flusher());
            if let Err(e) = spawned {
                st.flusher_started = false;
                st.closed.get_or_insert(format!("cannot start the flusher thread: {e}"));
                st.writing = false;
            }
        }
        self.changed.notify_all();
    }

    fn flusher(self: Arc<Self>) {
        loop {
            let mut st = self.lock();
            while !st.flush_wanted && st.closed.is_none() {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if !st.flush_wanted {
                // Closed while idle.
                drop(st);
                self.drop_sender();
                return;
            }
            st.flush_wanted = false;
            drop(st);
            let flushed = {
                let mut guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
                match guard.as_mut() {
                    Some(sender) => sender.flush(Wait::Block).map_err(|e| e.to_string()),
                    None => Err("connection closed".into()),
                }
            };
            if let Err(reason) = flushed {
                let mut st = self.lock();
                st.closed.get_or_insert(reason);
                st.queue.clear();
                st.writing = false;
                self.changed.notify_all();
                drop(st);
                self.drop_sender();
                return;
            }
            let _ = self.write_as_owner(None, Wait::Block);
        }
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("peer", &self.inner.peer)
            .field("buffering", &self.inner.buffering)
            .finish()
    }
}

//! A connection's outgoing queue, shared by every thread that sends on it.
//!
//! The thread that finds the connection idle writes its own frame straight to the transport
//! (no hand-off, no extra wake-up on the fast path) and then drains whatever other threads
//! queued meanwhile. A frame that cannot be written without waiting, for a sender that may
//! not wait, goes to a flusher thread started on first need.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::TransportError;
use crate::protocol::Frame;
use crate::transport::{Encode, FrameSender};
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
    /// A graceful close is under way: no new frames; the owner closes once the queue is empty.
    closing: Option<String>,
    /// Threads waiting on `changed`; a notify is a system call, so it is skipped when zero.
    waiters: usize,
}

impl State {
    /// Queues `frame` last, numbered; its number.
    fn push_back(&mut self, frame: Frame) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back((seq, frame));
        seq
    }
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    sender: Mutex<Option<Box<dyn FrameSender>>>,
    buffering: Buffering,
    peer: String,
    max: usize,
    /// How long a blocking write may make no progress before the peer is given up on.
    write_timeout: Option<Duration>,
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

/// The outgoing side of one connection. Dropping it closes the sending direction once the
/// frames already accepted are written.
pub(crate) struct Outbox {
    inner: Arc<Inner>,
}

/// The most queued frames the writer takes off the queue for one write.
const MAX_BATCH: usize = 64;

impl Outbox {
    /// `write_timeout` bounds how long a blocking write may wait for the peer to read; past
    /// it the connection is closed. `None` waits as long as it takes.
    pub(crate) fn new(
        mut sender: Box<dyn FrameSender>,
        buffering: Buffering,
        peer: String,
        max: usize,
        write_timeout: Option<Duration>,
    ) -> Self {
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
                    closing: None,
                    waiters: 0,
                }),
                changed: Condvar::new(),
                sender: Mutex::new(Some(sender)),
                buffering,
                peer,
                max,
                write_timeout,
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
            if let Some(reason) = st.closed.as_ref().or(st.closing.as_ref()) {
                return Err(SendError::Closed(reason.clone()));
            }
            if !st.writing {
                st.writing = true;
                // Frames deferred for this write go with it, in one write where the
                // transport gathers, ours last.
                let behind = !st.queue.is_empty() && inner.room_to_queue(&st);
                if behind {
                    st.push_back(frame);
                    drop(st);
                    return inner.write_as_owner(None, wait);
                }
                drop(st);
                return inner.write_as_owner(Some(frame), wait);
            }
            let room = match inner.buffering {
                Buffering::Unbounded => true,
                Buffering::Bounded(n) => st.queue.len() < n,
                Buffering::Zero => wait != Wait::NonBlock,
            };
            if room {
                let seq = st.push_back(frame);
                if inner.buffering != Buffering::Zero {
                    return Ok(());
                }
                // Rendezvous: wait until the writer has written it.
                while st.taken <= seq && st.closed.is_none() {
                    let (next, timed_out) = inner.wait(st, wait);
                    st = next;
                    if timed_out && st.taken <= seq {
                        if let Some(at) = st.queue.iter().position(|(s, _)| *s == seq) {
                            st.queue.remove(at);
                            return Err(SendError::TimedOut);
                        }
                        // Being written right now: it is as good as taken.
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

    /// Sends the frame `encode` writes (a payload of at most `len` bytes) straight into the
    /// transport if this thread finds it idle and the transport takes the frame whole at
    /// once ([`FrameSender::try_send_encoded`](crate::transport::FrameSender::try_send_encoded)),
    /// saving the copy from a [`Frame`]; else as [`send`](Self::send) sends `frame()`. The
    /// outer error is `frame`'s.
    pub(crate) fn send_encoded<E>(
        &self,
        len: usize,
        encode: &mut Encode<'_>,
        frame: impl FnOnce() -> Result<Frame, E>,
        wait: Wait,
    ) -> Result<Result<(), SendError>, E> {
        let inner = &self.inner;
        // As the owner: write ours unless it went in place, drain the queue, let go.
        match inner.own_and_encode(len, encode, wait) {
            Some(Err(e)) => Ok(Err(e)),
            Some(Ok(true)) => Ok(inner.write_as_owner(None, wait)),
            Some(Ok(false)) => match frame() {
                Ok(frame) => Ok(inner.write_as_owner(Some(frame), wait)),
                Err(e) => {
                    let _ = inner.write_as_owner(None, wait);
                    Err(e)
                }
            },
            None => Ok(self.send(frame()?, wait)),
        }
    }

    /// Queues `frame` without writing it, for a thread that will [`flush`](Self::flush) soon
    /// to write it with others in one write: `None` if queued; the frame back if it must be
    /// sent as usual (no room, no buffering, or too large).
    pub(crate) fn defer(&self, frame: Frame) -> Result<Option<Frame>, SendError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        if let Some(reason) = st.closed.as_ref().or(st.closing.as_ref()) {
            return Err(SendError::Closed(reason.clone()));
        }
        if !inner.room_to_queue(&st) || frame.payload_len() > inner.max {
            return Ok(Some(frame));
        }
        st.push_back(frame);
        Ok(None)
    }

    /// Writes the frames queued ([`defer`](Self::defer)red or left by a busy writer) if
    /// nobody is writing, without waiting: what the socket does not take now the flusher
    /// thread writes. An error is the connection's failure.
    pub(crate) fn flush(&self) -> Result<(), SendError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        if st.writing || st.queue.is_empty() || st.closed.is_some() {
            return Ok(());
        }
        st.writing = true;
        drop(st);
        inner.write_as_owner(None, Wait::NonBlock)
    }

    /// True if frames wait in the queue (deferred, or left by a busy writer).
    pub(crate) fn has_queued(&self) -> bool {
        !self.inner.lock().queue.is_empty()
    }

    /// A handle that sends frames in place only, for a call's handler to send its reply
    /// (`CallContext`); dropping it closes nothing.
    pub(crate) fn replies(&self) -> Replies {
        Replies(Arc::clone(&self.inner))
    }

    /// Refuses further sends, drops the frames still queued and closes the transport's
    /// sending direction: for a connection that failed.
    pub(crate) fn close(&self, reason: &str) {
        let mut st = self.inner.lock();
        st.closed.get_or_insert_with(|| reason.to_owned());
        st.queue.clear();
        self.inner.notify(&st);
        let writing = st.writing;
        drop(st);
        if !writing {
            self.inner.drop_sender();
        }
    }

    /// Refuses further sends, writes the frames already accepted, then closes the sending
    /// direction: for a connection that ends normally.
    pub(crate) fn close_gracefully(&self, reason: &str) {
        let mut st = self.inner.lock();
        if st.closed.is_some() || st.closing.is_some() {
            return;
        }
        if st.writing {
            // The owner closes once it has drained the queue.
            st.closing = Some(reason.to_owned());
            return;
        }
        if !st.queue.is_empty() {
            // Deferred frames nobody flushed yet: written first (the flusher finishes what
            // the socket does not take now), then the owner closes.
            st.closing = Some(reason.to_owned());
            st.writing = true;
            drop(st);
            let _ = self.inner.write_as_owner(None, Wait::NonBlock);
            return;
        }
        st.closed = Some(reason.to_owned());
        self.inner.notify(&st);
        drop(st);
        self.inner.drop_sender();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close_gracefully("connection dropped");
    }
}

/// Sends a call's reply in place from its handler ([`Outbox::replies`]).
#[derive(Clone)]
pub(crate) struct Replies(Arc<Inner>);

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Replies").field(&self.0.peer).finish()
    }
}

impl Replies {
    /// Sends the frame `encode` writes (a payload of at most `len` bytes) if this thread
    /// finds the transport idle and it takes the frame whole, in place, at once; false if
    /// nothing was sent (the caller sends a `Frame` instead).
    pub(crate) fn try_send_encoded(&self, len: usize, encode: &mut Encode<'_>) -> bool {
        match self.0.own_and_encode(len, encode, Wait::Block) {
            Some(Ok(sent)) => {
                // Drains what others queued meanwhile and lets go; a failure there is theirs.
                let _ = self.0.write_as_owner(None, Wait::Block);
                sent
            }
            // The connection failed (and was let go of): the frame the caller sends instead
            // is refused.
            Some(Err(_)) | None => false,
        }
    }
}

impl Inner {
    /// Takes the transport if it is idle (else `None`) and tries to send the frame
    /// `encode` writes in place, waiting as `wait` allows; the caller owns the transport
    /// (`writing`) afterwards, and lets go with `write_as_owner`, unless the send failed
    /// the connection (the error).
    fn own_and_encode(&self, len: usize, encode: &mut Encode<'_>, wait: Wait) -> Option<Result<bool, SendError>> {
        if len > self.max {
            return None;
        }
        let mut st = self.lock();
        // Frames deferred for the next write: the caller's goes with them as a frame.
        if st.closed.is_some() || st.closing.is_some() || st.writing || !st.queue.is_empty() {
            return None;
        }
        st.writing = true;
        drop(st);
        let mut guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        // An encoder that panics (a `Serialize` that did not when it was measured) may leave
        // part of a frame in the transport, and would leave the transport owned by nobody,
        // with every later frame queued behind it for ever: the connection ends first.
        let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match guard.as_mut() {
            Some(sender) if !sender.has_pending() => {
                // The bound costs a clock read, for a transport that may wait.
                let wait = match sender.encodes_without_waiting() {
                    true => wait,
                    false => self.bounded(wait),
                };
                sender.send_encoded(len, encode, wait)
            }
            _ => Ok(false),
        }));
        let sent = match sent {
            Ok(sent) => sent,
            Err(panic) => {
                let _ = self.fail(
                    &mut guard,
                    "a value panicked while it was encoded into the transport".into(),
                );
                std::panic::resume_unwind(panic)
            }
        };
        // As for a frame's send: running out is fatal only for a wait bounded by
        // `write_timeout` alone; else the caller sends a frame, which waits as it may.
        let hard = wait == Wait::Block && self.write_timeout.is_some();
        match sent {
            Ok(sent) => Some(Ok(sent)),
            Err(e) if e.is_retryable() && !hard => Some(Ok(false)),
            Err(e) => {
                let reason = self.fatal_reason(wait, &e);
                Some(Err(self.fail(&mut guard, reason)))
            }
        }
    }

    /// True if a frame may wait in the queue without anyone waiting for it to be taken:
    /// never with `Buffering::Zero`, whose senders wait for the writer.
    fn room_to_queue(&self, st: &State) -> bool {
        match self.buffering {
            Buffering::Unbounded => true,
            Buffering::Bounded(n) => st.queue.len() < n,
            Buffering::Zero => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, st: &State) {
        if st.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Waits for a change; the flag is true when `wait` ran out.
    fn wait<'a>(&self, mut st: MutexGuard<'a, State>, wait: Wait) -> (MutexGuard<'a, State>, bool) {
        let left = wait.remaining();
        if left == Some(Duration::ZERO) {
            return (st, true);
        }
        st.waiters += 1;
        let mut st = match left {
            None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(left) => self.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0,
        };
        st.waiters -= 1;
        (st, wait.expired())
    }

    fn drop_sender(&self) {
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut s) = sender.take() {
            s.close();
        }
    }

    /// The wait for one transport operation: a blocking one is bounded by `write_timeout`.
    fn bounded(&self, wait: Wait) -> Wait {
        match (wait, self.write_timeout) {
            (Wait::Block, Some(limit)) => Wait::timeout(limit),
            (wait, _) => wait,
        }
    }

    /// Why a transport error ends the connection.
    fn fatal_reason(&self, wait: Wait, e: &TransportError) -> String {
        match (wait, self.write_timeout) {
            (Wait::Block, Some(limit)) if e.is_retryable() => {
                format!("{} read nothing for {limit:?}; giving up on it", self.peer)
            }
            _ => crate::error::chain(e),
        }
    }

    /// Ends the connection after a transport failure; the caller owns the transport.
    fn fail(&self, guard: &mut Option<Box<dyn FrameSender>>, reason: String) -> SendError {
        if let Some(mut s) = guard.take() {
            s.close();
        }
        let mut st = self.lock();
        st.closed.get_or_insert(reason.clone());
        st.queue.clear();
        st.writing = false;
        self.notify(&st);
        SendError::Closed(reason)
    }

    /// Runs while this thread owns the transport (`writing` is set): writes `first`, then
    /// drains the queue, then lets go, or hands off to the flusher if `wait` runs out.
    fn write_as_owner(self: &Arc<Self>, first: Option<Frame>, wait: Wait) -> Result<(), SendError> {
        let mut guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let mut result = Ok(());
        let mut own = first;
        // Frames other threads queued, taken off the queue together, and their numbers.
        let mut batch: Vec<Frame> = Vec::new();
        let mut seqs: Vec<u64> = Vec::new();
        // Only a caller that may wait forever is bounded by `write_timeout`, and for it
        // running out is fatal; a caller's own deadline just ends its wait.
        let hard = wait == Wait::Block && self.write_timeout.is_some();
        loop {
            let Some(sender) = guard.as_mut() else {
                drop(guard);
                let mut st = self.lock();
                st.writing = false;
                self.notify(&st);
                let reason = st.closed.clone().unwrap_or_else(|| "connection closed".into());
                return Err(SendError::Closed(reason));
            };
            if let Some(mut frame) = own.take() {
                match sender.send(&mut frame, self.bounded(wait)) {
                    Ok(()) => crate::buffers::give(frame.into_vec()),
                    Err(e) if e.is_retryable() && !hard => {
                        let mut st = self.lock();
                        if let Some(reason) = st.closed.clone() {
                            drop(st);
                            return Err(self.fail(&mut guard, reason));
                        }
                        // Not taken: ours may queue if the buffering has room.
                        if self.room_to_queue(&st) {
                            let seq = st.next_seq;
                            st.next_seq += 1;
                            st.queue.push_front((seq, frame));
                        } else {
                            result = Err(match wait {
                                Wait::NonBlock => SendError::WouldBlock,
                                _ => SendError::TimedOut,
                            });
                        }
                        return self.let_go(st, guard, result);
                    }
                    Err(e @ TransportError::FrameTooLarge { .. }) => {
                        result = Err(SendError::TooLarge(e));
                    }
                    Err(e) => {
                        let reason = self.fatal_reason(wait, &e);
                        return Err(self.fail(&mut guard, reason));
                    }
                }
            }
            if !batch.is_empty() {
                // One write for all of them where the transport gathers (a stream's writev).
                let (taken, sent) = sender.send_many(&mut batch, self.bounded(wait));
                let rest = batch.split_off(taken);
                let rest_seqs = seqs.split_off(taken);
                if let Some(last) = seqs.last() {
                    let mut st = self.lock();
                    st.taken = last + 1;
                    self.notify(&st);
                }
                for frame in batch.drain(..) {
                    crate::buffers::give(frame.into_vec());
                }
                seqs.clear();
                match sent {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() && !hard => {
                        let mut st = self.lock();
                        if let Some(reason) = st.closed.clone() {
                            drop(st);
                            return Err(self.fail(&mut guard, reason));
                        }
                        // Not taken: back to the head of the queue, in order.
                        for item in rest_seqs.into_iter().zip(rest).rev() {
                            st.queue.push_front(item);
                        }
                        return self.let_go(st, guard, result);
                    }
                    Err(e) => {
                        let reason = self.fatal_reason(wait, &e);
                        return Err(self.fail(&mut guard, reason));
                    }
                }
            }
            if sender.has_pending() {
                if wait != Wait::Block {
                    drop(guard);
                    self.hand_to_flusher(self.lock());
                    return result;
                }
                // A bounded blocking write left a tail: finish it or give up on the peer.
                if let Err(e) = sender.flush(self.bounded(wait)) {
                    let reason = self.fatal_reason(wait, &e);
                    return Err(self.fail(&mut guard, reason));
                }
            }
            let mut st = self.lock();
            if let Some(reason) = st.closed.clone() {
                drop(st);
                self.fail(&mut guard, reason);
                return result;
            }
            if st.queue.is_empty() {
                return self.release(st, guard, result);
            }
            let n = st.queue.len().min(MAX_BATCH);
            for (seq, frame) in st.queue.drain(..n) {
                seqs.push(seq);
                batch.push(frame);
            }
        }
    }

    /// After a write that ran out of time: lets go if nothing is left to write, else hands
    /// the transport to the flusher.
    fn let_go(
        self: &Arc<Self>,
        st: MutexGuard<'_, State>,
        guard: MutexGuard<'_, Option<Box<dyn FrameSender>>>,
        result: Result<(), SendError>,
    ) -> Result<(), SendError> {
        if st.queue.is_empty() && !guard.as_ref().is_some_and(|s| s.has_pending()) {
            return self.release(st, guard, result);
        }
        drop(guard);
        self.hand_to_flusher(st);
        result
    }

    /// Lets go of the transport with an empty queue, closing it if a graceful close waits.
    fn release(
        &self,
        mut st: MutexGuard<'_, State>,
        mut guard: MutexGuard<'_, Option<Box<dyn FrameSender>>>,
        result: Result<(), SendError>,
    ) -> Result<(), SendError> {
        st.writing = false;
        if let Some(reason) = st.closing.take() {
            st.closed.get_or_insert(reason);
            if let Some(mut s) = guard.take() {
                s.close();
            }
        }
        self.notify(&st);
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
                st.flush_wanted = false;
                st.closed.get_or_insert(format!("cannot start the flusher thread: {e}"));
                st.queue.clear();
                st.writing = false;
                self.notify(&st);
                drop(st);
                self.drop_sender();
                return;
            }
        }
        self.notify(&st);
    }

    fn flusher(self: Arc<Self>) {
        loop {
            let mut st = self.lock();
            while !st.flush_wanted && st.closed.is_none() {
                st = self.wait(st, Wait::Block).0;
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
                    Some(sender) => match sender.flush(self.bounded(Wait::Block)) {
                        Ok(()) => Ok(()),
                        Err(e) => Err(self.fail(&mut guard, self.fatal_reason(Wait::Block, &e))),
                    },
                    None => Err(SendError::Closed("connection closed".into())),
                }
            };
            if flushed.is_err() {
                let mut st = self.lock();
                st.writing = false;
                self.notify(&st);
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::transport::FrameSender;

    /// A value and a condition variable to wait for its changes.
    type Watched<T> = Arc<(Mutex<T>, Condvar)>;

    /// A transport whose writes stall while its gate is shut, and which records every frame
    /// it takes.
    #[derive(Clone, Default)]
    struct Gate {
        state: Watched<(bool, Vec<u8>)>,
        /// Set when the outbox closes the transport.
        closed: Arc<std::sync::atomic::AtomicBool>,
        /// While set, every write fails as to a peer that is gone.
        broken: Arc<std::sync::atomic::AtomicBool>,
        /// How many frames each `send_many` was given.
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Gate {
        fn set_open(&self, open: bool) {
            self.state.0.lock().unwrap().0 = open;
            self.state.1.notify_all();
        }
        /// Frames taken so far, by their one-byte payloads.
        fn taken(&self) -> Vec<u8> {
            self.state.0.lock().unwrap().1.clone()
        }
        /// Waits until `n` frames were taken.
        fn wait_taken(&self, n: usize) -> Vec<u8> {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut st = self.state.0.lock().unwrap();
            while st.1.len() < n {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                assert!(!left.is_zero(), "only {} of {n} frames were taken", st.1.len());
                st = self.state.1.wait_timeout(st, left).unwrap().0;
            }
            st.1.clone()
        }
        /// Waits until a writer is blocked at the shut gate.
        fn wait_blocked(&self, blocked: &Watched<bool>) {
            let mut b = blocked.0.lock().unwrap();
            while !*b {
                b = blocked.1.wait(b).unwrap();
            }
        }
    }

    struct GateSender {
        gate: Gate,
        blocked: Watched<bool>,
        closed: Arc<std::sync::atomic::AtomicBool>,
    }

    impl FrameSender for GateSender {
        fn send_many(&mut self, frames: &mut [Frame], wait: Wait) -> (usize, Result<(), TransportError>) {
            self.gate.batches.lock().unwrap().push(frames.len());
            for (i, frame) in frames.iter_mut().enumerate() {
                if let Err(e) = self.send(frame, wait) {
                    return (i, Err(e));
                }
            }
            (frames.len(), Ok(()))
        }

        fn send(&mut self, frame: &mut Frame, wait: Wait) -> Result<(), TransportError> {
            if self.gate.broken.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(TransportError::Closed { peer: "gate".into() });
            }
            let (lock, cv) = &*self.gate.state;
            let mut st = lock.lock().unwrap();
            while !st.0 {
                match wait {
                    Wait::NonBlock => return Err(TransportError::WouldBlock { peer: "gate".into() }),
                    Wait::Until(d) if d <= std::time::Instant::now() => {
                        return Err(TransportError::TimedOut { peer: "gate".into() })
                    }
                    _ => {}
                }
                *self.blocked.0.lock().unwrap() = true;
                self.blocked.1.notify_all();
                st = match wait.remaining() {
                    Some(left) => cv.wait_timeout(st, left).unwrap().0,
                    None => cv.wait(st).unwrap(),
                };
            }
            st.1.push(frame.payload()[0]);
            cv.notify_all();
            Ok(())
        }
        fn flush(&mut self, _: Wait) -> Result<(), TransportError> {
            Ok(())
        }
        fn has_pending(&self) -> bool {
            false
        }
        fn close(&mut self) {
            self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        fn set_max_frame_len(&mut self, _: usize) {}
    }

    /// A transport whose in-place encoding panics, as a `Serialize` may.
    struct PanickingSender(Arc<std::sync::atomic::AtomicBool>);

    impl FrameSender for PanickingSender {
        fn send(&mut self, _: &mut Frame, _: Wait) -> Result<(), TransportError> {
            Ok(())
        }
        fn send_encoded(&mut self, _: usize, _: &mut Encode<'_>, _: Wait) -> Result<bool, TransportError> {
            panic!("a Serialize that panics midway")
        }
        fn flush(&mut self, _: Wait) -> Result<(), TransportError> {
            Ok(())
        }
        fn has_pending(&self) -> bool {
            false
        }
        fn close(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        fn set_max_frame_len(&mut self, _: usize) {}
    }

    #[test]
    fn an_encoder_that_panics_in_the_transport_ends_the_connection_instead_of_wedging_it() {
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = PanickingSender(Arc::clone(&closed));
        let out = Arc::new(Outbox::new(
            Box::new(sender),
            Buffering::Unbounded,
            "panicky".into(),
            1024,
            None,
        ));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            out.send_encoded(4, &mut |_| Ok(()), || Ok::<_, ()>(frame(1)), Wait::Block)
        }));
        assert!(panicked.is_err(), "the panic goes on to the caller");
        assert!(
            closed.load(std::sync::atomic::Ordering::SeqCst),
            "the transport was closed"
        );
        // Before, the transport stayed owned by the thread that panicked: this frame was
        // queued behind it, accepted, and never written.
        match out.send(frame(2), Wait::NonBlock) {
            Err(SendError::Closed(reason)) => assert!(reason.contains("panicked"), "{reason}"),
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    fn outbox(buffering: Buffering) -> (Arc<Outbox>, Gate, Watched<bool>) {
        outbox_with(buffering, None)
    }

    fn outbox_with(buffering: Buffering, write_timeout: Option<Duration>) -> (Arc<Outbox>, Gate, Watched<bool>) {
        let gate = Gate::default();
        let blocked = Arc::new((Mutex::new(false), Condvar::new()));
        let sender = GateSender {
            gate: gate.clone(),
            blocked: Arc::clone(&blocked),
            closed: Arc::clone(&gate.closed),
        };
        (
            Arc::new(Outbox::new(
                Box::new(sender),
                buffering,
                "gate".into(),
                1024,
                write_timeout,
            )),
            gate,
            blocked,
        )
    }

    fn frame(n: u8) -> Frame {
        Frame::from_payload(&[n])
    }

    /// Starts a blocking send of frame 0 that stalls at the shut gate, holding the transport.
    fn hold(out: &Arc<Outbox>, gate: &Gate, blocked: &Watched<bool>) -> std::thread::JoinHandle<()> {
        let o = Arc::clone(out);
        let holder = std::thread::spawn(move || o.send(frame(0), Wait::Block).unwrap());
        gate.wait_blocked(blocked);
        holder
    }

    #[test]
    fn an_idle_connection_writes_in_the_callers_thread() {
        let (out, gate, _) = outbox(Buffering::default());
        gate.set_open(true);
        out.send(frame(1), Wait::NonBlock).unwrap();
        assert_eq!(gate.taken(), [1]);
    }

    #[test]
    fn bounded_queues_up_to_n_then_would_block_and_keeps_order() {
        let (out, gate, blocked) = outbox(Buffering::Bounded(2));
        let holder = hold(&out, &gate, &blocked);
        out.send(frame(1), Wait::NonBlock).unwrap();
        out.send(frame(2), Wait::NonBlock).unwrap();
        assert!(matches!(out.send(frame(3), Wait::NonBlock), Err(SendError::WouldBlock)));
        assert!(matches!(
            out.send(frame(3), Wait::timeout(Duration::from_millis(5))),
            Err(SendError::TimedOut)
        ));
        gate.set_open(true);
        holder.join().unwrap();
        assert_eq!(gate.wait_taken(3), [0, 1, 2]);
    }

    #[test]
    fn a_blocking_send_to_a_full_bounded_queue_waits_for_room() {
        let (out, gate, blocked) = outbox(Buffering::Bounded(1));
        let holder = hold(&out, &gate, &blocked);
        out.send(frame(1), Wait::NonBlock).unwrap();
        let o = Arc::clone(&out);
        let waiter = std::thread::spawn(move || o.send(frame(2), Wait::Block));
        gate.set_open(true);
        waiter.join().unwrap().unwrap();
        holder.join().unwrap();
        assert_eq!(gate.wait_taken(3), [0, 1, 2]);
    }

    #[test]
    fn zero_buffering_is_a_rendezvous() {
        let (out, gate, blocked) = outbox(Buffering::Zero);
        let holder = hold(&out, &gate, &blocked);
        assert!(matches!(out.send(frame(1), Wait::NonBlock), Err(SendError::WouldBlock)));
        assert!(matches!(
            out.send(frame(1), Wait::timeout(Duration::from_millis(5))),
            Err(SendError::TimedOut)
        ));
        let o = Arc::clone(&out);
        let waiter = std::thread::spawn(move || o.send(frame(2), Wait::Block));
        gate.set_open(true);
        waiter.join().unwrap().unwrap();
        // A rendezvous send returns only once the transport has taken its frame.
        assert!(gate.taken().contains(&2));
        holder.join().unwrap();
        assert_eq!(gate.taken(), [0, 2], "the timed-out frame was withdrawn");
    }

    #[test]
    fn unbounded_never_waits_for_room() {
        let (out, gate, blocked) = outbox(Buffering::Unbounded);
        let holder = hold(&out, &gate, &blocked);
        for n in 1..=200u8 {
            out.send(frame(n), Wait::NonBlock).unwrap();
        }
        gate.set_open(true);
        holder.join().unwrap();
        assert_eq!(gate.wait_taken(201), (0..=200u8).collect::<Vec<_>>());
    }

    #[test]
    fn a_nonblocking_send_on_a_busy_transport_is_queued_and_flushed_in_the_background() {
        let (out, gate, _) = outbox(Buffering::Bounded(4));
        // Nobody holds the transport, but it cannot take the frame now.
        out.send(frame(1), Wait::NonBlock).unwrap();
        out.send(frame(2), Wait::NonBlock).unwrap();
        assert!(gate.taken().is_empty());
        gate.set_open(true);
        assert_eq!(gate.wait_taken(2), [1, 2]);
    }

    #[test]
    fn closing_fails_queued_and_later_sends() {
        let (out, gate, blocked) = outbox(Buffering::Zero);
        let holder = hold(&out, &gate, &blocked);
        let o = Arc::clone(&out);
        let waiter = std::thread::spawn(move || o.send(frame(1), Wait::Block));
        out.close("test over");
        assert!(matches!(waiter.join().unwrap(), Err(SendError::Closed(r)) if r == "test over"));
        assert!(matches!(out.send(frame(2), Wait::Block), Err(SendError::Closed(_))));
        gate.set_open(true);
        holder.join().unwrap();
    }

    #[test]
    fn a_frame_above_the_maximum_is_refused_and_the_connection_stays() {
        let (out, gate, _) = outbox(Buffering::default());
        gate.set_open(true);
        assert!(matches!(
            out.send(Frame::from_payload(&[0; 1025]), Wait::Block),
            Err(SendError::TooLarge(_))
        ));
        out.send(frame(1), Wait::Block).unwrap();
        assert_eq!(gate.taken(), [1]);
    }

    #[test]
    fn a_graceful_close_writes_what_was_accepted_then_closes() {
        let (out, gate, blocked) = outbox(Buffering::Unbounded);
        let holder = hold(&out, &gate, &blocked);
        out.send(frame(1), Wait::NonBlock).unwrap();
        out.send(frame(2), Wait::NonBlock).unwrap();
        out.close_gracefully("done");
        assert!(matches!(out.send(frame(3), Wait::NonBlock), Err(SendError::Closed(_))));
        assert!(
            !gate.closed.load(std::sync::atomic::Ordering::SeqCst),
            "not closed before the queue drains"
        );
        gate.set_open(true);
        holder.join().unwrap();
        assert_eq!(gate.wait_taken(3), [0, 1, 2]);
        assert!(
            gate.closed.load(std::sync::atomic::Ordering::SeqCst),
            "closed once drained"
        );
    }

    #[test]
    fn a_peer_that_reads_nothing_for_the_write_timeout_is_given_up_on() {
        let (out, gate, _) = outbox_with(Buffering::default(), Some(Duration::from_millis(20)));
        match out.send(frame(1), Wait::Block) {
            Err(SendError::Closed(reason)) => assert!(reason.contains("read nothing for"), "{reason}"),
            other => panic!("expected the connection to be closed, got {other:?}"),
        }
        assert!(gate.closed.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(out.send(frame(2), Wait::NonBlock), Err(SendError::Closed(_))));
    }

    #[test]
    fn a_rendezvous_send_returns_only_after_its_frame_is_written() {
        let (out, gate, blocked) = outbox(Buffering::Zero);
        let holder = hold(&out, &gate, &blocked);
        let o = Arc::clone(&out);
        let waiter = std::thread::spawn(move || {
            o.send(frame(5), Wait::Block).unwrap();
            o
        });
        gate.set_open(true);
        let out = waiter.join().unwrap();
        // Written, not merely taken off the queue.
        assert!(gate.taken().contains(&5));
        drop(out);
        holder.join().unwrap();
    }

    #[test]
    fn deferred_frames_wait_for_a_flush_and_leave_in_one_gathered_write() {
        let (out, gate, _) = outbox(Buffering::default());
        gate.set_open(true);
        for n in 1..=3 {
            assert!(out.defer(frame(n)).unwrap().is_none(), "frame {n} queued");
        }
        assert!(gate.taken().is_empty(), "nothing written before the flush");
        out.flush().unwrap();
        assert_eq!(gate.taken(), [1, 2, 3]);
        assert_eq!(*gate.batches.lock().unwrap(), [3], "one write for the three");
    }

    #[test]
    fn a_frame_sent_behind_deferred_ones_goes_last_in_the_same_write() {
        let (out, gate, _) = outbox(Buffering::default());
        gate.set_open(true);
        for n in 1..=2 {
            assert!(out.defer(frame(n)).unwrap().is_none(), "frame {n} queued");
        }
        out.send(frame(3), Wait::Block).unwrap();
        assert_eq!(gate.taken(), [1, 2, 3], "the deferred frames first, in order");
        assert_eq!(*gate.batches.lock().unwrap(), [3], "one write for the three");
        // With nothing deferred, a frame is written alone, as before.
        out.send(frame(4), Wait::Block).unwrap();
        assert_eq!(*gate.batches.lock().unwrap(), [3]);
        assert_eq!(gate.taken(), [1, 2, 3, 4]);
    }

    #[test]
    fn a_graceful_close_writes_deferred_frames_first() {
        let (out, gate, _) = outbox(Buffering::default());
        gate.set_open(true);
        out.defer(frame(1)).unwrap();
        out.defer(frame(2)).unwrap();
        out.close_gracefully("done");
        assert_eq!(gate.wait_taken(2), [1, 2]);
        assert!(
            gate.closed.load(std::sync::atomic::Ordering::SeqCst),
            "closed once written"
        );
    }

    #[test]
    fn a_gathered_write_that_fails_closes_the_connection_for_every_frame_in_it() {
        let (out, gate, _) = outbox(Buffering::default());
        gate.set_open(true);
        out.defer(frame(1)).unwrap();
        out.defer(frame(2)).unwrap();
        gate.broken.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(out.flush(), Err(SendError::Closed(_))));
        assert!(gate.closed.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(out.defer(frame(3)), Err(SendError::Closed(_))));
        assert!(matches!(out.send(frame(4), Wait::NonBlock), Err(SendError::Closed(_))));
        assert!(gate.taken().is_empty());
    }

    #[test]
    fn frames_queued_behind_a_busy_writer_leave_together() {
        let (out, gate, blocked) = outbox(Buffering::Bounded(8));
        let holder = hold(&out, &gate, &blocked);
        for n in 1..=4 {
            out.send(frame(n), Wait::NonBlock).unwrap();
        }
        gate.set_open(true);
        holder.join().unwrap();
        assert_eq!(gate.wait_taken(5), [0, 1, 2, 3, 4]);
        assert_eq!(
            *gate.batches.lock().unwrap(),
            [4],
            "the writer drained the queue in one write"
        );
    }
}

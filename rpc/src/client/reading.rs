//! The reading half of a client: replies filed by id as whoever reads meets them, the wait
//! for one's own reply (reading when nobody else does), and the hand-on of the reading role.

use super::*;

impl Inner {
    /// Files one incoming frame.
    pub(super) fn dispatch(&self, st: &mut State, payload: Payload) {
        let envelope = match Envelope::decode(payload.head()) {
            Ok((envelope, _)) => envelope,
            Err(e) => return self.violation(st, format!("undecodable frame: {e}")),
        };
        match envelope.kind {
            Kind::Error if envelope.id == 0 => {
                let fault = Envelope::decode(payload.head())
                    .ok()
                    .and_then(|(_, body)| postcard::from_bytes::<Fault>(body).ok());
                match fault {
                    Some(Fault {
                        kind: FaultKind::Stopping,
                        ..
                    }) => self.fail(st, "the server stopped".to_owned(), Ending::Stopped),
                    Some(fault) => self.fail(st, format!("the server closed the connection: {fault}"), Ending::Broken),
                    None => self.fail(
                        st,
                        "the server closed the connection for an undecodable reason".to_owned(),
                        Ending::Broken,
                    ),
                }
            }
            Kind::Reply | Kind::Error => match st.pending.get_mut(&envelope.id) {
                Some(slot @ None) => {
                    *slot = Some(payload);
                    if let Some(waker) = st.wakers.remove(&envelope.id) {
                        waker.wake();
                        st.woken_tasks.insert(envelope.id);
                    }
                    if let Some(thread) = st.sleepers.remove(&envelope.id) {
                        st.wake.push(thread);
                        st.woken += 1;
                    }
                }
                Some(Some(_)) => self.violation(st, format!("second reply to request id {}", envelope.id)),
                // A reply to a call its caller gave up on.
                None if envelope.id < self.next_id.load(Ordering::Relaxed) => {
                    tracing::trace!(id = envelope.id, "dropping reply to an abandoned call")
                }
                None => self.violation(st, format!("reply to unknown request id {}", envelope.id)),
            },
            kind => self.violation(st, format!("unexpected {kind:?} frame from a server")),
        }
    }

    /// Waits for the reply to call `id`. `Ok(None)` when `wait` is non-blocking and the reply
    /// is not there yet.
    pub(super) fn wait_reply(&self, id: u64, method: Method, wait: Wait) -> Result<Option<Payload>, RpcError> {
        // Written before this thread waits: the frames deferred for the next poll, its own
        // call's perhaps, whose reply it would otherwise wait for in vain.
        let mut st = self.write_owed(self.lock());
        let mut read = false;
        let mut flush = false;
        let outcome = loop {
            match st.pending.get_mut(&id) {
                Some(Some(_)) => {
                    // A call polled as a future before it is waited for may have been woken.
                    flush |= self.took_woken(&mut st, id);
                    break Ok(st.pending.remove(&id).flatten());
                }
                Some(None) => {}
                None => break Err(self.finished(method)),
            }
            if let Some(failure) = st.failed.clone() {
                st.pending.remove(&id);
                // A stopping server answers every call it read before it says goodbye.
                let delivery = match failure.ending {
                    Ending::Stopped => Delivery::NotSent,
                    _ => Delivery::Unknown,
                };
                break Err(self.disconnected(method, &failure, delivery));
            }
            if !st.reading {
                let (next, ran_out) = self.read_once(st, wait);
                st = next;
                read = true;
                if ran_out && !matches!(st.pending.get(&id), Some(Some(_))) {
                    break self.out_of_time(method, wait);
                }
                continue;
            }
            let left = wait.remaining();
            if left.is_some_and(|left| left.is_zero()) {
                break self.out_of_time(method, wait);
            }
            // The reader unparks us when our reply is filed, or when we are to read next.
            st.sleepers.insert(id, std::thread::current());
            drop(st);
            match left {
                Some(left) => std::thread::park_timeout(left),
                None => std::thread::park(),
            }
            st = self.lock();
            if st.sleepers.remove(&id).is_none() {
                // Unparked for our reply (`dispatch` took us out and counted us).
                st.woken -= 1;
                flush |= st.woken == 0;
            }
            if st.next_reader == Some(id) {
                st.next_reader = None;
            }
        };
        if read {
            // Leaving the reading: first file what one read already brought, so that those
            // callers are woken for their replies and no one is woken just to read them.
            st = self.drain_buffered(st);
        }
        self.notify(&mut st);
        drop(st);
        if flush {
            self.flush_deferred();
        }
        outcome
    }

    /// Awaited call `id` is done with its wake-up (took its reply, failed, or was dropped):
    /// true if it was the last woken one, so that the frames deferred meanwhile are now
    /// to be written (`flush_deferred`, after the lock).
    pub(super) fn took_woken(&self, st: &mut State, id: u64) -> bool {
        st.woken_tasks.remove(&id) && st.woken_tasks.is_empty()
    }

    /// The last woken task has its reply, and the frames deferred meanwhile are to be
    /// written: true if the caller need not write them now, because there are none or the
    /// write is left to the next call started or polled (`take_owed`), so that the call
    /// this task usually starts next goes in the same write. A waiting task is woken to
    /// make that poll should this one start none; with none waiting (nobody could be
    /// relied on to poll), false: the caller writes them now.
    pub(super) fn owe_flush(&self, st: &mut State) -> bool {
        if !self.outbox.has_queued() {
            // Nothing deferred: nothing to owe.
            return true;
        }
        match st.wakers.values().next() {
            Some(waker) => {
                waker.wake_by_ref();
                st.flush_owed = true;
                true
            }
            None => false,
        }
    }

    /// True if a write of the deferred frames was owed (`owe_flush`), now the caller's to
    /// make, after the lock.
    pub(super) fn take_owed(&self, st: &mut State) -> bool {
        std::mem::take(&mut st.flush_owed)
    }

    /// Makes the write of the deferred frames if it is owed, outside the lock, and locks
    /// again: for a caller about to look for its reply or wait for it.
    pub(super) fn write_owed<'a>(&'a self, mut st: Locked<'a>) -> Locked<'a> {
        if !self.take_owed(&mut st) {
            return st;
        }
        drop(st);
        self.flush_deferred();
        self.lock()
    }

    /// Writes the frames queued while callers were being woken (`State::woken`); a write
    /// that fails fails the connection, so that every call whose frame was in it learns at
    /// once (`Delivery::Unknown`: part of it may have reached the server).
    pub(super) fn flush_deferred(&self) {
        if let Err(SendError::Closed(reason)) = self.outbox.flush() {
            let mut st = self.read_what_is_left(self.lock());
            if st.failed.is_none() {
                self.fail(&mut st, reason, Ending::Died);
            }
        }
    }

    /// Files every whole frame the receiver already holds, without waiting, if nobody else
    /// is reading.
    pub(super) fn drain_buffered<'a>(&'a self, mut st: Locked<'a>) -> Locked<'a> {
        while !st.reading && st.failed.is_none() {
            let buffered = self.receiver.lock().unwrap_or_else(|e| e.into_inner()).has_buffered();
            if !buffered {
                break;
            }
            st = self.read_once(st, Wait::NonBlock).0;
        }
        st
    }

    /// Reads one frame as the connection's reader (nobody else is reading when called) and
    /// files it; a failed connection is marked so. The flag is true when `wait` ran out
    /// before a frame came.
    pub(super) fn read_once<'a>(&'a self, mut st: Locked<'a>, wait: Wait) -> (Locked<'a>, bool) {
        st.reading = true;
        // Whoever was woken to read next finds this read under way.
        st.next_reader = None;
        drop(st);
        let received = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_payload(wait);
        let mut st = self.lock();
        st.reading = false;
        match received {
            Ok(payload) => self.dispatch(&mut st, payload),
            Err(e) if e.is_retryable() => return (st, true),
            Err(TransportError::Closed { .. }) => self.fail(
                &mut st,
                "the peer closed the connection or exited".to_owned(),
                Ending::Died,
            ),
            Err(e) => self.fail(&mut st, crate::error::chain(&e), Ending::Died),
        }
        (st, false)
    }

    /// Reads what the peer sent before it closed, until the connection is marked failed
    /// (with the peer's goodbye, if it said one) or nothing more is there. A peer that has
    /// closed has sent everything, so this waits only for another reader to finish, briefly.
    pub(super) fn read_what_is_left<'a>(&'a self, mut st: Locked<'a>) -> Locked<'a> {
        let until = Instant::now() + LAST_WORDS_WAIT;
        while st.failed.is_none() {
            if !st.reading {
                let (next, ran_out) = self.read_once(st, Wait::NonBlock);
                st = next;
                self.notify(&mut st);
                if ran_out {
                    break;
                }
                continue;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st.waiters += 1;
            st = st.wait_timeout(&self.replies, left);
            st.waiters -= 1;
        }
        st
    }

    pub(super) fn out_of_time(&self, method: Method, wait: Wait) -> Result<Option<Payload>, RpcError> {
        if wait == Wait::NonBlock {
            return Ok(None);
        }
        // The slot stays until the PendingCall is dropped, which also sends the cancel.
        Err(RpcError::DeadlineExceeded {
            method: method.name,
            peer: self.peer.name.clone(),
        })
    }

    pub(super) fn abandon(&self, id: u64, method: Method) {
        let (was_pending, flush) = {
            let mut st = self.lock();
            st.wakers.remove(&id);
            let flush = self.took_woken(&mut st, id) | self.take_owed(&mut st);
            if st.watching == future::Watch::Task(id) {
                // It was to read next: another waiting call takes over.
                st.watching = future::Watch::Nobody;
                self.notify(&mut st);
            }
            (st.pending.remove(&id).is_some(), flush)
        };
        if flush {
            self.flush_deferred();
        }
        if was_pending {
            let frame = Envelope {
                id,
                kind: Kind::Cancel,
                method: method.id,
                timeout_us: None,
            }
            .frame();
            // Best effort: a full queue or a dead connection just means no cancel is sent.
            let _ = self.outbox.send(frame, Wait::NonBlock);
        }
    }
}

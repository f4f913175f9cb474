//! [`Subscriber`]: one reader of a shared-memory topic's ring, with its own cursor.

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};

use nix::poll::{PollFd, PollFlags};
use serde::de::DeserializeOwned;

use super::ring::{self, Layout, Read};
use super::{io_error, read_control, write_control};
use crate::error::TransportError;
use crate::shm::Region;
use crate::topic::Control;
use crate::topic::{Event, TopicError, SETUP_TIMEOUT};
use crate::transport::shm::poll_until;
use crate::wait::Wait;

/// Receives the messages of type `T` on one shared-memory topic, reading them in the
/// publisher's ring. Not `Clone`: the cursor is its own.
#[derive(Debug)]
pub struct Subscriber<T> {
    topic: String,
    path: PathBuf,
    last: bool,
    epoch: u64,
    socket: UnixStream,
    /// Control bytes read from the socket past the welcome.
    pending: Vec<u8>,
    region: Region,
    layout: Layout,
    index: usize,
    doorbell: OwnedFd,
    space: OwnedFd,
    /// The number of the next message it reads.
    next: u64,
    ended: bool,
    _type: PhantomData<fn() -> T>,
}

fn eventfd_write(fd: &OwnedFd) {
    // An eventfd write fails only when the counter is full, which leaves it readable.
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

fn eventfd_drain(fd: &OwnedFd) {
    let mut buf = [0; 8];
    let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(fd), &mut buf);
}

impl<T: DeserializeOwned> Subscriber<T> {
    /// Subscribes to topic `topic` at the publisher's socket `path`, from the next message
    /// published.
    pub fn connect(path: impl AsRef<Path>, topic: &str) -> Result<Self, TopicError> {
        Self::subscribe(path.as_ref(), topic, false)
    }

    /// Like [`connect`](Self::connect), but the first message is the last one published
    /// before this subscriber joined, if there was one (and the ring still holds it).
    pub fn connect_with_last(path: impl AsRef<Path>, topic: &str) -> Result<Self, TopicError> {
        Self::subscribe(path.as_ref(), topic, true)
    }

    fn subscribe(path: &Path, topic: &str, last: bool) -> Result<Self, TopicError> {
        let peer = path.display().to_string();
        let io = |op, e| io_error(topic, op, &peer, e);
        let mut socket = UnixStream::connect(path).map_err(|e| io("connect", e))?;
        socket
            .set_read_timeout(Some(SETUP_TIMEOUT))
            .map_err(|e| io("setsockopt", e))?;
        socket
            .set_write_timeout(Some(SETUP_TIMEOUT))
            .map_err(|e| io("setsockopt", e))?;
        let hello = Control::Hello {
            topic: topic.to_owned(),
            type_name: std::any::type_name::<T>().to_owned(),
            last,
        };
        write_control(&socket, &hello).map_err(|e| io("send", e))?;
        let protocol = |detail: &str| TopicError::Protocol {
            peer: peer.clone(),
            detail: detail.to_owned(),
        };
        let mut buf = vec![0; 4096];
        let (n, fds) = crate::shm::recv_fds(socket.as_fd(), &mut buf).map_err(|source| TopicError::Shm {
            topic: topic.to_owned(),
            source,
        })?;
        if n == 0 {
            return Err(TopicError::Transport {
                topic: topic.to_owned(),
                source: TransportError::Closed { peer },
            });
        }
        let mut pending = buf[..n].to_vec();
        let control = read_control(&mut socket, &mut pending).map_err(|e| io("recv", e))?;
        let (epoch, layout, index, next) = match control {
            Some(Control::ShmWelcome {
                epoch,
                capacity,
                message_size,
                max_subscribers,
                index,
                next,
            }) => {
                let layout = Layout {
                    capacity: usize::try_from(capacity).unwrap_or(0),
                    message_size: usize::try_from(message_size).unwrap_or(0),
                    max_subscribers: usize::try_from(max_subscribers).unwrap_or(0),
                };
                (epoch, layout, index, next)
            }
            Some(Control::Refused { reason }) => {
                return Err(TopicError::Refused {
                    topic: topic.to_owned(),
                    peer,
                    reason,
                })
            }
            _ => return Err(protocol("expected a welcome or a refusal")),
        };
        let [region, doorbell, space]: [OwnedFd; 3] = fds
            .try_into()
            .map_err(|_| protocol("a welcome without its three descriptors"))?;
        let region = Region::from_fd(region).map_err(|source| TopicError::Shm {
            topic: topic.to_owned(),
            source,
        })?;
        // The welcome's shape must fit the region it came with: every later access is
        // bounds-checked anyway, but a wrong shape is better refused here, clearly.
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        if layout.capacity == 0
            || layout.message_size == 0
            || index >= layout.max_subscribers
            || layout.len().is_none_or(|len| len > region.len())
        {
            return Err(protocol("a welcome whose ring does not fit its region"));
        }
        socket.set_read_timeout(None).map_err(|e| io("setsockopt", e))?;
        Ok(Subscriber {
            topic: topic.to_owned(),
            path: path.to_path_buf(),
            last,
            epoch,
            socket,
            pending,
            region,
            layout,
            index,
            doorbell,
            space,
            next,
            ended: false,
            _type: PhantomData,
        })
    }

    /// The publisher run this subscriber is connected to (see
    /// [`topic::Subscriber::epoch`](crate::topic::Subscriber::epoch)).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Subscribes again at the same socket, as
    /// [`topic::Subscriber::reconnect`](crate::topic::Subscriber::reconnect) does.
    pub fn reconnect(&mut self) -> Result<(), TopicError> {
        *self = Self::subscribe(&self.path, &self.topic, self.last)?;
        Ok(())
    }

    /// The region, for the fuzzing and hostile-peer tests (`crate::fuzz`).
    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    fn shm_error(&self, source: crate::shm::ShmError) -> TopicError {
        TopicError::Shm {
            topic: self.topic.clone(),
            source,
        }
    }

    /// Moves the cursor to `next`, and rings the publisher if it waits for room.
    fn advance(&mut self, next: u64) -> Result<(), TopicError> {
        self.next = next;
        let cursor = ring::cursor(&self.region, &self.layout, self.index).map_err(|e| self.shm_error(e))?;
        cursor.next.store(next, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let words = ring::words(&self.region).map_err(|e| self.shm_error(e))?;
        if words.publisher_waiting.load(Ordering::SeqCst) != 0 {
            eventfd_write(&self.space);
        }
        Ok(())
    }

    /// The next event, waiting as `wait` allows: a message, a gap before one, or the end
    /// (returned again by every later call). Waiting sleeps on the doorbell and the socket.
    pub fn recv(&mut self, wait: Wait) -> Result<Event<T>, TopicError> {
        if self.ended {
            return Ok(Event::Ended { reason: None });
        }
        // The socket said something (the publisher's end, or its death): what is left in the
        // ring comes first, then the end.
        let mut closing = false;
        loop {
            let cursor = ring::cursor(&self.region, &self.layout, self.index).map_err(|e| self.shm_error(e))?;
            let cut = cursor.cut.load(Ordering::SeqCst);
            if cut == ring::CUT_NOW {
                return self.end();
            }
            match ring::read(&self.region, &self.layout, self.next).map_err(|e| self.shm_error(e))? {
                Read::Message(bytes) => {
                    let seq = self.next;
                    self.advance(seq.saturating_add(1))?;
                    let value = crate::protocol::decode_exact(&bytes).map_err(|source| TopicError::Codec {
                        topic: self.topic.clone(),
                        what: "decoded",
                        source,
                    })?;
                    return Ok(Event::Message { seq, value });
                }
                Read::Lapped(oldest) => {
                    let missed = oldest - self.next;
                    self.advance(oldest)?;
                    return Ok(Event::Gap { missed, next: oldest });
                }
                Read::Empty if cut != 0 || closing => return self.end(),
                Read::Empty => {}
            }
            // Parked, then one more look, so that a message published meanwhile either is
            // seen here or finds the flag and rings (see the module docs).
            cursor.parked.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let again = ring::read(&self.region, &self.layout, self.next).map_err(|e| self.shm_error(e))?;
            if again != Read::Empty {
                cursor.parked.store(0, Ordering::SeqCst);
                continue;
            }
            let mut fds = [
                PollFd::new(self.doorbell.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
            ];
            let ready = poll_until(&mut fds, wait, &self.topic);
            let socket = fds[1].revents().is_some_and(|r| !r.is_empty());
            cursor.parked.store(0, Ordering::SeqCst);
            match ready {
                Ok(true) if socket => closing = true,
                Ok(true) => eventfd_drain(&self.doorbell),
                Ok(false) => {
                    let peer = self.path.display().to_string();
                    let source = if wait == Wait::NonBlock {
                        TransportError::WouldBlock { peer }
                    } else {
                        TransportError::TimedOut { peer }
                    };
                    return Err(TopicError::Transport {
                        topic: self.topic.clone(),
                        source,
                    });
                }
                Err(source) => {
                    return Err(TopicError::Transport {
                        topic: self.topic.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// The end: the publisher's reason from the socket, if it gave one.
    fn end(&mut self) -> Result<Event<T>, TopicError> {
        self.ended = true;
        let _ = self.socket.set_read_timeout(Some(SETUP_TIMEOUT));
        let reason = match read_control(&mut self.socket, &mut self.pending) {
            Ok(Some(Control::Ended { reason })) => Some(reason),
            _ => None,
        };
        Ok(Event::Ended { reason })
    }
}

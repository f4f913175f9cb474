//! [`Publisher`]: the one writer of a shared-memory topic's ring, and the thread that lets
//! subscribers join over its Unix socket.

use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use serde::Serialize;

use super::ring::{self, Layout};
use super::{io_error, read_control, write_control, Options};
use crate::shm::Region;
use crate::topic::Control;
use crate::topic::{Overflow, TopicError, SETUP_TIMEOUT};
use crate::transport::shm::poll_until;
use crate::transport::Interrupt;
use crate::wait::Wait;

/// Where a subscriber's subscription is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// It reads the ring.
    Open,
    /// The publisher cut it off (too slow, or stopping): it no longer counts.
    Cut,
}

/// One subscriber, as the publisher knows it.
#[derive(Debug)]
struct Sub {
    index: usize,
    doorbell: EventFd,
    socket: UnixStream,
    link: Mutex<Link>,
}

impl Sub {
    fn open(&self) -> bool {
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) == Link::Open
    }

    fn ring(&self) {
        // EAGAIN only when the counter is full: it is readable anyway.
        let _ = self.doorbell.write(1);
    }

    /// Ends the subscription with `reason`: the cut word (`how`), the reason on the socket
    /// (which has room: nothing else is ever sent on it), the doorbell for a parked
    /// subscriber.
    fn cut(&self, region: &Region, layout: &Layout, how: u32, reason: &str) {
        {
            let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
            if *link == Link::Cut {
                return;
            }
            *link = Link::Cut;
        }
        if let Ok(cursor) = ring::cursor(region, layout, self.index) {
            cursor.cut.store(how, Ordering::SeqCst);
        }
        let _ = self.socket.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = write_control(
            &self.socket,
            &Control::Ended {
                reason: reason.to_owned(),
            },
        );
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
        self.ring();
    }
}

#[derive(Debug)]
struct Shared {
    topic: String,
    type_name: &'static str,
    epoch: u64,
    options: Options,
    layout: Layout,
    region: Region,
    /// Rung by subscribers that moved their cursor while the publisher waits, and by a
    /// subscriber's thread when it leaves.
    space: EventFd,
    /// The publishing lock, and the last number given.
    seq: Mutex<u64>,
    /// The last number written, for joiners (never read back from the region).
    published: AtomicU64,
    /// Subscribers by cursor slot.
    subs: Mutex<Vec<Option<Arc<Sub>>>>,
    interrupt: Interrupt,
}

impl Shared {
    fn subs(&self) -> MutexGuard<'_, Vec<Option<Arc<Sub>>>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_subs(&self) -> Vec<Arc<Sub>> {
        self.subs().iter().flatten().filter(|s| s.open()).cloned().collect()
    }

    /// Whether `sub` has not read message `seq - capacity`, which `seq` overwrites. Its
    /// cursor is a hint from another process: one from the future counts as caught up.
    fn full(&self, sub: &Sub, seq: u64) -> bool {
        let capacity = self.layout.capacity as u64;
        let Ok(cursor) = ring::cursor(&self.region, &self.layout, sub.index) else {
            return false;
        };
        seq > capacity && cursor.next.load(Ordering::Acquire) <= seq - capacity
    }
}

/// Publishes messages of type `T` on one topic into a shared ring that every subscriber of
/// its Unix socket reads. Dropping it removes the socket file and ends every subscription.
#[derive(Debug)]
pub struct Publisher<T> {
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
    path: Option<std::path::PathBuf>,
    _type: PhantomData<fn(&T)>,
}

impl<T: Serialize> Publisher<T> {
    /// Binds `path` for the topic `topic`; a socket file left by a publisher that is gone is
    /// replaced.
    pub fn bind(path: impl AsRef<Path>, topic: &str, options: Options) -> Result<Self, TopicError> {
        let path = path.as_ref();
        use std::os::unix::fs::FileTypeExt;
        // A socket file left by a publisher that is gone: nothing answers there.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
            && UnixStream::connect(path).is_err()
        {
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(|e| io_error(topic, "bind", &path.display().to_string(), e))?;
        let mut publisher = Self::from_listener(listener, topic, options)?;
        publisher.path = Some(path.to_path_buf());
        Ok(publisher)
    }

    /// Publishes on a listening Unix socket this process was handed (by a supervisor's
    /// `[topic.NAME]`, say).
    pub fn from_listener(listener: UnixListener, topic: &str, options: Options) -> Result<Self, TopicError> {
        if options.topic.overflow == Overflow::DropNewest {
            return Err(TopicError::Unsupported {
                topic: topic.to_owned(),
                detail: "drop-newest is not possible over shared memory: one ring is every \
                         subscriber's queue, so the writer cannot drop a message for one of them only"
                    .into(),
            });
        }
        let layout = Layout {
            capacity: options.topic.capacity.max(1),
            message_size: options.message_size.max(1),
            max_subscribers: options.max_subscribers.max(1),
        };
        let shm = |source| TopicError::Shm {
            topic: topic.to_owned(),
            source,
        };
        let len = layout.len().ok_or(shm(crate::shm::ShmError::BadSize {
            size: u64::MAX,
            max: isize::MAX as u64,
        }))?;
        let region = Region::create_labelled(&format!("procwire-topic-{topic}"), len).map_err(shm)?;
        ring::init(&region).map_err(shm)?;
        let io = |op, e: std::io::Error| io_error(topic, op, topic, e);
        let space = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| io("eventfd", e.into()))?;
        let interrupt = Interrupt::new().map_err(|e| io("eventfd", e))?;
        listener.set_nonblocking(true).map_err(|e| io("set_nonblocking", e))?;
        let epoch = crate::topic::new_epoch();
        let shared = Arc::new(Shared {
            topic: topic.to_owned(),
            type_name: std::any::type_name::<T>(),
            epoch,
            options,
            layout,
            region,
            space,
            seq: Mutex::new(0),
            published: AtomicU64::new(0),
            subs: Mutex::new(vec![None; layout.max_subscribers]),
            interrupt,
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("procwire-shm-topic".into())
                .spawn(move || accept_loop(&listener, &shared))
                .map_err(|e| io("spawn", e))?
        };
        Ok(Publisher {
            shared,
            accept: Some(accept),
            path: None,
            _type: PhantomData,
        })
    }

    /// Publishes `value` (written once, for every subscriber) and returns its number. A
    /// subscriber a whole ring behind is handled by the policy; under `Block` this waits as
    /// `wait` allows and fails with [`TopicError::Full`], nobody having the message.
    pub fn publish(&self, value: &T, wait: Wait) -> Result<u64, TopicError> {
        let sh = &*self.shared;
        let body = postcard::to_stdvec(value).map_err(|source| TopicError::Codec {
            topic: sh.topic.clone(),
            what: "encoded",
            source,
        })?;
        if body.len() > sh.layout.message_size {
            return Err(TopicError::TooLarge {
                topic: sh.topic.clone(),
                len: body.len(),
                max: sh.layout.message_size,
            });
        }
        let mut seq = sh.seq.lock().unwrap_or_else(|e| e.into_inner());
        let next = *seq + 1;
        for sub in sh.open_subs() {
            match sh.options.topic.overflow {
                Overflow::Block => self.wait_for(&sub, next, wait)?,
                Overflow::Disconnect if sh.full(&sub, next) => sub.cut(
                    &sh.region,
                    &sh.layout,
                    ring::CUT_NOW,
                    &format!(
                        "too slow: it was {} messages behind (overflow policy: disconnect)",
                        sh.layout.capacity
                    ),
                ),
                _ => {}
            }
        }
        ring::write(&sh.region, &sh.layout, next, &body).map_err(|source| TopicError::Shm {
            topic: sh.topic.clone(),
            source,
        })?;
        *seq = next;
        sh.published.store(next, Ordering::SeqCst);
        drop(seq);
        // After the write, so that a subscriber that joined meanwhile is either in this list
        // or started after the message.
        fence(Ordering::SeqCst);
        for sub in sh.open_subs() {
            if let Ok(cursor) = ring::cursor(&sh.region, &sh.layout, sub.index) {
                if cursor.parked.swap(0, Ordering::SeqCst) != 0 {
                    sub.ring();
                }
            }
        }
        Ok(next)
    }

    /// Waits until `sub` has room for message `seq`, or is gone or cut.
    fn wait_for(&self, sub: &Sub, seq: u64, wait: Wait) -> Result<(), TopicError> {
        let sh = &*self.shared;
        let waiting = ring::words(&sh.region)
            .map_err(|source| TopicError::Shm {
                topic: sh.topic.clone(),
                source,
            })?
            .publisher_waiting;
        let result = loop {
            if !sh.full(sub, seq) || !sub.open() {
                break Ok(());
            }
            waiting.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !sh.full(sub, seq) || !sub.open() {
                break Ok(());
            }
            let mut fds = [PollFd::new(sh.space.as_fd(), PollFlags::POLLIN)];
            match poll_until(&mut fds, wait, &sh.topic) {
                Ok(true) => {
                    let _ = sh.space.read();
                }
                Ok(false) => {
                    break Err(TopicError::Full {
                        topic: sh.topic.clone(),
                    })
                }
                Err(source) => {
                    break Err(TopicError::Transport {
                        topic: sh.topic.clone(),
                        source,
                    })
                }
            }
        };
        waiting.store(0, Ordering::SeqCst);
        result
    }

    /// Stops: every subscriber is told `reason` after what is in the ring.
    pub fn stop(mut self, reason: &str) {
        self.end(reason);
    }
}

impl<T> Publisher<T> {
    /// This publisher run's epoch, which its subscribers see.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// Subscribers reading now (not cut off).
    pub fn subscribers(&self) -> usize {
        self.shared.open_subs().len()
    }

    fn end(&mut self, reason: &str) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        let sh = &*self.shared;
        for sub in sh.open_subs() {
            sub.cut(&sh.region, &sh.layout, ring::CUT_AFTER_RING, reason);
        }
        sh.interrupt.fire();
        let _ = accept.join();
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        self.end("the publisher stopped");
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.interrupt.as_fd(), PollFlags::POLLIN),
        ];
        if poll_until(&mut fds, Wait::Block, &shared.topic).is_err() || fds[1].revents().is_some_and(|r| !r.is_empty())
        {
            return;
        }
        match listener.accept() {
            Ok((socket, _)) => {
                let shared = Arc::clone(shared);
                let _ = std::thread::Builder::new()
                    .name("procwire-shm-topic-sub".into())
                    .spawn(move || subscriber(socket, &shared));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!(topic = %shared.topic, error = %e, "accepting a subscriber failed; retrying in 100 ms");
                if crate::transport::wait_interrupt(&shared.interrupt, Duration::from_millis(100)) {
                    return;
                }
            }
        }
    }
}

/// One subscriber's life in the publisher: the join, then watching its socket for the end.
fn subscriber(mut socket: UnixStream, shared: &Shared) {
    let Some(sub) = join(&mut socket, shared) else {
        return;
    };
    // Nothing more comes from a subscriber: readable means it left (or broke the protocol).
    let mut fds = [
        PollFd::new(sub.socket.as_fd(), PollFlags::POLLIN),
        PollFd::new(shared.interrupt.as_fd(), PollFlags::POLLIN),
    ];
    let _ = poll_until(&mut fds, Wait::Block, &shared.topic);
    if fds[1].revents().is_some_and(|r| !r.is_empty()) {
        return;
    }
    *sub.link.lock().unwrap_or_else(|e| e.into_inner()) = Link::Cut;
    shared.subs()[sub.index] = None;
    let _ = shared.space.write(1);
}

/// The hello, a cursor slot, the welcome with the descriptors.
fn join(socket: &mut UnixStream, shared: &Shared) -> Option<Arc<Sub>> {
    let _ = socket.set_read_timeout(Some(SETUP_TIMEOUT));
    let _ = socket.set_write_timeout(Some(SETUP_TIMEOUT));
    let refuse = |socket: &mut UnixStream, reason: String| {
        let _ = write_control(socket, &Control::Refused { reason });
        None
    };
    let last = match read_control(socket, &mut Vec::new()) {
        Ok(Some(Control::Hello { topic, type_name, last })) => {
            if let Some(reason) = crate::topic::refusal(&shared.topic, shared.type_name, &topic, &type_name) {
                return refuse(socket, reason);
            }
            last
        }
        Ok(None) | Err(_) => return None,
        Ok(Some(_)) => return refuse(socket, "expected a hello".into()),
    };
    let doorbell = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).ok()?;
    let mut subs = shared.subs();
    let Some(index) = subs.iter().position(Option::is_none) else {
        drop(subs);
        return refuse(
            socket,
            format!("it has its most subscribers, {}", shared.layout.max_subscribers),
        );
    };
    let published = shared.published.load(Ordering::SeqCst);
    let next = if last && shared.options.topic.last_value && published > 0 {
        published
    } else {
        published + 1
    };
    let cursor = ring::cursor(&shared.region, &shared.layout, index).ok()?;
    cursor.next.store(next, Ordering::SeqCst);
    cursor.parked.store(0, Ordering::SeqCst);
    cursor.cut.store(0, Ordering::SeqCst);
    let sub = Arc::new(Sub {
        index,
        doorbell,
        socket: socket.try_clone().ok()?,
        link: Mutex::new(Link::Open),
    });
    subs[index] = Some(Arc::clone(&sub));
    drop(subs);
    let welcome = super::encode(&Control::ShmWelcome {
        epoch: shared.epoch,
        capacity: shared.layout.capacity as u64,
        message_size: shared.layout.message_size as u64,
        max_subscribers: shared.layout.max_subscribers as u64,
        index: index as u64,
        next,
    });
    let fds = [shared.region.as_fd(), sub.doorbell.as_fd(), shared.space.as_fd()];
    if crate::shm::send_fds(socket.as_fd(), &welcome, &fds).ok() != Some(welcome.len()) {
        *sub.link.lock().unwrap_or_else(|e| e.into_inner()) = Link::Cut;
        shared.subs()[index] = None;
        return None;
    }
    Some(sub)
}

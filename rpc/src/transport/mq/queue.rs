//! [`Queue`]: one POSIX message queue, the kernel's bounded mailbox of whole messages.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::mqueue::{
    mq_attr_member_t, mq_close, mq_getattr, mq_open, mq_receive, mq_timedreceive, MQ_OFlag, MqAttr, MqdT,
};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::limits::{self, explain_create, MqError};
use crate::sys;
use crate::wait::Wait;

/// The prefix of the environment variable that hands a queue to a child
/// ([`Queue::pass_to`]): `PROCWIRE_QUEUE_<NAME>=<fd>`.
pub const ENV_PREFIX: &str = "PROCWIRE_QUEUE_";

/// The shape of a queue: how many messages it holds and how large each may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    /// Messages the queue holds before a sender waits (`mq_maxmsg`).
    pub max_messages: usize,
    /// The largest message, in bytes (`mq_msgsize`).
    pub message_size: usize,
}

impl Attrs {
    /// A queue of `max_messages` messages of at most `message_size` bytes.
    pub const fn new(max_messages: usize, message_size: usize) -> Self {
        Attrs {
            max_messages,
            message_size,
        }
    }

    /// What the kernel gives a queue created without attributes
    /// (`fs.mqueue.msg_default`, `msgsize_default`; 10 of 8 KiB where they cannot be read).
    pub fn system_default() -> Self {
        Attrs {
            max_messages: limits::read_knob(limits::MSG_DEFAULT).unwrap_or(10) as usize,
            message_size: limits::read_knob(limits::MSGSIZE_DEFAULT).unwrap_or(8192) as usize,
        }
    }
}

/// Checks a queue name: `/` (added if missing) and 1 to 255 characters, none of them `/`
/// or NUL. Returns it with its slash.
pub fn check_name(name: &str) -> Result<String, MqError> {
    let bad = |why| MqError::BadName {
        name: name.to_owned(),
        why,
    };
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(bad("it is empty"));
    }
    if bare.len() > 255 {
        return Err(bad("it is longer than 255 bytes"));
    }
    if bare.contains(['/', '\0']) {
        return Err(bad("it holds a `/` or a NUL after the leading `/`"));
    }
    Ok(format!("/{bare}"))
}

/// One open message queue. Messages arrive whole, in the order sent (all are sent with
/// priority 0), each at most [`Attrs::message_size`] bytes: a longer one is refused with
/// [`MqError::TooLarge`], never split, so that any number of processes may send to and
/// receive from one queue. The descriptor is closed when the `Queue` is dropped; the name
/// stays until [`Queue::unlink`] (the queue itself lives on while any process has it open).
#[derive(Debug)]
pub struct Queue {
    mqd: Option<MqdT>,
    name: String,
    attrs: Attrs,
}

impl Queue {
    /// Creates the queue `name` with `attrs`, readable and writable by this user only
    /// (mode 0600); it must not exist yet. Limits are explained: an [`MqError::Limit`],
    /// [`TooManyQueues`](MqError::TooManyQueues) or [`MemoryLimit`](MqError::MemoryLimit)
    /// names the knob, its value and what was asked for.
    pub fn create(name: &str, attrs: Attrs) -> Result<Queue, MqError> {
        let name = check_name(name)?;
        for (n, what) in [
            (attrs.max_messages, "max_messages"),
            (attrs.message_size, "message_size"),
        ] {
            if n == 0 {
                return Err(MqError::Zero { queue: name, what });
            }
        }
        // A value too large for the kernel's type is above every limit: EINVAL explains it.
        let member = |n: usize| mq_attr_member_t::try_from(n).unwrap_or(mq_attr_member_t::MAX);
        let attr = MqAttr::new(0, member(attrs.max_messages), member(attrs.message_size), 0);
        let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR | MQ_OFlag::O_CLOEXEC;
        let mqd = mq_open(name.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR, Some(&attr))
            .map_err(|e| explain_create(&name, attrs, e))?;
        Self::wrap(mqd, name)
    }

    /// Opens the existing queue `name` for sending and receiving.
    pub fn open(name: &str) -> Result<Queue, MqError> {
        let name = check_name(name)?;
        let mqd = mq_open(
            name.as_str(),
            MQ_OFlag::O_RDWR | MQ_OFlag::O_CLOEXEC,
            Mode::empty(),
            None,
        )
        .map_err(|e| MqError::io("mq_open", &name, e))?;
        Self::wrap(mqd, name)
    }

    /// Removes the name `name`; `Ok(false)` if there was none. Processes that have the queue
    /// open keep using it; it goes when the last of them closes it.
    pub fn unlink(name: &str) -> Result<bool, MqError> {
        let name = check_name(name)?;
        match nix::mqueue::mq_unlink(name.as_str()) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(MqError::io("mq_unlink", &name, e)),
        }
    }

    fn wrap(mqd: MqdT, name: String) -> Result<Queue, MqError> {
        let mut queue = Queue {
            mqd: Some(mqd),
            name,
            attrs: Attrs::new(0, 0),
        };
        let attr = mq_getattr(queue.mqd()).map_err(|e| MqError::io("mq_getattr", &queue.name, e))?;
        queue.attrs = Attrs::new(attr.maxmsg() as usize, attr.msgsize() as usize);
        Ok(queue)
    }

    fn mqd(&self) -> &MqdT {
        self.mqd.as_ref().expect("open until dropped")
    }

    /// The queue's name, with its leading `/` (for one handed over, `fd:N`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's shape.
    pub fn attrs(&self) -> Attrs {
        self.attrs
    }

    /// Messages in the queue now.
    pub fn len(&self) -> Result<usize, MqError> {
        let attr = mq_getattr(self.mqd()).map_err(|e| MqError::io("mq_getattr", &self.name, e))?;
        Ok(attr.curmsgs() as usize)
    }

    /// True if the queue holds no message now.
    pub fn is_empty(&self) -> Result<bool, MqError> {
        Ok(self.len()? == 0)
    }

    /// Sends one message, waiting for room as `wait` allows: [`Wait::Until`] is
    /// `mq_timedsend(3)`; [`Wait::NonBlock`] fails at once with [`MqError::Full`].
    pub fn send(&self, message: &[u8], wait: Wait) -> Result<(), MqError> {
        if message.len() > self.attrs.message_size {
            return Err(MqError::TooLarge {
                queue: self.name.clone(),
                len: message.len(),
                max: self.attrs.message_size,
            });
        }
        loop {
            let sent = match wait {
                Wait::Block => nix::mqueue::mq_send(self.mqd(), message, 0),
                _ => sys::mq_timedsend(self.as_fd(), message, &sys::realtime_deadline(wait.remaining())),
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(Errno::ETIMEDOUT | Errno::EAGAIN) => return Err(self.not_now(wait, true)),
                Err(e) => return Err(MqError::io("mq_send", &self.name, e)),
            }
        }
    }

    /// Receives one message into `buf`, which must hold [`Attrs::message_size`] bytes, and
    /// returns its length; waits as `wait` allows ([`MqError::Empty`] for a non-blocking
    /// receive of an empty queue).
    pub fn recv_into(&self, buf: &mut [u8], wait: Wait) -> Result<usize, MqError> {
        let mut priority = 0;
        loop {
            let received = match wait {
                Wait::Block => mq_receive(self.mqd(), buf, &mut priority),
                _ => {
                    let until = sys::realtime_deadline(wait.remaining());
                    mq_timedreceive(self.mqd(), buf, &mut priority, &TimeSpec::from(until))
                }
            };
            match received {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => {}
                Err(Errno::ETIMEDOUT | Errno::EAGAIN) => return Err(self.not_now(wait, false)),
                Err(e) => return Err(MqError::io("mq_receive", &self.name, e)),
            }
        }
    }

    /// Receives one message, waiting as `wait` allows.
    pub fn recv(&self, wait: Wait) -> Result<Vec<u8>, MqError> {
        let mut buf = vec![0; self.attrs.message_size];
        let n = self.recv_into(&mut buf, wait)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Sends `value`, encoded with postcard, as one message.
    pub fn send_value<T: Serialize + ?Sized>(&self, value: &T, wait: Wait) -> Result<(), MqError> {
        let bytes = postcard::to_stdvec(value).map_err(|source| MqError::Codec {
            queue: self.name.clone(),
            what: "encoded",
            source,
        })?;
        self.send(&bytes, wait)
    }

    /// Receives one message and decodes it as a `T` (the whole message, nothing left over).
    pub fn recv_value<T: DeserializeOwned>(&self, wait: Wait) -> Result<T, MqError> {
        let bytes = self.recv(wait)?;
        crate::protocol::decode_exact(&bytes).map_err(|source| MqError::Codec {
            queue: self.name.clone(),
            what: "decoded",
            source,
        })
    }

    fn not_now(&self, wait: Wait, sending: bool) -> MqError {
        let queue = self.name.clone();
        match (wait, sending) {
            (Wait::NonBlock, true) => MqError::Full { queue },
            (Wait::NonBlock, false) => MqError::Empty { queue },
            _ => MqError::TimedOut { queue },
        }
    }

    /// The environment variable that hands queue `name` to a child.
    pub fn env_var(name: &str) -> Result<String, MqError> {
        crate::shm::env_var(name)
            .map(|var| format!("{ENV_PREFIX}{}", &var[crate::shm::ENV_PREFIX.len()..]))
            .map_err(|_| MqError::BadName {
                name: name.to_owned(),
                why: "a handed-over queue is named with letters, digits, `-` and `_`",
            })
    }

    /// Makes `cmd` hand this queue's descriptor to the child it spawns as `name`, which the
    /// child opens with [`Queue::from_env`]. No other process spawned meanwhile inherits it.
    pub fn pass_to(&self, cmd: &mut Command, name: &str) -> Result<(), MqError> {
        let var = Self::env_var(name)?;
        let fd = self.as_fd().as_raw_fd();
        cmd.env(var, fd.to_string());
        // SAFETY: the closure runs in the forked child before exec and calls only fcntl(2),
        // which is async-signal-safe; it allocates nothing and takes no locks. The descriptor
        // is open in the child: fork copied it from the parent, where `self` owns it.
        unsafe {
            cmd.pre_exec(move || {
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                Ok(())
            });
        }
        Ok(())
    }

    /// Opens the queue a parent (the supervisor, for a `[queue.NAME]` its pool lists) handed
    /// over as `name`. The descriptor is claimed once per process, only if it was inherited
    /// (not close-on-exec) and is a message queue; it is made close-on-exec again.
    pub fn from_env(name: &str) -> Result<Queue, MqError> {
        let var = Self::env_var(name)?;
        let fd = crate::shm::claim_inherited(&var).map_err(|problem| MqError::Env {
            var: var.clone(),
            problem,
        })?;
        // SAFETY: `claim_inherited` checked that `fd` is open and was inherited, so nothing
        // else in this process owns it, and made this the only claim on it. If it is not a
        // queue, `wrap`'s mq_getattr fails and the `Queue` closes it on drop.
        let mqd = unsafe { MqdT::from_raw_fd(fd) };
        Self::wrap(mqd, format!("{var}=fd:{fd}"))
    }
}

impl AsFd for Queue {
    /// The descriptor: `poll(2)` shows it readable while a message waits and writable while
    /// there is room.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.mqd().as_fd()
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if let Some(mqd) = self.mqd.take() {
            let _ = mq_close(mqd);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn unique(tag: &str) -> String {
        format!("/procwire-test-{}-{tag}", std::process::id())
    }

    #[test]
    fn a_message_above_the_message_size_is_refused_whole_and_others_arrive_in_order() {
        let name = unique("order");
        let queue = Queue::create(&name, Attrs::new(4, 16)).unwrap();
        Queue::unlink(&name).unwrap();
        let err = queue.send(&[0; 17], Wait::NonBlock).unwrap_err();
        assert!(
            err.to_string()
                .contains("a message of 17 bytes does not fit message queue"),
            "{err}"
        );
        for m in [&b"one"[..], b"two", b""] {
            queue.send(m, Wait::NonBlock).unwrap();
        }
        assert_eq!(queue.len().unwrap(), 3);
        assert_eq!(queue.recv(Wait::NonBlock).unwrap(), b"one");
        assert_eq!(queue.recv(Wait::NonBlock).unwrap(), b"two");
        assert_eq!(queue.recv(Wait::NonBlock).unwrap(), b"");
        assert!(matches!(queue.recv(Wait::NonBlock), Err(MqError::Empty { .. })));
    }

    #[test]
    fn a_send_to_a_full_queue_waits_for_its_deadline_then_times_out() {
        let name = unique("full");
        let queue = Queue::create(&name, Attrs::new(1, 8)).unwrap();
        Queue::unlink(&name).unwrap();
        queue.send_value(&7u32, Wait::NonBlock).unwrap();
        assert!(matches!(queue.send(b"x", Wait::NonBlock), Err(MqError::Full { .. })));
        let start = Instant::now();
        let err = queue.send(b"x", Wait::timeout(Duration::from_millis(50))).unwrap_err();
        assert!(matches!(err, MqError::TimedOut { .. }), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(45), "{:?}", start.elapsed());
        assert_eq!(queue.recv_value::<u32>(Wait::Block).unwrap(), 7);
    }

    #[test]
    fn names_are_checked_and_an_existing_queue_is_not_created_twice() {
        assert!(check_name("").is_err());
        assert!(check_name("/a/b").is_err());
        assert_eq!(check_name("jobs").unwrap(), "/jobs");
        let name = unique("twice");
        let _queue = Queue::create(&name, Attrs::new(1, 8)).unwrap();
        let err = Queue::create(&name, Attrs::new(1, 8)).unwrap_err();
        assert!(err.to_string().contains("File exists"), "{err}");
        assert!(Queue::open(&name).is_ok());
        assert!(Queue::unlink(&name).unwrap());
        assert!(!Queue::unlink(&name).unwrap());
        let err = Queue::create(&name, Attrs::new(0, 8)).unwrap_err();
        assert!(err.to_string().contains("max_messages must be at least 1"), "{err}");
    }

    #[test]
    fn asking_for_more_messages_than_the_kernel_allows_names_msg_max() {
        let name = unique("limit");
        // Above even a privileged process's hard limit of 65536.
        let err = Queue::create(&name, Attrs::new(1 << 20, 8)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("1048576 messages asked for, above /proc/sys/fs/mqueue/msg_max = "),
            "{text}"
        );
        let err = Queue::create(&name, Attrs::new(1, 64 << 20)).unwrap_err();
        assert!(
            err.to_string()
                .contains("67108864 bytes per message asked for, above /proc/sys/fs/mqueue/msgsize_max = "),
            "{err}"
        );
    }

    #[test]
    fn dropping_a_queue_closes_its_descriptor() {
        let name = unique("drop");
        let queue = Queue::create(&name, Attrs::new(1, 8)).unwrap();
        Queue::unlink(&name).unwrap();
        let fd = queue.as_fd().as_raw_fd();
        let link = || std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|l| l.display().to_string());
        assert!(link().unwrap().contains(&name[1..]), "{:?}", link());
        drop(queue);
        // Closed, or (another test thread was quick) reused for something else.
        match link() {
            Err(_) => {}
            Ok(other) => assert!(!other.contains(&name[1..]), "fd {fd} still open on {other}"),
        }
    }
}

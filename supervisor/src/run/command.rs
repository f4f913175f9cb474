//! Commands into the event loop from other threads: a channel, and a wake-up descriptor in
//! the loop's poll set so that a command is carried out at once, not at the next timer.
//!
//! [`Handle`] is what a thread holds to command the loop ([`crate::Supervisor::stop`] sends
//! [`Command::Stop`]); a control plane answering requests over RPC holds one too. A command
//! that needs an answer carries the sender to answer on.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;

/// Something another thread asks the event loop to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Stop every pool gracefully, in reverse dependency order (what TERM does).
    Stop,
    /// Kill every worker at once (what a second INT does).
    Kill,
    /// A call on the control socket ([`crate::control`]), answered on its own channel.
    Control(crate::control::server::Request),
}

/// The event loop has ended: it takes no more commands.
#[derive(Debug, thiserror::Error)]
#[error("the supervisor's event loop has ended")]
#[non_exhaustive]
pub struct Ended;

/// Sends [`Command`]s to one event loop; cheap to clone, usable from any thread.
#[derive(Clone, Debug)]
pub struct Handle {
    sender: Sender<Command>,
    wake: Arc<UnixStream>,
}

impl Handle {
    /// Queues `command` and wakes the loop.
    pub fn send(&self, command: Command) -> Result<(), Ended> {
        self.sender.send(command).map_err(|_| Ended)?;
        // One byte is enough; a full buffer means the loop is woken already.
        match (&*self.wake).write(&[1]) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(Ended),
        }
    }
}

/// The loop's end: what it polls and drains.
#[derive(Debug)]
pub(crate) struct Inbox {
    receiver: Receiver<Command>,
    wake: UnixStream,
    /// A write end of its own: with every handle gone, the wake-up socket would otherwise
    /// read as end-of-file, readable at every poll.
    _writer: Arc<UnixStream>,
}

/// A connected [`Handle`] and [`Inbox`].
pub(crate) fn channel() -> std::io::Result<(Handle, Inbox)> {
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    let (sender, receiver) = mpsc::channel();
    let write = Arc::new(write);
    Ok((
        Handle {
            sender,
            wake: Arc::clone(&write),
        },
        Inbox {
            receiver,
            wake: read,
            _writer: write,
        },
    ))
}

impl Inbox {
    /// Readable when a command may be waiting.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Every command sent so far. The wake-up bytes are read first, so that a command sent
    /// meanwhile wakes the loop again rather than being left behind.
    pub(crate) fn drain(&mut self) -> Vec<Command> {
        let mut buf = [0u8; 64];
        while matches!(self.wake.read(&mut buf), Ok(n) if n > 0) {}
        let mut commands = Vec::new();
        loop {
            match self.receiver.try_recv() {
                Ok(command) => commands.push(command),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return commands,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_sent_from_another_thread_makes_the_inbox_readable_and_arrives() {
        let (handle, mut inbox) = channel().unwrap();
        std::thread::spawn(move || handle.send(Command::Stop).unwrap())
            .join()
            .unwrap();
        let mut fds = [nix::poll::PollFd::new(inbox.fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)),
            Ok(1)
        );
        assert!(matches!(inbox.drain().as_slice(), [Command::Stop]));
        assert!(inbox.drain().is_empty());
    }

    #[test]
    fn with_every_handle_gone_the_inbox_stays_quiet() {
        let (handle, inbox) = channel().unwrap();
        drop(handle);
        let mut fds = [nix::poll::PollFd::new(inbox.fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(0));
    }

    #[test]
    fn sending_to_an_ended_loop_says_so() {
        let (handle, inbox) = channel().unwrap();
        drop(inbox);
        assert!(handle.send(Command::Stop).is_err());
    }
}

//! The signals the supervisor reads, without a signal mask: signal-hook handlers write to a
//! self-pipe the event loop polls, so they work in a program of many threads (any thread may
//! take the signal) and for PID 1 (a signal with a handler reaches PID 1, one left at its
//! default does not).
//!
//! signal-hook cannot give a signal its default disposition back: once the last supervisor
//! watching a signal is gone, the handler stays and would swallow it. So the first time the
//! process watches a signal that was at its default and terminates by default (TERM, INT, HUP,
//! USR1, ...), a fallback action is registered too, which carries out that default whenever no
//! supervisor watches the signal: a program that embedded a supervisor still dies of TERM
//! after [`crate::Supervisor::stop`].

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::sys::signal::Signal;
use signal_hook::iterator::backend::{Handle, SignalDelivery};
use signal_hook::iterator::exfiltrator::SignalOnly;

/// How many live [`Signals`] watch each signal number.
static WATCHERS: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];
/// Signal numbers this process has considered for a fallback already.
static SEEN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The watched signals: a descriptor to poll, and which of them arrived.
#[derive(Debug)]
pub(crate) struct Signals {
    delivery: SignalDelivery<UnixStream, SignalOnly>,
    handle: Handle,
    watched: Vec<Signal>,
}

impl Signals {
    /// Watching nothing yet.
    pub(crate) fn new() -> std::io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let delivery = SignalDelivery::with_pipe(read, write, SignalOnly, std::iter::empty::<i32>())?;
        Ok(Signals {
            handle: delivery.handle(),
            delivery,
            watched: Vec::new(),
        })
    }

    /// Also watches `signal` (once; a signal that cannot be caught, such as KILL, is refused).
    pub(crate) fn watch(&mut self, signal: Signal) -> std::io::Result<()> {
        if self.watched.contains(&signal) {
            return Ok(());
        }
        let number = signal as i32;
        if signal_hook::consts::FORBIDDEN.contains(&number) {
            return Err(std::io::Error::other(format!(
                "{signal} cannot be caught, or only by crashing"
            )));
        }
        fallback(signal)?;
        self.handle.add_signal(number)?;
        WATCHERS[number as usize].fetch_add(1, Ordering::SeqCst);
        self.watched.push(signal);
        Ok(())
    }

    /// The descriptor that is readable when a signal arrived.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.delivery.get_read().as_fd()
    }

    /// The signals that arrived since the last call, each once.
    pub(crate) fn pending(&mut self) -> Vec<Signal> {
        self.delivery
            .pending()
            .filter_map(|number| Signal::try_from(number).ok())
            .collect()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // The delivery's own drop unregisters its actions.
        self.handle.close();
        for signal in &self.watched {
            WATCHERS[*signal as usize].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Whether `signal`, at its default disposition, ends the process.
fn terminates_by_default(signal: Signal) -> bool {
    !matches!(
        signal,
        Signal::SIGCHLD
            | Signal::SIGCONT
            | Signal::SIGURG
            | Signal::SIGWINCH
            | Signal::SIGSTOP
            | Signal::SIGTSTP
            | Signal::SIGTTIN
            | Signal::SIGTTOU
    )
}

/// Registers, once per process and signal, the action that carries out `signal`'s default
/// disposition while no supervisor watches it; only for a signal still at its default now.
fn fallback(signal: Signal) -> std::io::Result<()> {
    let number = signal as i32;
    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !seen.insert(number) || !terminates_by_default(signal) {
        return Ok(());
    }
    if !super::sys::at_default(signal)? {
        // The program handles or ignores it itself; that stays as it was.
        return Ok(());
    }
    // SAFETY: the action only reads an atomic and calls emulate_default_handler, which is
    // meant for signal handlers (it resets the disposition and re-raises the signal); it
    // allocates nothing and takes no lock.
    unsafe {
        signal_hook::low_level::register(number, move || {
            if WATCHERS[number as usize].load(Ordering::SeqCst) == 0 {
                let _ = signal_hook::low_level::emulate_default_handler(number);
            }
        })
    }?;
    Ok(())
}

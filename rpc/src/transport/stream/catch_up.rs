//! Reading the rest of a frame under way without sleeping between the kernel's buffers.
//!
//! A large frame crosses a Unix socket in buffers of about 36 KiB. A reader that finds the
//! socket empty part way through sleeps, and the writer's next buffer wakes it: when the two
//! run on different CPUs, each such wake-up is an interrupt to a CPU that went idle, which
//! on this kind of VM costs hundreds of microseconds on both sides. Traced here, a 1 MiB echo
//! across two vCPUs then took 29 wake-ups each way and ran at a tenth of its speed, in runs
//! where the reader happened to keep up with the writer (in the others it found the whole
//! frame queued and ran at the raw socket's speed).
//!
//! So a reader inside a frame, whose writer has committed to the rest, looks again for a
//! short while before it sleeps. How long is adaptive, as for the shared-memory rings: the
//! budget doubles each time bytes came within it and halves each time they did not, between
//! [`MIN_BUDGET`] and [`MAX_BUDGET`]. A reader whose writer shares its CPU (which cannot
//! write while the reader spins) therefore stops spinning after a few fruitless looks; bytes
//! that came only once the spinner had lost its CPU to the writer count as fruitless too. A
//! machine with one CPU never spins.
//!
//! Between frames, a server thread about to sleep for the next request looks again too,
//! but only where the client can never run on a CPU this thread may run on: no CPU is in
//! both this thread's affinity and the client's (`SO_PEERCRED` names the client's pid),
//! read at the connection's first sleep and again at the first sleep [`RECHECK`] after the
//! last reading. Then a spin never
//! holds a CPU the client needs, and the next request, which on this kind of VM would
//! otherwise wake an idle vCPU (about 25 us), is seen within a look. It does not spin while
//! another of the connection's threads is awake (`Conn::look_before_sleep`): that one may
//! be running a handler on this CPU. The budget adapts as inside a frame, up to
//! [`MAX_BETWEEN`], and also grows to the time from a fruitless spin to the request that
//! woke the thread, if that is within the longest look and the spin was not cut short by the
//! scheduler: a connection whose next request comes later halves it on every fruitless
//! spin, down to a microsecond, and an idle connection costs one spin before it sleeps.
//! Limits: the client's affinity is its main thread's, and a client thread pinned elsewhere
//! is not seen; for a socket made by `socketpair` and handed on, `SO_PEERCRED` names the
//! process that made it, not the one that uses it; and handlers of the server's other connections
//! are not counted (a spinning thread that the scheduler preempts for one of them halves
//! its budget). Where the affinities meet (the usual case: nothing pinned), nobody spins
//! between frames: a socket does not say where
//! its peer runs (the shared-memory rings publish it), and with both ends on one CPU a spin
//! that the scheduler cut short looked like one that paid (tried: the one-CPU small call
//! went from 1.4x to 4.5x of the raw ping-pong). Nor does a client's awaited call: a future
//! that spins in `poll` holds up every other task of its executor.

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sched::{sched_getaffinity, CpuSet};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::Pid;

/// The shortest and longest look, and the first.
const MIN_BUDGET: Duration = Duration::from_micros(1);
const MAX_BUDGET: Duration = Duration::from_micros(50);
const FIRST_BUDGET: Duration = Duration::from_micros(10);
/// How often a connection reads its peer's affinity and its own again.
pub(super) const RECHECK: Duration = Duration::from_millis(100);
/// The longest look between frames (see the module docs).
const MAX_BETWEEN: Duration = Duration::from_micros(100);
/// A gap between two looks this long means the spinning thread lost its CPU.
const PREEMPTED: Duration = Duration::from_micros(20);

/// One receiver's spin state; the default never spins.
#[derive(Debug, Default)]
pub(super) struct CatchUp {
    /// How long the next spin may last; `None` where this end never spins (inside a frame:
    /// one CPU online, or not a socket; between frames: a peer that may share a CPU).
    budget: Option<Duration>,
    /// The longest look (0 for the default, which never spins).
    max: Duration,
    /// The last spin ran out after the scheduler had taken the CPU from it.
    cut_short: bool,
}

impl CatchUp {
    /// Spins for a socket on a machine with more than one CPU online (whatever this
    /// process's affinity: its peer may run on another).
    pub(super) fn new(socket: bool) -> CatchUp {
        // Read once per process: glibc reads a file under /sys for it.
        static ONLINE: OnceLock<i64> = OnceLock::new();
        let online = || {
            *ONLINE.get_or_init(|| {
                nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
                    .ok()
                    .flatten()
                    .unwrap_or(1)
            })
        };
        CatchUp {
            budget: (socket && online() > 1).then_some(FIRST_BUDGET),
            max: MAX_BUDGET,
            cut_short: false,
        }
    }

    /// Spins between frames on Unix socket `fd` if its peer runs only on CPUs this thread
    /// may not run on (see the module docs); otherwise never.
    pub(super) fn between_frames(fd: BorrowedFd<'_>) -> CatchUp {
        CatchUp {
            budget: peer_runs_elsewhere(fd).then_some(FIRST_BUDGET),
            max: MAX_BETWEEN,
            cut_short: false,
        }
    }

    /// True if a reader should look again rather than sleep.
    pub(super) fn enabled(&self) -> bool {
        self.budget.is_some()
    }

    /// A spin that ran out was followed by bytes `after` it began to sleep: a budget that
    /// long (and a little more) would have caught them, so it grows to that if it is
    /// within the longest look. A budget that only halved on fruitless spins and doubled on
    /// fruitful ones would never learn of bytes that come later than its first look. Not
    /// after a spin the scheduler cut short: the CPU was wanted by someone else.
    pub(super) fn slept(&mut self, after: Duration) {
        if let Some(budget) = &mut self.budget {
            if after <= self.max && !self.cut_short {
                *budget = (*budget).max((after * 5 / 4).min(self.max));
            }
        }
    }

    /// Calls `read` (a non-blocking read: `None` while nothing came) until it returns
    /// something or the budget runs out, and adapts the budget. `None` if nothing came.
    ///
    /// Bytes that came only after this thread lost its CPU between two looks count as a
    /// spin that did not pay: the writer most likely ran on the CPU the spin held.
    pub(super) fn spin<T>(&mut self, mut read: impl FnMut() -> Option<T>) -> Option<T> {
        let budget = self.budget?;
        let since = Instant::now();
        let (mut last, mut preempted) = (since, false);
        loop {
            if let Some(got) = read() {
                self.cut_short = false;
                self.budget = Some(match preempted {
                    false => (budget * 2).min(self.max),
                    true => (budget / 2).max(MIN_BUDGET),
                });
                return Some(got);
            }
            let now = Instant::now();
            preempted |= now - last >= PREEMPTED;
            last = now;
            if now - since >= budget {
                self.budget = Some((budget / 2).max(MIN_BUDGET));
                self.cut_short = preempted;
                return None;
            }
            std::hint::spin_loop();
        }
    }
}

/// True if the process at the other end of Unix socket `fd` may run only on CPUs this
/// thread may not: no CPU is in both affinities (the peer's main thread's). False when
/// either cannot be read (not a Unix socket, a peer in another pid namespace, one gone
/// already) or the peer is this process.
pub(super) fn peer_runs_elsewhere(fd: BorrowedFd<'_>) -> bool {
    let Ok(cred) = getsockopt(&fd, PeerCredentials) else {
        return false;
    };
    let pid = cred.pid();
    if pid <= 0 || pid as u32 == std::process::id() {
        return false;
    }
    let (Ok(ours), Ok(theirs)) = (
        sched_getaffinity(Pid::from_raw(0)),
        sched_getaffinity(Pid::from_raw(pid)),
    ) else {
        return false;
    };
    !(0..CpuSet::count()).any(|cpu| ours.is_set(cpu).unwrap_or(false) && theirs.is_set(cpu).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spinner(budget: Duration) -> CatchUp {
        CatchUp {
            budget: Some(budget),
            max: MAX_BUDGET,
            cut_short: false,
        }
    }

    #[test]
    fn the_budget_halves_when_nothing_comes_and_doubles_when_something_does() {
        let mut spin = spinner(Duration::from_micros(8));
        assert_eq!(spin.spin(|| None::<()>), None);
        assert_eq!(spin.budget, Some(Duration::from_micros(4)));
        for _ in 0..10 {
            spin.spin(|| None::<()>);
        }
        assert_eq!(spin.budget, Some(MIN_BUDGET), "never below the minimum");
        // Bytes at the first look: no clock is read before it, so the outcome cannot depend
        // on how long a look takes (a first run of the closure's code here can take a page
        // fault of 10-20 us, far past the 1 us budget).
        assert_eq!(spin.spin(|| Some(7)), Some(7));
        assert_eq!(spin.budget, Some(MIN_BUDGET * 2));
        for _ in 0..10 {
            spin.spin(|| Some(()));
        }
        assert_eq!(spin.budget, Some(MAX_BUDGET), "never above the maximum");
    }

    #[test]
    fn a_spin_that_ran_out_learns_how_long_the_bytes_took_if_a_look_could_have_lasted_that_long() {
        let mut spin = CatchUp {
            budget: Some(MIN_BUDGET),
            max: MAX_BETWEEN,
            cut_short: false,
        };
        spin.slept(Duration::from_micros(40));
        assert_eq!(
            spin.budget,
            Some(Duration::from_micros(50)),
            "the time it took and a quarter"
        );
        spin.slept(MAX_BETWEEN * 2);
        assert_eq!(
            spin.budget,
            Some(Duration::from_micros(50)),
            "too long to wait for: unchanged"
        );
        spin.slept(MAX_BETWEEN);
        assert_eq!(spin.budget, Some(MAX_BETWEEN), "never above the longest look");
        spin.cut_short = true;
        spin.budget = Some(MIN_BUDGET);
        spin.slept(Duration::from_micros(40));
        assert_eq!(
            spin.budget,
            Some(MIN_BUDGET),
            "after a spin the scheduler cut short: unchanged"
        );
        let mut never = CatchUp::default();
        never.slept(Duration::from_micros(40));
        assert_eq!(never.budget, None, "an end that never spins does not start");
    }

    #[test]
    fn a_peer_in_this_process_is_not_apart_from_it() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!peer_runs_elsewhere(std::os::fd::AsFd::as_fd(&a)));
        assert!(!CatchUp::between_frames(std::os::fd::AsFd::as_fd(&a)).enabled());
    }

    #[test]
    fn bytes_that_came_only_after_the_spinner_lost_its_cpu_do_not_grow_the_budget() {
        let mut spin = spinner(Duration::from_micros(400));
        let mut looks = 0;
        let got = spin.spin(|| {
            looks += 1;
            if looks == 2 {
                // What a thread descheduled between two looks sees: a gap.
                let gap = Instant::now();
                while gap.elapsed() < PREEMPTED * 2 {
                    std::hint::spin_loop();
                }
            }
            (looks == 3).then_some(())
        });
        assert_eq!(got, Some(()));
        assert_eq!(spin.budget, Some(Duration::from_micros(200)), "halved, not doubled");
    }

    #[test]
    fn what_is_not_a_socket_never_spins() {
        let mut spin = CatchUp::new(false);
        assert!(!spin.enabled());
        let mut looks = 0;
        assert_eq!(
            spin.spin(|| {
                looks += 1;
                Some(())
            }),
            None
        );
        assert_eq!(looks, 0, "not even one look");
    }
}

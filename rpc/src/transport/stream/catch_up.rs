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
//! machine with one CPU never spins. Between frames nobody spins: an idle connection costs
//! nothing.
//!
//! Spinning between frames as well (a client awaiting its reply, a server thread about to
//! sleep) was tried: across two CPUs a lone caller's round trip went from about 80 us to 14
//! us, but a socket does not say where its peer runs (the shared-memory rings publish it),
//! and with both ends on one CPU a spin that the scheduler cut short looked like one that
//! paid: the one-CPU small call went from 1.4x to 4.5x of the raw ping-pong. Not done.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The shortest and longest look, and the first.
const MIN_BUDGET: Duration = Duration::from_micros(1);
const MAX_BUDGET: Duration = Duration::from_micros(50);
const FIRST_BUDGET: Duration = Duration::from_micros(10);
/// A gap between two looks this long means the spinning thread lost its CPU.
const PREEMPTED: Duration = Duration::from_micros(20);

/// One receiver's spin state; the default never spins.
#[derive(Debug, Default)]
pub(super) struct CatchUp {
    /// `None` on a machine with one CPU, or for a descriptor that is not a socket.
    budget: Option<Duration>,
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
        }
    }

    /// True if a reader inside a frame should look again rather than sleep.
    pub(super) fn enabled(&self) -> bool {
        self.budget.is_some()
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
                self.budget = Some(match preempted {
                    false => (budget * 2).min(MAX_BUDGET),
                    true => (budget / 2).max(MIN_BUDGET),
                });
                return Some(got);
            }
            let now = Instant::now();
            preempted |= now - last >= PREEMPTED;
            last = now;
            if now - since >= budget {
                self.budget = Some((budget / 2).max(MIN_BUDGET));
                return None;
            }
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spinner(budget: Duration) -> CatchUp {
        CatchUp { budget: Some(budget) }
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

//! When to spin on a ring before parking: [`Strategy`] and the adaptive budget.
//!
//! A wake-up through the kernel costs tens of microseconds across vCPUs, while a peer on
//! another CPU that is about to answer does so in a fraction of a microsecond; spinning on
//! the CPU the peer needs, on the other hand, only delays it. So [`Strategy::Adaptive`] spins
//! only when the two ends last ran on different CPUs (each end publishes `sched_getcpu` in
//! the ring header, so two ends on a one-CPU machine never spin), for a budget that halves
//! each time spinning did not pay and doubles each time it did, or the data came soon after
//! parking (spinning a little longer would have caught it), between [`MIN_BUDGET`] and
//! [`MAX_BUDGET`]. Two ends on one CPU yield it to each other instead, for the same budget:
//! the peer that was kicked runs at once, answers while this end still watches (no kick
//! back, no wake-up), and a round trip costs a `sched_yield` per side rather than a doorbell
//! write, a poll and a drain. An idle connection therefore parks after one short spin (or a
//! few yields that return at once) and costs nothing until the peer kicks it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How a shared-memory connection waits for its peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Spin while it pays: not at all when both ends share a CPU (there this end gives
    /// the CPU to its peer with `sched_yield` instead, looking at the ring in between),
    /// otherwise for an adaptive budget of a few to some tens of microseconds, then park on
    /// the doorbell.
    #[default]
    Adaptive,
    /// Spin up to 10 ms before parking, even on a shared CPU: lowest latency for a peer that
    /// answers at once on its own CPU, at the price of a busy CPU.
    Spin,
    /// Never spin: park on the doorbell at once. Each wake-up goes through the kernel.
    Block,
}

const MIN_BUDGET: Duration = Duration::from_micros(2);
const MAX_BUDGET: Duration = Duration::from_micros(50);
const SPIN_BUDGET: Duration = Duration::from_millis(10);
/// How long a producer that finds its consumer parked waits for it to look anyway before it
/// kicks: a consumer between two frames (a server thread on its way back from sending a
/// reply) usually does, and a kick costs a system call and may wake a second thread.
const KICK_GRACE: Duration = Duration::from_micros(2);

/// How an end waits for its peer before it parks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Approach {
    /// Look at the ring, on this CPU, for up to this long.
    Spin(Duration),
    /// Give the CPU to the peer, looking at the ring in between (`yield_until`).
    Yield,
    /// Park at once.
    Park,
}

/// One waiting end's spin state.
#[derive(Debug)]
pub(crate) struct Spinner {
    strategy: Strategy,
    budget: Duration,
}

/// The end of a spin, read off the clock only once the spin has not paid at once: most
/// spins end within their first looks at the ring, and a clock read costs more than a look
/// (tens of nanoseconds on a VM). A budget therefore counts from the first check, a few
/// looks in.
struct Clock {
    budget: Duration,
    deadline: Option<Instant>,
    end: Option<Instant>,
}

impl Clock {
    fn new(budget: Duration, deadline: Option<Instant>) -> Clock {
        Clock {
            budget,
            deadline,
            end: None,
        }
    }

    /// True once the budget or the deadline has passed.
    fn ran_out(&mut self) -> bool {
        let now = Instant::now();
        let end = *self.end.get_or_insert_with(|| {
            let end = now + self.budget;
            self.deadline.map_or(end, |deadline| end.min(deadline))
        });
        now >= end
    }
}

/// The CPU the caller runs on, plus one (0: unknown).
fn current_cpu() -> u32 {
    nix::sched::sched_getcpu().map_or(0, |cpu| cpu as u32 + 1)
}

/// Publishes the CPU this end runs on for the peer's spinner.
pub(crate) fn publish_cpu(slot: &AtomicU32) {
    let cpu = current_cpu();
    // Relaxed: a hint; a stale value only makes one spin decision worse.
    if slot.load(Ordering::Relaxed) != cpu {
        slot.store(cpu, Ordering::Relaxed);
    }
}

impl Spinner {
    pub(crate) fn new(strategy: Strategy) -> Spinner {
        Spinner {
            strategy,
            budget: MAX_BUDGET,
        }
    }

    /// Whether spinning pays between the two ends now.
    pub(crate) fn pays(&self, mine: &AtomicU32, theirs: &AtomicU32) -> bool {
        match self.strategy {
            Strategy::Block => false,
            Strategy::Spin => true,
            Strategy::Adaptive => {
                // Not the affinity of this process: a server pinned to one CPU still gains
                // from spinning while its client runs on another. On a machine with one CPU
                // both ends always publish the same one.
                let peer = theirs.load(Ordering::Relaxed);
                peer == 0 || peer != mine.load(Ordering::Relaxed)
            }
        }
    }

    /// How to wait now, before parking (publishing this end's CPU first).
    fn approach(&self, mine: &AtomicU32, theirs: &AtomicU32) -> Approach {
        match self.strategy {
            Strategy::Block => Approach::Park,
            Strategy::Spin => Approach::Spin(SPIN_BUDGET),
            Strategy::Adaptive => {
                publish_cpu(mine);
                match self.pays(mine, theirs) {
                    true => Approach::Spin(self.budget),
                    false => Approach::Yield,
                }
            }
        }
    }

    /// Before a kick: spins briefly, if that pays, until `ready()` says no kick is needed.
    pub(crate) fn grace(&self, mine: &AtomicU32, theirs: &AtomicU32, mut ready: impl FnMut() -> bool) -> bool {
        if !self.pays(mine, theirs) {
            return false;
        }
        let mut clock = Clock::new(KICK_GRACE, None);
        loop {
            for _ in 0..16 {
                if ready() {
                    return true;
                }
                std::hint::spin_loop();
            }
            if clock.ran_out() {
                return false;
            }
        }
    }

    /// Spins until `ready()`, the budget runs out or `deadline` passes; true if ready.
    /// `mine` is this end's CPU slot in the header, `theirs` the peer's.
    pub(crate) fn spin(
        &mut self,
        mine: &AtomicU32,
        theirs: &AtomicU32,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        let budget = match self.approach(mine, theirs) {
            Approach::Park => return false,
            Approach::Yield => return self.yield_until(deadline, ready),
            Approach::Spin(budget) => budget,
        };
        let mut clock = Clock::new(budget, deadline);
        loop {
            // Look at the clock only now and then: it costs more than a look at the ring.
            for _ in 0..64 {
                if ready() {
                    if self.strategy == Strategy::Adaptive {
                        self.budget = (self.budget * 2).min(MAX_BUDGET);
                    }
                    return true;
                }
                std::hint::spin_loop();
            }
            if clock.ran_out() {
                if self.strategy == Strategy::Adaptive {
                    self.budget = (self.budget / 2).max(MIN_BUDGET);
                }
                return false;
            }
        }
    }

    /// On a CPU shared with the peer: gives the CPU away (`sched_yield`) until `ready()`,
    /// the budget runs out or `deadline` passes. A peer that was woken to answer (a kicked
    /// server thread) runs at once and finds this end still watching, so it needs no kick
    /// back, and this end no wake-up: a round trip costs a yield on each side instead of a
    /// doorbell write, a poll and a drain. With nothing else to run the yield returns at
    /// once; the budget (shared with spinning, adapted the same way) bounds that.
    fn yield_until(&mut self, deadline: Option<Instant>, mut ready: impl FnMut() -> bool) -> bool {
        let mut clock = Clock::new(self.budget, deadline);
        // The first yield before the first look at the clock: it usually runs the peer,
        // which answers meanwhile, and a clock read costs more than a look at the ring.
        let mut yielded = false;
        loop {
            if ready() {
                self.budget = (self.budget * 2).min(MAX_BUDGET);
                return true;
            }
            if yielded && clock.ran_out() {
                self.budget = (self.budget / 2).max(MIN_BUDGET);
                return false;
            }
            yielded = true;
            let _ = nix::sched::sched_yield();
        }
    }

    /// Learns from a park: the data came `parked_for` after parking. Had that been within
    /// the largest budget, a longer spin would have saved the wake-up.
    pub(crate) fn parked(&mut self, parked_for: Duration) {
        if self.strategy == Strategy::Adaptive && parked_for <= MAX_BUDGET {
            self.budget = (self.budget * 2).min(MAX_BUDGET);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_yields_rather_than_spins_when_the_peer_last_ran_on_this_cpu() {
        let spinner = Spinner::new(Strategy::Adaptive);
        let (mine, theirs) = (AtomicU32::new(0), AtomicU32::new(0));
        // The peer "runs" wherever we do: the thread may migrate, so retry a few times.
        let mut approach = None;
        for _ in 0..100 {
            theirs.store(current_cpu(), Ordering::Relaxed);
            approach = Some(spinner.approach(&mine, &theirs));
            if mine.load(Ordering::Relaxed) == theirs.load(Ordering::Relaxed) {
                break;
            }
        }
        assert_eq!(approach, Some(Approach::Yield));
        // A CPU this machine does not have: the peer is elsewhere, wherever we run.
        theirs.store(u32::MAX, Ordering::Relaxed);
        assert!(
            matches!(spinner.approach(&mine, &theirs), Approach::Spin(_)),
            "another CPU: spin"
        );
        assert_eq!(Spinner::new(Strategy::Block).approach(&mine, &theirs), Approach::Park);
    }

    #[test]
    fn an_adaptive_budget_shrinks_when_spinning_fails_and_grows_after_a_short_park() {
        let mut spinner = Spinner::new(Strategy::Adaptive);
        let (mine, theirs) = (AtomicU32::new(0), AtomicU32::new(0));
        for _ in 0..10 {
            assert!(!spinner.spin(&mine, &theirs, None, || false));
        }
        assert_eq!(spinner.budget, MIN_BUDGET);
        spinner.parked(Duration::from_micros(10));
        assert_eq!(spinner.budget, MIN_BUDGET * 2);
        spinner.parked(Duration::from_secs(1));
        assert_eq!(
            spinner.budget,
            MIN_BUDGET * 2,
            "a long park says nothing about spinning"
        );
    }

    #[test]
    fn block_never_looks_and_spin_stops_when_ready() {
        let (mine, theirs) = (AtomicU32::new(0), AtomicU32::new(0));
        assert!(!Spinner::new(Strategy::Block).spin(&mine, &theirs, None, || true));
        let mut n = 0;
        assert!(Spinner::new(Strategy::Spin).spin(&mine, &theirs, None, || {
            n += 1;
            n == 1000
        }));
    }
}

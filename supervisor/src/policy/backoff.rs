//! Restart delays and restart intensity: pure arithmetic over a clock the caller passes in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::manifest::{Backoff, Limit};

/// The delay before restart number `failures + 1` (0 for the first), before jitter:
/// `initial * factor^failures`, capped at `max`.
pub fn base_delay(backoff: &Backoff, failures: u32) -> Duration {
    let factor = backoff.factor.max(1.0).powi(failures.min(64) as i32);
    let secs = backoff.initial.as_secs_f64() * factor;
    if !secs.is_finite() || secs >= backoff.max.as_secs_f64() {
        backoff.max
    } else {
        Duration::from_secs_f64(secs)
    }
}

/// `delay` spread by ±`jitter` (a fraction), with `unit` a uniform draw from [0, 1).
pub fn jittered(delay: Duration, jitter: f64, unit: f64) -> Duration {
    let spread = (unit * 2.0 - 1.0) * jitter.clamp(0.0, 1.0);
    Duration::from_secs_f64((delay.as_secs_f64() * (1.0 + spread)).max(0.0))
}

/// Restarts within a sliding window.
#[derive(Clone, Debug, Default)]
pub struct Intensity {
    restarts: VecDeque<Instant>,
}

impl Intensity {
    /// Records a restart at `now`; false if that exceeds `limit` (the worker must give up).
    pub fn allow(&mut self, limit: &Limit, now: Instant) -> bool {
        while let Some(&first) = self.restarts.front() {
            if now.saturating_duration_since(first) >= limit.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() <= limit.restarts as usize
    }
}

/// A small deterministic generator for jitter (xorshift64*), seedable for tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// A uniform draw from [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::LimitAction;

    /// The documented defaults: 100 ms, doubling, up to 30 s, ±10 %.
    fn backoff() -> Backoff {
        crate::manifest::Pool::new("t", Vec::new()).backoff
    }

    #[test]
    fn delays_grow_by_the_factor_and_stop_at_the_maximum() {
        let b = backoff();
        assert_eq!(base_delay(&b, 0), Duration::from_millis(100));
        assert_eq!(base_delay(&b, 1), Duration::from_millis(200));
        assert_eq!(base_delay(&b, 3), Duration::from_millis(800));
        assert_eq!(base_delay(&b, 20), Duration::from_secs(30));
        assert_eq!(base_delay(&b, u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(1000), 0.1, rng.unit());
            assert!(
                d >= Duration::from_millis(900) && d <= Duration::from_millis(1100),
                "{d:?}"
            );
        }
        assert_eq!(
            jittered(Duration::from_millis(100), 0.0, 0.99),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn the_intensity_window_slides() {
        let limit = Limit {
            restarts: 2,
            within: Duration::from_secs(10),
            start_attempts: 0,
            then: LimitAction::Stop,
        };
        let t0 = Instant::now();
        let mut i = Intensity::default();
        assert!(i.allow(&limit, t0));
        assert!(i.allow(&limit, t0 + Duration::from_secs(1)));
        assert!(!i.allow(&limit, t0 + Duration::from_secs(2)), "third within 10 s");
        let mut i = Intensity::default();
        assert!(i.allow(&limit, t0));
        assert!(i.allow(&limit, t0 + Duration::from_secs(5)));
        assert!(
            i.allow(&limit, t0 + Duration::from_secs(11)),
            "the first has left the window"
        );
    }
}

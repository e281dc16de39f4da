//! Reconnect delays: exponential from 100 ms, capped at 10 s, with full jitter so a restarted hub is not hit by the whole fleet at once.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;

pub const MIN_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// An endless schedule of jittered delays.
#[derive(Debug)]
pub struct Backoff {
    schedule: ExponentialBackoff,
}

fn schedule() -> ExponentialBackoff {
    // backon's own jitter adds up to one extra delay on top; we want full jitter (uniform in [0, d]).
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .without_max_times()
        .build()
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Self {
            schedule: schedule(),
        }
    }

    /// The next ceiling, before jitter.
    fn next_ceiling(&mut self) -> Duration {
        // without_max_times makes the iterator endless; the fallback only guards a future backon change.
        self.schedule.next().unwrap_or(MAX_DELAY).min(MAX_DELAY)
    }

    /// The next delay to sleep: uniform in [0, ceiling].
    pub fn next_delay(&mut self) -> Duration {
        full_jitter(self.next_ceiling(), &mut rand::rng())
    }

    /// Starts over from the minimum, after a link that was established and lasted.
    pub fn reset(&mut self) {
        self.schedule = schedule();
    }
}

pub fn full_jitter(ceiling: Duration, rng: &mut impl Rng) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_grow_then_cap_at_ten_seconds() {
        let mut b = Backoff::new();
        let ceilings: Vec<Duration> = (0..20).map(|_| b.next_ceiling()).collect();
        // backon multiplies in f32, so allow a hair of rounding.
        let near = |d: Duration, ms: u64| {
            d.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(10)
        };
        assert!(near(ceilings[0], 100), "{ceilings:?}");
        assert!(near(ceilings[1], 200), "{ceilings:?}");
        assert!(near(ceilings[2], 400), "{ceilings:?}");
        assert!(ceilings.windows(2).all(|w| w[0] <= w[1]));
        assert!(ceilings.iter().all(|d| *d <= MAX_DELAY));
        assert_eq!(*ceilings.last().unwrap(), MAX_DELAY);
    }

    #[test]
    fn retries_forever() {
        let mut b = Backoff::new();
        for _ in 0..10_000 {
            assert!(b.next_delay() <= MAX_DELAY);
        }
    }

    #[test]
    fn delays_are_fully_jittered() {
        let mut b = Backoff::new();
        for _ in 0..10 {
            b.next_delay();
        }
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= MAX_DELAY));
        // Full jitter spreads over [0, cap]: some well below half, some well above, not all equal.
        assert!(delays.iter().any(|d| *d < MAX_DELAY / 4));
        assert!(delays.iter().any(|d| *d > MAX_DELAY * 3 / 4));
        assert!(delays.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new();
        for _ in 0..30 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_ceiling().abs_diff(MIN_DELAY) < Duration::from_micros(10));
        assert!(b.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut rng = rand::rng();
        assert_eq!(full_jitter(Duration::ZERO, &mut rng), Duration::ZERO);
        for _ in 0..1000 {
            assert!(full_jitter(Duration::from_millis(5), &mut rng) <= Duration::from_millis(5));
        }
    }
}

//! Exponential reconnect backoff with jitter.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Delays between reconnect attempts: the n-th consecutive failure waits a random time in
/// `[d/2, d]` where `d = min(min_ms * 2^(n-1), max_ms)`. The randomness keeps the peers of a
/// restarted node from reconnecting in lockstep; the seed makes a run reproducible.
#[derive(Debug)]
pub(crate) struct Backoff {
    delay_ms_min: u64,
    delay_ms_max: u64,
    failures: u32,
    rng: SmallRng,
}

/// Doubling stops here; `delay_ms_max` caps the delay long before.
const SHIFT_MAX: u32 = 32;

impl Backoff {
    pub(crate) fn new(delay_ms_min: u64, delay_ms_max: u64, seed: u64) -> Backoff {
        assert!(
            delay_ms_min >= 1 && delay_ms_min <= delay_ms_max,
            "validated by TcpConfig"
        );
        Backoff {
            delay_ms_min,
            delay_ms_max,
            failures: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Records one more failure and returns how long to wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let shift = self.failures.min(SHIFT_MAX);
        let ceiling_ms = self
            .delay_ms_min
            .saturating_mul(1u64 << shift)
            .min(self.delay_ms_max);
        self.failures = self.failures.saturating_add(1);
        let floor_ms = (ceiling_ms / 2).max(1);
        Duration::from_millis(self.rng.gen_range(floor_ms..=ceiling_ms))
    }

    /// Consecutive failures so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets past failures after a success.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A seed that differs between processes and peers, for jitter.
pub(crate) fn seed(salt: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_maximum() {
        let mut backoff = Backoff::new(10, 1_000, 42);
        let mut ceiling = 10;
        for _ in 0..40 {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay} outside [{}, {ceiling}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(1_000);
        }
        assert_eq!(backoff.failures(), 40);
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(10));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut a = Backoff::new(1_000, 1_000, 1);
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| a.next_delay()).collect();
        assert!(delays.len() > 1, "jitter must vary the delay");
    }
}

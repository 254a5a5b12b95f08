//! How late the event loop's ticks fire: the delay between when a tick should fire and when
//! the loop gets to it. A leader whose loop lags sends heartbeats late, and followers that wait
//! longer than their election timeout start an election though nothing failed; this is the
//! number that shows it coming.

use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 64 µs, 128 µs, ... about 4.3 s; the last
/// bucket takes everything above.
const BUCKET_BOUNDS_US: [u64; 17] = {
    let mut bounds = [0u64; 17];
    let mut i = 0;
    while i < 17 {
        bounds[i] = 64 << i;
        i += 1;
    }
    bounds
};

/// A histogram of event-loop lag: counts per power-of-two bucket, and the maximum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LagHistogram {
    /// `counts[i]`: lags at most [`LagHistogram::bucket_bounds_us`]`()[i]`, and above the bound
    /// before; the last count takes every lag above the last bound.
    pub counts: [u64; 18],
    /// The largest lag seen, in microseconds.
    pub max_us: u64,
    /// Sum of every lag, in microseconds (for a mean, or Prometheus' `_sum`).
    pub sum_us: u64,
}

impl LagHistogram {
    /// The upper bounds of the buckets but the last, in microseconds.
    pub fn bucket_bounds_us() -> &'static [u64] {
        &BUCKET_BOUNDS_US
    }

    /// Records one lag.
    pub fn record(&mut self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(BUCKET_BOUNDS_US.len());
        self.counts[bucket] += 1;
        self.max_us = self.max_us.max(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Lags recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// An upper bound of the `q` quantile (0..=1) in microseconds: the bound of the bucket it
    /// falls in (the maximum for the last bucket); 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return BUCKET_BOUNDS_US
                    .get(i)
                    .map_or(self.max_us, |bound| (*bound).min(self.max_us));
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let mut h = LagHistogram::default();
        for _ in 0..98 {
            h.record(Duration::from_micros(50));
        }
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(10));
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_us(0.5), 64, "the first bucket's bound");
        assert_eq!(h.quantile_us(0.99), 4_096);
        assert_eq!(h.quantile_us(1.0), 10_000_000);
        assert_eq!(h.max_us, 10_000_000);
    }
}

//! Plain-data metric types: a [`Histogram`] with power-of-two buckets that costs an array
//! index and three additions per sample, no lock and no allocation. The node
//! ([`crate::node::NodeMetrics`]) and the log store keep their numbers in them; an embedder
//! exports them however it likes (the `raft` binary's Prometheus endpoint is one way). No
//! exporter is pulled in here.

use std::time::Duration;

/// Buckets of every [`Histogram`]: 17 with an upper bound, doubling from the first, and one
/// for everything above the last bound.
pub const HISTOGRAM_BUCKETS: usize = 18;

/// Counts of `u64` samples in power-of-two buckets, with their sum and maximum.
///
/// Bucket `i < 17` holds the samples at most `first_bound << i` (and above the bound before
/// it); the last bucket holds every sample above `first_bound << 16`. With microseconds and
/// a first bound of 64, the bounds run from 64 µs to about 4.2 s; with entries and a first
/// bound of 1, from 1 to 65,536. A sample's bucket is found with one `leading_zeros`, so
/// recording costs about as much as incrementing three counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    first_bound: u64,
    counts: [u64; HISTOGRAM_BUCKETS],
    sum: u64,
    max: u64,
}

impl Histogram {
    /// An empty histogram whose first bucket ends at `first_bound`, rounded up to a power of
    /// two (at least 1).
    pub const fn new(first_bound: u64) -> Histogram {
        let first_bound = if first_bound <= 1 {
            1
        } else {
            first_bound.next_power_of_two()
        };
        Histogram {
            first_bound,
            counts: [0; HISTOGRAM_BUCKETS],
            sum: 0,
            max: 0,
        }
    }

    /// Durations in microseconds, from 64 µs to about 4.2 s (what a disk sync, a tick's lag
    /// or a write's round trip take).
    pub const fn microseconds() -> Histogram {
        Histogram::new(64)
    }

    /// Long durations in microseconds, from 1 ms to about 67 s (snapshot builds, transfers and
    /// restores).
    pub const fn long_microseconds() -> Histogram {
        Histogram::new(1 << 10)
    }

    /// Counts of things (entries per batch), from 1 to 65,536.
    pub const fn counts_of_items() -> Histogram {
        Histogram::new(1)
    }

    /// Records one sample.
    pub fn record(&mut self, value: u64) {
        let above_first = value.saturating_sub(1) / self.first_bound;
        let bucket = (u64::BITS - above_first.leading_zeros()) as usize;
        self.counts[bucket.min(HISTOGRAM_BUCKETS - 1)] += 1;
        self.sum = self.sum.saturating_add(value);
        self.max = self.max.max(value);
    }

    /// Records a duration, in microseconds.
    pub fn record_duration(&mut self, duration: Duration) {
        self.record(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    /// The upper bound of the first bucket.
    pub fn first_bound(&self) -> u64 {
        self.first_bound
    }

    /// The upper bound of bucket `i`, `None` for the last one (no bound).
    pub fn bound(&self, i: usize) -> Option<u64> {
        (i < HISTOGRAM_BUCKETS - 1).then(|| self.first_bound << i)
    }

    /// Samples per bucket (not cumulative); see [`Histogram::bound`] for the buckets.
    pub fn counts(&self) -> &[u64; HISTOGRAM_BUCKETS] {
        &self.counts
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of every sample (saturating).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The largest sample, 0 when none was recorded.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// An upper bound of the `q` quantile (0..=1): the bound of the bucket it falls in, or the
    /// maximum if that is lower (and for the last bucket); 0 when nothing was recorded.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return self.bound(i).map_or(self.max, |bound| bound.min(self.max));
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_the_bucket_whose_bound_is_the_first_at_or_above_them() {
        let mut h = Histogram::new(64);
        for value in [0, 1, 64, 65, 128, 129, 64 << 16, (64 << 16) + 1, u64::MAX] {
            h.record(value);
        }
        let counts = h.counts();
        assert_eq!(counts[0], 3, "0, 1 and 64: {counts:?}");
        assert_eq!(counts[1], 2, "65 and 128");
        assert_eq!(counts[2], 1, "129");
        assert_eq!(counts[16], 1, "the last bound itself");
        assert_eq!(counts[17], 2, "above every bound");
        assert_eq!(h.count(), 9);
        assert_eq!(h.max(), u64::MAX);
        assert_eq!(h.sum(), u64::MAX, "the sum saturates");
        assert_eq!(h.bound(0), Some(64));
        assert_eq!(h.bound(16), Some(64 << 16));
        assert_eq!(h.bound(17), None);
    }

    #[test]
    fn item_counts_start_at_one() {
        let mut h = Histogram::counts_of_items();
        for value in [1, 2, 3, 4, 5, 1024] {
            h.record(value);
        }
        assert_eq!(&h.counts()[..5], &[1, 1, 2, 1, 0], "1 | 2 | 3,4 | 5 | -");
        assert_eq!(h.counts()[10], 1, "1024 = 1 << 10");
        assert_eq!(h.sum(), 1039);
    }

    #[test]
    fn first_bounds_are_powers_of_two() {
        assert_eq!(Histogram::new(0).first_bound(), 1);
        assert_eq!(Histogram::new(100).first_bound(), 128);
        assert_eq!(Histogram::long_microseconds().bound(16), Some(1 << 26));
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let mut h = Histogram::microseconds();
        for _ in 0..98 {
            h.record_duration(Duration::from_micros(50));
        }
        h.record_duration(Duration::from_millis(3));
        h.record_duration(Duration::from_secs(10));
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), 64, "the first bucket's bound");
        assert_eq!(h.quantile(0.99), 4_096);
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(Histogram::microseconds().quantile(0.5), 0);
    }
}

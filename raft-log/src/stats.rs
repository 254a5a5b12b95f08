//! [`LogStats`]: what a log wrote and how long its syncs took, for metrics. Counted under the
//! writer lock that every append already holds, so counting takes no lock of its own; the
//! sync is timed with two clock reads around the `fdatasync` it runs anyway.

use raft_core::metrics::Histogram;

/// What a [`crate::RaftLog`] wrote since it was opened ([`crate::RaftLog::stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStats {
    /// Batches appended: calls to `append` or `submit` with at least one entry, written.
    pub batches: u64,
    /// Entries appended.
    pub entries: u64,
    /// Bytes of records written into segments: headers, payloads and padding. (A log that
    /// writes direct also rewrites the block under its last records with each batch; those
    /// bytes are not counted again.)
    pub bytes_written: u64,
    /// `fdatasync` calls that made appended records durable: what appenders wait for. Group
    /// commit makes this smaller than `batches` under concurrency. The syncs of segment rolls,
    /// truncations, purges and hard state saves are not counted.
    pub syncs: u64,
    /// Duration of each of those syncs, in microseconds (64 µs to about 4.2 s, then above).
    pub sync_us: Histogram,
}

impl Default for LogStats {
    fn default() -> Self {
        LogStats {
            batches: 0,
            entries: 0,
            bytes_written: 0,
            syncs: 0,
            sync_us: Histogram::microseconds(),
        }
    }
}

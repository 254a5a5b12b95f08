//! # raft-log
//!
//! A durable Raft log in a directory of fixed-size segment files: every record carries a
//! CRC32, appends return only once synced and concurrent appends share one `fdatasync` (group
//! commit), reads are served from memory maps, and recovery cuts a torn tail but refuses to
//! open over corruption anywhere else, naming the file and offset.
//!
//! Point reads either copy the entry out ([`RaftLog::entry`]) or borrow its payload from the
//! map without a copy ([`RaftLog::entry_ref`], an [`EntryRef`]); both check the record's CRC.
//! Appends go through the page cache, or around it with [`Options::direct_io`] (an
//! experiment: sometimes faster durable appends, sometimes slower, and what was appended is
//! read back from the disk).
//!
//! [`RaftLog::stats`] tells what the log wrote ([`LogStats`]: batches, entries, bytes) and
//! how long each `fdatasync` that appenders waited for took, as plain numbers for metrics.
//!
//! [`RaftLog`] is the synchronous API. [`RaftLogStore`] adapts it to raft-core's async
//! [`LogStore`](raft_core::node::LogStore) trait, running blocking writes on tokio's blocking
//! pool. The byte layout is drawn in `FORMAT.md` and at the top of the
//! [`format`](mod@format) module; measurements against the peers are in `BENCHMARKS.md`.
//! [`floor`] is the plain `pwrite` + `fdatasync` file that every measurement of durable
//! appends compares raft-log with (the benchmarks and `raft bench-log`).
//!
//! ```
//! use raft_core::{Entry, HardState, LogId};
//! use raft_log::{Options, RaftLog};
//!
//! # fn main() -> Result<(), raft_log::Error> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let options = Options { segment_bytes: 64 * 1024, ..Options::default() };
//! let log = RaftLog::open(dir.path(), options)?;
//! // Durable when `append` returns.
//! log.append(&[Entry::normal(1, 1, "set x=1"), Entry::normal(1, 2, "set y=2")])?;
//! log.save_hard_state(HardState { term: 1, voted_for: Some(1), commit: 2 })?;
//! drop(log);
//!
//! // A restart finds everything again.
//! let log = RaftLog::open(dir.path(), options)?;
//! assert_eq!(log.last_index(), 2);
//! assert_eq!(log.entries(1, 3, u64::MAX)?[1].data, "set y=2");
//! assert_eq!(log.hard_state().commit, 2);
//!
//! // A conflicting leader replaces the suffix; a snapshot purges the prefix.
//! log.truncate(2)?;
//! log.append(&[Entry::normal(2, 2, "set y=3")])?;
//! log.purge(LogId::new(1, 1))?;
//! assert_eq!((log.first_index(), log.last_index()), (2, 2));
//! # Ok(())
//! # }
//! ```
//!
//! # Limits
//! - A segment is [`Options::segment_bytes`] long (default [`SEGMENT_BYTES_DEFAULT`], between
//!   [`SEGMENT_BYTES_MIN`] and [`SEGMENT_BYTES_MAX`]). An entry whose record does not fit in
//!   an empty segment is refused with [`Error::EntryTooLarge`]: its payload may be at most
//!   [`Options::entry_bytes_max`] bytes. Raise `segment_bytes` for larger entries.
//! - Bytes read from disk are checked against the segment size before they are used, so a
//!   damaged file yields an error, never a panic or an allocation of a length read from disk.
//! - The in-memory index costs 4 bytes per entry.
//! - Up to [`FREE_SEGMENTS_MAX`] purged segment files are kept for reuse (so the directory can
//!   hold that many segments more than the log needs); new segments reuse them instead of
//!   zero-filling new files.
//! - One process opens a log directory at a time: [`RaftLog::open`] takes a [`DirLock`] (an
//!   exclusive `flock` on `<dir>/LOCK`, which holds the pid), and a second opener, in any
//!   process, fails with [`Error::Locked`] naming the directory and that pid.
//! - A segment file whose length is not a multiple of 8 bytes (every segment this crate
//!   writes is a multiple of 4 KiB) is corrupt: opening fails with [`Error::Corrupt`].
//!
//! # Torn writes versus corruption
//! Each record stores `durable_bytes`: how much of its segment was synced when it was
//! written. A bad record at offset `x` of the last segment is a torn write, cut off, when no
//! later intact record claims `durable_bytes > x`; otherwise it is corruption. Segments before
//! the last are synced in full before the next one starts, so a bad record there is always
//! corruption. The limit of this rule: damage (a bit flip) inside the last one or two sync
//! groups of the log is indistinguishable from a torn write, and those entries are cut with a
//! warning rather than reported.
//!
//! A truncation rewrites records that had been synced, so it could leave that rule a false
//! positive: a crash while it zeroes them can keep an intact record after a zeroed one. It
//! therefore makes its cut point durable first (the `truncating` file) and recovery finishes
//! any truncation that file names; the file is gone before `truncate` returns.
//!
//! # Failures
//! Every write, sync and directory change goes through one internal seam (the `io` module),
//! which the crate's tests use to fail, panic or crash at every step of appends (with the
//! segment rolls they cause), truncations, purges and hard state saves. After a failed write or
//! sync, or a panic while writing, the log refuses writes ([`Error::Poisoned`]) until it is
//! opened again; the reopened log holds a state between the one before the operation and the
//! one after it.

#![warn(missing_docs)]

mod borrow;
mod crc;
mod direct;
mod error;
pub mod floor;
pub mod format;
mod io;
mod lock;
mod log;
mod segment;
mod stats;
mod store;
#[cfg(test)]
mod tests;

pub use borrow::EntryRef;
pub use error::{Error, Result};
pub use lock::{DirLock, LOCK_FILE};
pub use log::{RaftLog, Ticket, FREE_SEGMENTS_MAX, HARD_STATE_FILE, PURGED_FILE, TRUNCATING_FILE};
pub use stats::LogStats;
pub use store::RaftLogStore;

/// Default segment size: 64 MiB, large enough that rolling (a sync, a rename and a directory
/// sync) is rare, small enough that purging frees space in useful steps.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment size: 4 KiB (one page), for tests that want many segments.
pub const SEGMENT_BYTES_MIN: u64 = 4 << 10;
/// Largest segment size: 1 GiB, so that record offsets fit the `u32` fields and one map.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Segment sizes are a multiple of the page size, 4 KiB.
pub const SEGMENT_BYTES_ALIGN: u64 = 4 << 10;

/// How a log is laid out. Options may change between opens: existing segments keep their
/// size, new ones get the new size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Size of each new segment file in bytes, header included.
    pub segment_bytes: u64,
    /// Write appends with `O_DIRECT`, around the page cache (default `false`; experimental).
    /// Measured against a plain `pwrite` + `fdatasync` file in alternating runs
    /// (`benches/examples/append_alternating.rs`, `BENCHMARKS.md`), it is not reliably faster
    /// here: 256 B x 1024 ran at 0.59-1.03x of the file's rate (median 0.79x over 42 processes;
    /// without it 0.80-0.96x, median 0.86x), because in some processes encoding the batch into
    /// the aligned buffer that the disk reads from took 150 µs instead of 20-28 µs; the other
    /// workloads within a few percent of the page cache path. Batches with more than 16 KiB of
    /// payloads over 1 KiB go through the page cache anyway (a direct write would copy them).
    /// What was appended direct is not in the page cache: the first read of it, and reopening
    /// the log (which reads every record), read from the disk; reopening 1 M entries of 256 B
    /// just after appending them took 309 ms instead of 29 ms. A batch written direct needs
    /// as much memory again for its buffer (up to a segment). Ignored, and appends go through
    /// the page cache, where the platform or the file system has no direct I/O;
    /// [`RaftLog::direct_io`] tells which path a log took (a new segment that refuses `O_DIRECT`
    /// is written through the page cache too).
    pub direct_io: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            direct_io: false,
        }
    }
}

impl Options {
    /// The largest entry payload, in bytes, that fits in one segment.
    pub fn entry_bytes_max(&self) -> u64 {
        self.segment_bytes
            - format::SEGMENT_HEADER_BYTES as u64
            - format::RECORD_HEADER_BYTES as u64
    }

    /// Checks the limits of every option.
    pub fn validate(&self) -> Result<()> {
        let segment_bytes = self.segment_bytes;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&segment_bytes)
            || segment_bytes % SEGMENT_BYTES_ALIGN != 0
        {
            return Err(Error::SegmentSize {
                segment_bytes,
                min: SEGMENT_BYTES_MIN,
                max: SEGMENT_BYTES_MAX,
                align: SEGMENT_BYTES_ALIGN,
            });
        }
        Ok(())
    }
}

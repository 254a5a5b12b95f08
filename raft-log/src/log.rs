//! [`RaftLog`]: the synchronous log with group commit.
//!
//! # Write path, chosen by measurement
//! Appends are written with `pwrite` and made durable with `fdatasync`; reads go through the
//! memory maps. Measured on this machine (2 cores, ext4 on a virtual disk shared with other
//! engineers' builds; 1,000 appends of 256 bytes, one sync each, into zero-filled files;
//! `cargo bench -p benches --bench log_store -- write_path`): `pwrite` + `fdatasync` took a
//! median of 111, 645 and 282 µs per append in three runs, copying into a writable map plus
//! `msync(MS_SYNC)` of the dirty range 532, 810 and 669 µs: `msync` was slower in every run,
//! by 1.3 to 4.8 times. `msync` walks the page tables to find and write back whole dirty
//! pages, and the first store to every page takes a write fault; `fdatasync` after `pwrite`
//! does neither. Reads are the other way round: a map read is a `memcpy` out of the page cache
//! with no system call; random 256-byte point reads through the map, CRC check and copy
//! included, ran 1.6 to 2 times faster than bare `pread`s in the same benchmark runs. So the
//! maps are read-only and every byte is written by `pwrite`; Linux keeps both views coherent
//! through its one page cache. Numbers of the last run: `BENCHMARKS.md`.
//!
//! With [`Options::direct_io`] an appender that is alone writes its batch with `O_DIRECT`
//! instead, around the page cache (faster appends, colder reads): see the `direct` module.
//!
//! # Group commit
//! A writer holds the writer lock only to encode and write its batch, then takes a ticket.
//! Whoever finds no sync in flight becomes the syncer: it releases the lock, calls
//! `fdatasync`, and on return marks every ticket written before the sync started as durable
//! and wakes the waiters. Writers that arrive during a sync write their batches and wait; the
//! next sync covers all of them at once. No `append` returns before its ticket is durable.
//!
//! # Segment recycling
//! A new segment must be preallocated by writing (a sync into blocks that were only
//! `fallocate`d costs about twice as much here), and zero-filling a new 64 MiB file for every
//! segment doubles the bytes written: bandwidth-bound appends ran at 0.35-0.59x of a plain
//! file that is written once. So purged segment files are kept (up to [`FREE_SEGMENTS_MAX`],
//! renamed to `free-<old segment name>.tmp`, kept across reopens) and reused for the next
//! segments as they are: only their header is rewritten. Their old records stay behind the
//! new ones and can never pass for new ones (the record CRC is seeded with the segment's
//! first index, and old indexes are at or below the purge point; see the `format` module). Two rules keep
//! recovery exact: the stale tail of a recycled segment is zeroed before the segment stops
//! being the last one (segments before the last must end in zeros, so that damage there is
//! always reported), and recovery deletes segments wholly below the purge point by their
//! names, without scanning them. Zero-filling (in a background thread) remains for when no
//! purged file is free.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use raft_core::node::LogState;
use raft_core::{Entry, HardState, LogId};

use crate::borrow::{EntryRef, Pins};
use crate::direct::{tail_of, DirectFile, DIRECT_IO_ALIGN_BYTES};
use crate::error::{Error, Result};
use crate::format::{
    decode_hard_state, decode_purged, decode_truncating, encode_hard_state, encode_purged,
    encode_record_header, encode_records, encode_segment_header, encode_truncating, record_bytes,
    HARD_STATE_FILE_BYTES, PURGED_FILE_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
    TRUNCATING_FILE_BYTES,
};
use crate::io::{Io, LogIo};
use crate::lock::DirLock;
use crate::segment::{
    create_zeroed, open_segment, parse_segment_name, segment_name, zero_range, Segment, SegmentEnd,
};
use crate::stats::LogStats;
use crate::Options;

/// Name of the hard state file in the log directory.
pub const HARD_STATE_FILE: &str = "hard_state";
/// Name of the purge point file in the log directory.
pub const PURGED_FILE: &str = "purged";
/// Name of the file that names the cut of a truncation under way (see `RaftLog::truncate`).
pub const TRUNCATING_FILE: &str = "truncating";
/// Name of the preallocated, zero-filled file that becomes the next segment.
const SPARE_FILE: &str = "spare.tmp";
/// Suffix of files being written before an atomic rename.
const TMP_SUFFIX: &str = ".tmp";
/// Prefix of purged segment files kept for reuse (`free-<old segment name>.tmp`); unlike other
/// `*.tmp` files they are kept on open and reused (see `reuse_free_files`).
const FREE_PREFIX: &str = "free-";
/// Purged segment files kept for reuse at most; further purged segments are deleted.
pub const FREE_SEGMENTS_MAX: usize = 4;

/// A durable, segmented Raft log plus the hard state, in one directory.
///
/// Every method takes `&self`: reads run concurrently with each other and with writes; writes
/// are serialized internally, and concurrent appends share syncs (group commit). All writes
/// return only once durable. After a failed write or sync, or a panic while writing, every
/// later write returns [`Error::Poisoned`] until the log is opened again. [`RaftLog::truncate`]
/// and [`RaftLog::purge`] wait until no [`EntryRef`] of the log is alive.
///
/// An open log holds the lock of its directory ([`DirLock`]): a second open, in this process or
/// another, fails with [`Error::Locked`] until this one is dropped.
pub struct RaftLog {
    dir: PathBuf,
    options: Options,
    /// Every write, sync and directory change goes through here (see the `io` module).
    io: LogIo,
    index: RwLock<Index>,
    writer: Mutex<Writer>,
    /// Signalled whenever a sync finishes (or fails).
    synced: Condvar,
    /// Keeps the bytes under [`EntryRef`]s still: truncate and purge wait for them.
    pins: Pins,
    /// Threads inside `submit`, waiting for the writer lock or holding it: a direct write
    /// is made only by an appender that is alone (see `write_batch`).
    appenders: AtomicUsize,
    /// Dropped last, once the writer (and its background zero-fill) is gone.
    _lock: DirLock,
}

impl std::fmt::Debug for RaftLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLog")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish()
    }
}

/// A batch written by [`RaftLog::submit`], to wait for with [`RaftLog::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// What readers see: the bounds of the log and every segment.
#[derive(Debug)]
struct Index {
    hard_state: HardState,
    purged: LogId,
    last: LogId,
    /// Ordered by first index, contiguous, never empty; the last one receives appends.
    segments: VecDeque<Segment>,
}

impl Index {
    fn current(&self) -> &Segment {
        self.segments
            .back()
            .expect("a log always has a current segment")
    }

    fn current_mut(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .expect("a log always has a current segment")
    }

    /// The position of the segment holding `index` (which must be in the log). Reads of the
    /// current segment, the usual case, skip the search.
    #[inline]
    fn segment_of(&self, index: u64) -> usize {
        let last = self.segments.len() - 1;
        if index >= self.segments[last].first_index {
            return last;
        }
        self.segments
            .partition_point(|s| s.first_index <= index)
            .saturating_sub(1)
    }

    fn log_id(&self, index: u64) -> Result<LogId> {
        if index == self.purged.index {
            return Ok(self.purged);
        }
        self.segments[self.segment_of(index)].log_id(index)
    }
}

/// What only writers touch, under the writer lock.
#[derive(Debug)]
struct Writer {
    dir_file: File,
    poisoned: Option<String>,
    /// Tickets handed to appended batches, and the highest one known durable.
    written_ticket: u64,
    synced_ticket: u64,
    /// A syncer is running `fdatasync` without the lock.
    syncing: bool,
    /// Threads waiting on `RaftLog::synced`: wakers skip the system call when there are none
    /// (a single writer's every append would otherwise pay a `futex` wake for nobody).
    waiters: u32,
    /// What was written and synced since open ([`RaftLog::stats`]).
    stats: LogStats,
    /// Offset in the current segment below which every byte is synced.
    durable_bytes: u64,
    /// The next segment being zero-filled in the background.
    spare: Option<JoinHandle<std::io::Result<File>>>,
    /// Purged segment files kept for reuse, oldest first: every record in them is at or below
    /// the durable purge point.
    free: Vec<(PathBuf, File)>,
    /// Whether appends go direct (see the `direct` module): asked for in the options, and the
    /// file system took a direct write when the log was opened.
    direct_io: bool,
    /// The current segment opened for direct writes, when `direct_io`.
    direct: Option<DirectFile>,
    /// Encoding buffer, reused; at most one segment long, and kept between batches only up to
    /// [`ENCODE_BUF_BYTES_KEEP_MAX`].
    buf: Vec<u8>,
    /// The pieces of a batch to write, reused.
    parts: Vec<Part>,
    /// Offsets of the records of a batch in its segment, reused.
    offsets: Vec<u32>,
}

impl Writer {
    /// Refuses writes after a failure.
    fn check_writable(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, error: &Error) {
        self.poison_with(error.to_string());
    }

    fn poison_with(&mut self, cause: String) {
        if self.poisoned.is_none() {
            tracing::error!(error = %cause, "raft-log refuses further writes until reopened");
            self.poisoned = Some(cause);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Wait for the background zero-fill so that no thread writes into the directory
        // after the log is gone; its result no longer matters.
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
    }
}

impl RaftLog {
    /// Opens the log in `dir`, creating the directory and an empty log if needed, and locks
    /// the directory for this process ([`DirLock`]; [`Error::Locked`] if another holds it).
    ///
    /// Recovery: every segment is scanned and CRC-checked and the index rebuilt. A torn
    /// record at the tail of the last segment is cut off (its bytes zeroed and synced); any
    /// other bad record makes opening fail with [`Error::Corrupt`] naming the file and offset.
    /// A truncation that a crash interrupted is finished.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<RaftLog> {
        Self::open_with_io(dir.as_ref(), options, LogIo::default())
    }

    /// [`RaftLog::open`] with the given I/O seam (unit tests pass a steered `FaultIo`).
    pub(crate) fn open_with_io(dir: &Path, options: Options, io: LogIo) -> Result<RaftLog> {
        options.validate()?;
        let dir = dir.to_path_buf();
        create_dir_durably(&io, &dir)?;
        // Before anything in the directory is read or removed: another process's temporary
        // files are not ours to delete.
        let lock = DirLock::acquire(&dir)?;
        let dir_file = File::open(&dir).map_err(|e| Error::io("open log directory", &dir, e))?;
        let (mut names, free) = list_segments(&io, &dir)?;
        let hard_state = read_small_file(&dir, HARD_STATE_FILE, HARD_STATE_FILE_BYTES)?
            .map(|(path, bytes)| decode_hard_state(&bytes).map_err(|r| Error::corrupt(path, 0, r)))
            .transpose()?
            .unwrap_or_default();
        let purged = read_small_file(&dir, PURGED_FILE, PURGED_FILE_BYTES)?
            .map(|(path, bytes)| decode_purged(&bytes).map_err(|r| Error::corrupt(path, 0, r)))
            .transpose()?
            .unwrap_or(LogId::ZERO);
        let cut_from = read_truncating(&dir, purged)?;
        if let Some(from) = cut_from {
            remove_segments_after(&io, &dir, &dir_file, &mut names, from)?;
        }
        let segments = open_segments(&io, &dir, &dir_file, &names, purged, cut_from)?;
        let mut writer = Writer {
            dir_file,
            poisoned: None,
            written_ticket: 0,
            synced_ticket: 0,
            syncing: false,
            waiters: 0,
            stats: LogStats::default(),
            durable_bytes: 0,
            spare: None,
            free: Vec::new(),
            direct_io: false,
            direct: None,
            buf: Vec::new(),
            parts: Vec::new(),
            offsets: Vec::new(),
        };
        reuse_free_files(&io, &mut writer, options, free)?;
        let mut index = Index {
            hard_state,
            purged,
            last: purged,
            segments,
        };
        if index.segments.is_empty() {
            let segment = install_segment(&io, &dir, &mut writer, options, purged.index + 1)?;
            index.segments.push_back(segment);
        }
        finish_open(&io, &dir, &mut writer, &mut index, options)?;
        if cut_from.is_some() {
            // The cut is durable (`open_segment` zeroed and synced what lay past it, the
            // segments after it are gone): the truncation is complete.
            remove_durably(&io, &writer.dir_file, &dir.join(TRUNCATING_FILE))?;
        }
        tracing::debug!(dir = %dir.display(), first = index.purged.index + 1,
            last = index.last.index, "raft-log opened");
        Ok(RaftLog {
            dir,
            options,
            io,
            index: RwLock::new(index),
            writer: Mutex::new(writer),
            synced: Condvar::new(),
            pins: Pins::default(),
            appenders: AtomicUsize::new(0),
            _lock: lock,
        })
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> Options {
        self.options
    }

    /// Hard state and log bounds, as raft-core's [`LogState`].
    pub fn state(&self) -> LogState {
        let index = self.read_index();
        LogState {
            hard_state: index.hard_state,
            purged: index.purged,
            last: index.last,
        }
    }

    /// The last saved hard state.
    pub fn hard_state(&self) -> HardState {
        self.read_index().hard_state
    }

    /// Index of the first entry in the log (`purged + 1`, also when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.read_index().purged.index + 1
    }

    /// Index of the last entry in the log (the purged index when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.read_index().last.index
    }

    /// The id of the last purged entry (`LogId::ZERO` if nothing was purged).
    pub fn purged(&self) -> LogId {
        self.read_index().purged
    }

    /// The term of the entry at `index`; the purged index is answered from the purge point.
    pub fn term(&self, index: u64) -> Result<u64> {
        let guard = self.read_index();
        if index < guard.purged.index || index > guard.last.index {
            return Err(out_of_range(&guard, index, index.saturating_add(1)));
        }
        guard.log_id(index).map(|id| id.term)
    }

    /// Reads the one entry at `index` (a point read without the vector of
    /// [`RaftLog::entries`]).
    pub fn entry(&self, index: u64) -> Result<Entry> {
        let guard = self.read_index();
        if index <= guard.purged.index || index > guard.last.index {
            return Err(out_of_range(&guard, index, index.saturating_add(1)));
        }
        guard.segments[guard.segment_of(index)].read(index)
    }

    /// Reads the entry at `index` in place, without copying its payload: the returned
    /// [`EntryRef`] borrows it from the segment's memory map. The record's CRC is checked on
    /// every call, as by [`RaftLog::entry`] (a page evicted from the page cache and read back
    /// from disk may have rotted).
    ///
    /// While an `EntryRef` is alive, [`RaftLog::truncate`] and [`RaftLog::purge`] wait for it
    /// (they are the only operations that change or unmap the bytes of a record); appends do
    /// not. Never truncate or purge from a thread that holds an `EntryRef` of the same log: it
    /// would wait for itself.
    ///
    /// ```
    /// use raft_core::Entry;
    /// use raft_log::{Options, RaftLog};
    ///
    /// # fn main() -> Result<(), raft_log::Error> {
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let log = RaftLog::open(dir.path(), Options::default())?;
    /// log.append(&[Entry::normal(1, 1, "set x=1")])?;
    /// let entry = log.entry_ref(1)?;
    /// assert_eq!((entry.term(), entry.payload()), (1, &b"set x=1"[..]));
    /// drop(entry); // before truncating or purging on this thread
    /// log.truncate(1)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn entry_ref(&self, index: u64) -> Result<EntryRef<'_>> {
        let pin = self.pins.pin();
        let guard = self.read_index();
        if index <= guard.purged.index || index > guard.last.index {
            return Err(out_of_range(&guard, index, index.saturating_add(1)));
        }
        let record = guard.segments[guard.segment_of(index)].record(index)?;
        // SAFETY: the payload lies in the map of a segment of the log. That map stays mapped,
        // and those bytes stay unchanged, while `pin` lives, although the index lock is
        // released on return: the only operations that unmap a segment holding records or
        // rewrite bytes of records readers could find are truncate (zeroes the records it
        // removes, drops removed segments) and purge (drops removed segments, whose files
        // are deleted or recycled through a new map), and both hold the pins exclusively,
        // which waits for every live pin. Appends write only after the end of the records,
        // or (direct I/O) rewrite the block below the end with the bytes already there, so no
        // value under the payload changes; a roll drops only an empty segment; the log cannot
        // be dropped while `self` is borrowed.
        let payload: &[u8] =
            unsafe { std::slice::from_raw_parts(record.payload.as_ptr(), record.payload.len()) };
        Ok(EntryRef::new(record.term, index, record.kind, payload, pin))
    }

    /// Reads entries `[low, high)` in order, stopping once their payload bytes reach
    /// `bytes_max`, but always returning at least one entry of a non-empty range.
    pub fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>> {
        let index = self.read_index();
        let (first, next) = (index.purged.index + 1, index.last.index + 1);
        if low > high || (low < high && (low < first || high > next)) {
            return Err(out_of_range(&index, low, high));
        }
        // The range is checked, but a caller's `high - low` still bounds only what exists:
        // reserve at most a modest amount up front.
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut bytes = 0u64;
        let mut position = index.segment_of(low);
        for at in low..high {
            if !out.is_empty() && bytes >= bytes_max {
                break;
            }
            while at >= index.segments[position].next_index() {
                position += 1;
            }
            let entry = index.segments[position].read(at)?;
            bytes += entry.data.len() as u64;
            out.push(entry);
        }
        Ok(out)
    }

    /// Reads entries like [`RaftLog::entries`], then lets the kernel drop this process's
    /// mapping of the pages read ([`Segment::release`]): for reads of old parts of the log
    /// (start-up, a lagging follower) that should not stay in the reader's resident memory.
    pub fn entries_released(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>> {
        let entries = self.entries(low, high, bytes_max)?;
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(entries);
        };
        let index = self.read_index();
        for segment in &index.segments {
            if segment.next_index() > low && segment.first_index <= last {
                segment.release(low, last + 1);
            }
        }
        Ok(entries)
    }

    /// Appends `entries`, which must continue the log without a hole, and returns once they are
    /// durable. Concurrent callers share one `fdatasync`.
    pub fn append(&self, entries: &[Entry]) -> Result<()> {
        let (writer, ticket) = self.submit_locked(entries)?;
        self.wait_durable(writer, ticket.0)
    }

    /// Writes `entries` (which must continue the log without a hole) and returns at once with
    /// a [`Ticket`]; the entries are readable now and durable once [`RaftLog::wait`] on the
    /// ticket returns `Ok`. Lets a caller keep appending while earlier batches sync: every
    /// ticket submitted before a sync starts is covered by that one sync.
    pub fn submit(&self, entries: &[Entry]) -> Result<Ticket> {
        self.submit_locked(entries).map(|(_, ticket)| ticket)
    }

    /// Returns once the batch of `ticket` (from [`RaftLog::submit`] on this log) is durable,
    /// running the sync if no other caller is; fails if the sync failed.
    pub fn wait(&self, ticket: Ticket) -> Result<()> {
        let writer = self.lock_writer();
        self.wait_durable(writer, ticket.0)
    }

    /// Whether appends are written with direct I/O, around the page cache (see
    /// [`Options::direct_io`]): asked for, and taken by the file system.
    pub fn direct_io(&self) -> bool {
        self.lock_writer().direct.is_some()
    }

    /// How many `fdatasync` calls made appended records durable since the log was opened
    /// (group commit makes this smaller than the number of appends under concurrency).
    pub fn sync_count(&self) -> u64 {
        self.lock_writer().stats.syncs
    }

    /// What the log wrote and how long its syncs took since it was opened. Takes the writer
    /// lock for a copy: a caller waits at most for one batch being encoded and written (never
    /// for a sync, which runs without the lock).
    pub fn stats(&self) -> LogStats {
        self.lock_writer().stats.clone()
    }

    fn submit_locked(&self, entries: &[Entry]) -> Result<(MutexGuard<'_, Writer>, Ticket)> {
        self.appenders.fetch_add(1, Ordering::Relaxed);
        let _leave = Leave(&self.appenders);
        let mut writer = self.lock_writer();
        if let Some(cause) = &writer.poisoned {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        if entries.is_empty() {
            // Nothing to make durable: the ticket of the last batch covers everything so far.
            let ticket = writer.written_ticket;
            return Ok((writer, Ticket(ticket)));
        }
        self.check_batch(entries)?;
        if let Err(error) = self.write_batch(&mut writer, entries) {
            writer.poison(&error);
            self.notify_synced(&writer);
            return Err(error);
        }
        writer.written_ticket += 1;
        writer.stats.batches += 1;
        writer.stats.entries += entries.len() as u64;
        let ticket = writer.written_ticket;
        Ok((writer, Ticket(ticket)))
    }

    /// Removes every entry with index `>= from`, durably. `from` must be above the purged
    /// index; truncating past the end changes nothing.
    ///
    /// Crash-safe at every step: the cut is recorded durably first (the `truncating` file) and
    /// a recovery finishes it, so a crash leaves the old log, the truncated one, or a prefix
    /// of the old one that keeps every entry below `from`. Writing and deleting that file
    /// cost one file sync and two directory syncs on top of zeroing and syncing the removed
    /// records (and one directory sync when whole segments go).
    ///
    /// Waits until no [`EntryRef`] of this log is alive (see [`RaftLog::entry_ref`]).
    pub fn truncate(&self, from: u64) -> Result<()> {
        // Before the writer lock: a thread holding a pin may be appending.
        let _exclusive = self.pins.exclusive();
        let mut writer = self.lock_idle_writer()?;
        let (purged, last) = {
            let index = self.read_index();
            (index.purged, index.last)
        };
        if from <= purged.index {
            return Err(Error::TruncatePurged {
                from,
                purged: purged.index,
            });
        }
        if from > last.index {
            return Ok(());
        }
        let result = self.truncate_locked(&mut writer, from);
        self.finish_write(&mut writer, result)
    }

    /// Removes every entry with index `<= upto.index` and records `upto` as the purge point,
    /// durably. Whole segments are deleted; a purge at or past the last index empties the log
    /// and the next append starts at `upto.index + 1`. A purge at or below the current purge
    /// point changes nothing.
    ///
    /// Waits until no [`EntryRef`] of this log is alive (see [`RaftLog::entry_ref`]).
    pub fn purge(&self, upto: LogId) -> Result<()> {
        // Before the writer lock: a thread holding a pin may be appending.
        let _exclusive = self.pins.exclusive();
        let mut writer = self.lock_idle_writer()?;
        if upto.index <= self.read_index().purged.index {
            return Ok(());
        }
        let result = self.purge_locked(&mut writer, upto);
        self.finish_write(&mut writer, result)
    }

    /// Durably replaces the hard state (write a temporary file, sync, rename, sync the
    /// directory).
    pub fn save_hard_state(&self, hard_state: HardState) -> Result<()> {
        let mut writer = self.lock_writer();
        writer.check_writable()?;
        let bytes = encode_hard_state(&hard_state);
        let result = replace_file(
            &self.io,
            &self.dir,
            &writer.dir_file,
            HARD_STATE_FILE,
            &bytes,
        );
        if result.is_ok() {
            self.write_index().hard_state = hard_state;
        }
        self.finish_write(&mut writer, result)
    }

    /// Whether an earlier failure makes the log refuse writes.
    pub fn is_poisoned(&self) -> bool {
        self.lock_writer().poisoned.is_some()
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        // A panic under the index lock cannot leave it half-updated in a way readers could
        // misuse: writers update the bounds last. Take the lock over.
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the writer state. A thread that panicked while holding it may have left it, or
    /// the files, half changed: the log then refuses writes, as after a failed one.
    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(poison_after_panic)
    }

    /// Takes the writer lock once no sync is in flight: truncate and purge rewrite bytes and
    /// delete files that a running sync may still cover.
    fn lock_idle_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let mut writer = self.lock_writer();
        while writer.syncing {
            writer = self.wait_synced(writer);
        }
        writer.check_writable()?;
        Ok(writer)
    }

    /// Waits for the end of a sync (or a failure) on `synced`, counted in `waiters`.
    fn wait_synced<'a>(&self, mut writer: MutexGuard<'a, Writer>) -> MutexGuard<'a, Writer> {
        writer.waiters += 1;
        let mut writer = self.synced.wait(writer).unwrap_or_else(poison_after_panic);
        writer.waiters -= 1;
        writer
    }

    /// Wakes the threads waiting on `synced`, if any (`writer` is the locked writer state).
    fn notify_synced(&self, writer: &Writer) {
        if writer.waiters > 0 {
            self.synced.notify_all();
        }
    }

    /// Poisons on failure and wakes waiters either way. Marking tickets durable is left to
    /// the operations that synced the current segment (`roll`, `truncate_locked`): a hard
    /// state save or a purge syncs other files, and an append written meanwhile is not durable
    /// because of them.
    fn finish_write(&self, writer: &mut Writer, result: Result<()>) -> Result<()> {
        if let Err(error) = &result {
            writer.poison(error);
        }
        self.notify_synced(writer);
        result
    }

    /// Contiguity and size checks, before anything is written.
    fn check_batch(&self, entries: &[Entry]) -> Result<()> {
        let next = self.read_index().last.index + 1;
        let bytes_max = self.options.entry_bytes_max();
        for (expected, entry) in (next..).zip(entries) {
            if entry.index != expected {
                return Err(Error::NotContiguous {
                    expected,
                    got: entry.index,
                });
            }
            if entry.data.len() as u64 > bytes_max {
                let bytes = entry.data.len() as u64;
                return Err(Error::EntryTooLarge {
                    index: entry.index,
                    bytes,
                    bytes_max,
                });
            }
        }
        Ok(())
    }

    /// Encodes and writes the batch, one `pwrite` (or `writev`) per segment it touches,
    /// rolling to new segments as they fill. Indexes the records of each segment once they are
    /// written.
    ///
    /// Not done, by measurement (256 B x 1024, steady state, alternating in one process): writing
    /// a batch in chunks of 64 or 128 KiB and starting the writeback of each with
    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)` while the next one is encoded was slower than
    /// one write (median 2.9 and 3.3 M entries/s against 3.5 M/s), and chunks without it gained
    /// nothing: the `fdatasync` of a batch of a few hundred KiB costs about the same whether
    /// its pages are already being written or not.
    fn write_batch(&self, writer: &mut Writer, entries: &[Entry]) -> Result<()> {
        let mut rest = entries;
        while !rest.is_empty() {
            let (file, start, capacity, seed) = {
                let index = self.read_index();
                let current = index.current();
                let file = Arc::clone(&current.file);
                (file, current.end, current.capacity(), current.first_index)
            };
            let durable_bytes = u32::try_from(writer.durable_bytes).expect("segment <= 1 GiB");
            let copy_all = writer.direct.is_some() && !copy_outweighs_direct(rest);
            let mut encoded = Encoded {
                buf: std::mem::take(&mut writer.buf),
                parts: std::mem::take(&mut writer.parts),
                run_start: 0,
                write_start: 0,
                prefix_bytes: 0,
                whole_blocks: writer.direct.is_some(),
                copy_all,
            };
            encoded.parts.clear();
            let mut offsets = std::mem::take(&mut writer.offsets);
            offsets.clear();
            let mut at = start;
            // What the encoding buffer will hold: records, but only the headers and padding
            // of payloads written from where they are.
            let mut buffered = 0;
            for entry in rest {
                let size = record_bytes(entry.data.len()) as u64;
                if at + size > capacity {
                    break;
                }
                offsets.push(u32::try_from(at).expect("segment <= 1 GiB"));
                at += size;
                buffered += size as usize - encoded.unbuffered(entry);
            }
            let tail = writer.direct.as_ref().map_or(&[][..], |direct| {
                assert_eq!(
                    direct.segment_first_index, seed,
                    "direct I/O handle of another segment"
                );
                debug_assert_eq!(
                    direct.tail,
                    tail_of(self.read_index().current()),
                    "stale tail"
                );
                &direct.tail[..]
            });
            encoded.start_at(start, buffered, tail);
            encoded.push_all(seed, &rest[..offsets.len()], durable_bytes);
            let alone = self.alone(writer);
            let result = match &mut writer.direct {
                _ if at == start => Ok(()),
                Some(direct) if copy_all => {
                    let through = if alone { &direct.file } else { &file };
                    let result = encoded.write_blocks(&self.io, through, start);
                    encoded.keep_tail(&mut direct.tail);
                    result
                }
                _ => encoded.write(&self.io, &file, rest, start, at),
            };
            writer.buf = encoded.buf;
            if writer.buf.capacity() > ENCODE_BUF_BYTES_KEEP_MAX {
                writer.buf = Vec::new();
            }
            writer.parts = encoded.parts;
            let written = offsets.len();
            if let Err(e) = result {
                writer.offsets = offsets;
                return Err(Error::io(
                    "write records",
                    &self.read_index().current().path,
                    e,
                ));
            }
            if written > 0 {
                writer.stats.bytes_written += at - start;
                let mut index = self.write_index();
                let current = index.current_mut();
                current.offsets.extend_from_slice(&offsets);
                current.end = at;
                if let Some(direct) = writer.direct.as_mut().filter(|_| !copy_all) {
                    // Written through the page cache: the new tail is cached.
                    direct.tail.clear();
                    direct.tail.extend_from_slice(tail_of(current));
                }
                index.last = rest[written - 1].log_id();
                drop(index);
                if needs_spare(at, capacity) {
                    start_spare(&self.io, &self.dir, writer, self.options);
                }
            }
            writer.offsets = offsets;
            rest = &rest[written..];
            if let Some(next) = rest.first() {
                self.roll(writer, next.index, true)?;
            }
        }
        Ok(())
    }

    /// Whether the appender holding the writer lock is alone: no other appender waits for the
    /// lock, no sync is in flight and every earlier batch is durable. Only then does a log
    /// that writes direct make a direct write; otherwise it writes the same blocks through the
    /// page cache. A direct write returns only once the disk has the data, and it holds the
    /// writer lock meanwhile: concurrent appenders would wait for the disk one by one instead
    /// of writing into the page cache and sharing the next sync. Measured (8 threads appending
    /// one 256-byte entry each, waiting for each, 2 s, alternating): every write direct, 11.7
    /// to 13.1 thousand entries/s; every write through the page cache, 28.2 to 30.9 thousand.
    fn alone(&self, writer: &Writer) -> bool {
        self.appenders.load(Ordering::Relaxed) == 1
            && !writer.syncing
            && writer.synced_ticket == writer.written_ticket
    }

    /// Opens the current segment for direct writes, when the log writes direct: after the
    /// current segment changed or its end moved back.
    fn reopen_direct(&self, writer: &mut Writer) -> Result<()> {
        writer.direct = None;
        if writer.direct_io {
            writer.direct = DirectFile::open(self.read_index().current())?;
        }
        Ok(())
    }

    /// Waits until `ticket` is durable, running the sync itself if nobody else is.
    fn wait_durable<'a>(&'a self, mut writer: MutexGuard<'a, Writer>, ticket: u64) -> Result<()> {
        loop {
            if writer.synced_ticket >= ticket {
                return Ok(());
            }
            if let Some(cause) = &writer.poisoned {
                return Err(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            if writer.syncing {
                writer = self.wait_synced(writer);
                continue;
            }
            writer.syncing = true;
            let target = writer.written_ticket;
            let (file, end) = {
                let index = self.read_index();
                let current = index.current();
                (Arc::clone(&current.file), current.end)
            };
            drop(writer);
            let result = {
                // A panic in the sync (outside the writer lock, so the lock is not poisoned by
                // it) must not leave `syncing` set: every waiter would wait forever.
                let abandoned = AbandonedSync(self);
                let started = Instant::now();
                let result = self.io.sync_data(&file);
                std::mem::forget(abandoned);
                (result, started.elapsed())
            };
            let (result, took) = result;
            writer = self.lock_writer();
            writer.syncing = false;
            writer.stats.syncs += 1;
            writer.stats.sync_us.record_duration(took);
            match result {
                Ok(()) => {
                    writer.synced_ticket = writer.synced_ticket.max(target);
                    if Arc::ptr_eq(&file, &self.read_index().current().file) {
                        writer.durable_bytes = writer.durable_bytes.max(end);
                    }
                    self.notify_synced(&writer);
                }
                Err(e) => {
                    let path = self.path_of(&file);
                    let error = Error::io("sync segment", path, e);
                    writer.poison(&error);
                    self.notify_synced(&writer);
                    return Err(error);
                }
            }
        }
    }

    /// The path of the segment whose file is `file`, for an error message (the directory if
    /// that segment is gone).
    fn path_of(&self, file: &Arc<File>) -> PathBuf {
        let index = self.read_index();
        let segment = index.segments.iter().find(|s| Arc::ptr_eq(&s.file, file));
        segment.map_or_else(|| self.dir.clone(), |s| s.path.clone())
    }

    /// Closes the current segment (synced in full) and starts a new one at `first_index`.
    /// `kept`: the closed segment stays in the log (false only when a purge deletes it next).
    fn roll(&self, writer: &mut Writer, first_index: u64, kept: bool) -> Result<()> {
        let (file, path, stale_from) = {
            let index = self.read_index();
            let current = index.current();
            let stale_from = (kept && current.stale_tail).then_some(current.end);
            (Arc::clone(&current.file), current.path.clone(), stale_from)
        };
        // Recovery requires zeros after the records of every segment but the last, so that a
        // damaged record there is reported rather than read as the end: a recycled segment's
        // stale tail is zeroed first (usually less than one record, since the segment is
        // full), in the same sync.
        if let Some(from) = stale_from {
            zero_range(
                &self.io,
                &file,
                from,
                self.read_index().current().capacity(),
            )
            .map_err(|e| Error::io("zero stale tail", &path, e))?;
        }
        // Records of the next segment say nothing about this one, and recovery treats only the
        // last segment as possibly torn: this one must be complete on disk first.
        self.io
            .sync_data(&file)
            .map_err(|e| Error::io("sync segment", &path, e))?;
        if stale_from.is_some() {
            self.write_index().current_mut().stale_tail = false;
        }
        writer.synced_ticket = writer.written_ticket;
        self.notify_synced(writer);
        let segment = install_segment(&self.io, &self.dir, writer, self.options, first_index)?;
        let mut index = self.write_index();
        if index.current().first_index == first_index {
            // An empty segment at the same index was just replaced by the rename.
            debug_assert!(index.current().offsets.is_empty());
            index.segments.pop_back();
        }
        index.segments.push_back(segment);
        drop(index);
        // Only the new segment's header is on disk so far.
        writer.durable_bytes = SEGMENT_HEADER_BYTES as u64;
        self.reopen_direct(writer)
    }

    /// Removes the entries from `from` on. Zeroing the records of the cut is not atomic, and a
    /// crash part-way could leave a record that survived after one that did not, claiming it
    /// was synced (`durable_bytes`), which recovery would report as corruption. So the cut is
    /// made durable first, in the truncation file, and recovery finishes any truncation it
    /// names (`open`); the file goes once every removal is durable, before the next append.
    fn truncate_locked(&self, writer: &mut Writer, from: u64) -> Result<()> {
        replace_file(
            &self.io,
            &self.dir,
            &writer.dir_file,
            TRUNCATING_FILE,
            &encode_truncating(from),
        )?;
        // Readers see the cut all at once: segments, records and bounds change in one
        // critical section (a reader that saw the old last index with the later segments
        // already gone would index past the end of the segment list).
        let (removed, file, path, cut, old_end) = {
            let mut index = self.write_index();
            let last = index.log_id(from - 1)?;
            let position = index.segment_of(from);
            let removed: Vec<Segment> = index.segments.drain(position + 1..).collect();
            let segment = &mut index.segments[position];
            let keep = (from - segment.first_index) as usize;
            let cut = segment
                .offsets
                .get(keep)
                .map_or(segment.end, |&offset| offset.into());
            let old_end = segment.end;
            segment.offsets.truncate(keep);
            segment.end = cut;
            let file = Arc::clone(&segment.file);
            let path = segment.path.clone();
            index.last = last;
            (removed, file, path, cut, old_end)
        };
        // Newest first: without the truncation file a crash part-way would still leave a
        // prefix of the old log.
        for segment in removed.iter().rev() {
            self.io
                .remove_file(&segment.path)
                .map_err(|e| Error::io("remove segment", &segment.path, e))?;
        }
        if !removed.is_empty() {
            // Before the truncation file goes: a segment back after a crash would leave a gap.
            self.io
                .sync_dir(&writer.dir_file)
                .map_err(|e| Error::io("sync log directory", &self.dir, e))?;
        }
        zero_range(&self.io, &file, cut, old_end)
            .and_then(|()| self.io.sync_data(&file))
            .map_err(|e| Error::io("zero truncated records", &path, e))?;
        writer.durable_bytes = cut;
        // Every batch written so far is in this segment, now synced, or in a deleted one.
        writer.synced_ticket = writer.written_ticket;
        // Durably gone before any append: recovery would otherwise cut new entries too.
        remove_durably(&self.io, &writer.dir_file, &self.dir.join(TRUNCATING_FILE))?;
        self.reopen_direct(writer)
    }

    fn purge_locked(&self, writer: &mut Writer, upto: LogId) -> Result<()> {
        // The purge point is durable before any segment goes: a crash in between leaves
        // segments that recovery deletes as purged.
        replace_file(
            &self.io,
            &self.dir,
            &writer.dir_file,
            PURGED_FILE,
            &encode_purged(upto),
        )?;
        let emptied = upto.index >= self.read_index().last.index;
        if emptied {
            // The old segments are deleted (or recycled) next; recovery deletes them by name
            // if a crash comes first, so their stale tails need no zeroing.
            self.roll(writer, upto.index + 1, false)?;
        }
        let removed: Vec<Segment> = {
            let mut index = self.write_index();
            index.purged = upto;
            if emptied {
                index.last = upto;
            }
            let keep_from = if emptied {
                index.segments.len() - 1
            } else {
                // Segments whose every record is at or below the purge point.
                index
                    .segments
                    .iter()
                    .skip(1)
                    .take_while(|s| s.first_index <= upto.index + 1)
                    .count()
            };
            index.segments.drain(..keep_from).collect()
        };
        for segment in removed {
            recycle_or_remove(&self.io, &self.dir, writer, self.options, segment)?;
        }
        Ok(())
    }
}

/// Through the page cache, payloads up to this size are copied into the encoding buffer next
/// to their headers; larger ones are written straight from the entries with `writev`, which
/// saves copying every byte once more in user space (direct writes copy every payload: they
/// need the whole write in one aligned buffer). Measured (`log_store` bench, steady state,
/// alternating runs of both versions, raft-log's rate over the floor's in the same run): 4 KiB
/// x 64 went from 0.84-0.88x to 1.00-1.02x, 4 KiB x 1024 from 0.77-1.03x to 0.94-0.97x. For
/// small payloads the copy is cheaper than an extra `iovec` each.
const COPY_PAYLOAD_BYTES_MAX: usize = 1024;

/// A log that writes direct writes a batch through the page cache instead when the batch
/// carries more than this many bytes of payloads that the page cache path writes from where
/// they are (each larger than [`COPY_PAYLOAD_BYTES_MAX`]). A direct write must copy every
/// payload into its aligned buffer, and for many large payloads that copy costs more than the
/// direct write saves. Measured (`append_alternating`, 8 rounds, three processes each; µs per
/// batch for the log with `direct_io` / the log without / the floor):
/// - 4 KiB x 1024 written direct: 2,629-4,601 / 1,958-2,528 / 2,105-2,201; through the page
///   cache: 1,893-2,088 / 1,892-1,959 / 1,874-2,082;
/// - 4 KiB x 16 (64 KiB) written direct: 195-218 / 179-201 / 158-178, no gain;
/// - 4 KiB x 1 written direct: 124-136 / 135-143 / 132-139.
const DIRECT_COPY_BYTES_MAX: usize = 16 << 10;

/// Whether the large payloads of `entries` (see [`DIRECT_COPY_BYTES_MAX`]) are too many bytes
/// to copy for a direct write.
fn copy_outweighs_direct(entries: &[Entry]) -> bool {
    let mut copied = 0;
    for entry in entries {
        if entry.data.len() > COPY_PAYLOAD_BYTES_MAX {
            copied += entry.data.len();
            if copied > DIRECT_COPY_BYTES_MAX {
                return true;
            }
        }
    }
    false
}

/// A piece of a batch to write: a range of the encoding buffer, or the payload of an entry.
#[derive(Debug)]
enum Part {
    Buf(usize, usize),
    Payload(usize),
}

/// The batch buffer starts its records at the same offset modulo this many bytes as they have
/// in the file: the kernel's copy into the page cache (`rep movsb` here) is fastest when
/// source and destination are aligned alike. Measured (256 B x 1024, `pwrite` of 288 KiB,
/// records at offset 32 of a page, alternating in one process): 40.4-42.8 µs per `pwrite`
/// from a buffer aligned at random, 32.6-35.8 µs aligned alike (`BENCHMARKS.md`).
const COPY_ALIGN_BYTES: usize = 64;

/// The encoding buffer is dropped after a batch when it grew larger than this, so that one
/// large batch does not hold its size in memory for the life of the log.
const ENCODE_BUF_BYTES_KEEP_MAX: usize = 16 << 20;

/// The part of a batch that goes into one segment, encoded: records in `buf` (after
/// alignment, and in a log that writes direct after the segment's bytes before the records),
/// and the order in which runs of `buf` and large payloads (written from the entries) go to
/// the file.
struct Encoded {
    buf: Vec<u8>,
    parts: Vec<Part>,
    /// Start in `buf` of the run not yet in `parts`.
    run_start: usize,
    /// Start in `buf` of the bytes written: for direct writes aligned to
    /// [`DIRECT_IO_ALIGN_BYTES`].
    write_start: usize,
    /// Bytes of the segment before the records that are written again (`tail` of
    /// [`Encoded::start_at`]).
    prefix_bytes: usize,
    /// Write whole blocks: the segment's bytes from the block boundary before the records,
    /// zeros after them up to the next one (a log that writes direct, whichever way this
    /// batch goes).
    whole_blocks: bool,
    /// Copy every payload into the buffer (direct writes).
    copy_all: bool,
}

impl Encoded {
    /// Empties the buffer for a part of `bytes` bytes going to file offset `offset`, preceded
    /// by `tail`, the segment's bytes from the block boundary below `offset` (whole blocks;
    /// empty otherwise). Pads its start so that the records are aligned like their place in
    /// the file: modulo [`DIRECT_IO_ALIGN_BYTES`] for direct writes, which require it, else
    /// modulo [`COPY_ALIGN_BYTES`]. Reserves room for every record and the padding of whole
    /// blocks first, so that the buffer, and with it the alignment, does not move.
    fn start_at(&mut self, offset: u64, bytes: usize, tail: &[u8]) {
        let align = if self.copy_all {
            DIRECT_IO_ALIGN_BYTES
        } else {
            COPY_ALIGN_BYTES
        };
        debug_assert!(self.whole_blocks || !self.copy_all);
        debug_assert_eq!(
            tail.len() as u64,
            (offset % DIRECT_IO_ALIGN_BYTES as u64) * u64::from(self.whole_blocks)
        );
        self.buf.clear();
        self.buf.reserve(bytes + 3 * DIRECT_IO_ALIGN_BYTES);
        let address = self.buf.as_ptr() as usize;
        let records = tail.len()
            + (offset as usize)
                .wrapping_sub(tail.len())
                .wrapping_sub(address)
                % align;
        self.write_start = records - tail.len();
        self.buf.resize(self.write_start, 0);
        self.buf.extend_from_slice(tail);
        self.prefix_bytes = tail.len();
        self.run_start = self.write_start;
    }

    /// The bytes of `entry`'s record written from the entry rather than from the buffer.
    fn unbuffered(&self, entry: &Entry) -> usize {
        if self.copy_all || entry.data.len() <= COPY_PAYLOAD_BYTES_MAX {
            0
        } else {
            entry.data.len()
        }
    }

    /// Encodes the records of `entries`, the start of the batch: runs of small payloads into
    /// the buffer at once (see [`encode_records`]), large ones as headers and parts.
    fn push_all(&mut self, seed: u64, entries: &[Entry], durable_bytes: u32) {
        let mut position = 0;
        while position < entries.len() {
            let small = entries[position..]
                .iter()
                .take_while(|entry| self.unbuffered(entry) == 0)
                .count();
            let run = &entries[position..position + small];
            encode_records(&mut self.buf, seed, run, durable_bytes);
            position += small;
            if let Some(large) = entries.get(position) {
                self.push_large(seed, large, position, durable_bytes);
                position += 1;
            }
        }
    }

    /// Encodes the header of `entry` (at `position` in the batch), whose payload is written
    /// from where it is.
    fn push_large(&mut self, seed: u64, entry: &Entry, position: usize, durable_bytes: u32) {
        let payload = &entry.data[..];
        let header = encode_record_header(
            seed,
            entry.index,
            entry.term,
            entry.kind,
            payload,
            durable_bytes,
        );
        self.buf.extend_from_slice(&header);
        self.parts.push(Part::Buf(self.run_start, self.buf.len()));
        self.parts.push(Part::Payload(position));
        self.run_start = self.buf.len();
        let padding = record_bytes(payload.len()) - RECORD_HEADER_BYTES - payload.len();
        self.buf.resize(self.buf.len() + padding, 0);
    }

    /// Writes the records, which go to `from` of `file` (opened direct or not), as whole
    /// blocks: the segment's tail before them, zeros after them up to a block boundary. Whole
    /// blocks also spare a write through the page cache from reading a block that a direct
    /// write dropped from the cache.
    fn write_blocks(&mut self, io: &LogIo, file: &File, from: u64) -> std::io::Result<()> {
        debug_assert!(self.parts.is_empty());
        let end = self.buf.len();
        let capacity = self.buf.capacity();
        let blocks = (end - self.write_start).next_multiple_of(DIRECT_IO_ALIGN_BYTES);
        self.buf.resize(self.write_start + blocks, 0);
        assert_eq!(
            capacity,
            self.buf.capacity(),
            "the direct write buffer moved"
        );
        let written = &self.buf[self.write_start..];
        assert_eq!(
            written.as_ptr() as usize % DIRECT_IO_ALIGN_BYTES,
            0,
            "direct write buffer misaligned"
        );
        let at = from - self.prefix_bytes as u64;
        let result = io.write_at(file, written, at);
        self.buf.truncate(end);
        result
    }

    /// Keeps in `tail` the bytes of the last block written by [`Encoded::write_blocks`] up to
    /// the end of the records: the start of the next write.
    fn keep_tail(&self, tail: &mut Vec<u8>) {
        let end = self.buf.len();
        let last_block = end - (end - self.write_start) % DIRECT_IO_ALIGN_BYTES;
        tail.clear();
        tail.extend_from_slice(&self.buf[last_block..end]);
    }

    /// Writes the records, which go to `[from, end)` of `file`, through the page cache (with
    /// whole blocks around them in a log that writes direct).
    fn write(
        &mut self,
        io: &LogIo,
        file: &File,
        entries: &[Entry],
        from: u64,
        end: u64,
    ) -> std::io::Result<()> {
        debug_assert!(!self.copy_all);
        let at = from - self.prefix_bytes as u64;
        let mut bytes = end - at;
        if self.whole_blocks {
            // Whole pages: none has to be read first (a direct write dropped the one holding
            // the tail from the cache).
            let padded = bytes.next_multiple_of(DIRECT_IO_ALIGN_BYTES as u64);
            self.buf
                .resize(self.buf.len() + (padded - bytes) as usize, 0);
            bytes = padded;
        }
        if self.parts.is_empty() {
            // Only small payloads: everything is in the buffer, after the alignment.
            let written = &self.buf[self.run_start..];
            debug_assert_eq!(written.len() as u64, bytes);
            return io.write_at(file, written, at);
        }
        self.parts.push(Part::Buf(self.run_start, self.buf.len()));
        let mut slices: Vec<IoSlice<'_>> = self
            .parts
            .iter()
            .map(|part| match *part {
                Part::Buf(from, to) => IoSlice::new(&self.buf[from..to]),
                Part::Payload(position) => IoSlice::new(&entries[position].data),
            })
            .filter(|slice| !slice.is_empty())
            .collect();
        debug_assert_eq!(slices.iter().map(|s| s.len() as u64).sum::<u64>(), bytes);
        io.write_vectored_at(file, &mut slices, at)
    }
}

/// Takes over a writer lock poisoned by a panic, and poisons the log: the panicking thread may
/// have left the writer state, or the files, half changed.
fn poison_after_panic(
    poisoned: std::sync::PoisonError<MutexGuard<'_, Writer>>,
) -> MutexGuard<'_, Writer> {
    let mut writer = poisoned.into_inner();
    writer.poison_with("a thread panicked while writing the log".to_string());
    writer
}

/// Dropped only when the group sync it guards unwinds: clears `syncing`, poisons the log and
/// wakes the waiters (forgotten when the sync returns).
struct AbandonedSync<'a>(&'a RaftLog);

impl Drop for AbandonedSync<'_> {
    fn drop(&mut self) {
        let mut writer = self.0.lock_writer();
        writer.syncing = false;
        writer.poison_with("a thread panicked while syncing the log".to_string());
        self.0.notify_synced(&writer);
    }
}

/// Counts an appender out of `RaftLog::appenders` when dropped.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Maps the error of an out-of-range read.
fn out_of_range(index: &Index, low: u64, high: u64) -> Error {
    Error::OutOfRange {
        low,
        high,
        first: index.purged.index + 1,
        next: index.last.index + 1,
    }
}

/// Creates `dir` and any missing parents, each made durable by syncing the directory that
/// holds it: a log whose directory entry a crash loses has lost everything in it.
fn create_dir_durably(io: &LogIo, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match fs::metadata(at) {
            Ok(metadata) if metadata.is_dir() => break,
            Ok(_) => {
                let error = std::io::Error::other("exists and is not a directory");
                return Err(Error::io("create log directory", at, error));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(at),
            Err(e) => return Err(Error::io("stat log directory", at, e)),
        }
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            // A relative path's first component: its parent is the working directory.
            _ => break,
        }
    }
    for path in missing.into_iter().rev() {
        match io.create_dir(path) {
            Ok(()) => {}
            // Created meanwhile by someone else, who syncs it: the lock decides who goes on.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create log directory", path, e)),
        }
        let parent = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(parent)
            .and_then(|parent_file| io.sync_dir(&parent_file))
            .map_err(|e| Error::io("sync parent of the log directory", parent, e))?;
    }
    Ok(())
}

/// Deletes leftover temporary files and returns the first indexes of the segment files,
/// sorted, and the purged segment files kept for reuse.
fn list_segments(io: &LogIo, dir: &Path) -> Result<(Vec<u64>, Vec<PathBuf>)> {
    let mut names = Vec::new();
    let mut free = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| Error::io("list log directory", dir, e))? {
        let item = item.map_err(|e| Error::io("list log directory", dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with(FREE_PREFIX) && name.ends_with(TMP_SUFFIX) {
            // A purged segment kept for reuse: see `reuse_free_files`.
            free.push(item.path());
        } else if name.ends_with(TMP_SUFFIX) {
            // An interrupted atomic replace or zero-fill: never part of the log.
            let path = item.path();
            io.remove_file(&path)
                .map_err(|e| Error::io("remove temp file", &path, e))?;
        } else if let Some(first_index) = parse_segment_name(&name) {
            names.push(first_index);
        }
    }
    names.sort_unstable();
    free.sort_unstable();
    Ok((names, free))
}

/// Puts the purged segment files kept by an earlier run back into the pool (deleting what does
/// not fit: another segment size, or more than [`FREE_SEGMENTS_MAX`]). Reusing them is as safe
/// as in the run that freed them: a file is renamed to `free-*.tmp` only after the purge point
/// covering all its records is durable, and purge points never go back. A free file that was
/// being installed when the process stopped (new header written, not yet renamed) holds no
/// record under that header: records are written only after the rename is durable.
fn reuse_free_files(
    io: &LogIo,
    writer: &mut Writer,
    options: Options,
    paths: Vec<PathBuf>,
) -> Result<()> {
    for path in paths {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open free segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat free segment", &path, e))?
            .len();
        if len == options.segment_bytes && writer.free.len() < FREE_SEGMENTS_MAX {
            writer.free.push((path, file));
        } else {
            io.remove_file(&path)
                .map_err(|e| Error::io("remove free segment", &path, e))?;
        }
    }
    Ok(())
}

/// The first index removed by the truncation that a crash interrupted, if the truncation
/// file is there.
fn read_truncating(dir: &Path, purged: LogId) -> Result<Option<u64>> {
    let Some((path, bytes)) = read_small_file(dir, TRUNCATING_FILE, TRUNCATING_FILE_BYTES)? else {
        return Ok(None);
    };
    let from = decode_truncating(&bytes).map_err(|r| Error::corrupt(&path, 0, r))?;
    if from <= purged.index {
        // A truncation never reaches the purge point, and none can be under way during a
        // purge (the file is gone before `truncate` returns).
        let reason = format!(
            "truncation from {from} at or below the purge point {}",
            purged.index
        );
        return Err(Error::corrupt(&path, 0, reason));
    }
    Ok(Some(from))
}

/// Deletes the segments that start after `from`, which an interrupted truncation removes,
/// syncs the directory, and drops them from `first_indexes` (sorted).
fn remove_segments_after(
    io: &LogIo,
    dir: &Path,
    dir_file: &File,
    first_indexes: &mut Vec<u64>,
    from: u64,
) -> Result<()> {
    let kept = first_indexes.partition_point(|&first| first <= from);
    if kept == first_indexes.len() {
        return Ok(());
    }
    if kept == 0 {
        // The segment holding `from - 1` is missing: nothing is deleted on such a log.
        let path = dir.join(segment_name(first_indexes[0]));
        let reason = format!("log starts at {} after the cut at {from}", first_indexes[0]);
        return Err(Error::corrupt(path, 0, reason));
    }
    for &first_index in first_indexes[kept..].iter().rev() {
        let path = dir.join(segment_name(first_index));
        io.remove_file(&path)
            .map_err(|e| Error::io("remove segment", &path, e))?;
    }
    io.sync_dir(dir_file)
        .map_err(|e| Error::io("sync log directory", dir, e))?;
    first_indexes.truncate(kept);
    Ok(())
}

/// Opens the segments named `first_indexes` (sorted), deletes those wholly below the purge
/// point (left by an interrupted purge) and checks that the rest chain without a hole. With
/// `cut_from`, the last segment ends before that index at the latest (an interrupted
/// truncation; the segments after it are already deleted).
fn open_segments(
    io: &LogIo,
    dir: &Path,
    dir_file: &File,
    first_indexes: &[u64],
    purged: LogId,
    cut_from: Option<u64>,
) -> Result<VecDeque<Segment>> {
    let mut segments = VecDeque::with_capacity(first_indexes.len());
    // A segment followed by one that starts at or below `purged + 1` holds only purged
    // records (an interrupted purge): delete it unread. Such a segment may be a recycled one
    // whose stale tail was not zeroed (a purge that empties the log rolls without zeroing).
    let wholly_purged = first_indexes
        .windows(2)
        .take_while(|pair| pair[1] <= purged.index.saturating_add(1))
        .count();
    for &first_index in &first_indexes[..wholly_purged] {
        let path = dir.join(segment_name(first_index));
        remove_durably(io, dir_file, &path)?;
    }
    let first_indexes = &first_indexes[wholly_purged..];
    for (position, &first_index) in first_indexes.iter().enumerate() {
        let path = dir.join(segment_name(first_index));
        let is_last = position + 1 == first_indexes.len();
        let stop = match cut_from {
            Some(from) if is_last => SegmentEnd::CutFrom(from),
            _ => SegmentEnd::Scanned,
        };
        segments.push_back(open_segment(io, path, first_index, is_last, stop)?);
    }
    while let Some(segment) = segments.front() {
        let next = segment.next_index();
        let empty_current = segment.offsets.is_empty() && segment.first_index == purged.index + 1;
        if next > purged.index + 1 || empty_current {
            break;
        }
        remove_durably(io, dir_file, &segment.path)?;
        segments.pop_front();
    }
    if let Some(first) = segments.front() {
        if first.first_index > purged.index + 1 {
            let reason = format!(
                "log starts at {} but the purge point is {}",
                first.first_index, purged.index
            );
            return Err(Error::corrupt(&first.path, 0, reason));
        }
    }
    for pair in segments.iter().collect::<Vec<_>>().windows(2) {
        if pair[1].first_index != pair[0].next_index() {
            let reason = format!(
                "segment starts at {} but the previous one ends before {}",
                pair[1].first_index,
                pair[0].next_index()
            );
            return Err(Error::corrupt(&pair[1].path, 0, reason));
        }
    }
    Ok(segments)
}

/// The last steps of opening, once the segments are open: the direct I/O probe, the current
/// segment synced, the id of the last entry, the spare started if needed.
fn finish_open(
    io: &LogIo,
    dir: &Path,
    writer: &mut Writer,
    index: &mut Index,
    options: Options,
) -> Result<()> {
    let current = index.current();
    if options.direct_io {
        writer.direct = DirectFile::probe(io, current)?;
        writer.direct_io = writer.direct.is_some();
        if !writer.direct_io {
            tracing::info!(dir = %dir.display(),
                "no direct I/O here: appends go through the page cache");
        }
    }
    // What was read (and the probe rewrote) is now durable, so later records may claim it
    // as such.
    io.sync_data(&current.file)
        .map_err(|e| Error::io("sync segment", &current.path, e))?;
    writer.durable_bytes = current.end;
    let spare_needed = needs_spare(current.end, current.capacity());
    if let Some(segment) = index.segments.iter().rev().find(|s| !s.offsets.is_empty()) {
        let last = segment.log_id(segment.next_index() - 1)?;
        if last.index > index.purged.index {
            index.last = last;
        }
    }
    if spare_needed {
        start_spare(io, dir, writer, options);
    }
    Ok(())
}

/// Reads a small file of exactly `bytes` bytes, if it exists; any other size is corruption.
fn read_small_file(dir: &Path, name: &str, bytes: usize) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let path = dir.join(name);
    let len = match fs::metadata(&path) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("stat", &path, e)),
    };
    if len != bytes as u64 {
        return Err(Error::corrupt(
            &path,
            0,
            format!("{len} bytes where {bytes} were expected"),
        ));
    }
    let content = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    Ok(Some((path, content)))
}

/// Atomically replaces `dir/name` with `bytes`: write a temporary file, sync it, rename it over
/// the old one, sync the directory.
fn replace_file(io: &LogIo, dir: &Path, dir_file: &File, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let path = dir.join(name);
    let file = io
        .create(&tmp)
        .map_err(|e| Error::io("create temp file", &tmp, e))?;
    io.write_at(&file, bytes, 0)
        .map_err(|e| Error::io("write temp file", &tmp, e))?;
    io.sync_all(&file)
        .map_err(|e| Error::io("sync temp file", &tmp, e))?;
    io.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &path, e))?;
    io.sync_dir(dir_file)
        .map_err(|e| Error::io("sync log directory", dir, e))
}

/// Deletes a file of the log directory and syncs the directory, so that deletions reach the
/// disk in order.
fn remove_durably(io: &LogIo, dir_file: &File, path: &Path) -> Result<()> {
    io.remove_file(path)
        .map_err(|e| Error::io("remove", path, e))?;
    io.sync_dir(dir_file)
        .map_err(|e| Error::io("sync log directory", path, e))
}

/// Whether to prepare the next segment: once the current one is half full. Zero-filling
/// competes with the foreground syncs for the disk (measured: starting it right after a roll
/// cost 20% of the batch-1 append rate while it ran), so it starts as late as possible while
/// still finishing long before the segment fills at any sustainable append rate.
fn needs_spare(end: u64, capacity: u64) -> bool {
    end.saturating_mul(2) >= capacity
}

/// Keeps a purged segment's file for reuse (renamed to `free-<first index>.tmp`, directory
/// synced) when it has the current segment size and the pool has room, else deletes it.
/// Called only after the purge point covering every record of the segment is durable.
fn recycle_or_remove(
    io: &LogIo,
    dir: &Path,
    writer: &mut Writer,
    options: Options,
    segment: Segment,
) -> Result<()> {
    if writer.free.len() >= FREE_SEGMENTS_MAX || segment.capacity() != options.segment_bytes {
        return remove_durably(io, &writer.dir_file, &segment.path);
    }
    let Segment { path, file, .. } = segment;
    let Ok(file) = Arc::try_unwrap(file) else {
        // Someone still holds the file (cannot happen under the idle writer lock): never
        // rewrite it, just delete it.
        return remove_durably(io, &writer.dir_file, &path);
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let free_path = dir.join(format!(
        "{FREE_PREFIX}{}{TMP_SUFFIX}",
        name.unwrap_or_default()
    ));
    io.rename(&path, &free_path)
        .map_err(|e| Error::io("recycle segment", &path, e))?;
    io.sync_dir(&writer.dir_file)
        .map_err(|e| Error::io("sync log directory", dir, e))?;
    writer.free.push((free_path, file));
    Ok(())
}

/// Starts zero-filling the next spare segment in the background, unless one is under way or
/// a purged file is free for reuse.
fn start_spare(io: &LogIo, dir: &Path, writer: &mut Writer, options: Options) {
    if writer.spare.is_some() || !writer.free.is_empty() {
        return;
    }
    let path = dir.join(SPARE_FILE);
    let segment_bytes = options.segment_bytes;
    let io = io.clone();
    let spawned = std::thread::Builder::new()
        .name("raft-log-prealloc".into())
        .spawn(move || create_zeroed(&io, &path, segment_bytes));
    match spawned {
        Ok(handle) => writer.spare = Some(handle),
        // Without a thread the next roll zero-fills in the foreground instead.
        Err(error) => tracing::warn!(%error, "cannot start the segment preallocation thread"),
    }
}

/// Turns a free purged file, else the spare (or a freshly zero-filled file), into the segment
/// starting at `first_index`: header written and synced, renamed into place, directory synced.
fn install_segment(
    io: &LogIo,
    dir: &Path,
    writer: &mut Writer,
    options: Options,
    first_index: u64,
) -> Result<Segment> {
    if let Some((free_path, file)) = writer.free.pop() {
        return install_file(io, dir, writer, file, &free_path, first_index, true);
    }
    let spare_path = dir.join(SPARE_FILE);
    let spare = match writer.spare.take().map(JoinHandle::join) {
        Some(Ok(Ok(file))) => Ok(file),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(_)) => Err(std::io::Error::other("preallocation thread panicked")),
        None => create_zeroed(io, &spare_path, options.segment_bytes),
    };
    let file = spare.map_err(|e| Error::io("preallocate segment", &spare_path, e))?;
    install_file(io, dir, writer, file, &spare_path, first_index, false)
}

/// Writes the header of a segment starting at `first_index` into `file` (at `from`), syncs it,
/// renames it into place and syncs the directory. `stale_tail`: the file is a recycled one.
fn install_file(
    io: &LogIo,
    dir: &Path,
    writer: &mut Writer,
    file: File,
    from: &Path,
    first_index: u64,
    stale_tail: bool,
) -> Result<Segment> {
    let header = encode_segment_header(first_index);
    io.write_at(&file, &header, 0)
        .and_then(|()| io.sync_data(&file))
        .map_err(|e| Error::io("write segment header", from, e))?;
    let path = dir.join(segment_name(first_index));
    io.rename(from, &path)
        .map_err(|e| Error::io("rename segment", &path, e))?;
    io.sync_dir(&writer.dir_file)
        .map_err(|e| Error::io("sync log directory", dir, e))?;
    let segment = Segment::new(first_index, path, file, stale_tail)?;
    debug_assert!(segment.capacity() >= (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES) as u64);
    Ok(segment)
}

//! One segment file: creation by zero-filling (or recycling, see `log.rs`), opening with a
//! full CRC scan, and reads through its memory map.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;
use raft_core::{Entry, LogId};

use crate::error::{Error, Result};
use crate::format::{
    decode_record, decode_segment_header, record_index_field, reread_record, Decoded, RecordRef,
    RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::io::{Io, LogIo};
use crate::SEGMENT_BYTES_MAX;

/// Size of the zero buffer used to fill new segments and to zero cut tails.
pub(crate) const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// The largest first index a segment may have: far above any real log, low enough that index
/// arithmetic on a damaged or crafted file name cannot overflow.
const INDEX_MAX: u64 = u64::MAX >> 2;

/// Suffix of segment file names.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";

/// The file name of the segment whose first record has index `first_index`.
pub(crate) fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back into its first index.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes zeros over `[from, to)` of `file`.
pub(crate) fn zero_range(io: &LogIo, file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES.min(to.saturating_sub(from) as usize)];
    let mut at = from;
    while at < to {
        let len = (to - at).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
        io.write_at(file, &zeros[..len], at)?;
        at += len as u64;
    }
    Ok(())
}

/// Creates (or truncates) `path` and fills it with `segment_bytes` zeros, synced. Writing the
/// zeros, instead of `fallocate`, makes later syncs into these blocks cheap: the file system
/// does not have to convert unwritten extents on every `fdatasync`.
pub(crate) fn create_zeroed(io: &LogIo, path: &Path, segment_bytes: u64) -> std::io::Result<File> {
    let file = io.create(path)?;
    zero_range(io, &file, 0, segment_bytes)?;
    io.sync_all(&file)?;
    Ok(file)
}

/// A segment of the log: its file, its map and where each of its records starts.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Index of the first record (also in the header and the file name).
    pub first_index: u64,
    /// The file's path, for error messages and deletion.
    pub path: PathBuf,
    /// The open file, written with `pwrite` and synced with `fdatasync`.
    pub file: Arc<File>,
    /// A read-only map of the whole file.
    pub map: Mmap,
    /// Offset of record `first_index + i` at position `i`.
    pub offsets: Vec<u32>,
    /// Offset one past the last record: where the next record goes.
    pub end: u64,
    /// The bytes after `end` may be non-zero: stale records of a recycled file, or torn bytes
    /// that recovery left in place because they cannot pass for a record. They must be zeroed
    /// before the segment stops being the last one (recovery requires zeros there).
    pub stale_tail: bool,
}

impl Segment {
    /// Maps `file`, which already holds a valid header for `first_index`; `stale_tail` says
    /// whether the bytes after the header may be non-zero (a recycled file).
    pub fn new(first_index: u64, path: PathBuf, file: File, stale_tail: bool) -> Result<Segment> {
        // SAFETY: the map is read-only and this process owns the log directory; bytes under a
        // record that readers can reach are never changed while that record is indexed
        // (truncation removes records from the index before it zeroes their bytes; a write
        // that starts at a block boundary below the end rewrites the bytes it covers with the
        // same bytes: `direct.rs`), nor while an `EntryRef` borrows them (truncate and purge
        // wait for its pin: `borrow.rs`).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("map segment", &path, e))?;
        let end = SEGMENT_HEADER_BYTES as u64;
        Ok(Segment {
            first_index,
            path,
            file: Arc::new(file),
            map,
            offsets: Vec::new(),
            end,
            stale_tail,
        })
    }

    /// Bytes the segment can hold, header included.
    pub fn capacity(&self) -> u64 {
        self.map.len() as u64
    }

    /// Index one past the last record of this segment.
    pub fn next_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64
    }

    /// The id of the record at `index`, which must be in this segment.
    pub fn log_id(&self, index: u64) -> Result<LogId> {
        self.record(index)
            .map(|record| LogId::new(record.term, record.index))
    }

    /// Lets the kernel drop this process's mapping of the pages holding records `[low, high)`
    /// (clamped to this segment). The pages stay in the page cache and a later read faults
    /// them back in, so nothing changes for readers; only resident memory goes down after
    /// a long read through the map (a node reading its log back).
    pub fn release(&self, low: u64, high: u64) {
        let low = low.max(self.first_index);
        let high = high.min(self.next_index());
        if low >= high {
            return;
        }
        let page = page_bytes();
        let start = self.offsets[(low - self.first_index) as usize] as usize / page * page;
        let end = match self.offsets.get((high - self.first_index) as usize) {
            Some(next) => *next as usize,
            None => self.end as usize,
        };
        let end = end.div_ceil(page).saturating_mul(page).min(self.map.len());
        if start < end {
            // SAFETY: the map is a read-only, shared map of a file. MADV_DONTNEED only removes
            // this process's page table entries: the next access maps the same page-cache page
            // again, with the same bytes, so borrowed records (`EntryRef`) stay valid.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }

    /// Reads the record at `index`, which must be in this segment, checking its CRC again,
    /// and copies it out.
    #[inline]
    pub fn read(&self, index: u64) -> Result<Entry> {
        self.record(index).map(|record| Entry {
            term: record.term,
            index,
            kind: record.kind,
            data: Bytes::copy_from_slice(record.payload),
        })
    }

    /// The record at `index`, which must be in this segment, in place, its CRC checked again.
    #[inline(always)]
    pub fn record(&self, index: u64) -> Result<RecordRef<'_>> {
        let offset = self.offsets[(index - self.first_index) as usize] as usize;
        reread_record(&self.map, self.first_index, offset, index)
            .map_err(|reason| self.changed(index, offset, reason))
    }

    /// The error for a record that no longer reads as it did when it was indexed.
    #[cold]
    fn changed(&self, index: u64, offset: usize, reason: &str) -> Error {
        let reason = format!("record {index} changed on disk after it was checked: {reason}");
        Error::corrupt(&self.path, offset as u64, reason)
    }
}

/// Where the scan of a segment's records must stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegmentEnd {
    /// At the first record that is not intact and next in sequence.
    Scanned,
    /// At the record with this index at the latest: an interrupted truncation removed it and
    /// everything after it (the durable truncation file says so), whatever the disk still
    /// holds there.
    CutFrom(u64),
}

/// Opens the segment at `path` (named after `first_index`) and scans every record.
///
/// In the last segment (`is_last`) a bad record is a torn write when no later record says the
/// bytes under it had been synced (`durable_bytes`): the tail from there on is zeroed and
/// synced. A bad record anywhere else is corruption. With [`SegmentEnd::CutFrom`] (only for
/// the last segment) the records from the cut on are removed the same way, whatever they
/// claim.
pub(crate) fn open_segment(
    io: &LogIo,
    path: PathBuf,
    first_index: u64,
    is_last: bool,
    stop: SegmentEnd,
) -> Result<Segment> {
    debug_assert!(is_last || stop == SegmentEnd::Scanned);
    if first_index > INDEX_MAX {
        return Err(Error::corrupt(&path, 0, "first index out of range"));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open segment", &path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat segment", &path, e))?
        .len();
    if len > SEGMENT_BYTES_MAX {
        return Err(Error::corrupt(
            &path,
            0,
            format!("segment of {len} bytes is too large"),
        ));
    }
    if len < SEGMENT_HEADER_BYTES as u64 {
        return Err(Error::corrupt(&path, 0, "segment shorter than its header"));
    }
    if len % RECORD_ALIGN_BYTES as u64 != 0 {
        // Every segment this crate writes is a multiple of 4 KiB; the scans below rely on
        // whole 8-byte words up to the end.
        let reason = format!("segment of {len} bytes is not a multiple of {RECORD_ALIGN_BYTES}");
        return Err(Error::corrupt(&path, 0, reason));
    }
    let mut segment = Segment::new(first_index, path, file, false)?;
    match decode_segment_header(&segment.map) {
        Ok(found) if found == first_index => {}
        Ok(found) => {
            let reason = format!("header says first index {found}, file name says {first_index}");
            return Err(Error::corrupt(&segment.path, 0, reason));
        }
        Err(reason) => return Err(Error::corrupt(&segment.path, 0, reason)),
    }
    let cut_from = match stop {
        SegmentEnd::Scanned => u64::MAX,
        SegmentEnd::CutFrom(from) => from,
    };
    let scan = scan_records(&segment.map, first_index, cut_from);
    if let Some((offset, reason)) = scan.invalid {
        return Err(Error::corrupt(&segment.path, offset as u64, reason));
    }
    let tail = scan_tail(&segment.map, first_index, scan.end);
    let stopped = scan
        .stop_reason
        .unwrap_or("zeroed bytes where a record should be");
    if !is_last && (scan.stop_reason.is_some() || tail.nonzero_end > scan.end) {
        // Segments before the last are synced completely before the next one is created:
        // nothing in them can be torn.
        return Err(Error::corrupt(&segment.path, scan.end as u64, stopped));
    }
    if tail.durable_bytes_max > scan.end as u64 && !scan.at_cut {
        // A later record was written after these bytes were synced: they were acknowledged.
        // (Not so at a cut: every byte from there on was removed by the truncation.)
        return Err(Error::corrupt(&segment.path, scan.end as u64, stopped));
    }
    // Only intact records of this segment (right CRC seed, so written in this life of the
    // file) could later be mistaken for log entries: a new record ending exactly where one of
    // them starts would let the scan run on into it. They are zeroed. Any other bytes after
    // `scan.end` (a torn record, stale records of a recycled file) can never pass the CRC
    // under this segment's first index and are overwritten by later appends; zeroing a
    // recycled 64 MiB file on every open would cost more than the open itself.
    if tail.intact_end > scan.end {
        if scan.at_cut {
            tracing::info!(path = %segment.path.display(), offset = scan.end,
                "finishing an interrupted truncation");
        } else {
            tracing::warn!(
                path = %segment.path.display(),
                offset = scan.end,
                reason = stopped,
                "cutting the torn tail of the log"
            );
        }
        zero_range(io, &segment.file, scan.end as u64, tail.intact_end as u64)
            .and_then(|()| io.sync_data(&segment.file))
            .map_err(|e| Error::io("zero torn tail", &segment.path, e))?;
        debug_assert!(segment.map[scan.end..tail.intact_end]
            .iter()
            .all(|&b| b == 0));
    } else if tail.nonzero_end > scan.end {
        let this_life =
            record_index_field(&segment.map, scan.end).is_some_and(|index| index >= first_index);
        if this_life {
            tracing::warn!(
                path = %segment.path.display(),
                offset = scan.end,
                reason = stopped,
                "the log ends in a torn record, left in place (it cannot pass its CRC)"
            );
        } else {
            tracing::debug!(path = %segment.path.display(), offset = scan.end,
                "the log ends before stale bytes of a recycled segment");
        }
    }
    segment.stale_tail = tail.nonzero_end > tail.intact_end.max(scan.end);
    segment.offsets = scan.offsets;
    segment.end = scan.end as u64;
    // The scan read every page of the segment through the map; none of them needs to stay
    // in this process's resident memory (a log of large entries would otherwise be resident
    // in full right after open). Readers fault what they use back in from the page cache.
    segment.release(first_index, u64::MAX);
    Ok(segment)
}

/// What a scan of the valid records found.
struct RecordScan {
    offsets: Vec<u32>,
    /// Offset one past the last valid record.
    end: usize,
    /// Why the scan stopped, unless it stopped at zero bytes.
    stop_reason: Option<&'static str>,
    /// A record with a good CRC but impossible fields: corruption wherever it is.
    invalid: Option<(usize, &'static str)>,
    /// The scan stopped at the cut of an interrupted truncation.
    at_cut: bool,
}

/// Scans the records of a segment from its first one, up to the first that is not intact and
/// next in sequence, or up to the record with index `cut_from`, whichever comes first.
fn scan_records(map: &[u8], first_index: u64, cut_from: u64) -> RecordScan {
    let mut offsets = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    let mut expected = first_index;
    loop {
        if expected >= cut_from {
            return RecordScan {
                offsets,
                end: at,
                stop_reason: None,
                invalid: None,
                at_cut: true,
            };
        }
        let stop_reason = match decode_record(map, first_index, at) {
            Decoded::Record(record) if record.index == expected && expected < u64::MAX => {
                offsets.push(at as u32);
                at += record.total_bytes;
                expected += 1;
                continue;
            }
            Decoded::Record(_) => Some("record index out of sequence"),
            Decoded::Zero => None,
            Decoded::Bad(reason) => Some(reason),
            Decoded::Invalid(reason) => {
                return RecordScan {
                    offsets,
                    end: at,
                    stop_reason: None,
                    invalid: Some((at, reason)),
                    at_cut: false,
                }
            }
        };
        return RecordScan {
            offsets,
            end: at,
            stop_reason,
            invalid: None,
            at_cut: false,
        };
    }
}

/// What lies after the valid records.
struct TailScan {
    /// The largest `durable_bytes` claimed by any intact record found after the valid ones.
    durable_bytes_max: u64,
    /// An offset at or past the last non-zero byte (`from` when everything is zero).
    nonzero_end: usize,
    /// The end of the last intact record of this segment found after the valid ones (`from`
    /// when there is none).
    intact_end: usize,
}

/// Looks at every aligned offset from `from` to the last non-zero byte for an intact record of
/// the segment starting at `first_index`. Never allocates.
///
/// An offset whose index field is outside what this segment can hold (`first_index` plus one
/// record per 32 bytes) is skipped without computing a CRC: such a record could not belong to
/// this segment (the CRC would fail it anyway). The candidates are found by one pass over the
/// 8-byte words, so the stale tail of a recycled 64 MiB segment (mostly plausible-looking old
/// records) costs a few milliseconds, not a CRC per offset.
fn scan_tail(map: &[u8], first_index: u64, from: usize) -> TailScan {
    debug_assert_eq!(from % RECORD_ALIGN_BYTES, 0);
    let mut tail = TailScan {
        durable_bytes_max: 0,
        nonzero_end: nonzero_end(map, from),
        intact_end: from,
    };
    let records_max = (map.len() / RECORD_HEADER_BYTES) as u64;
    let possible = |word: &[u8]| {
        let index = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        index.wrapping_sub(first_index) <= records_max
    };
    // Word `k` of `map[from + 8..]` is the index field of a header at `from + 8 * k`.
    let mut at = from;
    // An intact record's index field is not zero, so it lies before `nonzero_end`.
    while at + 2 * RECORD_ALIGN_BYTES <= tail.nonzero_end {
        let fields = &map[at + RECORD_ALIGN_BYTES..tail.nonzero_end];
        let Some(skip) = fields.chunks_exact(RECORD_ALIGN_BYTES).position(possible) else {
            break;
        };
        at += skip * RECORD_ALIGN_BYTES;
        match decode_record(map, first_index, at) {
            Decoded::Record(record) => {
                tail.durable_bytes_max = tail.durable_bytes_max.max(record.durable_bytes.into());
                tail.intact_end = at + record.total_bytes;
                at += record.total_bytes;
            }
            _ => at += RECORD_ALIGN_BYTES,
        }
    }
    tail
}

/// The offset one past the 8-byte word holding the last non-zero byte at or after `from`
/// (`from` if there is none; `map.len() - from` is a multiple of 8).
fn nonzero_end(map: &[u8], from: usize) -> usize {
    /// Bytes OR-folded at once while looking for the last non-zero block.
    const BLOCK_BYTES: usize = 256;
    let tail = &map[from..];
    let mut end = tail.len();
    // Segment sizes and `from` are multiples of 8: blocks from the end are whole words.
    while end > 0 {
        let start = end.saturating_sub(BLOCK_BYTES);
        if tail[start..end].iter().fold(0u8, |acc, &b| acc | b) != 0 {
            let last = tail[start..end]
                .iter()
                .rposition(|&b| b != 0)
                .expect("a non-zero byte");
            return from + ((start + last) / RECORD_ALIGN_BYTES + 1) * RECORD_ALIGN_BYTES;
        }
        end = start;
    }
    from
}

/// The size of a memory page.
fn page_bytes() -> usize {
    // SAFETY: sysconf has no preconditions.
    let bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(bytes)
        .ok()
        .filter(|b| *b > 0)
        .unwrap_or(4096)
}

//! Direct I/O for appends ([`Options::direct_io`](crate::Options::direct_io)): the current
//! segment written with `O_DIRECT`, around the page cache.
//!
//! # Why, and what it measured
//! A durable append is a write plus `fdatasync`. Through the page cache the write copies the
//! batch into cached pages, and the sync then finds, writes back and waits for those pages
//! before it flushes the disk's cache. A direct write sends the batch buffer to the disk
//! itself, and the sync is left with the flush. On this machine (ext4 on a virtio disk of a
//! 2-vCPU VM) a standalone program wrote a durable 288 KiB batch in 186-237 µs direct against
//! 211-287 µs through the page cache. raft-log gains less, and not reliably:
//! alternating rounds of raft-log with and without direct I/O and the plain-file floor in one
//! process (`cargo run --release -p benches --example append_alternating`, 8 rounds, medians;
//! more in `BENCHMARKS.md`), ratio of the rate to the floor's:
//!
//! | batch | direct | page cache |
//! |---|---|---|
//! | 256 B x 1 | 1.04-1.14x | 0.96-1.04x |
//! | 256 B x 64 | 0.95-1.07x | 0.89-1.02x |
//! | 256 B x 1024 (42 processes) | 0.59-1.03x, median 0.79x | 0.80-0.96x, median 0.86x |
//! | 4 KiB x 1 | 1.00-1.08x | 0.92-1.02x |
//! | 4 KiB x 64 | 0.85-0.93x | 0.86-0.99x |
//! | 4 KiB x 1024 | 0.90-1.17x | 0.84-1.10x |
//!
//! (The floor against a second copy of itself: 0.83-1.14x, mostly 0.96-1.06x.) In the slow
//! processes, timers inside `append` put the loss in encoding the batch into the aligned
//! buffer that the previous direct write was sent from: 144-163 µs per batch instead of
//! 17-39 µs (and the write slower too). A standalone program showed it once in 18 processes,
//! and neither a new buffer per batch nor a huge-page buffer cured it; the cause (presumably
//! how the VM treats memory its host has just read for the device) is not known.
//!
//! # Rules
//! - `O_DIRECT` needs the buffer address, the file offset and the length aligned, here to
//!   [`DIRECT_IO_ALIGN_BYTES`]. A batch ending inside a block is followed by one that starts
//!   inside it, so every write starts at the block boundary below the segment's end and
//!   rewrites the bytes already there with the same bytes, kept in [`DirectFile::tail`]
//!   (reading them back from the map would cost a disk read per batch: a direct write drops
//!   the cached pages it covers). The write ends at the next block boundary, with zeros after
//!   the records, as the bytes after the end of a segment must be (or stale bytes of a
//!   recycled file, which nothing reads).
//! - A direct write returns once the disk has the data and holds the writer lock meanwhile,
//!   so only an appender that is alone writes direct (see `RaftLog::alone`); under
//!   concurrent appends the same blocks go through the page cache and share syncs, as
//!   without direct I/O.
//! - A direct write copies every payload into its aligned buffer. A batch with more than
//!   `DIRECT_COPY_BYTES_MAX` (16 KiB) of payloads over 1 KiB goes through the page cache
//!   instead, its large payloads written from where they are, still as whole blocks (the
//!   tail before the records, zeros after them), so that no page has to be read first: 4
//!   KiB x 1024 direct took up to twice as long as through the page cache (see
//!   `log::DIRECT_COPY_BYTES_MAX`). The tail is then read back from the map, where that write
//!   left it.
//! - Readers keep reading through the map while a write rewrites the block under the last
//!   records. A direct write makes the kernel drop those pages from the page cache (a reader
//!   faults them in again from the disk); a write through the page cache stores into them.
//!   Either way the bytes under indexed records are the same before and after: no value a
//!   reader can see ever changes. A crash that tears the rewrite leaves every sector of that
//!   prefix holding the same bytes either way: no worse than the page cache's writeback,
//!   which rewrites whole pages too.
//! - Durability is unchanged: a direct write lands in the disk's volatile cache, and appends
//!   return only after `fdatasync`. That relies on `fdatasync` flushing the disk's cache even
//!   when no page is dirty, which ext4 (with barriers, the default) and XFS do.
//! - Only appends to the current segment go direct. Zeroing (truncation, stale tails), headers
//!   and preallocation stay buffered: Linux keeps buffered and direct writes of one file
//!   coherent, and those writes are rare.
//! - Where a file system refuses `O_DIRECT` (`EINVAL`: tmpfs before Linux 6.6, some FUSE file
//!   systems) or the platform lacks it, appends go through the page cache.
//!
//! # The costs, and why it is not the default
//! What was appended direct is not in the page cache. The first read of it takes a page fault
//! that reads from the disk, and so does reopening the log, which reads every record:
//! reopening 1 M entries of 256 B right after appending them took 309 ms with direct I/O and
//! 29 ms without (the disk reads at 0.85-2 GB/s here, so no cold reopen of those 288 MB can
//! take less than about 150 ms). The design of this crate (reads through the maps) assumes
//! recent records are cached; direct I/O is for logs written far more than read back, on
//! machines where it measures faster.

use std::fs::{File, OpenOptions};

use crate::error::{Error, Result};
use crate::io::{Io, LogIo};
use crate::segment::Segment;

/// Alignment of the buffer address, file offset and length of every direct write: 4 KiB, the
/// page size and the largest logical block size of common disks, so that one value serves
/// every device and the file system's block size.
pub(crate) const DIRECT_IO_ALIGN_BYTES: usize = 4 << 10;

const _: () = assert!(crate::SEGMENT_BYTES_ALIGN % DIRECT_IO_ALIGN_BYTES as u64 == 0);

/// The current segment opened for direct writes.
#[derive(Debug)]
pub(crate) struct DirectFile {
    /// The segment file, opened with `O_DIRECT`.
    pub file: File,
    /// First index of the segment this handle writes: checked before every write.
    pub segment_first_index: u64,
    /// The segment's bytes from the last [`DIRECT_IO_ALIGN_BYTES`] boundary at or below its
    /// end up to the end: the start of the next direct write.
    pub tail: Vec<u8>,
}

impl DirectFile {
    /// Opens `segment` for direct writes. `Ok(None)` when the file system or the platform does
    /// not do direct I/O, or the segment's size is not a whole number of blocks.
    pub fn open(segment: &Segment) -> Result<Option<DirectFile>> {
        if segment.capacity() % DIRECT_IO_ALIGN_BYTES as u64 != 0 {
            return Ok(None);
        }
        let file = match open_direct(segment) {
            Ok(file) => file,
            Err(e) if refused(&e) => return Ok(None),
            Err(e) => return Err(Error::io("open segment for direct I/O", &segment.path, e)),
        };
        Ok(Some(DirectFile {
            file,
            segment_first_index: segment.first_index,
            tail: tail_of(segment).to_vec(),
        }))
    }

    /// Opens `segment` for direct writes and proves that the file system takes them, by
    /// rewriting the block holding the segment's end (the last block if the segment is full)
    /// with the same bytes, zeros after the end. `Ok(None)` as for [`DirectFile::open`], or
    /// when that write is refused with `EINVAL`. The caller syncs the segment afterwards.
    pub fn probe(io: &LogIo, segment: &Segment) -> Result<Option<DirectFile>> {
        let Some(direct) = DirectFile::open(segment)? else {
            return Ok(None);
        };
        let end = segment.end as usize;
        let last_block = segment.map.len() - DIRECT_IO_ALIGN_BYTES;
        let start = end.min(last_block) / DIRECT_IO_ALIGN_BYTES * DIRECT_IO_ALIGN_BYTES;
        let mut block = AlignedBlock::new();
        block.bytes_mut()[..end - start].copy_from_slice(&segment.map[start..end]);
        match io.write_at(&direct.file, block.bytes(), start as u64) {
            Ok(()) => Ok(Some(direct)),
            Err(e) if refused(&e) => Ok(None),
            Err(e) => Err(Error::io("write segment", &segment.path, e)),
        }
    }
}

/// The bytes from the last block boundary at or below the end of `segment` up to its end: what
/// [`DirectFile::tail`] holds while `segment` is current.
pub(crate) fn tail_of(segment: &Segment) -> &[u8] {
    let end = segment.end as usize;
    &segment.map[end - end % DIRECT_IO_ALIGN_BYTES..end]
}

/// Whether an error says that direct I/O is not available here (rather than that the disk
/// failed).
fn refused(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidInput || e.kind() == std::io::ErrorKind::Unsupported
}

#[cfg(target_os = "linux")]
fn open_direct(segment: &Segment) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&segment.path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_segment: &Segment) -> std::io::Result<File> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// One zeroed block at an aligned address, for the probe.
struct AlignedBlock {
    storage: Box<[u8]>,
    start: usize,
}

impl AlignedBlock {
    fn new() -> AlignedBlock {
        let storage = vec![0u8; 2 * DIRECT_IO_ALIGN_BYTES].into_boxed_slice();
        let start = storage.as_ptr().align_offset(DIRECT_IO_ALIGN_BYTES);
        AlignedBlock { storage, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + DIRECT_IO_ALIGN_BYTES]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + DIRECT_IO_ALIGN_BYTES]
    }
}

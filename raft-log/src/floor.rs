//! The physical floor that raft-log's durable appends are measured against: the same
//! payloads copied back to back into one buffer, written with one `pwrite` into a
//! zero-filled file, then one `fdatasync` per batch. No framing, no checksum, no index:
//! what any log must at least do to make a batch durable, on the same disk.
//!
//! One definition for every measurement: the criterion benchmark
//! (`benches/benches/log_store.rs`), its alternating driver
//! (`benches/examples/append_alternating.rs`) and `raft bench-log`, which runs on an
//! operator's own disk, all use this type.
//!
//! ```
//! use raft_log::floor::Floor;
//!
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let mut floor = Floor::create(&dir.path().join("floor"), 1 << 20)?;
//! floor.append(&[b"first entry".as_slice(), b"second".as_slice()])?; // durable now
//! let mut read = [0u8; 6];
//! floor.read_at(&mut read, 11)?;
//! assert_eq!(&read, b"second");
//! # Ok(())
//! # }
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of zeros written per `pwrite` while a file is zero-filled.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// Creates (or truncates) `path` and fills it with at least `bytes` zeros (rounded up to
/// whole MiB), synced: later syncs into these blocks are cheap, as into raft-log's
/// zero-filled or recycled segments, so the floor is measured on the same footing.
pub fn create_zero_filled(path: &Path, bytes: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
    let mut at = 0;
    while at < bytes {
        file.write_all_at(&zeros, at)?;
        at += zeros.len() as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// A zero-filled file written as the floor: each batch of payloads back to back (each
/// after `header_bytes` zeros, 0 by default) with one `pwrite` and one `fdatasync`. When a
/// batch would pass the end of the file, writing starts over at the first offset.
#[derive(Debug)]
pub struct Floor {
    file: File,
    /// The file's length: at least the `bytes` it was created with.
    file_bytes: u64,
    /// Where the first batch is written, and where writing starts over.
    start: u64,
    /// Zeros written before each payload.
    header_bytes: usize,
    /// Where the next batch is written.
    end: u64,
    buf: Vec<u8>,
}

impl Floor {
    /// A floor in a new zero-filled file of at least `bytes` bytes at `path`.
    pub fn create(path: &Path, bytes: u64) -> io::Result<Floor> {
        Floor::with_headers(path, bytes, 0, 0)
    }

    /// A floor that writes `header_bytes` zeros before each payload, from offset `start`:
    /// with raft-log's record and segment header sizes, as many bytes per entry as raft-log
    /// writes, at the same offsets.
    pub fn with_headers(
        path: &Path,
        bytes: u64,
        start: u64,
        header_bytes: usize,
    ) -> io::Result<Floor> {
        let file = create_zero_filled(path, bytes.max(start + 1))?;
        let file_bytes = file.metadata()?.len();
        Ok(Floor {
            file,
            file_bytes,
            start,
            header_bytes,
            end: start,
            buf: Vec::new(),
        })
    }

    /// Writes a batch and returns once it is durable (`fdatasync`).
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> io::Result<()> {
        self.buf.clear();
        for payload in payloads {
            self.buf.resize(self.buf.len() + self.header_bytes, 0);
            self.buf.extend_from_slice(payload.as_ref());
        }
        if self.end + self.buf.len() as u64 > self.file_bytes {
            self.end = self.start;
        }
        self.file.write_all_at(&self.buf, self.end)?;
        self.end += self.buf.len() as u64;
        self.file.sync_data()
    }

    /// Reads `buf.len()` bytes at `offset` (a `pread`): the floor of a point read.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// The file's length in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_written_back_to_back_and_start_over_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floor");
        let mut floor = Floor::with_headers(&path, 1 << 20, 64, 8).unwrap();
        assert_eq!(floor.file_bytes(), 1 << 20);
        floor.append(&[[1u8; 16], [2u8; 16]]).unwrap();
        let mut bytes = [9u8; 48];
        floor.read_at(&mut bytes, 64).unwrap();
        let expected: Vec<u8> = [[0u8; 8], [1; 8], [1; 8], [0; 8], [2; 8], [2; 8]].concat();
        assert_eq!(bytes.to_vec(), expected);
        // A batch that does not fit before the end goes to the start.
        let large = vec![3u8; (1 << 20) - 100];
        floor.append(&[&large]).unwrap();
        let mut first = [0u8; 8];
        floor.read_at(&mut first, 64 + 8).unwrap();
        assert_eq!(first, [3u8; 8]);
    }
}

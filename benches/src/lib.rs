//! Shared helpers for the criterion benchmarks in `benches/benches/` and the examples in
//! `benches/examples/`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of zeros written per `pwrite` while filling a file.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// Creates (or truncates) `path` and fills it with at least `bytes` zeros (rounded up to whole
/// MiB), synced: later syncs into these blocks are cheap, as into raft-log's zero-filled or
/// recycled segments, so the plain-file floor is measured on the same footing.
pub fn create_zero_filled(path: &Path, bytes: u64) -> std::io::Result<File> {
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

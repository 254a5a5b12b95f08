//! File surgery helpers shared by the crash and corruption tests.

#![allow(dead_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft_core::Entry;
use raft_log::format::{decode_record, decode_segment_header, Decoded, SEGMENT_HEADER_BYTES};

/// Every file of a log directory (except `*.tmp`, which recovery deletes), by name.
pub type Image = BTreeMap<String, Vec<u8>>;

/// Reads the files of a log directory.
pub fn snapshot(dir: &Path) -> Image {
    let mut image = Image::new();
    for item in std::fs::read_dir(dir).unwrap() {
        let item = item.unwrap();
        let name = item.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".tmp") {
            image.insert(name, std::fs::read(item.path()).unwrap());
        }
    }
    image
}

/// Writes `image` into a new temporary directory.
pub fn restore(image: &Image) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in image {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

/// Names of the segment files of an image, in log order.
pub fn segment_names(image: &Image) -> Vec<String> {
    image
        .keys()
        .filter(|name| name.ends_with(".seg"))
        .cloned()
        .collect()
}

/// One record found in a segment.
#[derive(Clone, Copy, Debug)]
pub struct RecordAt {
    pub offset: usize,
    pub total_bytes: usize,
    pub index: u64,
    pub durable_bytes: u64,
}

/// The records of a segment's bytes, in order, up to the first that does not decode.
pub fn records(segment: &[u8]) -> Vec<RecordAt> {
    let mut out = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    let first_index = decode_segment_header(segment).unwrap_or(0);
    while let Decoded::Record(record) = decode_record(segment, first_index, offset) {
        out.push(RecordAt {
            offset,
            total_bytes: record.total_bytes,
            index: record.index,
            durable_bytes: record.durable_bytes.into(),
        });
        offset += record.total_bytes;
    }
    out
}

/// A normal entry whose payload depends on its index and a salt.
pub fn entry(term: u64, index: u64, len: usize, salt: u8) -> Entry {
    let data: Bytes = (0..len)
        .map(|i| (index as usize * 7 + i) as u8 ^ salt)
        .collect();
    Entry::normal(term, index, data)
}

/// The path of `name` inside `dir`.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

thread_local! {
    /// Whether the logs of the running test write appends direct (`Options::direct_io`).
    static DIRECT_IO: Cell<bool> = const { Cell::new(false) };
}

/// Runs `test` with appends written through the page cache, then with direct I/O; the test's
/// options take the mode from [`direct_io`].
pub fn in_both_write_modes(test: impl Fn()) {
    for direct_io in [false, true] {
        DIRECT_IO.set(direct_io);
        test();
    }
}

/// The write mode [`in_both_write_modes`] is running.
pub fn direct_io() -> bool {
    DIRECT_IO.get()
}

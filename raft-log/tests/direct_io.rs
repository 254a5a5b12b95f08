//! Direct I/O appends: taken where the file system allows it, and byte for byte the same
//! records as appends through the page cache.

mod common;

use common::{entry, records, segment_names, snapshot};
use raft_core::{Entry, LogId};
use raft_log::{Options, RaftLog};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Small segments, several blocks each, so that batches cross blocks and segments.
const SEGMENT_BYTES: u64 = 32 << 10;

fn options(direct_io: bool) -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        direct_io,
    }
}

/// Whether a file in `dir` takes an aligned 4 KiB `O_DIRECT` write, found independently of
/// the log.
#[cfg(target_os = "linux")]
fn file_system_takes_direct_io(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const BLOCK_BYTES: usize = 4096;
    let path = dir.join("probe");
    std::fs::write(&path, [0u8; BLOCK_BYTES]).unwrap();
    let storage = vec![0u8; 2 * BLOCK_BYTES];
    let start = storage.as_ptr().align_offset(BLOCK_BYTES);
    let block = &storage[start..start + BLOCK_BYTES];
    let written = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .and_then(|file| file.write_all_at(block, 0))
        .is_ok();
    std::fs::remove_file(&path).unwrap();
    written
}

#[cfg(not(target_os = "linux"))]
fn file_system_takes_direct_io(_dir: &std::path::Path) -> bool {
    false
}

#[test]
fn direct_io_is_taken_where_the_file_system_allows_it_and_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let expected = file_system_takes_direct_io(dir.path());
    let log = RaftLog::open(dir.path().join("direct"), options(true)).unwrap();
    assert_eq!(log.direct_io(), expected);
    let log = RaftLog::open(dir.path().join("buffered"), options(false)).unwrap();
    assert!(!log.direct_io());
}

/// The bytes of every segment up to the end of its last record: what recovery reads.
fn records_by_segment(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let image = snapshot(dir);
    segment_names(&image)
        .into_iter()
        .map(|name| {
            let bytes = &image[&name];
            let end = records(bytes)
                .last()
                .map_or(raft_log::format::SEGMENT_HEADER_BYTES, |r| {
                    r.offset + r.total_bytes
                });
            (name, bytes[..end].to_vec())
        })
        .collect()
}

/// A batch of `count` entries from `first`. Half the batches have payloads of 0 to 1,000
/// bytes, which a log that writes direct writes direct; the others 0 to 3,000 bytes (both
/// sides of the size above which payloads are written from where they are, through the page
/// cache, also by such a log).
fn batch(rng: &mut SmallRng, term: u64, first: u64, count: u64) -> Vec<Entry> {
    let bytes_max = if rng.gen() { 1000 } else { 3000 };
    (first..first + count)
        .map(|index| entry(term, index, rng.gen_range(0..bytes_max), rng.gen()))
        .collect()
}

#[test]
fn direct_and_buffered_appends_write_the_same_bytes_through_truncation_purge_and_reopen() {
    let mut rng = SmallRng::seed_from_u64(11);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let open = |direct: bool| RaftLog::open(dirs[usize::from(direct)].path(), options(direct));
    let mut logs = [open(false).unwrap(), open(true).unwrap()];
    let mut term = 1;
    for step in 0..300 {
        let last = logs[0].last_index();
        let first = logs[0].first_index();
        match rng.gen_range(0..20) {
            0..=14 => {
                let count = rng.gen_range(1..40);
                let entries = batch(&mut rng, term, last + 1, count);
                for log in &logs {
                    log.append(&entries).unwrap();
                }
            }
            15 | 16 if last >= first => {
                term += 1;
                let from = rng.gen_range(first..=last);
                for log in &logs {
                    log.truncate(from).unwrap();
                }
            }
            17 if last > first => {
                let upto = rng.gen_range(first..last);
                for log in &logs {
                    log.purge(LogId::new(1, upto)).unwrap();
                }
            }
            _ => {
                // Closed first: an open log holds its directory's lock.
                drop(logs);
                logs = [open(false).unwrap(), open(true).unwrap()];
            }
        }
        assert!(!logs[0].direct_io());
        assert_eq!(
            logs[1].direct_io(),
            file_system_takes_direct_io(dirs[1].path())
        );
        let [buffered, direct] = &logs;
        let (low, high) = (buffered.first_index(), buffered.last_index() + 1);
        assert_eq!((direct.first_index(), direct.last_index() + 1), (low, high));
        assert_eq!(
            direct.entries(low, high, u64::MAX).unwrap(),
            buffered.entries(low, high, u64::MAX).unwrap(),
            "step {step}"
        );
        assert_eq!(
            records_by_segment(dirs[1].path()),
            records_by_segment(dirs[0].path()),
            "step {step}"
        );
    }
}

//! After a crash at any point, reopening finds every acknowledged entry, and of the batch in
//! flight at most a prefix of intact entries: nothing else appears.
//!
//! Crashes are simulated by file surgery on copies of the log directory. A crash image is the
//! directory as it was when the last acknowledged append returned (everything in it had been
//! synced), plus any subset of the 512-byte sectors that the next, unacknowledged append wrote
//! into the last segment (the page cache may have written back any of them, in any order).
//! Bytes an append wrote into earlier segments are kept: the log syncs a segment in full before
//! it starts the next one.

mod common;

use common::{
    direct_io, entry, in_both_write_modes, records, restore, segment_names, snapshot, Image,
};
use raft_core::{Entry, LogId};
use raft_log::format::SEGMENT_HEADER_BYTES;
use raft_log::{Options, RaftLog};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The unit a disk writes atomically.
const SECTOR_BYTES: usize = 512;

fn options(segment_bytes: u64) -> Options {
    Options {
        segment_bytes,
        direct_io: direct_io(),
    }
}

fn open(dir: &std::path::Path, segment_bytes: u64) -> RaftLog {
    RaftLog::open(dir, options(segment_bytes)).unwrap_or_else(|e| panic!("reopen failed: {e}"))
}

#[test]
fn torn_last_record_is_cut_at_every_byte_offset() {
    in_both_write_modes(|| {
        const SEGMENT_BYTES: u64 = 16 << 10;
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), SEGMENT_BYTES);
        let written: Vec<Entry> = (1..=20).map(|index| entry(1, index, 100, 0)).collect();
        for e in &written {
            log.append(std::slice::from_ref(e)).unwrap();
        }
        drop(log);
        let image = snapshot(dir.path());
        let last_segment = segment_names(&image).pop().unwrap();
        let last = *records(&image[&last_segment]).last().unwrap();
        assert_eq!(last.index, 20);
        for cut in last.offset..last.offset + last.total_bytes {
            let mut torn = image.clone();
            torn.get_mut(&last_segment).unwrap()[cut..last.offset + last.total_bytes].fill(0);
            let crashed = restore(&torn);
            let log = open(crashed.path(), SEGMENT_BYTES);
            let complete = cut >= last.offset + 32 + 100;
            let expected_last = if complete { 20 } else { 19 };
            assert_eq!(log.last_index(), expected_last, "cut at byte {cut}");
            let stored = log.entries(1, expected_last + 1, u64::MAX).unwrap();
            assert_eq!(
                stored,
                written[..expected_last as usize],
                "cut at byte {cut}"
            );
            // The tail is clean again: a new entry 20 goes in and survives another reopen.
            if !complete {
                let replacement = entry(2, 20, 10, 0xff);
                log.append(std::slice::from_ref(&replacement)).unwrap();
                drop(log);
                let log = open(crashed.path(), SEGMENT_BYTES);
                assert_eq!(
                    log.entries(20, 21, u64::MAX).unwrap(),
                    vec![replacement],
                    "cut {cut}"
                );
            }
        }
    });
}

/// Builds a crash image between `before` (all synced) and `after` (the next append done):
/// changed sectors of the last segment are taken from `after` where `keep` says so.
fn crash_image(before: &Image, after: &Image, mut keep: impl FnMut(usize) -> bool) -> Image {
    let names = segment_names(after);
    let last = names.last().unwrap().clone();
    let mut image = after.clone();
    let base = match before.get(&last) {
        Some(bytes) => bytes.clone(),
        // A segment created by this append: its zero-filled body and header were synced
        // before any record went in.
        None => {
            let mut fresh = vec![0u8; after[&last].len()];
            fresh[..SEGMENT_HEADER_BYTES].copy_from_slice(&after[&last][..SEGMENT_HEADER_BYTES]);
            fresh
        }
    };
    let target = image.get_mut(&last).unwrap();
    for (sector, (new, old)) in target
        .chunks_mut(SECTOR_BYTES)
        .zip(base.chunks(SECTOR_BYTES))
        .enumerate()
    {
        if new != old && !keep(sector) {
            new.copy_from_slice(old);
        }
    }
    image
}

#[test]
fn unsynced_batch_survives_whole_or_as_a_prefix() {
    in_both_write_modes(|| {
        const SEGMENT_BYTES: u64 = 8 << 10;
        let mut rng = SmallRng::seed_from_u64(0x5eed_0001);
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), SEGMENT_BYTES);
        let mut written: Vec<Entry> = Vec::new();
        let mut images = vec![snapshot(dir.path())];
        let mut batches = Vec::new();
        for _ in 0..30 {
            let next = written.len() as u64 + 1;
            let count = rng.gen_range(1..8u64);
            // One batch in three may carry payloads written from where they are (over 1 KiB),
            // which go through the page cache also in a log that writes direct.
            let bytes_max = if batches.len() % 3 == 2 { 1500 } else { 400 };
            let batch: Vec<Entry> = (next..next + count)
                .map(|i| entry(1, i, rng.gen_range(0..bytes_max), 3))
                .collect();
            log.append(&batch).unwrap();
            written.extend(batch.iter().cloned());
            batches.push(batch);
            images.push(snapshot(dir.path()));
        }
        drop(log);
        let mut crashes = 0;
        for (k, batch) in batches.iter().enumerate() {
            let acked = batch[0].index - 1;
            let seed = rng.gen::<u64>();
            let mut subset_rng = SmallRng::seed_from_u64(seed);
            let cut_sector = subset_rng.gen_range(0..64usize);
            let choices: [Box<dyn FnMut(usize) -> bool>; 5] = [
                Box::new(|_| false),
                Box::new(|_| true),
                Box::new(move |sector| sector < cut_sector),
                Box::new(move |sector| sector >= cut_sector),
                Box::new(move |_| subset_rng.gen_bool(0.5)),
            ];
            for (choice, keep) in choices.into_iter().enumerate() {
                let crashed = restore(&crash_image(&images[k], &images[k + 1], keep));
                let log =
                    RaftLog::open(crashed.path(), options(SEGMENT_BYTES)).unwrap_or_else(|e| {
                        panic!("batch {k} choice {choice} (seed {seed:#x}): reopen failed: {e}")
                    });
                let last = log.last_index();
                let context = format!("batch {k} choice {choice} (seed {seed:#x})");
                assert!(
                    last >= acked,
                    "{context}: acknowledged entries lost, last {last}"
                );
                assert!(
                    last <= batch.last().unwrap().index,
                    "{context}: entries from nowhere"
                );
                assert_eq!(
                    log.entries(1, last + 1, u64::MAX).unwrap(),
                    written[..last as usize]
                );
                if choice == 0 {
                    // Nothing the batch wrote into the last segment reached the disk; what it wrote
                    // into earlier segments was synced when the log rolled over.
                    let last_segment = segment_names(&images[k + 1]).pop().unwrap();
                    let last_first: u64 = last_segment.trim_end_matches(".seg").parse().unwrap();
                    let expected = acked.max(last_first - 1);
                    assert_eq!(last, expected, "{context}");
                    log.append(&[entry(2, expected + 1, 5, 9)]).unwrap();
                }
                crashes += 1;
            }
        }
        assert_eq!(crashes, 150);
    });
}

/// Segments of one page, so that a few entries fill one.
const SMALL_SEGMENT_BYTES: u64 = 4 << 10;

/// A log of 60 entries of 200 bytes in segments of [`SMALL_SEGMENT_BYTES`] (several of them),
/// its directory and the entries.
fn sixty_entries_in_small_segments() -> (tempfile::TempDir, RaftLog, Vec<Entry>) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), SMALL_SEGMENT_BYTES);
    let written: Vec<Entry> = (1..=60).map(|i| entry(1, i, 200, 1)).collect();
    log.append(&written).unwrap();
    (dir, log, written)
}

#[test]
fn interrupted_purge_finishes_on_reopen() {
    in_both_write_modes(|| {
        let (dir, log, written) = sixty_entries_in_small_segments();
        let before = snapshot(dir.path());
        assert!(
            segment_names(&before).len() > 3,
            "the test needs several segments"
        );
        log.purge(LogId::new(1, 40)).unwrap();
        let after = snapshot(dir.path());
        drop(log);
        // The crash came after the purge point was replaced but before any segment was deleted.
        let mut image = before.clone();
        image.insert("purged".into(), after["purged"].clone());
        let crashed = restore(&image);
        let log = open(crashed.path(), SMALL_SEGMENT_BYTES);
        assert_eq!((log.purged(), log.last_index()), (LogId::new(1, 40), 60));
        assert_eq!(log.entries(41, 61, u64::MAX).unwrap(), written[40..]);
        assert_eq!(
            segment_names(&snapshot(crashed.path())),
            segment_names(&after)
        );
    });
}

#[test]
fn interrupted_truncate_leaves_a_prefix_of_the_old_log() {
    in_both_write_modes(|| {
        let (dir, log, written) = sixty_entries_in_small_segments();
        let before = snapshot(dir.path());
        log.truncate(10).unwrap();
        let after = snapshot(dir.path());
        drop(log);
        let names = segment_names(&before);
        // Crash after deleting the newest segments one by one, before zeroing the cut records.
        for deleted in 1..names.len() - segment_names(&after).len() + 1 {
            let mut image = before.clone();
            for name in &names[names.len() - deleted..] {
                image.remove(name);
            }
            let crashed = restore(&image);
            let log = open(crashed.path(), SMALL_SEGMENT_BYTES);
            let last = log.last_index();
            assert!(last >= 9, "deleted {deleted}: entries below the cut lost");
            assert_eq!(
                log.entries(1, last + 1, u64::MAX).unwrap(),
                written[..last as usize]
            );
        }
    });
}

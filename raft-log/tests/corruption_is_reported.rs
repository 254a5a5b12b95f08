//! Damage to bytes that had been synced is reported, naming the file and the offset, instead
//! of being hidden; random damage never makes opening panic.

mod common;

use std::path::Path;

use common::{entry, records, restore, segment_names, snapshot, Image};
use proptest::prelude::*;
use raft_core::{Entry, HardState, LogId};
use raft_log::format::RECORD_HEADER_BYTES;
use raft_log::{Error, Options, RaftLog};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SEGMENT_BYTES: u64 = 4 << 10;

fn options() -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        ..Options::default()
    }
}

/// A log of several segments written in batches, closed; returns its image and entries.
fn build_log() -> (Image, Vec<Entry>) {
    let mut rng = SmallRng::seed_from_u64(0x5eed_0002);
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open(dir.path(), options()).unwrap();
    let mut written = Vec::new();
    for _ in 0..60 {
        let next = written.len() as u64 + 1;
        let batch: Vec<Entry> = (next..next + rng.gen_range(1..5))
            .map(|i| entry(1, i, rng.gen_range(0..300), 5))
            .collect();
        log.append(&batch).unwrap();
        written.extend(batch);
    }
    log.save_hard_state(HardState {
        term: 1,
        voted_for: Some(2),
        commit: 10,
    })
    .unwrap();
    log.purge(LogId::new(1, 3)).unwrap();
    drop(log);
    (snapshot(dir.path()), written)
}

fn assert_corrupt_at(result: Result<RaftLog, Error>, file: &str, offset: u64, context: &str) {
    match result {
        Err(Error::Corrupt {
            path,
            offset: found,
            ..
        }) => {
            assert_eq!(path.file_name().unwrap().to_str(), Some(file), "{context}");
            assert_eq!(found, offset, "{context}");
        }
        Err(other) => panic!("{context}: expected Corrupt in {file} at {offset}, got {other}"),
        Ok(log) => panic!(
            "{context}: damage hidden, opened with last {}",
            log.last_index()
        ),
    }
}

fn open(dir: &Path) -> Result<RaftLog, Error> {
    RaftLog::open(dir, options())
}

#[test]
fn bit_flips_in_synced_records_are_reported_with_file_and_offset() {
    let (image, written) = build_log();
    let names = segment_names(&image);
    assert!(
        names.len() >= 4,
        "the test needs several segments, got {}",
        names.len()
    );
    let mut rng = SmallRng::seed_from_u64(0x5eed_0003);
    let mut reported = 0;
    let mut cut = 0;
    for (position, name) in names.iter().enumerate() {
        let is_last = position + 1 == names.len();
        let found = records(&image[name]);
        for (k, record) in found.iter().enumerate() {
            let mut damaged = image.clone();
            let bit = rng.gen_range(0..record.total_bytes * 8);
            damaged.get_mut(name).unwrap()[record.offset + bit / 8] ^= 1 << (bit % 8);
            let dir = restore(&damaged);
            let context = format!("{name} record {} bit {bit}", record.index);
            let vouched = found[k + 1..]
                .iter()
                .any(|r| r.durable_bytes > record.offset as u64);
            if !is_last || vouched {
                assert_corrupt_at(open(dir.path()), name, record.offset as u64, &context);
                reported += 1;
            } else {
                // No later record says these bytes were synced: indistinguishable from a torn
                // write, so the log is cut right before the record (documented limit).
                let log = open(dir.path()).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(log.last_index(), record.index - 1, "{context}");
                let kept = log.entries(4, record.index, u64::MAX).unwrap();
                assert_eq!(kept, written[3..record.index as usize - 1], "{context}");
                cut += 1;
            }
        }
    }
    assert!(
        reported > 100 && cut <= 6,
        "reported {reported}, cut as torn {cut}"
    );
}

#[test]
fn damaged_segment_headers_are_reported_at_offset_zero() {
    let (image, _) = build_log();
    for name in segment_names(&image) {
        for byte in [0, 9, 17, 30] {
            let mut damaged = image.clone();
            damaged.get_mut(&name).unwrap()[byte] ^= 0x40;
            let dir = restore(&damaged);
            assert_corrupt_at(open(dir.path()), &name, 0, &format!("{name} byte {byte}"));
        }
    }
}

#[test]
fn non_zero_bytes_after_a_full_segment_are_reported() {
    let (image, _) = build_log();
    let name = segment_names(&image)[1].clone();
    let end = records(&image[&name])
        .last()
        .map(|r| r.offset + r.total_bytes)
        .unwrap();
    let mut damaged = image.clone();
    damaged.get_mut(&name).unwrap()[end + 3] = 0x01;
    let dir = restore(&damaged);
    assert_corrupt_at(
        open(dir.path()),
        &name,
        end as u64,
        "garbage after the last record",
    );
}

#[test]
fn a_missing_middle_segment_is_reported_on_the_next_one() {
    let (mut image, _) = build_log();
    let names = segment_names(&image);
    image.remove(&names[1]);
    let dir = restore(&image);
    assert_corrupt_at(open(dir.path()), &names[2], 0, "segment 1 deleted");
}

#[test]
fn damaged_hard_state_and_purge_point_are_reported() {
    let (image, _) = build_log();
    for file in [raft_log::HARD_STATE_FILE, raft_log::PURGED_FILE] {
        for byte in 0..image[file].len() {
            let mut damaged = image.clone();
            damaged.get_mut(file).unwrap()[byte] ^= 0x02;
            let dir = restore(&damaged);
            assert_corrupt_at(open(dir.path()), file, 0, &format!("{file} byte {byte}"));
        }
        let mut short = image.clone();
        short.get_mut(file).unwrap().pop();
        let dir = restore(&short);
        assert_corrupt_at(open(dir.path()), file, 0, &format!("{file} one byte short"));
    }
}

#[test]
fn a_huge_length_in_the_tail_is_cut_without_allocating() {
    let (image, written) = build_log();
    let name = segment_names(&image).pop().unwrap();
    let end = records(&image[&name])
        .last()
        .map(|r| r.offset + r.total_bytes)
        .unwrap();
    let mut damaged = image.clone();
    // A record header claiming a 4 GiB payload, as a torn write of garbage could leave.
    let header = &mut damaged.get_mut(&name).unwrap()[end..end + RECORD_HEADER_BYTES];
    header.fill(0xff);
    let dir = restore(&damaged);
    let log = open(dir.path()).unwrap();
    assert_eq!(log.last_index(), written.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any bytes anywhere in any file: opening returns a log or an error, never panics, and a
    /// log it returns reads back only entries that were written.
    #[test]
    fn random_damage_never_panics(
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let (image, written) = build_log_cached();
        let names: Vec<String> = image.keys().cloned().collect();
        let mut damaged = image.clone();
        for (file, at, byte) in damage {
            let bytes = damaged.get_mut(&names[file.index(names.len())]).unwrap();
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        let dir = restore(&damaged);
        if let Ok(log) = open(dir.path()) {
            let (first, last) = (log.first_index(), log.last_index());
            if let Ok(stored) = log.entries(first, last + 1, u64::MAX) {
                for e in stored {
                    prop_assert_eq!(&e, &written[e.index as usize - 1]);
                }
            }
        }
    }
}

/// `build_log` once per test binary: the proptest cases only damage copies of it.
fn build_log_cached() -> &'static (Image, Vec<Entry>) {
    static LOG: std::sync::OnceLock<(Image, Vec<Entry>)> = std::sync::OnceLock::new();
    LOG.get_or_init(build_log)
}

#[test]
fn a_segment_whose_length_is_not_a_multiple_of_8_is_reported() {
    let (image, _) = build_log();
    let name = segment_names(&image).pop().unwrap();
    for extra in 1..8 {
        let mut damaged = image.clone();
        damaged
            .get_mut(&name)
            .unwrap()
            .extend(std::iter::repeat_n(0x5a, extra));
        let dir = restore(&damaged);
        assert_corrupt_at(
            open(dir.path()),
            &name,
            0,
            &format!("{extra} bytes appended"),
        );
    }
}

//! Purged segment files are reused without being zeroed: their old records stay behind the new
//! ones. After a crash at any point, none of those stale records may come back as entries, and
//! damage to synced records of a recycled segment is still reported.

mod common;

use common::{
    direct_io, entry, in_both_write_modes, records, restore, segment_names, snapshot, Image,
};
use raft_core::{Entry, LogId};
use raft_log::format::{decode_record, decode_segment_header, Decoded, RECORD_ALIGN_BYTES};
use raft_log::{Error, Options, RaftLog, FREE_SEGMENTS_MAX};

const SEGMENT_BYTES: u64 = 8 << 10;
/// Payload size of the entries written before the purge (the stale records).
const OLD_PAYLOAD: usize = 200;

fn options() -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        direct_io: direct_io(),
    }
}

fn open(dir: &std::path::Path) -> RaftLog {
    RaftLog::open(dir, options()).unwrap_or_else(|e| panic!("reopen failed: {e}"))
}

/// Stale records in `segment` after offset `from`: records that decode under some other first
/// index (found by the index they carry, which is at most `purged`).
fn stale_records_after(segment: &[u8], from: usize, purged: u64) -> usize {
    let mut count = 0;
    let mut at = from;
    while at + 32 <= segment.len() {
        let index = u64::from_le_bytes(segment[at + 8..at + 16].try_into().unwrap());
        let found = (1..=purged)
            .filter(|&first| first <= index && index - first < 64)
            .any(|first| matches!(decode_record(segment, first, at), Decoded::Record(_)));
        if found {
            count += 1;
        }
        at += RECORD_ALIGN_BYTES;
    }
    count
}

/// A log in which 200 entries were written in one batch and purged (their segments are free
/// for reuse), and its directory.
fn two_hundred_entries_purged() -> (tempfile::TempDir, RaftLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let old: Vec<Entry> = (1..=200).map(|i| entry(1, i, OLD_PAYLOAD, 0x11)).collect();
    log.append(&old).unwrap();
    log.purge(LogId::new(1, 200)).unwrap();
    (dir, log)
}

/// A log whose current segment is a recycled file full of stale records: entries 1..=`old`
/// written, all purged, then new entries (other payloads, term 2) appended one by one. Returns
/// the images after each new append and the new entries.
/// The appends of `images` (one image after each) that wrote into a segment already there,
/// rather than rolling to a new one: the append's number `k` (1 for the first), the image
/// after it, the last segment's name and that segment's bytes before the append.
fn appends_in_place(images: &[Image]) -> impl Iterator<Item = (usize, &Image, String, &[u8])> {
    (1..images.len()).filter_map(|k| {
        let after = &images[k];
        let name = segment_names(after).pop().unwrap();
        let old_bytes = images[k - 1].get(&name)?;
        Some((k, after, name, &old_bytes[..]))
    })
}

fn recycled_log(new_entries: u64) -> (Vec<Image>, Vec<Entry>, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let old: Vec<Entry> = (1..=200).map(|i| entry(1, i, OLD_PAYLOAD, 0x11)).collect();
    for chunk in old.chunks(7) {
        log.append(chunk).unwrap();
    }
    let purged = old.len() as u64;
    log.purge(LogId::new(1, purged)).unwrap();
    let free = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("free-")
        })
        .count();
    assert_eq!(free, FREE_SEGMENTS_MAX, "purged segments kept for reuse");
    // Purging everything rolled into a new zero-filled segment (the pool was still empty);
    // fill it so that the log rolls into a recycled file.
    let mut written = Vec::new();
    let first_segment = segment_names(&snapshot(dir.path())).pop().unwrap();
    let mut next = purged + 1;
    while segment_names(&snapshot(dir.path())).pop().unwrap() == first_segment {
        let e = entry(2, next, 100, 0x22);
        log.append(std::slice::from_ref(&e)).unwrap();
        written.push(e);
        next += 1;
    }
    let base = next - 1;
    let mut images = vec![snapshot(dir.path())];
    for i in base + 1..=base + new_entries {
        // Sizes vary so that new records start at offsets inside old ones.
        let e = entry(2, i, (i as usize * 37) % 150, 0x22);
        log.append(std::slice::from_ref(&e)).unwrap();
        written.push(e);
        images.push(snapshot(dir.path()));
    }
    (images, written, purged, base)
}

/// Checks a reopened log: it holds exactly `written[..n]` for some `n` in `lowest..=highest`.
fn check(log: &RaftLog, purged: u64, written: &[Entry], lowest: u64, highest: u64, ctx: &str) {
    let last = log.last_index();
    assert!(
        (lowest..=highest).contains(&last),
        "{ctx}: last {last} not in {lowest}..={highest}"
    );
    assert_eq!(log.first_index(), purged + 1, "{ctx}");
    let stored = log.entries(purged + 1, last + 1, u64::MAX).unwrap();
    assert_eq!(stored, written[..(last - purged) as usize], "{ctx}");
}

#[test]
fn the_current_segment_is_recycled_and_holds_stale_records() {
    in_both_write_modes(|| {
        let (images, written, purged, base) = recycled_log(10);
        let last = images.last().unwrap();
        let name = segment_names(last).pop().unwrap();
        let segment = &last[&name];
        let live = records(segment);
        assert!(live.len() >= 10);
        let end = live.last().map(|r| r.offset + r.total_bytes).unwrap();
        assert!(
            stale_records_after(segment, end, purged) > 10,
            "the recycled segment should still hold old records after its live ones"
        );
        // They stay stale across reopens and appends.
        let dir = restore(last);
        let log = open(dir.path());
        check(&log, purged, &written, base + 10, base + 10, "reopen");
        drop(log);
        let log = open(dir.path());
        check(
            &log,
            purged,
            &written,
            base + 10,
            base + 10,
            "second reopen",
        );
    });
}

#[test]
fn a_torn_record_over_stale_bytes_is_cut_at_every_byte_offset() {
    in_both_write_modes(|| {
        let (images, written, purged, base) = recycled_log(12);
        let mut checked = 0;
        for (k, after, name, old_bytes) in appends_in_place(&images) {
            let record = *records(&after[&name]).last().unwrap();
            let acked = base + k as u64 - 1;
            assert_eq!(record.index, acked + 1);
            assert!(stale_records_after(old_bytes, record.offset, purged) > 0);
            checked += 1;
            let end = record.offset + record.total_bytes;
            for cut in record.offset..=end {
                // Bytes from `cut` on never reached the disk: what was there before (stale bytes
                // of the recycled file) is still there.
                let mut image = after.clone();
                image.get_mut(&name).unwrap()[cut..end].copy_from_slice(&old_bytes[cut..end]);
                let dir = restore(&image);
                let ctx = format!("append {k} cut at {cut}");
                let log = open(dir.path());
                // Complete only when every byte of the record, padding included, is as written
                // (stale bytes in the padding make it torn).
                let new = &written[(acked - purged) as usize];
                let complete = cut >= record.offset + 32 + new.data.len()
                    && old_bytes[cut..end].iter().all(|&b| b == 0);
                let expected = if complete { acked + 1 } else { acked };
                check(&log, purged, &written, expected, expected, &ctx);
                // A different entry goes in where the torn one was, and survives a reopen.
                if !complete {
                    let replacement = entry(3, acked + 1, 3, 0x33);
                    log.append(std::slice::from_ref(&replacement)).unwrap();
                    drop(log);
                    let log = open(dir.path());
                    let mut expected_entries = written[..(acked - purged) as usize].to_vec();
                    expected_entries.push(replacement);
                    check(&log, purged, &expected_entries, acked + 1, acked + 1, &ctx);
                }
            }
        }
        assert!(checked >= 10, "{checked}");
    });
}

#[test]
fn any_subset_of_an_unsynced_append_over_stale_bytes_is_a_prefix() {
    in_both_write_modes(|| {
        let (images, written, purged, base) = recycled_log(40);
        let mut crashes = 0;
        for (k, after, name, old_bytes) in appends_in_place(&images) {
            let acked = base + k as u64 - 1;
            let changed: Vec<usize> = (0..old_bytes.len() / 512)
                .filter(|&s| {
                    old_bytes[s * 512..(s + 1) * 512] != after[&name][s * 512..(s + 1) * 512]
                })
                .collect();
            for mask in 0u32..(1 << changed.len().min(4)) {
                let mut image = after.clone();
                for (bit, &sector) in changed.iter().enumerate() {
                    if bit < 32 && mask & (1 << bit) == 0 {
                        let range = sector * 512..(sector + 1) * 512;
                        image.get_mut(&name).unwrap()[range.clone()]
                            .copy_from_slice(&old_bytes[range]);
                    }
                }
                let dir = restore(&image);
                let log = open(dir.path());
                check(
                    &log,
                    purged,
                    &written,
                    acked,
                    acked + 1,
                    &format!("append {k} mask {mask:b}"),
                );
                crashes += 1;
            }
        }
        assert!(crashes > 40, "{crashes}");
    });
}

#[test]
fn bit_flips_in_synced_records_of_a_recycled_segment_are_reported() {
    in_both_write_modes(|| {
        let (images, _, purged, _) = recycled_log(30);
        let image = images.last().unwrap();
        let name = segment_names(image).pop().unwrap();
        let found = records(&image[&name]);
        let end = found.last().map(|r| r.offset + r.total_bytes).unwrap();
        assert!(stale_records_after(&image[&name], end, purged) > 0);
        let mut reported = 0;
        for (k, record) in found.iter().enumerate() {
            let vouched = found[k + 1..]
                .iter()
                .any(|r| r.durable_bytes > record.offset as u64);
            if !vouched {
                continue;
            }
            let mut damaged = image.clone();
            damaged.get_mut(&name).unwrap()[record.offset + 20] ^= 0x04;
            let dir = restore(&damaged);
            match RaftLog::open(dir.path(), options()) {
                Err(Error::Corrupt { path, offset, .. }) => {
                    assert_eq!(path.file_name().unwrap().to_str(), Some(name.as_str()));
                    assert_eq!(offset, record.offset as u64);
                    reported += 1;
                }
                Err(other) => panic!("record {}: {other}", record.index),
                Ok(log) => panic!(
                    "record {}: damage hidden, last {}",
                    record.index,
                    log.last_index()
                ),
            }
        }
        assert!(reported > 20, "{reported}");
    });
}

#[test]
fn a_recycled_segment_that_fills_up_is_zeroed_behind_its_records() {
    in_both_write_modes(|| {
        // Fill recycled segments until the log rolls past them: segments before the last must end
        // in zeros (recovery reports anything else there as corruption).
        let (dir, log) = two_hundred_entries_purged();
        let new: Vec<Entry> = (201..=400)
            .map(|i| entry(2, i, 13 + i as usize % 90, 0x22))
            .collect();
        for chunk in new.chunks(5) {
            log.append(chunk).unwrap();
        }
        drop(log);
        let image = snapshot(dir.path());
        let names = segment_names(&image);
        assert!(names.len() >= 3, "{names:?}");
        for name in &names[..names.len() - 1] {
            let segment = &image[name];
            assert!(decode_segment_header(segment).is_ok());
            let end = records(segment)
                .last()
                .map(|r| r.offset + r.total_bytes)
                .unwrap();
            assert!(
                segment[end..].iter().all(|&b| b == 0),
                "{name}: stale tail left"
            );
        }
        let log = open(dir.path());
        assert_eq!(log.entries(201, 401, u64::MAX).unwrap(), new);
    });
}

#[test]
fn an_interrupted_purge_of_recycled_segments_finishes_on_reopen() {
    in_both_write_modes(|| {
        let (dir, log) = two_hundred_entries_purged();
        let new: Vec<Entry> = (201..=260).map(|i| entry(2, i, 100, 0x22)).collect();
        log.append(&new).unwrap();
        let before = snapshot(dir.path());
        // Purging everything rolls into a recycled file without zeroing the old segments' tails.
        log.purge(LogId::new(2, 260)).unwrap();
        let after = snapshot(dir.path());
        drop(log);
        let mut image = before.clone();
        image.insert("purged".into(), after["purged"].clone());
        let new_name = segment_names(&after).pop().unwrap();
        image.insert(new_name.clone(), after[&new_name].clone());
        let crashed = restore(&image);
        let log = open(crashed.path());
        assert_eq!((log.purged(), log.last_index()), (LogId::new(2, 260), 260));
        log.append(&[entry(3, 261, 50, 1)]).unwrap();
        drop(log);
        let log = open(crashed.path());
        assert_eq!(
            log.entries(261, 262, u64::MAX).unwrap(),
            vec![entry(3, 261, 50, 1)]
        );
    });
}

/// Reopen time with a recycled 64 MiB last segment, whose stale tail recovery scans (prints the
/// time; `cargo test -p raft-log --release --test recycled_segments -- --ignored --nocapture`).
#[test]
#[ignore]
fn reopen_with_a_recycled_default_size_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open(dir.path(), Options::default()).unwrap();
    let payload = vec![0x5au8; 256];
    let mut next = 1u64;
    let mut fill = |log: &RaftLog, entries: u64| {
        for _ in 0..entries / 1024 {
            let batch: Vec<Entry> = (next..next + 1024)
                .map(|i| Entry::normal(1, i, payload.clone()))
                .collect();
            log.append(&batch).unwrap();
            next += 1024;
        }
    };
    // Two segments full of records, purged twice so that the second purge's roll reuses one.
    fill(&log, 500 * 1024);
    log.purge(LogId::new(1, log.last_index())).unwrap();
    fill(&log, 300 * 1024);
    log.purge(LogId::new(1, log.last_index())).unwrap();
    fill(&log, 10 * 1024);
    let last = log.last_index();
    drop(log);
    let start = std::time::Instant::now();
    let log = RaftLog::open(dir.path(), Options::default()).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(log.last_index(), last);
    println!("reopen with a recycled last segment: {elapsed:?} (first)");
    drop(log);
    let start = std::time::Instant::now();
    let log = RaftLog::open(dir.path(), Options::default()).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(log.last_index(), last);
    println!("reopen with a recycled last segment: {elapsed:?} (again)");
}

#[test]
fn purged_files_are_kept_across_a_reopen_and_reused() {
    in_both_write_modes(|| {
        let free_files = |dir: &std::path::Path| {
            std::fs::read_dir(dir)
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().starts_with("free-")
                })
                .count()
        };
        let (dir, log) = two_hundred_entries_purged();
        drop(log);
        assert_eq!(free_files(dir.path()), FREE_SEGMENTS_MAX);
        let log = open(dir.path());
        assert_eq!(free_files(dir.path()), FREE_SEGMENTS_MAX, "kept on open");
        // Fill the current segment and roll: the next segment is one of the free files.
        let new: Vec<Entry> = (201..=300).map(|i| entry(2, i, 100, 0x22)).collect();
        for chunk in new.chunks(3) {
            log.append(chunk).unwrap();
        }
        let segments = segment_names(&snapshot(dir.path())).len() as u64;
        assert!(segments >= 2);
        let reused = FREE_SEGMENTS_MAX as u64 - free_files(dir.path()) as u64;
        assert_eq!(reused, segments - 1, "every new segment reused a free file");
        drop(log);
        let log = open(dir.path());
        check(&log, 200, &new, 300, 300, "after reuse");
    });
}

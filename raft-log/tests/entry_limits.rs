//! The largest entry that fits in one segment is stored (in a segment of its own if needed);
//! one byte more is refused at the API, and nothing is written.

use raft_core::Entry;
use raft_log::{Error, Options, RaftLog};

#[test]
fn entries_up_to_entry_bytes_max_fit_and_larger_ones_are_refused() {
    let options = Options {
        segment_bytes: 8 << 10,
        ..Options::default()
    };
    let bytes_max = options.entry_bytes_max() as usize;
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open(dir.path(), options).unwrap();
    log.append(&[Entry::normal(1, 1, vec![1u8; 100])]).unwrap();
    // Does not fit after entry 1: rolls into a segment of its own.
    log.append(&[Entry::normal(1, 2, vec![2u8; bytes_max])])
        .unwrap();
    match log.append(&[Entry::normal(1, 3, vec![3u8; bytes_max + 1])]) {
        Err(Error::EntryTooLarge {
            index: 3,
            bytes,
            bytes_max: max,
        }) => {
            assert_eq!((bytes, max), (bytes_max as u64 + 1, bytes_max as u64));
        }
        other => panic!("expected EntryTooLarge, got {other:?}"),
    }
    assert!(
        !log.is_poisoned(),
        "a refused request is not a failed write"
    );
    log.append(&[Entry::normal(1, 3, vec![3u8; 10])]).unwrap();
    drop(log);
    let log = RaftLog::open(dir.path(), options).unwrap();
    assert_eq!(log.last_index(), 3);
    assert_eq!(log.entry(2).unwrap().data.len(), bytes_max);
}

#[test]
fn segment_sizes_outside_the_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for segment_bytes in [0, 4095, 4097, 2 << 30] {
        let result = RaftLog::open(
            dir.path(),
            Options {
                segment_bytes,
                ..Options::default()
            },
        );
        assert!(
            matches!(result, Err(Error::SegmentSize { .. })),
            "{segment_bytes}: {result:?}"
        );
    }
}

/// Payloads above and below the size from which records are written straight from the entries
/// (`writev`) rather than copied, mixed in batches that cross segments: everything reads back,
/// before and after a reopen (which checks every CRC).
#[test]
fn mixed_small_and_large_payloads_round_trip_through_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: 16 << 10,
        ..Options::default()
    };
    let sizes = [
        0usize, 1, 7, 1023, 1024, 1025, 4096, 5000, 8, 3000, 12_000, 31,
    ];
    let mut written = Vec::new();
    {
        let log = RaftLog::open(dir.path(), options).unwrap();
        let mut next = 1u64;
        for round in 0..6 {
            let batch: Vec<Entry> = (0..5 + round)
                .map(|k| {
                    let len = sizes[(next as usize + k) % sizes.len()];
                    let data: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + next) as u8).collect();
                    Entry::normal(1, next + k as u64, data)
                })
                .collect();
            next += batch.len() as u64;
            log.append(&batch).unwrap();
            written.extend(batch);
        }
        assert_eq!(log.entries(1, next, u64::MAX).unwrap(), written);
    }
    let log = RaftLog::open(dir.path(), options).unwrap();
    let last = written.len() as u64;
    assert_eq!(log.last_index(), last);
    assert_eq!(log.entries(1, last + 1, u64::MAX).unwrap(), written);
}

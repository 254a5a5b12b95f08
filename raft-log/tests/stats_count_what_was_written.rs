//! [`RaftLog::stats`] counts the batches, entries and record bytes appended and times each
//! sync appenders waited for, also across segment rolls; a reopened log counts afresh.

use raft_core::Entry;
use raft_log::format::record_bytes;
use raft_log::{Options, RaftLog};

fn stats_count_what_was_written_in(direct_io: bool) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: 64 << 10,
        direct_io,
    };
    let log = RaftLog::open(dir.path(), options).unwrap();
    let empty = log.stats();
    assert_eq!((empty.batches, empty.syncs, empty.bytes_written), (0, 0, 0));
    let mut index = 0;
    let mut expected_bytes = 0u64;
    // 40 batches of 1 to 8 entries of 1000 bytes: about 170 KiB, three segment rolls.
    for batch in 0..40u64 {
        let entries: Vec<Entry> = (0..batch % 8 + 1)
            .map(|_| {
                index += 1;
                Entry::normal(1, index, vec![7u8; 1000])
            })
            .collect();
        expected_bytes += entries.len() as u64 * record_bytes(1000) as u64;
        log.append(&entries).unwrap();
    }
    log.append(&[]).unwrap();
    let stats = log.stats();
    assert_eq!(stats.batches, 40, "an empty append is no batch");
    assert_eq!(stats.entries, index);
    assert_eq!(stats.bytes_written, expected_bytes);
    assert!(stats.syncs >= 1 && stats.syncs <= 40, "{stats:?}");
    assert_eq!(stats.syncs, log.sync_count());
    assert_eq!(stats.sync_us.count(), stats.syncs);
    drop(log);

    let reopened = RaftLog::open(dir.path(), options).unwrap();
    assert_eq!(reopened.stats().batches, 0);
    assert_eq!(reopened.last_index(), index);
}

#[test]
fn stats_count_what_was_written() {
    stats_count_what_was_written_in(false);
}

#[test]
fn stats_count_what_was_written_with_direct_io() {
    stats_count_what_was_written_in(true);
}

//! Appends from concurrent callers share syncs, and none of them returns before its entries
//! are durable and readable.

use std::sync::{Arc, Barrier, Mutex};

use raft_core::Entry;
use raft_log::{Options, RaftLog};

#[test]
fn concurrent_appends_share_syncs() {
    concurrent_appends_share_syncs_in(false);
}

/// Direct I/O (`Options::direct_io`): a lone appender writes direct, the others through the
/// page cache, in the same blocks.
#[test]
fn concurrent_appends_share_syncs_with_direct_io() {
    concurrent_appends_share_syncs_in(true);
}

fn concurrent_appends_share_syncs_in(direct_io: bool) {
    const THREADS: u64 = 4;
    const APPENDS_PER_THREAD: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        RaftLog::open(
            dir.path(),
            Options {
                segment_bytes: 1 << 20,
                direct_io,
            },
        )
        .unwrap(),
    );
    // Indexes are handed out under this lock together with the write; the wait for
    // durability happens outside it, where the group commit can batch.
    let next_index = Arc::new(Mutex::new(1u64));
    let start = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (log, next_index, start) = (log.clone(), next_index.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..APPENDS_PER_THREAD {
                    let (ticket, index) = {
                        let mut next = next_index.lock().unwrap();
                        let index = *next;
                        let entry = Entry::normal(1, index, vec![thread as u8; 64]);
                        let ticket = log.submit(&[entry]).unwrap();
                        *next += 1;
                        (ticket, index)
                    };
                    log.wait(ticket).unwrap();
                    // Durable means readable too.
                    assert_eq!(
                        log.entries(index, index + 1, 0).unwrap()[0].data[0],
                        thread as u8
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let appends = THREADS * APPENDS_PER_THREAD;
    let syncs = log.sync_count();
    assert_eq!(log.last_index(), appends);
    assert!(
        syncs < appends,
        "{syncs} syncs for {appends} concurrent appends: no grouping"
    );
    drop(log);
    let log = RaftLog::open(
        dir.path(),
        Options {
            segment_bytes: 1 << 20,
            direct_io,
        },
    )
    .unwrap();
    assert_eq!(log.last_index(), appends);
}

#[test]
fn sequential_appends_sync_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open(
        dir.path(),
        Options {
            segment_bytes: 1 << 20,
            ..Options::default()
        },
    )
    .unwrap();
    for index in 1..=20 {
        log.append(&[Entry::normal(1, index, "x")]).unwrap();
    }
    // No append returned before a sync covering it: 20 appends, one sync each.
    assert_eq!(log.sync_count(), 20);
}

#[test]
fn no_ticket_is_acknowledged_by_an_unrelated_sync() {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open(
        dir.path(),
        Options {
            segment_bytes: 1 << 20,
            ..Options::default()
        },
    )
    .unwrap();
    log.append(&[Entry::normal(1, 1, "a"), Entry::normal(1, 2, "b")])
        .unwrap();
    // Written, not yet synced; then writes that sync other files (hard state, purge point).
    let ticket = log.submit(&[Entry::normal(1, 3, "c")]).unwrap();
    log.save_hard_state(raft_core::HardState {
        term: 1,
        voted_for: None,
        commit: 2,
    })
    .unwrap();
    log.purge(raft_core::LogId::new(1, 1)).unwrap();
    let syncs = log.sync_count();
    log.wait(ticket).unwrap();
    assert_eq!(
        log.sync_count(),
        syncs + 1,
        "append acknowledged without a sync covering it"
    );
}

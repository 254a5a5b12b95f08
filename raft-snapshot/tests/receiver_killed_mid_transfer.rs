//! A receiver killed in the middle of a transfer (no destructor runs, the process is gone)
//! keeps no partial snapshot when it restarts, and takes the transfer again from offset 0.

mod common;

use std::sync::Arc;

use raft_core::node::SnapshotStore;
use raft_core::LogId;
use raft_snapshot::{FileSnapshotStore, SnapshotSender};

use common::*;

const CHUNK: u32 = 4096;
const SIZE: u64 = 40 * CHUNK as u64;

#[tokio::test]
async fn a_receiver_killed_mid_transfer_keeps_no_partial_snapshot_and_takes_it_again() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let older = build_snapshot(&follower, LogId::new(1, 10), 5000, 11).await;
    let meta = build_snapshot(&leader, LogId::new(2, 300), SIZE, 12).await;
    let link = Loopback::new(follower);
    link.faults().down_after = Some(15);

    let sender = SnapshotSender::new(
        Arc::new(leader.clone()),
        link.clone(),
        sender_config(CHUNK, 2),
    )
    .unwrap();
    sender.send(TARGET, meta.clone()).await.unwrap_err();
    assert_eq!(
        temp_entries(dirs.1.path()).len(),
        1,
        "the partial transfer is on disk"
    );

    // Kill: the store vanishes without running any destructor, like a crashed process.
    let killed = link.receiver();
    link.set_receiver(FileSnapshotStore::open(tempfile::tempdir().unwrap().path()).unwrap());
    std::mem::forget(killed);

    let restarted = FileSnapshotStore::open(dirs.1.path()).unwrap();
    assert!(
        temp_entries(dirs.1.path()).is_empty(),
        "the partial snapshot was removed at open"
    );
    assert_eq!(restarted.receiving().await, None);
    assert_eq!(
        restarted.latest().await.unwrap(),
        Some(older),
        "only complete snapshots survive"
    );

    link.set_receiver(restarted.clone());
    {
        let mut faults = link.faults();
        faults.down = false;
    }
    let written_before = link.seen().written().len();
    let report = sender.send(TARGET, meta.clone()).await.unwrap();
    assert_eq!(report.resumed_from, 0, "the transfer starts over");
    assert_eq!(link.seen().written()[written_before], 0);
    assert_eq!(restarted.latest().await.unwrap(), Some(meta.clone()));
    assert_snapshot_bytes(&restarted, &meta, 12).await;
    assert!(temp_entries(dirs.1.path()).is_empty());
}

//! The sender keeps at most `window_chunks` chunks in flight, completes over a transport that
//! reorders concurrent chunks, and switches to a newer snapshot that appears mid-transfer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use raft_core::node::SnapshotStore;
use raft_core::LogId;
use raft_snapshot::{FileSnapshotStore, SnapshotSender};

use common::*;

const CHUNK: u32 = 2048;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_window_chunks_are_in_flight() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let meta = build_snapshot(&leader, LogId::new(1, 10), 100 * CHUNK as u64, 1).await;
    let link = Loopback::new(follower.clone());
    link.faults().delay = Some(Duration::from_millis(1));
    let sender =
        SnapshotSender::new(Arc::new(leader), link.clone(), sender_config(CHUNK, 3)).unwrap();
    let report = sender.send(TARGET, meta.clone()).await.unwrap();
    assert_eq!(report.bytes_sent, meta.size_bytes);
    let in_flight_max = link.seen().in_flight_max;
    assert_eq!(in_flight_max, 3, "the window is used and never exceeded");
    assert_snapshot_bytes(&follower, &meta, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_reorders_chunks_still_completes() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let meta = build_snapshot(&leader, LogId::new(1, 10), 60 * CHUNK as u64 + 1, 2).await;
    let link = Loopback::new(follower.clone());
    link.faults().jitter_ms = 5;
    let sender =
        SnapshotSender::new(Arc::new(leader), link.clone(), sender_config(CHUNK, 4)).unwrap();
    let report = sender.send(TARGET, meta.clone()).await.unwrap();
    let written = link.seen().written();
    let expected: Vec<u64> = (0..=60).map(|i| i * CHUNK as u64).collect();
    assert_eq!(
        written, expected,
        "written in order, each once ({report:?})"
    );
    assert_snapshot_bytes(&follower, &meta, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_snapshot_supersedes_the_transfer_in_progress() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let old = build_snapshot(&leader, LogId::new(1, 10), 200 * CHUNK as u64, 3).await;
    let link = Loopback::new(follower.clone());
    link.faults().delay = Some(Duration::from_millis(2));
    let sender = SnapshotSender::new(
        Arc::new(leader.clone()),
        link.clone(),
        sender_config(CHUNK, 2),
    )
    .unwrap();
    let transfer = tokio::spawn(async move { sender.send(TARGET, old).await });

    while link.seen().written().len() < 10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let new = build_snapshot(&leader, LogId::new(2, 400), 30 * CHUNK as u64, 4).await;
    let report = transfer.await.unwrap().unwrap();
    assert_eq!(report.snapshot, new);
    assert_eq!(report.superseded, 1);
    assert!(
        report.bytes_sent < 200 * CHUNK as u64,
        "the old snapshot was not sent to the end ({} bytes)",
        report.bytes_sent
    );
    assert_eq!(follower.latest().await.unwrap(), Some(new.clone()));
    assert_eq!(
        follower.snapshots(),
        vec![new.clone()],
        "the old partial one was dropped"
    );
    assert_snapshot_bytes(&follower, &new, 4).await;
    assert!(temp_entries(dirs.1.path()).is_empty());
}

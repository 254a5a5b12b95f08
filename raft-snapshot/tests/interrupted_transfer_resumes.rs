//! An interrupted transfer resumes from the offset the receiver holds instead of starting over:
//! after the sender gave up (lost connection) and a new sender (restarted, or a new leader)
//! takes over, after an outage in the middle of one transfer, and after a chunk that never
//! answers and hits the per-chunk timeout.

mod common;

use std::sync::Arc;

use raft_core::node::SnapshotStore;
use raft_core::LogId;
use raft_snapshot::{Error, FileSnapshotStore, SnapshotSender};

use common::*;

const CHUNK: u32 = 4096;
const SIZE: u64 = 64 * CHUNK as u64 + 123;

#[tokio::test]
async fn a_new_sender_resumes_from_the_receivers_offset() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let meta = build_snapshot(&leader, LogId::new(2, 500), SIZE, 7).await;
    let link = Loopback::new(follower.clone());
    link.faults().down_after = Some(20);

    let first = SnapshotSender::new(
        Arc::new(leader.clone()),
        link.clone(),
        sender_config(CHUNK, 4),
    )
    .unwrap();
    let error = first.send(TARGET, meta.clone()).await.unwrap_err();
    // Chunks already in flight when the link went down may still have arrived.
    let (snapshot, held) = follower
        .receiving()
        .await
        .expect("the receiver keeps the partial transfer");
    assert_eq!(snapshot, meta.last_log_id);
    assert!(
        (20 * CHUNK as u64..=24 * CHUNK as u64).contains(&held),
        "{held}"
    );
    assert!(
        matches!(error, Error::RetriesExhausted { offset, .. } if offset == held),
        "{error}"
    );

    // The link comes back; a new sender starts at offset 0 and is told where to go on.
    link.faults().down = false;
    let written_before = link.seen().written().len();
    let second = SnapshotSender::new(
        Arc::new(leader.clone()),
        link.clone(),
        sender_config(CHUNK, 4),
    )
    .unwrap();
    let report = second.send(TARGET, meta.clone()).await.unwrap();
    assert_eq!(report.resumed_from, held);
    assert!(
        report.bytes_sent <= SIZE - held + 4 * CHUNK as u64,
        "at most one window is sent again, got {} bytes",
        report.bytes_sent
    );
    let written = link.seen().written();
    let expected: Vec<u64> = (0..=64).map(|i| i * CHUNK as u64).collect();
    assert_eq!(written, expected, "every chunk written once, in order");
    assert_eq!(
        written[written_before], held,
        "the new sender's first written chunk"
    );
    assert_eq!(follower.latest().await.unwrap(), Some(meta.clone()));
    assert_snapshot_bytes(&follower, &meta, 7).await;
    assert!(temp_entries(dirs.1.path()).is_empty());
}

#[tokio::test]
async fn an_outage_within_one_transfer_resumes_from_the_acknowledged_offset() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let meta = build_snapshot(&leader, LogId::new(2, 500), SIZE, 8).await;
    let link = Loopback::new(follower.clone());
    link.faults().fail_attempts = (10..13).collect();

    let sender =
        SnapshotSender::new(Arc::new(leader), link.clone(), sender_config(CHUNK, 4)).unwrap();
    let report = sender.send(TARGET, meta.clone()).await.unwrap();
    assert!(report.chunks_failed >= 1);
    assert!(report.rewinds >= 1);
    let written = link.seen().written();
    let expected: Vec<u64> = (0..=64).map(|i| i * CHUNK as u64).collect();
    assert_eq!(written, expected, "no chunk written twice, none skipped");
    assert!(
        report.bytes_sent < 2 * SIZE,
        "the transfer did not start over ({} bytes sent)",
        report.bytes_sent
    );
    assert_snapshot_bytes(&follower, &meta, 8).await;
}

#[tokio::test]
async fn a_chunk_that_never_answers_times_out_and_the_transfer_goes_on() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let meta = build_snapshot(&leader, LogId::new(2, 500), SIZE, 9).await;
    let link = Loopback::new(follower.clone());
    link.faults().hang_attempts = [5].into_iter().collect();

    let mut config = sender_config(CHUNK, 4);
    config.chunk_timeout_ms = 200;
    let sender = SnapshotSender::new(Arc::new(leader), link.clone(), config).unwrap();
    let report = sender.send(TARGET, meta.clone()).await.unwrap();
    assert_eq!(report.chunks_failed, 1, "{report:?}");
    assert!(report.elapsed.as_millis() >= 200);
    assert_snapshot_bytes(&follower, &meta, 9).await;
}

#[tokio::test]
async fn chunks_that_never_reached_the_receiver_are_not_counted_as_sent() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let meta = build_snapshot(&leader, LogId::new(2, 500), SIZE, 10).await;
    let link = Loopback::new(follower.clone());
    // Three attempts in a row fail in the transport before reaching the receiver.
    link.faults().fail_attempts = (10..13).collect();

    // One chunk at a time, so every answered chunk is seen by the sender before it finishes.
    let sender =
        SnapshotSender::new(Arc::new(leader), link.clone(), sender_config(CHUNK, 1)).unwrap();
    let report = sender.send(TARGET, meta.clone()).await.unwrap();
    assert_eq!(report.chunks_failed, 3, "{report:?}");
    let seen = link.seen();
    assert_eq!(
        seen.attempts,
        65 + 3,
        "every chunk once, plus the three failed attempts"
    );
    assert_eq!(
        report.chunks_sent, 65,
        "only chunks the receiver answered: {report:?}"
    );
    assert_eq!(
        report.bytes_sent, SIZE,
        "only bytes that reached the receiver: {report:?}"
    );
}

//! A chunk damaged on the way fails its CRC, is rejected without being written, and is sent
//! again; a snapshot whose bytes do not match its whole-snapshot checksum is never published.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use raft_core::node::SnapshotStore;
use raft_core::{ChunkStatus, LogId, SnapshotChunk};
use raft_snapshot::{Error, FileSnapshotStore, SnapshotSender};

use common::*;

const CHUNK: u32 = 4096;
const SIZE: u64 = 32 * CHUNK as u64 + 7;

#[tokio::test]
async fn a_corrupted_chunk_is_rejected_and_resent() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let meta = build_snapshot(&leader, LogId::new(1, 40), SIZE, 3).await;
    let link = Loopback::new(follower.clone());
    let bad = [5 * CHUNK as u64, 31 * CHUNK as u64];
    link.faults().corrupt_offsets = bad.into_iter().collect();

    let sender =
        SnapshotSender::new(Arc::new(leader), link.clone(), sender_config(CHUNK, 4)).unwrap();
    let report = sender.send(TARGET, meta.clone()).await.unwrap();
    assert!(report.chunks_rejected >= 2, "{report:?}");

    let (answers_all, written) = {
        let seen = link.seen();
        (seen.answers.clone(), seen.written())
    };
    for offset in bad {
        let answers: Vec<&ChunkStatus> = answers_all
            .iter()
            .filter(|(o, _)| *o == offset)
            .map(|(_, s)| s)
            .collect();
        assert!(
            matches!(answers[0], ChunkStatus::Retry(why) if why.contains("checksum")),
            "offset {offset}: {answers:?}"
        );
        assert!(
            answers[1..]
                .iter()
                .any(|s| matches!(s, ChunkStatus::Accepted)),
            "offset {offset} resent and accepted: {answers:?}"
        );
    }
    let expected: Vec<u64> = (0..=32).map(|i| i * CHUNK as u64).collect();
    assert_eq!(written, expected, "each chunk written exactly once");
    assert_eq!(follower.latest().await.unwrap(), Some(meta.clone()));
    assert_snapshot_bytes(&follower, &meta, 3).await;
}

#[tokio::test]
async fn bytes_damaged_on_the_senders_disk_are_caught_by_the_whole_snapshot_checksum() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = FileSnapshotStore::open(dirs.0.path()).unwrap();
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let meta = build_snapshot(&leader, LogId::new(1, 40), SIZE, 4).await;
    // Flip a bit in the published data: every chunk still carries a CRC of what was read.
    let data = dirs.0.path().join(meta.id()).join("data");
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    file.write_all_at(&[byte_at(4, 1000) ^ 1], 1000).unwrap();
    drop(file);

    let link = Loopback::new(follower.clone());
    let sender =
        SnapshotSender::new(Arc::new(leader), link.clone(), sender_config(CHUNK, 4)).unwrap();
    let error = sender.send(TARGET, meta.clone()).await.unwrap_err();
    assert!(matches!(error, Error::RetriesExhausted { .. }), "{error}");
    let last = link.seen().answers.last().cloned().unwrap();
    assert!(
        matches!(&last.1, ChunkStatus::Retry(why) if why.contains("whole-snapshot")),
        "{last:?}"
    );
    assert_eq!(follower.latest().await.unwrap(), None, "never published");
    assert_eq!(follower.receiving().await, None);
    assert!(temp_entries(dirs.1.path()).is_empty());
}

#[tokio::test]
async fn chunks_out_of_order_or_past_the_end_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    let source = tempfile::tempdir().unwrap();
    let meta = build_snapshot(
        &FileSnapshotStore::open(source.path()).unwrap(),
        LogId::new(1, 9),
        100,
        5,
    )
    .await;
    let bytes: Vec<u8> = (0..100).map(|i| byte_at(5, i)).collect();
    let chunk = |offset: usize, end: usize, done: bool| SnapshotChunk {
        from: 1,
        to: 2,
        term: 1,
        meta: meta.clone(),
        offset: offset as u64,
        data: Bytes::copy_from_slice(&bytes[offset..end]),
        crc32: crc32fast::hash(&bytes[offset..end]),
        done,
    };
    // Not started: only offset 0 opens a transfer.
    let (status, next) = store.receive_chunk(&chunk(10, 20, false)).await.unwrap();
    assert!(matches!(status, ChunkStatus::Retry(_)) && next == 0);
    assert_eq!(
        store.receive_chunk(&chunk(0, 10, false)).await.unwrap(),
        (ChunkStatus::Accepted, 10)
    );
    // A gap, then a duplicate: both answered with the offset expected.
    let (status, next) = store.receive_chunk(&chunk(20, 30, false)).await.unwrap();
    assert!(matches!(status, ChunkStatus::Retry(_)) && next == 10);
    let (status, next) = store.receive_chunk(&chunk(0, 10, false)).await.unwrap();
    assert!(matches!(status, ChunkStatus::Retry(_)) && next == 10);
    // A "last" chunk that ends before the snapshot's size restarts the transfer.
    let (status, next) = store.receive_chunk(&chunk(10, 50, true)).await.unwrap();
    assert!(matches!(status, ChunkStatus::Retry(_)) && next == 0);
    assert_eq!(store.receiving().await, None);
    assert!(temp_entries(dir.path()).is_empty());
    // The whole snapshot in one chunk.
    assert_eq!(
        store.receive_chunk(&chunk(0, 100, true)).await.unwrap(),
        (ChunkStatus::Complete, 100)
    );
    assert_snapshot_bytes(&store, &meta, 5).await;
}

//! The store on disk: half-written snapshots are removed at open, the newest N are kept across
//! reopens, damaged metadata stops the open, and damaged data fails the restore at its end.

mod common;

use std::os::unix::fs::FileExt;

use raft_core::node::SnapshotStore;
use raft_core::{LogId, Membership, SnapshotMeta};
use raft_snapshot::{Error, FileSnapshotStore, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: LogId::new(1, index),
        membership: Membership::new_voters([1]),
        membership_log_id: LogId::ZERO,
        size_bytes: 0,
        crc32: 0,
        created_unix_ms: 0,
    }
}

#[tokio::test]
async fn a_half_written_snapshot_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    let kept = build_snapshot(&store, LogId::new(1, 5), 1000, 1).await;
    let mut writer = store.begin(meta(9)).await.unwrap();
    writer.write_all(&[7u8; 10_000]).await.unwrap();
    writer.flush().await.unwrap();
    // A crash: neither finish nor abort nor any destructor runs.
    std::mem::forget(writer);
    std::mem::forget(store);
    assert_eq!(temp_entries(dir.path()).len(), 1);

    let store = FileSnapshotStore::open(dir.path()).unwrap();
    assert!(temp_entries(dir.path()).is_empty());
    assert_eq!(store.snapshots(), vec![kept]);
}

#[tokio::test]
async fn an_aborted_or_dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    let mut writer = store.begin(meta(3)).await.unwrap();
    writer.write_all(b"partial").await.unwrap();
    writer.abort().await;
    let writer = store.begin(meta(4)).await.unwrap();
    drop(writer);
    assert!(temp_entries(dir.path()).is_empty());
    assert_eq!(store.latest().await.unwrap(), None);
}

#[tokio::test]
async fn the_newest_snapshots_are_kept_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    let mut all = Vec::new();
    for index in [10, 20, 30] {
        all.push(build_snapshot(&store, LogId::new(1, index), 3000, index).await);
    }
    assert_eq!(store.snapshots(), all[1..].to_vec(), "default: 2 kept");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    drop(store);

    let store = FileSnapshotStore::open(dir.path()).unwrap();
    assert_eq!(store.snapshots(), all[1..].to_vec());
    assert_snapshot_bytes(&store, &all[2], 30).await;
    drop(store);

    let config = StoreConfig {
        snapshots_kept: 1,
        ..StoreConfig::default()
    };
    let store = FileSnapshotStore::open_with(dir.path(), config).unwrap();
    assert_eq!(
        store.snapshots(),
        all[2..].to_vec(),
        "a lower limit prunes at open"
    );
}

#[tokio::test]
async fn damaged_metadata_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    let m = build_snapshot(&store, LogId::new(1, 5), 1000, 1).await;
    drop(store);
    let path = dir.path().join(m.id()).join("meta");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xff], 20).unwrap();
    let error = FileSnapshotStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt { reason, .. } if reason.contains("checksum")),
        "{error}"
    );
}

#[tokio::test]
async fn damaged_data_fails_the_restore_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    let m = build_snapshot(&store, LogId::new(1, 5), 100_000, 1).await;
    let path = dir.path().join(m.id()).join("data");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[byte_at(1, 500) ^ 0x80], 500).unwrap();
    let mut reader = store.open(&m).await.unwrap();
    let mut sink = Vec::new();
    let error = reader.read_to_end(&mut sink).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}

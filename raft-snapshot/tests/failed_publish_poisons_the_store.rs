//! A publish that fails after the data was synced (here: the rename, because a stray file
//! holds the snapshot's name) poisons the store: nothing is published, every later write is
//! refused until the directory is reopened, and the reopened store has no leftovers.

mod common;

use raft_core::node::{SnapshotStore, StorageError};
use raft_core::{LogId, Membership, SnapshotMeta};
use raft_snapshot::FileSnapshotStore;
use tokio::io::AsyncWriteExt;

use common::*;

#[tokio::test]
async fn a_failed_publish_poisons_the_store_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    let kept = build_snapshot(&store, LogId::new(1, 5), 1000, 1).await;
    let meta = SnapshotMeta {
        last_log_id: LogId::new(1, 9),
        membership: Membership::new_voters([1]),
        membership_log_id: LogId::ZERO,
        size_bytes: 0,
        crc32: 0,
        created_unix_ms: 0,
    };
    std::fs::write(dir.path().join(meta.id()), b"in the way").unwrap();

    let mut writer = store.begin(meta.clone()).await.unwrap();
    writer.write_all(&[1u8; 5000]).await.unwrap();
    let error = writer.finish().await.unwrap_err();
    assert!(matches!(error, StorageError::Io { .. }), "{error}");
    assert_eq!(store.latest().await.unwrap(), Some(kept.clone()));
    assert!(matches!(
        store.begin(meta.clone()).await.err(),
        Some(StorageError::Poisoned(_))
    ));
    drop(store);

    std::fs::remove_file(dir.path().join(meta.id())).unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    assert!(temp_entries(dir.path()).is_empty());
    assert_eq!(store.snapshots(), vec![kept]);
    let rebuilt = build_snapshot(&store, LogId::new(1, 9), 5000, 2).await;
    assert_eq!(store.latest().await.unwrap(), Some(rebuilt));
}

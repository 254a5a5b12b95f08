//! Metadata received from a leader is checked before anything is written or published: a
//! chunk whose metadata could not be stored and read back (an invalid membership, one too
//! large for a metadata record, a configuration entry after the snapshot's last entry) is
//! refused, the store stays as it was and still opens. And a snapshot of an entry the store
//! already holds is restored from the stored one, under the stored metadata.

mod common;

use bytes::Bytes;
use raft_core::membership::{ADDRESS_BYTES_MAX, MEMBERS_MAX};
use raft_core::node::SnapshotStore;
use raft_core::{ChunkStatus, LogId, Membership, SnapshotChunk, SnapshotMeta};
use raft_snapshot::FileSnapshotStore;
use tokio::io::AsyncReadExt;

use common::*;

/// Valid metadata of a snapshot of `data` at entry 100.
fn meta_of(data: &[u8]) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: LogId::new(2, 100),
        membership: Membership::new_voters([1, 2, 3]),
        membership_log_id: LogId::new(1, 1),
        size_bytes: data.len() as u64,
        crc32: crc32fast::hash(data),
        created_unix_ms: 1,
    }
}

/// The chunk of `data` at `offset`, `len` bytes, under `meta`.
fn chunk(meta: &SnapshotMeta, data: &[u8], offset: usize, len: usize) -> SnapshotChunk {
    let piece = &data[offset..offset + len];
    SnapshotChunk {
        from: 1,
        to: 2,
        term: 3,
        meta: meta.clone(),
        offset: offset as u64,
        data: Bytes::copy_from_slice(piece),
        crc32: crc32fast::hash(piece),
        done: offset + len == data.len(),
    }
}

/// Metadata that no store could keep, each with what is wrong with it.
fn invalid_metas(data: &[u8]) -> Vec<(&'static str, SnapshotMeta)> {
    let valid = meta_of(data);
    let with = |change: &dyn Fn(&mut SnapshotMeta)| {
        let mut meta = valid.clone();
        change(&mut meta);
        meta
    };
    vec![
        ("no voters", with(&|m| m.membership.voters.clear())),
        (
            "node id 0",
            with(&|m| {
                m.membership.voters.insert(0);
            }),
        ),
        (
            "a voter that is also a learner",
            with(&|m| {
                m.membership.learners.insert(2);
            }),
        ),
        (
            "an address over ADDRESS_BYTES_MAX",
            with(&|m| {
                m.membership
                    .addresses
                    .insert(1, "a".repeat(ADDRESS_BYTES_MAX + 1));
            }),
        ),
        (
            "more addresses than MEMBERS_MAX",
            with(&|m| {
                m.membership.addresses = (1..=MEMBERS_MAX as u64 + 1)
                    .map(|id| (id, "127.0.0.1:1".to_string()))
                    .collect();
            }),
        ),
        (
            "a membership too large for a metadata record",
            with(&|m| {
                m.membership = Membership::new_voters(1..=MEMBERS_MAX as u64);
                m.membership.addresses = (1..=MEMBERS_MAX as u64)
                    .map(|id| (id, "a".repeat(ADDRESS_BYTES_MAX)))
                    .collect();
            }),
        ),
        (
            "a configuration entry after the last entry",
            with(&|m| {
                m.membership_log_id = LogId::new(2, 101);
            }),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_with_invalid_metadata_are_refused_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    for (what, meta) in invalid_metas(&data) {
        // A whole snapshot in one chunk: before the check it was published at once.
        let answer = store
            .receive_chunk(&chunk(&meta, &data, 0, data.len()))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            matches!(&answer, (ChunkStatus::Refused(reason), 0) if reason.contains("metadata")),
            "{what}: {answer:?}"
        );
        assert_eq!(store.latest().await.unwrap(), None, "{what}: published");
        assert_eq!(store.receiving().await, None, "{what}: receiving");
    }
    assert_eq!(temp_entries(dir.path()), Vec::<String>::new());
    drop(store);
    let store = FileSnapshotStore::open(dir.path()).expect("the store still opens");
    assert_eq!(store.latest().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_chunk_cannot_change_the_metadata_of_a_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 241) as u8).collect();
    let meta = meta_of(&data);
    let first = store.receive_chunk(&chunk(&meta, &data, 0, 3000)).await;
    assert!(
        matches!(first, Ok((ChunkStatus::Accepted, 3000))),
        "{first:?}"
    );
    // Same entry, size and checksum, but another membership: not this transfer.
    for (what, other) in invalid_metas(&data) {
        if other.size_bytes != meta.size_bytes || other.last_log_id != meta.last_log_id {
            continue;
        }
        let answer = store
            .receive_chunk(&chunk(&other, &data, 3000, 2000))
            .await
            .unwrap();
        assert!(
            !matches!(answer.0, ChunkStatus::Accepted | ChunkStatus::Complete),
            "{what}: {answer:?}"
        );
        assert_eq!(store.latest().await.unwrap(), None, "{what}: published");
    }
    drop(store);
    FileSnapshotStore::open(dir.path()).expect("the store still opens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_store_already_holds_is_restored_under_its_stored_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::open(dir.path()).unwrap();
    // This node built its own snapshot of entry 100; a leader sends its snapshot of the same
    // entry, with other bytes.
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 239) as u8).collect();
    let leader_meta = meta_of(&data);
    let local = build_snapshot(&store, leader_meta.last_log_id, 7000, 5).await;
    assert_ne!(local.crc32, leader_meta.crc32);
    let answer = store
        .receive_chunk(&chunk(&leader_meta, &data, 0, data.len()))
        .await;
    assert!(
        matches!(&answer, Ok((ChunkStatus::Refused(reason), 0)) if reason.contains("not newer")),
        "{answer:?}"
    );
    // The node installs the entry it already holds (raft-core hands the leader's metadata
    // over): the restore reads the stored snapshot, checked against the stored metadata.
    let mut reader = store
        .open(&leader_meta)
        .await
        .expect("open the stored snapshot of the entry");
    let mut restored = Vec::new();
    reader.read_to_end(&mut restored).await.expect("read");
    assert_eq!(restored.len() as u64, local.size_bytes);
    assert_eq!(crc32fast::hash(&restored), local.crc32);
    // A sender still reads only the bytes its metadata describes.
    assert!(store.read_chunk(&leader_meta, 0, 100).await.is_err());
}

//! An in-memory [`SnapshotStore`] for tests and examples. It follows the whole store contract
//! (chunk CRC and offset checks, whole-snapshot checksum, refusal of old snapshots) so that
//! tests of the node exercise the real transfer protocol; only durability is missing.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::storage::{SnapshotReader, SnapshotStore, SnapshotWriter, StorageError};
use crate::types::{ChunkStatus, SnapshotChunk, SnapshotMeta};

/// Snapshots kept, at most (the newest ones).
const SNAPSHOTS_KEPT_MAX: usize = 2;

#[derive(Debug, Default)]
struct Inner {
    /// Complete snapshots, oldest first.
    complete: Vec<(SnapshotMeta, Bytes)>,
    /// A transfer in progress: the snapshot's metadata and the bytes received so far.
    receiving: Option<(SnapshotMeta, Vec<u8>)>,
}

/// In-memory snapshot storage. Cloning shares the storage.
#[derive(Clone, Debug, Default)]
pub struct MemSnapshotStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemSnapshotStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, meta: SnapshotMeta, data: Bytes) {
        let mut inner = self.lock();
        inner
            .complete
            .retain(|(m, _)| m.last_log_id != meta.last_log_id);
        inner.complete.push((meta, data));
        inner.complete.sort_by_key(|(m, _)| m.last_log_id);
        let excess = inner.complete.len().saturating_sub(SNAPSHOTS_KEPT_MAX);
        inner.complete.drain(..excess);
    }

    fn find(&self, meta: &SnapshotMeta) -> Result<Bytes, StorageError> {
        let inner = self.lock();
        inner
            .complete
            .iter()
            .find(|(m, _)| m.last_log_id == meta.last_log_id)
            .map(|(_, data)| data.clone())
            .ok_or_else(|| StorageError::NotFound(format!("snapshot {}", meta.id())))
    }
}

/// Collects a locally built snapshot.
#[derive(Debug)]
struct MemWriter {
    store: MemSnapshotStore,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl AsyncWrite for MemWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl SnapshotWriter for MemWriter {
    async fn finish(self: Box<Self>) -> Result<SnapshotMeta, StorageError> {
        let MemWriter {
            store,
            mut meta,
            data,
        } = *self;
        meta.size_bytes = data.len() as u64;
        meta.crc32 = crc32(&data);
        store.publish(meta.clone(), Bytes::from(data));
        Ok(meta)
    }

    async fn abort(self: Box<Self>) {}
}

#[async_trait]
impl SnapshotStore for MemSnapshotStore {
    async fn begin(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        Ok(Box::new(MemWriter {
            store: self.clone(),
            meta,
            data: Vec::new(),
        }))
    }

    async fn latest(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        Ok(self.lock().complete.last().map(|(m, _)| m.clone()))
    }

    async fn open(&self, meta: &SnapshotMeta) -> Result<SnapshotReader, StorageError> {
        let data = self.find(meta)?;
        Ok(Box::new(io::Cursor::new(data)))
    }

    async fn read_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        len_bytes_max: u32,
    ) -> Result<Bytes, StorageError> {
        let data = self.find(meta)?;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len_bytes_max as usize).min(data.len());
        Ok(data.slice(start..end))
    }

    async fn receive_chunk(
        &self,
        chunk: &SnapshotChunk,
    ) -> Result<(ChunkStatus, u64), StorageError> {
        let mut inner = self.lock();
        let newest = inner.complete.last().map(|(m, _)| m.last_log_id);
        if newest.is_some_and(|n| chunk.meta.last_log_id <= n) {
            return Ok((
                ChunkStatus::Refused("not newer than the latest snapshot".into()),
                0,
            ));
        }
        let same = inner
            .receiving
            .as_ref()
            .is_some_and(|(m, _)| m.last_log_id == chunk.meta.last_log_id);
        if !same {
            if chunk.offset != 0 {
                return Ok((ChunkStatus::Retry("unknown transfer; start over".into()), 0));
            }
            inner.receiving = Some((chunk.meta.clone(), Vec::new()));
        }
        let (meta, data) = inner.receiving.as_mut().expect("transfer in progress");
        let expected = data.len() as u64;
        if chunk.offset != expected {
            return Ok((
                ChunkStatus::Retry(format!("expected offset {expected}")),
                expected,
            ));
        }
        if crc32(&chunk.data) != chunk.crc32 {
            return Ok((
                ChunkStatus::Retry("chunk checksum mismatch".into()),
                expected,
            ));
        }
        if expected + chunk.data.len() as u64 > meta.size_bytes {
            inner.receiving = None;
            return Ok((
                ChunkStatus::Retry("more bytes than the snapshot's size".into()),
                0,
            ));
        }
        data.extend_from_slice(&chunk.data);
        let next = data.len() as u64;
        if !chunk.done {
            return Ok((ChunkStatus::Accepted, next));
        }
        let (meta, data) = inner.receiving.take().expect("transfer in progress");
        drop(inner);
        if data.len() as u64 != meta.size_bytes || crc32(&data) != meta.crc32 {
            return Ok((
                ChunkStatus::Retry("whole-snapshot checksum mismatch".into()),
                0,
            ));
        }
        self.publish(meta, Bytes::from(data));
        Ok((ChunkStatus::Complete, next))
    }
}

/// CRC32 (IEEE), the checksum of snapshot chunks and whole snapshots.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Membership;
    use crate::types::LogId;

    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    fn meta(index: u64, data: &[u8]) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: LogId::new(1, index),
            membership: Membership::new_voters([1]),
            membership_log_id: LogId::ZERO,
            size_bytes: data.len() as u64,
            crc32: crc32(data),
            created_unix_ms: 0,
        }
    }

    fn chunk(meta: &SnapshotMeta, offset: u64, data: &[u8], done: bool) -> SnapshotChunk {
        SnapshotChunk {
            from: 1,
            to: 2,
            term: 1,
            meta: meta.clone(),
            offset,
            data: Bytes::copy_from_slice(data),
            crc32: crc32(data),
            done,
        }
    }

    #[tokio::test]
    async fn chunks_in_order_complete_and_bad_ones_are_retried() {
        let store = MemSnapshotStore::new();
        let data = b"hello snapshot world";
        let m = meta(10, data);
        assert_eq!(
            store
                .receive_chunk(&chunk(&m, 0, &data[..5], false))
                .await
                .unwrap(),
            (ChunkStatus::Accepted, 5)
        );
        let gap = store
            .receive_chunk(&chunk(&m, 9, &data[9..], true))
            .await
            .unwrap();
        assert!(matches!(gap, (ChunkStatus::Retry(_), 5)));
        let mut bad = chunk(&m, 5, &data[5..], true);
        bad.crc32 ^= 1;
        assert!(matches!(
            store.receive_chunk(&bad).await.unwrap(),
            (ChunkStatus::Retry(_), 5)
        ));
        let done = store
            .receive_chunk(&chunk(&m, 5, &data[5..], true))
            .await
            .unwrap();
        assert_eq!(done, (ChunkStatus::Complete, data.len() as u64));
        assert_eq!(
            store.latest().await.unwrap().unwrap().last_log_id,
            m.last_log_id
        );
        let older = meta(5, data);
        let refused = store
            .receive_chunk(&chunk(&older, 0, data, true))
            .await
            .unwrap();
        assert!(matches!(refused.0, ChunkStatus::Refused(_)));
    }
}

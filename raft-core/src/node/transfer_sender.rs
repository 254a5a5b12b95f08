//! raft-core's default snapshot sender: stop-and-wait over [`Transport::send_snapshot_chunk`].

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::storage::SnapshotStore;
use super::transport::{SnapshotTransfer, Transport};
use crate::types::{ChunkStatus, NodeId, SnapshotChunk, SnapshotMeta, Term};

/// Times a snapshot chunk is retried before the transfer is reported failed.
const SNAPSHOT_CHUNK_RETRIES_MAX: u32 = 8;
/// The wait before resending a chunk grows by this much after each failure in a row.
const SNAPSHOT_CHUNK_BACKOFF_MS: u64 = 50;

/// raft-core's default [`SnapshotTransfer`]: streams a snapshot chunk by chunk, one chunk in
/// flight (stop-and-wait), resuming from the offset the receiver acknowledges after any
/// failure. It gives up after `SNAPSHOT_CHUNK_RETRIES_MAX` failures in a row that gain no new
/// ground, so a snapshot the receiver can never verify is not resent forever.
pub struct StopAndWaitSender<S, T> {
    snapshots: Arc<S>,
    transport: Arc<T>,
    chunk_bytes: u32,
}

impl<S, T> std::fmt::Debug for StopAndWaitSender<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopAndWaitSender")
            .field("chunk_bytes", &self.chunk_bytes)
            .finish()
    }
}

impl<S: SnapshotStore, T: Transport> StopAndWaitSender<S, T> {
    /// A sender reading from `snapshots` and sending `chunk_bytes` per chunk over `transport`.
    pub fn new(snapshots: Arc<S>, transport: Arc<T>, chunk_bytes: u32) -> Self {
        StopAndWaitSender {
            snapshots,
            transport,
            chunk_bytes: chunk_bytes.max(1),
        }
    }
}

#[async_trait::async_trait]
impl<S: SnapshotStore, T: Transport> SnapshotTransfer for StopAndWaitSender<S, T> {
    async fn send_snapshot(
        &self,
        from: NodeId,
        to: NodeId,
        term: Term,
        meta: SnapshotMeta,
    ) -> bool {
        let mut offset = 0u64;
        let mut furthest = 0u64;
        let mut failures = 0u32;
        loop {
            let data = match self
                .snapshots
                .read_chunk(&meta, offset, self.chunk_bytes)
                .await
            {
                Ok(data) => data,
                Err(e) => {
                    warn!(to, error = %e, "reading snapshot chunk failed");
                    return false;
                }
            };
            let done = offset + data.len() as u64 >= meta.size_bytes;
            let crc32 = crc32fast::hash(&data);
            let chunk = SnapshotChunk {
                from,
                to,
                term,
                meta: meta.clone(),
                offset,
                crc32,
                data,
                done,
            };
            match self.transport.send_snapshot_chunk(chunk).await {
                Ok(ack) => match ack.status {
                    ChunkStatus::Complete => return true,
                    ChunkStatus::Accepted => offset = ack.next_offset,
                    ChunkStatus::Retry(why) => {
                        warn!(to, offset, why, "snapshot chunk to be resent");
                        offset = ack.next_offset;
                        failures += 1;
                    }
                    ChunkStatus::Refused(why) => {
                        info!(to, why, "snapshot refused");
                        return false;
                    }
                },
                Err(e) => {
                    warn!(to, error = %e, "snapshot chunk failed");
                    failures += 1;
                    let backoff_ms = SNAPSHOT_CHUNK_BACKOFF_MS * u64::from(failures);
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                }
            }
            if offset > furthest {
                furthest = offset;
                failures = 0;
            }
            if failures > SNAPSHOT_CHUNK_RETRIES_MAX {
                return false;
            }
        }
    }
}

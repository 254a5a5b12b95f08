//! # raft-snapshot
//!
//! Durable snapshots for `raft-core`, and their transfer to followers in chunks.
//!
//! - [`FileSnapshotStore`]: raft-core's [`SnapshotStore`](raft_core::node::SnapshotStore) in a
//!   directory. Snapshots are streamed to disk (a state machine never holds its whole snapshot
//!   in memory), synced, and published by an atomic rename followed by a directory sync; the
//!   receiving side checks each chunk's offset and CRC32, then the whole snapshot's size and
//!   CRC32, before it publishes. Half-written snapshots are removed at open; the newest
//!   [`StoreConfig::snapshots_kept`] (default 2) are kept. The layout on disk is drawn in
//!   [`format`](mod@format).
//! - [`SnapshotSender`]: streams a snapshot to one follower through any raft-core
//!   [`Transport`](raft_core::node::Transport) with a bounded window of chunks in flight, a
//!   timeout per chunk (and one for the last chunk, which waits for the receiver's sync), resumes
//!   from the offset the receiver acknowledges, and switches to a newer snapshot when one
//!   appears. It is raft-core's [`SnapshotTransfer`](raft_core::node::SnapshotTransfer): pass
//!   it to `RaftNode::start_with_transfer`, or in `StartOptions::snapshot_transfer` (which
//!   raft-net-tcp's `TcpEndpoint::start` takes too), and the node sends its snapshots with it.
//!
//! Memory on both sides is bounded by the window times the chunk size, whatever the snapshot's
//! size.
//!
//! ## Example
//!
//! A leader's store builds a snapshot; a sender streams it, 4 KiB at a time with 4 chunks in
//! flight, to a follower's store (here the "transport" hands chunks straight to it):
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//!
//! use async_trait::async_trait;
//! use raft_core::node::{SnapshotStore, Transport, TransportError};
//! use raft_core::{LogId, Membership, Message, SnapshotChunk, SnapshotChunkAck, SnapshotMeta};
//! use raft_snapshot::{FileSnapshotStore, SenderConfig, SnapshotSender, Target};
//! use tokio::io::AsyncWriteExt;
//!
//! /// Delivers chunks to a store in the same process.
//! struct Direct(FileSnapshotStore);
//!
//! #[async_trait]
//! impl Transport for Direct {
//!     fn send(&self, _msg: Message) {}
//!     async fn send_snapshot_chunk(
//!         &self,
//!         chunk: SnapshotChunk,
//!     ) -> Result<SnapshotChunkAck, TransportError> {
//!         let (status, next_offset) = self.0.receive_chunk(&chunk).await.expect("storage");
//!         Ok(SnapshotChunkAck {
//!             from: chunk.to,
//!             term: chunk.term,
//!             snapshot: chunk.meta.last_log_id,
//!             status,
//!             next_offset,
//!         })
//!     }
//!     fn set_peers(&self, _addresses: &BTreeMap<u64, String>) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
//! let leader = FileSnapshotStore::open(dirs.0.path())?;
//! let follower = FileSnapshotStore::open(dirs.1.path())?;
//!
//! // The state machine streams its snapshot into a writer.
//! let mut writer = leader
//!     .begin(SnapshotMeta {
//!         last_log_id: LogId::new(2, 1000),
//!         membership: Membership::new_voters([1, 2, 3]),
//!         membership_log_id: LogId::new(1, 1),
//!         size_bytes: 0,
//!         crc32: 0,
//!         created_unix_ms: 0,
//!     })
//!     .await?;
//! for i in 0..100u32 {
//!     writer.write_all(&[i as u8; 1000]).await?;
//! }
//! let meta = writer.finish().await?;
//! assert_eq!(meta.size_bytes, 100_000);
//!
//! let config = SenderConfig {
//!     chunk_bytes: 4096,
//!     window_chunks: 4,
//!     ..SenderConfig::default()
//! };
//! let sender = SnapshotSender::new(
//!     Arc::new(leader),
//!     Arc::new(Direct(follower.clone())),
//!     config,
//! )?;
//! let report = sender.send(Target { from: 1, to: 2, term: 2 }, meta.clone()).await?;
//! assert_eq!(report.bytes_sent, 100_000);
//! assert_eq!(follower.latest().await?, Some(meta));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod error;
pub mod format;
mod sender;
mod store;

pub use error::{Error, Result};
pub use sender::{
    SenderConfig, SnapshotSender, Target, TransferReport, CHUNK_BYTES_DEFAULT,
    CHUNK_TIMEOUT_MS_DEFAULT, LAST_CHUNK_TIMEOUT_MS_DEFAULT, RETRIES_MAX_DEFAULT,
    RETRY_BACKOFF_MS_MAX_DEFAULT, RETRY_BACKOFF_MS_MIN_DEFAULT, WINDOW_CHUNKS_DEFAULT,
    WINDOW_CHUNKS_MAX,
};
pub use store::{
    FileSnapshotStore, StoreConfig, CHUNK_BYTES_MAX_DEFAULT, CHUNK_BYTES_MAX_LIMIT,
    RECEIVE_SYNC_INTERVAL_BYTES_DEFAULT, SNAPSHOTS_KEPT_DEFAULT,
};

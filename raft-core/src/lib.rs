//! # raft-core
//!
//! The Raft consensus algorithm as a deterministic, I/O-free [`engine`], plus (behind the
//! default `node` feature) an async [`node`] that drives it on tokio.
//!
//! * [`engine::Engine`] has no clock, no threads, no sockets and no files. Time arrives as
//!   `tick()`, messages as `step()`, commands as `propose()`; the output is a
//!   [`engine::Ready`] whose steps the caller performs in a documented order. It implements
//!   elections with pre-vote, check-quorum and leader stickiness; pipelined replication with
//!   conflict hints and flow control; the current-term commit rule; ReadIndex and lease reads;
//!   leadership transfer; learners, catch-up, single-server changes and joint consensus;
//!   snapshots with compaction.
//! * [`driver::Driver`] holds the rules that turn a `Ready` into sends, ordered writes,
//!   applies and answers, with no I/O either; the node runs it, and so do the simulations.
//! * [`node::RaftNode`] runs an engine against four traits: [`node::LogStore`],
//!   [`node::SnapshotStore`], [`node::Transport`] and [`node::StateMachine`], and returns a
//!   cloneable [`node::RaftHandle`]. In-memory implementations of all four ship in [`node`].
//! * [`node::NodeStatus::metrics`] counts and times what a node does ([`node::NodeMetrics`]:
//!   leaderships, elections, proposals, log writes, snapshots, event-loop lag) as plain
//!   numbers and [`metrics::Histogram`]s, for an embedder to export however it likes; no
//!   exporter is pulled in.
//!
//! ## Example: a one-node cluster in memory
//!
//! ```
//! use std::sync::Arc;
//! use raft_core::node::{MemKv, MemLogStore, MemRouter, MemSnapshotStore, MessageHandler, NodeConfig, RaftNode};
//! use raft_core::Membership;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), raft_core::node::RaftError> {
//! let router = MemRouter::new();
//! let kv = MemKv::new();
//! let map = kv.map();
//! let handle = RaftNode::start(
//!     NodeConfig::new(1),
//!     Arc::new(MemLogStore::new()),
//!     Arc::new(MemSnapshotStore::new()),
//!     Arc::new(router.transport(1)),
//!     kv,
//!     Membership::new_voters([1]),
//! )
//! .await?;
//! router.register(1, Arc::new(handle.clone()) as Arc<dyn MessageHandler>);
//!
//! // Wait for the single voter to elect itself, then write and read linearizably.
//! let mut status = handle.watch_status();
//! status.wait_for(|s| s.leader == Some(1)).await.unwrap();
//! handle.propose(MemKv::set(b"greeting", b"hello")).await?;
//! handle.read_barrier().await?;
//! assert_eq!(map.read().unwrap().get(&b"greeting"[..]).map(|v| &v[..]), Some(&b"hello"[..]));
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod driver;
pub mod engine;
pub mod membership;
pub mod message;
pub mod metrics;
#[cfg(feature = "node")]
pub mod node;
pub mod types;

pub use membership::{Membership, MembershipBuilder, MembershipError};
pub use message::{ConflictHint, Message, MessageBody};
pub use types::{
    ChunkStatus, Entry, EntryKind, HardState, LogId, LogIndex, NodeId, SnapshotChunk,
    SnapshotChunkAck, SnapshotMeta, Term,
};

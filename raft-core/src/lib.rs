//! # raft-core
//!
//! The Raft consensus algorithm as a deterministic, I/O-free engine, plus (behind the default
//! `node` feature) an async node that drives it on tokio.

#![warn(missing_docs)]

pub mod engine;
pub mod membership;
pub mod message;
#[cfg(feature = "node")]
pub mod node;
pub mod types;

pub use membership::{Membership, MembershipError};
pub use message::{ConflictHint, Message, MessageBody};
pub use types::{
    ChunkStatus, Entry, EntryKind, HardState, LogId, LogIndex, NodeId, SnapshotChunk,
    SnapshotChunkAck, SnapshotMeta, Term,
};

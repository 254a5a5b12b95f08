//! The traits through which the node talks to its peers.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::message::Message;
use crate::types::{NodeId, SnapshotChunk, SnapshotChunkAck, SnapshotMeta, Term};

/// Why a transport operation failed. Every variant is retryable from the node's point of view:
/// Raft tolerates lost messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No address is known for the peer.
    #[error("no address known for node {0}")]
    UnknownPeer(NodeId),
    /// The peer could not be reached or the connection broke.
    #[error("node {node} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        node: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the request timeout.
    #[error("request to node {0} timed out")]
    Timeout(NodeId),
    /// The peer spoke an unexpected or malformed protocol.
    #[error("protocol error with node {node}: {reason}")]
    Protocol {
        /// The peer.
        node: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// The transport was shut down.
    #[error("transport shut down")]
    Shutdown,
}

/// The sending half of a transport, owned by the node.
///
/// # Contract
/// 1. `send` never blocks and never fails: a message that cannot be delivered (peer down, queue
///    full) is dropped and Raft's retries take care of it. Messages to one peer are sent in the
///    order given, but may be lost; the receiver must tolerate duplicates and reordering.
/// 2. `send_snapshot_chunk` travels separately from `send` so that a large snapshot never
///    delays heartbeats; it resolves with the receiver's acknowledgement or an error, never
///    hangs past the implementation's request timeout.
/// 3. `set_peers` gives the current address of every member; later sends to removed members are
///    dropped.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Queues `msg` for delivery to `msg.to` (rule 1).
    fn send(&self, msg: Message);
    /// Sends one snapshot chunk and waits for the acknowledgement (rule 2).
    async fn send_snapshot_chunk(
        &self,
        chunk: SnapshotChunk,
    ) -> Result<SnapshotChunkAck, TransportError>;
    /// Updates the peer address book (rule 3).
    fn set_peers(&self, addresses: &BTreeMap<NodeId, String>);
}

/// The receiving side: a transport's server delivers inbound traffic to this. The node's
/// [`crate::node::RaftHandle`] implements it.
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    /// Hands an inbound Raft message to the node. Never blocks; may drop under overload.
    fn deliver(&self, msg: Message);
    /// Hands an inbound snapshot chunk to the node and waits for its acknowledgement.
    async fn deliver_snapshot_chunk(&self, chunk: SnapshotChunk) -> SnapshotChunkAck;
}

/// The leader's half of InstallSnapshot: streams one snapshot to one follower.
///
/// # Contract
/// 1. The node calls it from a task of its own, at most one per follower at a time, and drops
///    the future when it starts another transfer to that follower, steps down or stops.
/// 2. It resolves `true` only after a chunk was answered [`crate::ChunkStatus::Complete`];
///    `false` on refusal or when it gives up; it never waits without bound.
///
/// raft-core's default is a stop-and-wait sender over [`Transport::send_snapshot_chunk`];
/// `raft-snapshot` provides a windowed, resumable one.
#[async_trait]
pub trait SnapshotTransfer: Send + Sync + 'static {
    /// Sends the snapshot described by `meta` from `from` (the leader, in `term`) to `to`.
    async fn send_snapshot(&self, from: NodeId, to: NodeId, term: Term, meta: SnapshotMeta)
        -> bool;
}

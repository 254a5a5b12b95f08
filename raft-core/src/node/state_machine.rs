//! The user's state machine, as the node sees it.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::types::{Entry, SnapshotMeta};

/// A failure of the user's state machine. The node treats it as fatal: a replicated state
/// machine that cannot apply an entry can no longer be trusted to match its peers.
#[derive(Debug, thiserror::Error)]
#[error("state machine failed: {0}")]
pub struct StateMachineError(pub String);

/// The replicated state machine.
///
/// # Lifecycle
/// * **Start.** The node hands a state machine to [`super::RaftNode::start`] and then, on
///   every start (the first and every restart), restores the latest snapshot into it if there
///   is one ([`StateMachine::restore`]) and replays every committed entry after it through
///   [`StateMachine::apply`]. So a state machine must start **empty** (or hold exactly the
///   state of the snapshot it will be given): nothing it kept from before a restart may be
///   counted twice. Durable state belongs in snapshots, not in files the state machine
///   keeps on its own.
/// * **Running.** Committed entries arrive in log order, each exactly once between restores.
///   `apply` errors are **fatal by contract**: the node stops, and since the entry is
///   committed, it fails again at every restart. Client input can be malformed, so validate
///   it before [`super::RaftHandle::propose`], or answer a malformed command with an error
///   *value* (as [`super::MemKv`] does), never with `Err`.
/// * **Reads.** The state machine is owned by the node's apply task. Share its state with the
///   rest of the program (an `Arc<RwLock<_>>` or similar, as [`super::MemKv::map`] does);
///   after [`super::RaftHandle::read_barrier`] resolves, that shared state reflects every
///   write acknowledged before the barrier was called: read it then for a linearizable read.
///
/// # Contract
/// 1. `apply` receives committed entries in log order, each exactly once between snapshots
///    restores, and returns exactly one response per entry (an empty `Bytes` for blank and
///    membership entries). It must be deterministic: every replica applying the same entries
///    must reach the same state.
/// 2. `build_snapshot` writes the state as of the last applied entry; the node labels the
///    snapshot with that entry's index and term. A state machine that can copy its state
///    cheaply may instead return a [`SnapshotBuilder`] from `snapshot_builder`: it must
///    capture the state as of the last applied entry when called, and its `write` then runs
///    in the background while `apply` goes on.
/// 3. `restore` replaces the whole state with the snapshot's.
/// 4. `pre_commit` (optional) sees every entry when it is appended to the local log, on leader
///    and followers alike; `rollback` (optional) sees, newest first, **every** pre-committed
///    entry that a conflicting leader later truncated (fixes jraft bug 9).
#[async_trait]
pub trait StateMachine: Send + 'static {
    /// Applies committed entries (rule 1).
    async fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Bytes>, StateMachineError>;
    /// Streams a snapshot of the current state into `writer` (rule 2).
    async fn build_snapshot(
        &mut self,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError>;
    /// Replaces the state with the snapshot read from `reader` (rule 3).
    async fn restore(
        &mut self,
        meta: &SnapshotMeta,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), StateMachineError>;
    /// Captures the state as of the last applied entry for a snapshot written in the
    /// background (rule 2), so that applying entries, and answering the clients waiting for
    /// them, does not stall while a large snapshot is written. Default: `None`, and the node
    /// calls `build_snapshot` on the apply task instead.
    fn snapshot_builder(&mut self) -> Option<Box<dyn SnapshotBuilder>> {
        None
    }
    /// Called when an entry is appended to the local log (rule 4). Default: nothing.
    fn pre_commit(&mut self, _entry: &Entry) {}
    /// Called for each appended entry that was truncated before being committed (rule 4).
    fn rollback(&mut self, _entry: &Entry) {}
}

/// A copy of a state machine's state taken by [`StateMachine::snapshot_builder`], written out
/// as a snapshot while the state machine goes on applying entries.
#[async_trait]
pub trait SnapshotBuilder: Send + 'static {
    /// Streams the captured state into `writer`, in the format `restore` reads.
    async fn write(
        self: Box<Self>,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError>;
}

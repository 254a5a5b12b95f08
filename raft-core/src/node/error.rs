//! Why a node stops by itself.

/// A failure after which the node stops: its storage, its state machine or its own logic can
/// no longer be trusted. Carried by [`super::RaftError::Fatal`] and
/// [`super::NodeState::Failed`]. (A failed snapshot build is not one: the node goes on, and
/// retries later.)
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fatal {
    /// The log store failed to read or write; nothing it holds is trusted until a restart.
    #[error("log store: {0}")]
    LogStore(String),
    /// The snapshot store failed where the node cannot go on without it (restoring a
    /// snapshot).
    #[error("snapshot store: {0}")]
    SnapshotStore(String),
    /// The state machine returned an error from `apply` or `restore`.
    #[error("state machine: {0}")]
    StateMachine(String),
    /// What storage holds cannot be started from (a snapshot older than the purged log, a
    /// purged log without a snapshot, ...).
    #[error("cannot recover from storage: {0}")]
    Recovery(String),
    /// The node broke one of its own invariants: a bug.
    #[error("bug: {0}")]
    Bug(String),
}

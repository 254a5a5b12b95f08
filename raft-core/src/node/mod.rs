//! The async node: drives the [`crate::engine::Engine`] on tokio through the traits for the log
//! store, the snapshot store, the transport and the user's state machine.
//!
//! Start a node with [`RaftNode::start`]; talk to it through the cloneable [`RaftHandle`].
//! [`MemLogStore`], [`MemSnapshotStore`], [`MemRouter`] and [`MemKv`] are in-memory
//! implementations of the four traits for tests and examples, and [`log_store_suite`] is a
//! conformance suite for log store implementations.

mod apply;
mod error;
pub mod log_store_suite;
mod mem_kv;
mod mem_log;
mod mem_snapshot;
mod mem_transport;
mod metrics;
mod raft;
mod recovery;
mod runtime;
mod state_machine;
mod storage;
mod tasks;
mod transfer_sender;
mod transport;
mod waiters;
mod write;

pub use error::Fatal;
pub use mem_kv::{HookLog, KvMap, MemKv};
pub use mem_log::MemLogStore;
pub use mem_snapshot::MemSnapshotStore;
pub use mem_transport::{MemRouter, MemTransport};
pub use metrics::{NodeMetrics, ProposalRefusals, SnapshotActivity};
pub use raft::{
    EngineObserver, NodeConfig, NodeState, NodeStatus, PeerStatus, RaftError, RaftHandle, RaftNode,
    StartOptions, PROPOSE_MANY_COMMANDS_MAX,
};
pub use state_machine::{SnapshotBuilder, StateMachine, StateMachineError};
pub use storage::{
    LogState, LogStore, SnapshotReader, SnapshotStore, SnapshotWriter, StorageError,
};
pub use transfer_sender::StopAndWaitSender;
pub use transport::{MessageHandler, SnapshotTransfer, Transport, TransportError};

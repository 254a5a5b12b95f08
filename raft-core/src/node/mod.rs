//! The async node: drives the [`crate::engine::Engine`] on tokio through the traits for the log
//! store, the snapshot store, the transport and the user's state machine.

pub mod log_store_suite;
mod mem_log;
mod state_machine;
mod storage;
mod transport;

pub use mem_log::MemLogStore;
pub use state_machine::{StateMachine, StateMachineError};
pub use storage::{LogState, LogStore, SnapshotReader, SnapshotStore, SnapshotWriter, StorageError};
pub use transport::{MessageHandler, Transport, TransportError};

//! The crate's error type.

use std::path::PathBuf;

use raft_core::node::StorageError;
use raft_core::LogId;

/// Everything that can go wrong in this crate.
///
/// Store errors are converted into raft-core's [`StorageError`] at the trait boundary (see the
/// `From` impl); sender errors end one transfer and are reported to whoever started it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system reported an error.
    #[error("i/o error during {op} on {}: {source}", path.display())]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A published snapshot failed a check when the directory was opened or read: its
    /// metadata file is damaged or its data file has the wrong length.
    #[error("corrupt snapshot at {}: {reason}", path.display())]
    Corrupt {
        /// The file that failed the check.
        path: PathBuf,
        /// Which check failed.
        reason: &'static str,
    },
    /// An earlier sync, rename or directory sync failed: the store refuses writes until it is
    /// reopened, because it can no longer tell which bytes are durable.
    #[error("snapshot store refuses writes after an earlier failure ({op})")]
    Poisoned {
        /// The operation that failed first.
        op: &'static str,
    },
    /// The snapshot is not (or no longer) in the store.
    #[error("snapshot {0} not found")]
    NotFound(LogId),
    /// Metadata that a metadata record cannot hold and read back (see
    /// [`crate::format::check_meta`]): nothing was written.
    #[error("snapshot {snapshot} has invalid metadata: {reason}")]
    InvalidMeta {
        /// The snapshot described.
        snapshot: LogId,
        /// What is wrong with the metadata.
        reason: &'static str,
    },
    /// A configuration value is out of its range.
    #[error("invalid configuration: {field} {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// The range it must be in.
        reason: &'static str,
    },
    /// The sender has nothing to send: the store holds no snapshot.
    #[error("no snapshot to send")]
    NoSnapshot,
    /// The receiver will never take this snapshot (it is not newer than the receiver's state,
    /// the term is stale, or a chunk breaks the receiver's limits).
    #[error("snapshot {snapshot} refused by node {node}: {reason}")]
    Refused {
        /// The snapshot the transfer was sending.
        snapshot: LogId,
        /// The receiver.
        node: u64,
        /// The receiver's explanation.
        reason: String,
    },
    /// The transfer failed `retries_max` times in a row without the receiver making progress.
    #[error(
        "snapshot {snapshot} to node {node} gave up at offset {offset} after {failures} failures in a row: {last}"
    )]
    RetriesExhausted {
        /// The snapshot the transfer was sending.
        snapshot: LogId,
        /// The receiver.
        node: u64,
        /// The offset the receiver had acknowledged.
        offset: u64,
        /// Consecutive failures.
        failures: u32,
        /// The last failure.
        last: String,
    },
    /// Reading the snapshot from the sender's store failed.
    #[error("reading the snapshot to send failed: {0}")]
    Storage(#[from] StorageError),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for StorageError {
    fn from(error: Error) -> Self {
        match error {
            Error::Io { op, path, source } => StorageError::Io {
                op,
                source: std::io::Error::new(source.kind(), format!("{}: {source}", path.display())),
            },
            Error::Corrupt { .. } => StorageError::Corrupt(error.to_string()),
            Error::Poisoned { .. } => StorageError::Poisoned(error.to_string()),
            Error::NotFound(_) | Error::NoSnapshot => StorageError::NotFound(error.to_string()),
            Error::Storage(inner) => inner,
            other => StorageError::Invalid(other.to_string()),
        }
    }
}

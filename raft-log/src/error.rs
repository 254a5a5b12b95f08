//! The one error type of the crate.

use std::path::PathBuf;

use raft_core::node::StorageError;

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an operation of [`crate::RaftLog`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system reported an error. A failed write or sync also poisons the store.
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
    /// Bytes on disk failed a check outside the torn tail of the log: opening refuses to go on
    /// rather than silently dropping data.
    #[error("corrupt log file {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage in that file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// An earlier write or sync failed; the store refuses writes until it is reopened.
    #[error("log refuses writes after an earlier failure: {cause}")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// An append does not continue the log at the next index.
    #[error("append of index {got} where index {expected} was expected (no holes allowed)")]
    NotContiguous {
        /// The index the log expected.
        expected: u64,
        /// The index it got.
        got: u64,
    },
    /// A read asked for indexes that are purged or were never written.
    #[error("indexes [{low}, {high}) are outside the log [{first}, {next})")]
    OutOfRange {
        /// First index asked for.
        low: u64,
        /// One past the last index asked for.
        high: u64,
        /// First index in the log.
        first: u64,
        /// One past the last index in the log.
        next: u64,
    },
    /// `truncate(from)` with `from` at or below the purged index.
    #[error("truncate from {from} is at or below the purged index {purged}")]
    TruncatePurged {
        /// The index asked for.
        from: u64,
        /// The purged index.
        purged: u64,
    },
    /// An entry's record does not fit in one segment (see [`crate::Options::entry_bytes_max`]).
    #[error("entry {index} has {bytes} payload bytes; at most {bytes_max} fit in a segment")]
    EntryTooLarge {
        /// The entry's index.
        index: u64,
        /// Its payload size.
        bytes: u64,
        /// The largest payload a segment holds.
        bytes_max: u64,
    },
    /// The directory is locked by another process, or by another open log or [`crate::DirLock`]
    /// in this one: one process at a time may use a log directory.
    #[error(
        "{} is in use by another process ({}); one process at a time may open it",
        dir.display(),
        pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    Locked {
        /// The locked directory.
        dir: PathBuf,
        /// The process holding the lock, as its lock file says (`None` if it cannot be read).
        pid: Option<u32>,
    },
    /// `Options::segment_bytes` is outside the supported range.
    #[error(
        "segment size {segment_bytes} bytes is outside [{min}, {max}] or not a multiple of {align}"
    )]
    SegmentSize {
        /// The size asked for.
        segment_bytes: u64,
        /// Smallest supported size.
        min: u64,
        /// Largest supported size.
        max: u64,
        /// Required multiple.
        align: u64,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

impl From<Error> for StorageError {
    fn from(error: Error) -> Self {
        match error {
            Error::Io { op, path, source } => StorageError::io(
                op,
                std::io::Error::new(source.kind(), format!("{}: {source}", path.display())),
            ),
            corrupt @ Error::Corrupt { .. } => StorageError::Corrupt(corrupt.to_string()),
            Error::Poisoned { cause } => StorageError::Poisoned(cause),
            locked @ Error::Locked { .. } => StorageError::io(
                "lock log directory",
                std::io::Error::new(std::io::ErrorKind::WouldBlock, locked.to_string()),
            ),
            invalid @ (Error::NotContiguous { .. }
            | Error::OutOfRange { .. }
            | Error::TruncatePurged { .. }
            | Error::EntryTooLarge { .. }
            | Error::SegmentSize { .. }) => StorageError::Invalid(invalid.to_string()),
        }
    }
}

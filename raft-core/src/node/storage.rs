//! The traits through which the node reaches durable storage: the log store (with the hard
//! state) and the snapshot store.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::types::{ChunkStatus, Entry, HardState, LogId, LogIndex, SnapshotChunk, SnapshotMeta};

/// Why a storage operation failed. Any storage error stops the node: it never retries a failed
/// write or sync and pretends the data is safe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The operating system reported an error.
    #[error("i/o error during {op}: {source}")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes failed a check (CRC, magic, length, sequence).
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// An earlier write or sync failed; the store refuses writes until it is reopened.
    #[error("store refuses writes after an earlier failure: {0}")]
    Poisoned(String),
    /// The caller broke the trait contract (a hole in the log, a purge past the end, ...).
    #[error("invalid storage request: {0}")]
    Invalid(String),
    /// The requested item does not exist (a snapshot that was removed, ...).
    #[error("not found: {0}")]
    NotFound(String),
}

impl StorageError {
    /// Wraps an I/O error with the operation that caused it.
    pub fn io(op: &'static str, source: std::io::Error) -> Self {
        StorageError::Io { op, source }
    }
}

/// What a log store holds when the node starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// The last saved hard state (all zero / `None` for a new store).
    pub hard_state: HardState,
    /// The id of the last purged entry (covered by a snapshot); `LogId::ZERO` if nothing was
    /// ever purged. The first entry in the store, if any, is `purged.index + 1`.
    pub purged: LogId,
    /// The id of the last entry in the store; equal to `purged` when the store holds no entry.
    pub last: LogId,
}

/// A durable Raft log plus the hard state.
///
/// # Contract
/// 1. Entries are contiguous: `append` receives entries whose indexes follow the current last
///    index (or `purged.index + 1` when empty) without a hole; anything else is
///    [`StorageError::Invalid`].
/// 2. Writes (`append`, `truncate`, `purge`, `save_hard_state`) are never issued concurrently
///    with each other by the node; reads (`entries`, `state`) may run concurrently with a write.
/// 3. Every write is **durable when its future resolves with `Ok`**. An implementation batches
///    concurrent work however it likes but never resolves before the data is synced.
/// 4. After any failed write the store returns [`StorageError::Poisoned`] for every later write
///    until it is reopened.
/// 5. `truncate(from)` removes every entry with index `>= from`; `from` is always greater than
///    the purged index (anything else is [`StorageError::Invalid`]); a `from` past the last
///    index removes nothing.
/// 6. `purge(upto)` removes every entry with index `<= upto.index` and records `upto` as the
///    purged id. If `upto.index` is at or beyond the last index the log becomes empty and the next
///    append starts at `upto.index + 1` (installing a snapshot).
/// 7. `entries(low, high, bytes_max)` returns entries `[low, high)` in order, stopping early
///    once the payload bytes reach `bytes_max` but always returning at least one entry when the
///    range is non-empty. Asking for purged or absent indexes is [`StorageError::Invalid`].
/// 8. The store is the log: the node keeps only a window of payloads in memory and reads any
///    range of `(purged, last]` back with `entries` whenever a lagging follower needs it, at
///    any time, concurrently with writes (rule 2). A read that races a purge of its range may
///    fail; the node then sends that follower a snapshot instead.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Reads what is stored: hard state and log bounds.
    async fn state(&self) -> Result<LogState, StorageError>;
    /// Durably replaces the hard state.
    async fn save_hard_state(&self, hard_state: HardState) -> Result<(), StorageError>;
    /// Durably appends entries (contract rules 1 and 3).
    async fn append(&self, entries: Vec<Entry>) -> Result<(), StorageError>;
    /// Durably removes the suffix starting at `from` (rule 5).
    async fn truncate(&self, from: LogIndex) -> Result<(), StorageError>;
    /// Durably removes the prefix up to and including `upto` (rule 6).
    async fn purge(&self, upto: LogId) -> Result<(), StorageError>;
    /// Reads a range of entries (rule 7).
    async fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError>;
    /// Reads a range of entries as `entries` does, for the node's reads of its own log back
    /// (at start-up, for a lagging follower; rule 8). A store that maps its files should
    /// neither block the caller's thread on a read from disk nor keep the pages it read
    /// resident. Default: `entries`.
    async fn read_back(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(low, high, bytes_max).await
    }
}

/// Where the bytes of a snapshot being built go. Bytes are streamed: a state machine never
/// has to hold its whole snapshot in memory.
#[async_trait]
pub trait SnapshotWriter: AsyncWrite + Send + Unpin {
    /// Syncs the data, fills in size and checksum, and publishes the snapshot atomically.
    /// Returns the final metadata.
    async fn finish(self: Box<Self>) -> Result<SnapshotMeta, StorageError>;
    /// Throws the partial snapshot away.
    async fn abort(self: Box<Self>);
}

/// Reads a complete snapshot from its first byte.
pub type SnapshotReader = Box<dyn AsyncRead + Send + Unpin>;

/// Durable snapshot storage, both for snapshots built locally and for snapshots received from a
/// leader in chunks.
///
/// # Contract
/// 1. A snapshot is visible to `latest`, `open` and `read_chunk` only once complete: published
///    by [`SnapshotWriter::finish`] or by the last chunk of a verified transfer.
/// 2. `receive_chunk` accepts chunks of one snapshot strictly in offset order, checks each
///    chunk's CRC32 and, on the last chunk, the whole snapshot's size and CRC32 before
///    publishing it. A chunk at an unexpected offset or with a bad CRC is answered with
///    [`ChunkStatus::Retry`] and the offset it expects, so the sender resumes from there.
/// 3. A chunk of a snapshot that does not extend past `latest()` is answered with
///    [`ChunkStatus::Refused`].
/// 4. Memory use never depends on the snapshot's size, only on chunk size.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Starts a new local snapshot described by `meta` (size and checksum are filled in by
    /// `finish`).
    async fn begin(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotWriter>, StorageError>;
    /// The newest complete snapshot, if any.
    async fn latest(&self) -> Result<Option<SnapshotMeta>, StorageError>;
    /// Opens a complete snapshot for reading (restoring a state machine).
    async fn open(&self, meta: &SnapshotMeta) -> Result<SnapshotReader, StorageError>;
    /// Reads up to `len_bytes_max` bytes of a complete snapshot starting at `offset`.
    async fn read_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        len_bytes_max: u32,
    ) -> Result<Bytes, StorageError>;
    /// Takes one chunk of an incoming snapshot (rules 2 and 3); returns what happened and the
    /// offset expected next.
    async fn receive_chunk(
        &self,
        chunk: &SnapshotChunk,
    ) -> Result<(ChunkStatus, u64), StorageError>;
}

//! [`RaftLogStore`]: raft-core's async [`LogStore`] over a [`RaftLog`].

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use raft_core::node::{LogState, LogStore, StorageError};
use raft_core::{Entry, HardState, LogId, LogIndex};

use crate::error::Result;
use crate::{LogStats, Options, RaftLog};

/// Implements raft-core's [`LogStore`] with a [`RaftLog`].
///
/// Writes run on tokio's blocking pool (`spawn_blocking`), so the runtime's worker threads
/// never wait on `fdatasync`; appends issued concurrently still share one sync through the
/// log's group commit. Reads (`entries`, `state`) run inline: they copy from memory maps of
/// files that the page cache holds and make no system call.
#[derive(Clone, Debug)]
pub struct RaftLogStore {
    log: Arc<RaftLog>,
}

impl RaftLogStore {
    /// Opens (or creates) the log in `dir`; see [`RaftLog::open`].
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<RaftLogStore> {
        RaftLog::open(dir, options).map(RaftLogStore::new)
    }

    /// Wraps an open log.
    pub fn new(log: RaftLog) -> RaftLogStore {
        RaftLogStore { log: Arc::new(log) }
    }

    /// The synchronous log underneath.
    pub fn log(&self) -> &Arc<RaftLog> {
        &self.log
    }

    /// What the log wrote and how long its syncs took (see [`RaftLog::stats`]).
    pub fn stats(&self) -> LogStats {
        self.log.stats()
    }

    /// Runs a blocking write of the log on tokio's blocking pool.
    async fn blocking<T, F>(&self, op: &'static str, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&RaftLog) -> Result<T> + Send + 'static,
    {
        let log = Arc::clone(&self.log);
        match tokio::task::spawn_blocking(move || work(&log)).await {
            Ok(result) => result.map_err(StorageError::from),
            // The task panicked or the runtime is shutting down: the write's outcome is
            // unknown, which is what an I/O error means to the node.
            Err(join) => Err(StorageError::io(
                op,
                std::io::Error::other(join.to_string()),
            )),
        }
    }
}

#[async_trait]
impl LogStore for RaftLogStore {
    async fn state(&self) -> Result<LogState, StorageError> {
        Ok(self.log.state())
    }

    async fn save_hard_state(&self, hard_state: HardState) -> Result<(), StorageError> {
        self.blocking("save_hard_state", move |log| {
            log.save_hard_state(hard_state)
        })
        .await
    }

    async fn append(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.blocking("append", move |log| log.append(&entries))
            .await
    }

    async fn truncate(&self, from: LogIndex) -> Result<(), StorageError> {
        self.blocking("truncate", move |log| log.truncate(from))
            .await
    }

    async fn purge(&self, upto: LogId) -> Result<(), StorageError> {
        self.blocking("purge", move |log| log.purge(upto)).await
    }

    async fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.log
            .entries(low, high, bytes_max)
            .map_err(StorageError::from)
    }

    /// Reads in the blocking pool (a read back may touch pages that are not in memory) and
    /// releases the mapped pages it read, so reading an old part of the log does not stay in
    /// the node's resident memory.
    async fn read_back(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.blocking("read back", move |log| {
            log.entries_released(low, high, bytes_max)
        })
        .await
    }
}

//! An in-memory [`super::LogStore`] for tests and examples.
//!
//! [`MemLogStore`] follows the [`LogStore`] contract rule by rule, so the conformance suite in
//! [`super::log_store_suite`] passes against it and the engine can be tested without files.
//! "Durable" means "stored in the shared state": a [`MemLogStore::reopen`] handle sees exactly
//! what earlier handles wrote, the way a restarted process sees what was synced to disk.
//! [`MemLogStore::fail_next_write`] makes the next write fail, to test poisoning (rule 4).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::storage::{LogState, LogStore, StorageError};
use crate::types::{Entry, HardState, LogId, LogIndex};

/// What survives a "restart": the part of the store shared by every reopened handle.
#[derive(Debug, Default)]
struct Durable {
    hard_state: HardState,
    /// The last purged id; the first stored entry, if any, has index `purged.index + 1`.
    purged: LogId,
    /// Entries `purged.index + 1 ..= purged.index + entries.len()`, in order.
    entries: VecDeque<Entry>,
}

impl Durable {
    fn last(&self) -> LogId {
        self.entries.back().map_or(self.purged, Entry::log_id)
    }
}

/// What one handle forgets on reopen: the poison flag and the fault injector.
#[derive(Debug, Default)]
struct Session {
    /// Why writes are refused, set by the first failed write (rule 4).
    poisoned: Option<String>,
    /// Whether the next write must fail (a simulated I/O error).
    fail_next_write: bool,
}

/// An in-memory log store with interior mutability (std [`Mutex`]).
///
/// Writes apply atomically under one lock, so they are "durable" the moment they return.
/// Cloning is not offered on purpose: use [`MemLogStore::reopen`] to get a second handle on the
/// same data after a simulated restart.
#[derive(Debug, Default)]
pub struct MemLogStore {
    durable: Arc<Mutex<Durable>>,
    session: Mutex<Session>,
}

impl MemLogStore {
    /// Creates an empty store: no entries, nothing purged, a zero hard state.
    pub fn new() -> Self {
        MemLogStore::default()
    }

    /// Simulates a restart: returns a new handle on the same stored data, not poisoned and with
    /// no fault pending. The old handle keeps working (it shares the data).
    pub fn reopen(&self) -> MemLogStore {
        MemLogStore {
            durable: Arc::clone(&self.durable),
            session: Mutex::default(),
        }
    }

    /// Makes the next write (`append`, `truncate`, `purge` or `save_hard_state`) fail with an
    /// I/O error without changing anything; every later write then returns
    /// [`StorageError::Poisoned`] until [`MemLogStore::reopen`] (rule 4).
    pub fn fail_next_write(&self) {
        lock(&self.session).fail_next_write = true;
    }

    /// Checks poison and the fault injector before a write; returns the guard on the data.
    fn begin_write(&self, op: &'static str) -> Result<MutexGuard<'_, Durable>, StorageError> {
        let mut session = lock(&self.session);
        if let Some(cause) = &session.poisoned {
            return Err(StorageError::Poisoned(cause.clone()));
        }
        if session.fail_next_write {
            session.fail_next_write = false;
            let cause = format!("injected failure during {op}");
            session.poisoned = Some(cause.clone());
            return Err(StorageError::io(op, std::io::Error::other(cause)));
        }
        Ok(lock(&self.durable))
    }
}

/// Locks a mutex; a panic while holding it cannot leave `Durable` half-updated (every write
/// checks before it mutates), so a poisoned lock is taken over.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl LogStore for MemLogStore {
    async fn state(&self) -> Result<LogState, StorageError> {
        let durable = lock(&self.durable);
        Ok(LogState {
            hard_state: durable.hard_state,
            purged: durable.purged,
            last: durable.last(),
        })
    }

    async fn save_hard_state(&self, hard_state: HardState) -> Result<(), StorageError> {
        let mut durable = self.begin_write("save_hard_state")?;
        durable.hard_state = hard_state;
        Ok(())
    }

    async fn append(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let mut durable = self.begin_write("append")?;
        let first = durable.last().index + 1;
        // Rule 1: check the whole batch before storing any of it.
        for (expected, entry) in (first..).zip(&entries) {
            if entry.index != expected {
                return Err(StorageError::Invalid(format!(
                    "append: entry index {} where {} was expected (no holes allowed)",
                    entry.index, expected
                )));
            }
        }
        durable.entries.extend(entries);
        Ok(())
    }

    async fn truncate(&self, from: LogIndex) -> Result<(), StorageError> {
        let mut durable = self.begin_write("truncate")?;
        if from <= durable.purged.index {
            return Err(StorageError::Invalid(format!(
                "truncate from {from}: at or below the purged index {}",
                durable.purged.index
            )));
        }
        // `from > purged.index`, so the subtraction cannot underflow.
        let keep = (from - durable.purged.index - 1).min(durable.entries.len() as u64);
        durable.entries.truncate(keep as usize);
        Ok(())
    }

    async fn purge(&self, upto: LogId) -> Result<(), StorageError> {
        let mut durable = self.begin_write("purge")?;
        if upto.index <= durable.purged.index {
            // Already purged: nothing to remove, and the recorded id must not go backwards.
            return Ok(());
        }
        let remove = (upto.index - durable.purged.index).min(durable.entries.len() as u64);
        durable.entries.drain(..remove as usize);
        durable.purged = upto;
        Ok(())
    }

    async fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let durable = lock(&self.durable);
        let first = durable.purged.index + 1;
        let last = durable.last().index;
        if low > high || (low < high && (low < first || high > last + 1)) {
            return Err(StorageError::Invalid(format!(
                "entries [{low}, {high}) outside the stored range [{first}, {})",
                last + 1
            )));
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for index in low..high {
            let entry = &durable.entries[(index - first) as usize];
            // Rule 7: stop once the payload bytes reach the limit, but return at least one.
            if !out.is_empty() && bytes >= bytes_max {
                break;
            }
            bytes += entry.data.len() as u64;
            out.push(entry.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::log_store_suite::{self, StoreFactory};

    /// Creates fresh stores and reopens them through [`MemLogStore::reopen`].
    struct MemFactory;

    impl StoreFactory for MemFactory {
        type Store = MemLogStore;

        fn create(&mut self) -> Result<MemLogStore, StorageError> {
            Ok(MemLogStore::new())
        }

        fn reopen(&mut self, store: MemLogStore) -> Result<MemLogStore, StorageError> {
            Ok(store.reopen())
        }

        fn fail_next_write(&mut self, store: &MemLogStore) -> bool {
            store.fail_next_write();
            true
        }
    }

    #[tokio::test]
    async fn mem_log_store_passes_the_conformance_suite() {
        let report = log_store_suite::run_all(&mut MemFactory).await;
        assert!(
            report.skipped.is_empty(),
            "checks skipped: {:?}",
            report.skipped
        );
    }
}

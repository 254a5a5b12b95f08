//! A conformance suite that any [`super::LogStore`] implementation can run.
//!
//! Each check proves one rule of the [`LogStore`] contract and panics with a message naming the
//! check and the rule when the store breaks it. A store is driven through a [`StoreFactory`],
//! which can also *reopen* a store: durability is checked by dropping a handle and reading the
//! data back through a new one, the way a restarted node would.
//!
//! ```
//! use raft_core::node::log_store_suite::{run_all, StoreFactory};
//! use raft_core::node::{MemLogStore, StorageError};
//!
//! struct Mem;
//! impl StoreFactory for Mem {
//!     type Store = MemLogStore;
//!     fn create(&mut self) -> Result<MemLogStore, StorageError> {
//!         Ok(MemLogStore::new())
//!     }
//!     fn reopen(&mut self, store: MemLogStore) -> Result<MemLogStore, StorageError> {
//!         Ok(store.reopen())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let report = run_all(&mut Mem).await;
//! assert!(report.passed.contains(&"append_is_durable_across_reopen"));
//! # });
//! ```

use std::sync::Arc;

use bytes::Bytes;

use super::storage::{LogState, LogStore, StorageError};
use crate::types::{Entry, EntryKind, HardState, LogId, LogIndex};

/// Makes and reopens the stores under test.
pub trait StoreFactory {
    /// The store implementation under test.
    type Store: LogStore;

    /// Creates a new, empty store (a fresh directory for a file-backed store).
    fn create(&mut self) -> Result<Self::Store, StorageError>;

    /// Closes `store` and opens the same durable state again, as a restarted process would.
    /// The returned store must not be poisoned.
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StorageError>;

    /// Arranges for the next write on `store` to fail (an injected I/O error), and returns
    /// `true`; a factory that cannot inject faults returns `false` (the default) and the poison
    /// check (rule 4) is reported as skipped.
    fn fail_next_write(&mut self, store: &Self::Store) -> bool {
        let _ = store;
        false
    }
}

/// What [`run_all`] did: the names of the checks that passed and of those it could not run.
/// A failing check panics instead of being reported here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuiteReport {
    /// Checks that ran and passed.
    pub passed: Vec<&'static str>,
    /// Checks that the factory could not support (see [`StoreFactory::fail_next_write`]).
    pub skipped: Vec<&'static str>,
}

/// Runs every check against stores made by `factory`; panics on the first broken rule.
pub async fn run_all<F: StoreFactory>(factory: &mut F) -> SuiteReport {
    let mut report = SuiteReport::default();
    empty_store_is_zero(factory).await;
    report.passed.push("empty_store_is_zero");
    append_then_read_returns_the_same_entries(factory).await;
    report
        .passed
        .push("append_then_read_returns_the_same_entries");
    append_rejects_holes(factory).await;
    report.passed.push("append_rejects_holes");
    append_is_durable_across_reopen(factory).await;
    report.passed.push("append_is_durable_across_reopen");
    hard_state_is_replaced_and_durable(factory).await;
    report.passed.push("hard_state_is_replaced_and_durable");
    truncate_removes_the_suffix(factory).await;
    report.passed.push("truncate_removes_the_suffix");
    truncate_at_or_below_purged_is_invalid(factory).await;
    report.passed.push("truncate_at_or_below_purged_is_invalid");
    purge_removes_the_prefix(factory).await;
    report.passed.push("purge_removes_the_prefix");
    purge_past_the_end_empties_the_log(factory).await;
    report.passed.push("purge_past_the_end_empties_the_log");
    entries_respects_bytes_max(factory).await;
    report.passed.push("entries_respects_bytes_max");
    entries_outside_the_log_is_invalid(factory).await;
    report.passed.push("entries_outside_the_log_is_invalid");
    many_sizes_round_trip(factory).await;
    report.passed.push("many_sizes_round_trip");
    reads_run_concurrently_with_writes(factory).await;
    report.passed.push("reads_run_concurrently_with_writes");
    any_range_reads_back_after_purges_and_truncations(factory).await;
    report
        .passed
        .push("any_range_reads_back_after_purges_and_truncations");
    if failed_write_poisons_until_reopen(factory).await {
        report.passed.push("failed_write_poisons_until_reopen");
    } else {
        report.skipped.push("failed_write_poisons_until_reopen");
    }
    report
}

/// A normal entry whose payload is derived from its id, so any mix-up is visible.
fn entry(term: u64, index: LogIndex, len: usize) -> Entry {
    let data: Vec<u8> = (0..len).map(|i| (index as usize * 31 + i) as u8).collect();
    Entry::normal(term, index, data)
}

/// Entries `low..high` of term `term` with `len`-byte payloads.
fn entries(term: u64, low: LogIndex, high: LogIndex, len: usize) -> Vec<Entry> {
    (low..high).map(|index| entry(term, index, len)).collect()
}

fn create<F: StoreFactory>(factory: &mut F, check: &str) -> F::Store {
    factory
        .create()
        .unwrap_or_else(|e| panic!("[{check}] factory could not create: {e}"))
}

fn reopen<F: StoreFactory>(factory: &mut F, store: F::Store, check: &str) -> F::Store {
    factory
        .reopen(store)
        .unwrap_or_else(|e| panic!("[{check}] factory could not reopen: {e}"))
}

async fn state<S: LogStore>(store: &S, check: &str) -> LogState {
    store
        .state()
        .await
        .unwrap_or_else(|e| panic!("[{check}] state() failed: {e}"))
}

async fn append<S: LogStore>(store: &S, batch: Vec<Entry>, check: &str) {
    let range = batch
        .first()
        .map(|e| e.index)
        .zip(batch.last().map(|e| e.index));
    if let Err(e) = store.append(batch).await {
        panic!("[{check}] append of {range:?} failed: {e}");
    }
}

async fn read<S: LogStore>(store: &S, low: LogIndex, high: LogIndex, check: &str) -> Vec<Entry> {
    store
        .entries(low, high, u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("[{check}] entries({low}, {high}) failed: {e}"))
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StorageError>, check: &str, what: &str) {
    match result {
        Err(StorageError::Invalid(_)) => {}
        other => panic!("[{check}] {what}: expected StorageError::Invalid, got {other:?}"),
    }
}

/// A new store holds nothing: zero hard state, nothing purged, empty log.
pub async fn empty_store_is_zero<F: StoreFactory>(factory: &mut F) {
    let check = "empty_store_is_zero";
    let store = create(factory, check);
    assert_eq!(
        state(&store, check).await,
        LogState::default(),
        "[{check}] new store not empty"
    );
    let store = reopen(factory, store, check);
    assert_eq!(
        state(&store, check).await,
        LogState::default(),
        "[{check}] reopened not empty"
    );
}

/// Appended entries read back identically and in order, across several batches (rules 1, 7).
pub async fn append_then_read_returns_the_same_entries<F: StoreFactory>(factory: &mut F) {
    let check = "append_then_read_returns_the_same_entries (rules 1, 7)";
    let store = create(factory, check);
    let mut written = entries(1, 1, 4, 10);
    written.push(Entry::blank(2, 4));
    written.push(Entry {
        term: 2,
        index: 5,
        kind: EntryKind::Membership,
        data: Bytes::from_static(b"cfg"),
    });
    append(&store, written.clone(), check).await;
    let more = entries(3, 6, 11, 100);
    append(&store, more.clone(), check).await;
    written.extend(more);
    assert_eq!(
        read(&store, 1, 11, check).await,
        written,
        "[{check}] read back differs"
    );
    assert_eq!(
        read(&store, 4, 7, check).await,
        written[3..6],
        "[{check}] sub-range differs"
    );
    assert!(
        read(&store, 7, 7, check).await.is_empty(),
        "[{check}] empty range not empty"
    );
    let st = state(&store, check).await;
    assert_eq!(st.last, LogId::new(3, 10), "[{check}] last id");
    assert_eq!(st.purged, LogId::ZERO, "[{check}] purged id");
}

/// An append that would leave a hole, or a batch with a hole inside, is `Invalid` and stores
/// nothing (rule 1).
pub async fn append_rejects_holes<F: StoreFactory>(factory: &mut F) {
    let check = "append_rejects_holes (rule 1)";
    let store = create(factory, check);
    assert_invalid(
        store.append(entries(1, 2, 3, 1)).await,
        check,
        "first append at index 2",
    );
    append(&store, entries(1, 1, 4, 1), check).await;
    assert_invalid(
        store.append(entries(1, 5, 6, 1)).await,
        check,
        "append after a gap",
    );
    assert_invalid(
        store.append(entries(1, 3, 5, 1)).await,
        check,
        "append overlapping",
    );
    let mut holey = entries(1, 4, 6, 1);
    holey.push(entry(1, 7, 1));
    assert_invalid(store.append(holey).await, check, "batch with a hole inside");
    let store = reopen(factory, store, check);
    assert_eq!(
        state(&store, check).await.last,
        LogId::new(1, 3),
        "[{check}] rejected data kept"
    );
    append(&store, entries(1, 4, 5, 1), check).await;
    assert_eq!(
        read(&store, 1, 5, check).await,
        entries(1, 1, 5, 1),
        "[{check}] read back"
    );
}

/// Entries and hard state whose write returned `Ok` survive a reopen (rule 3).
pub async fn append_is_durable_across_reopen<F: StoreFactory>(factory: &mut F) {
    let check = "append_is_durable_across_reopen (rule 3)";
    let store = create(factory, check);
    let written = entries(7, 1, 51, 33);
    for chunk in written.chunks(7) {
        append(&store, chunk.to_vec(), check).await;
    }
    let hard_state = HardState {
        term: 7,
        voted_for: Some(3),
        commit: 20,
    };
    store
        .save_hard_state(hard_state)
        .await
        .expect("save_hard_state");
    let store = reopen(factory, store, check);
    let st = state(&store, check).await;
    assert_eq!(st.hard_state, hard_state, "[{check}] hard state lost");
    assert_eq!(st.last, LogId::new(7, 50), "[{check}] last id after reopen");
    assert_eq!(
        read(&store, 1, 51, check).await,
        written,
        "[{check}] entries after reopen"
    );
    // The reopened store keeps appending where the old one stopped.
    append(&store, entries(8, 51, 52, 1), check).await;
    let store = reopen(factory, store, check);
    assert_eq!(
        state(&store, check).await.last,
        LogId::new(8, 51),
        "[{check}] second reopen"
    );
}

/// `save_hard_state` replaces the previous value, including clearing a vote (rule 3).
pub async fn hard_state_is_replaced_and_durable<F: StoreFactory>(factory: &mut F) {
    let check = "hard_state_is_replaced_and_durable (rule 3)";
    let store = create(factory, check);
    let first = HardState {
        term: 1,
        voted_for: Some(2),
        commit: 0,
    };
    let second = HardState {
        term: 2,
        voted_for: None,
        commit: 0,
    };
    let third = HardState {
        term: u64::MAX,
        voted_for: Some(u64::MAX),
        commit: u64::MAX,
    };
    for hard_state in [first, second, third, second] {
        store
            .save_hard_state(hard_state)
            .await
            .expect("save_hard_state");
        assert_eq!(
            state(&store, check).await.hard_state,
            hard_state,
            "[{check}] not replaced"
        );
    }
    let store = reopen(factory, store, check);
    assert_eq!(
        state(&store, check).await.hard_state,
        second,
        "[{check}] not durable"
    );
}

/// `truncate(from)` removes exactly the entries `>= from`, durably, and appending continues at
/// `from` (rule 5).
pub async fn truncate_removes_the_suffix<F: StoreFactory>(factory: &mut F) {
    let check = "truncate_removes_the_suffix (rule 5)";
    let store = create(factory, check);
    append(&store, entries(1, 1, 11, 20), check).await;
    store.truncate(6).await.expect("truncate(6)");
    assert_eq!(
        state(&store, check).await.last,
        LogId::new(1, 5),
        "[{check}] last after"
    );
    assert_invalid(
        store.entries(5, 7, u64::MAX).await,
        check,
        "read of a truncated entry",
    );
    let store = reopen(factory, store, check);
    assert_eq!(
        state(&store, check).await.last,
        LogId::new(1, 5),
        "[{check}] not durable"
    );
    append(&store, entries(2, 6, 9, 5), check).await;
    let mut expected = entries(1, 1, 6, 20);
    expected.extend(entries(2, 6, 9, 5));
    assert_eq!(
        read(&store, 1, 9, check).await,
        expected,
        "[{check}] old suffix resurfaced"
    );
    // Truncating everything after the purge point leaves an empty log.
    store.truncate(1).await.expect("truncate(1)");
    let store = reopen(factory, store, check);
    assert_eq!(
        state(&store, check).await.last,
        LogId::ZERO,
        "[{check}] truncate(1)"
    );
    append(&store, entries(3, 1, 3, 5), check).await;
    assert_eq!(
        read(&store, 1, 3, check).await,
        entries(3, 1, 3, 5),
        "[{check}] after all"
    );
}

/// `truncate(from)` with `from <= purged.index` is `Invalid` (rule 5).
pub async fn truncate_at_or_below_purged_is_invalid<F: StoreFactory>(factory: &mut F) {
    let check = "truncate_at_or_below_purged_is_invalid (rule 5)";
    let store = create(factory, check);
    append(&store, entries(1, 1, 11, 4), check).await;
    store.purge(LogId::new(1, 5)).await.expect("purge");
    assert_invalid(
        store.truncate(5).await,
        check,
        "truncate(5) with purged index 5",
    );
    assert_invalid(
        store.truncate(2).await,
        check,
        "truncate(2) with purged index 5",
    );
}

/// `purge(upto)` removes entries `<= upto.index`, records `upto` and keeps the rest, durably
/// (rule 6).
pub async fn purge_removes_the_prefix<F: StoreFactory>(factory: &mut F) {
    let check = "purge_removes_the_prefix (rule 6)";
    let store = create(factory, check);
    let written = entries(2, 1, 101, 50);
    append(&store, written.clone(), check).await;
    store.purge(LogId::new(2, 40)).await.expect("purge(40)");
    let st = state(&store, check).await;
    assert_eq!(
        (st.purged, st.last),
        (LogId::new(2, 40), LogId::new(2, 100)),
        "[{check}] ids"
    );
    assert_invalid(
        store.entries(40, 42, u64::MAX).await,
        check,
        "read of a purged entry",
    );
    let store = reopen(factory, store, check);
    let st = state(&store, check).await;
    assert_eq!(
        (st.purged, st.last),
        (LogId::new(2, 40), LogId::new(2, 100)),
        "[{check}] reopen"
    );
    assert_eq!(
        read(&store, 41, 101, check).await,
        written[40..],
        "[{check}] kept entries"
    );
    assert_invalid(
        store.entries(1, 2, u64::MAX).await,
        check,
        "read of entry 1 after reopen",
    );
    // Appending continues after the kept entries.
    append(&store, entries(3, 101, 103, 1), check).await;
    assert_eq!(
        state(&store, check).await.last,
        LogId::new(3, 102),
        "[{check}] append after"
    );
}

/// Purging at or past the last index empties the log; the next append starts right after the
/// purged index (rule 6, installing a snapshot).
pub async fn purge_past_the_end_empties_the_log<F: StoreFactory>(factory: &mut F) {
    let check = "purge_past_the_end_empties_the_log (rule 6)";
    let store = create(factory, check);
    append(&store, entries(1, 1, 11, 8), check).await;
    store.purge(LogId::new(4, 20)).await.expect("purge(20)");
    let empty = LogState {
        hard_state: HardState::default(),
        purged: LogId::new(4, 20),
        last: LogId::new(4, 20),
    };
    assert_eq!(
        state(&store, check).await,
        empty,
        "[{check}] state after purge"
    );
    let store = reopen(factory, store, check);
    assert_eq!(
        state(&store, check).await,
        empty,
        "[{check}] state after reopen"
    );
    assert_invalid(
        store.append(entries(4, 11, 12, 1)).await,
        check,
        "append at old end",
    );
    append(&store, entries(5, 21, 24, 8), check).await;
    let store = reopen(factory, store, check);
    assert_eq!(
        read(&store, 21, 24, check).await,
        entries(5, 21, 24, 8),
        "[{check}] new entries"
    );
    // Purging exactly at the last index also empties the log.
    store.purge(LogId::new(5, 23)).await.expect("purge(23)");
    let st = state(&store, check).await;
    assert_eq!(
        (st.purged, st.last),
        (LogId::new(5, 23), LogId::new(5, 23)),
        "[{check}] at end"
    );
}

/// `entries` stops once the payload bytes reach `bytes_max` but returns at least one entry
/// (rule 7).
pub async fn entries_respects_bytes_max<F: StoreFactory>(factory: &mut F) {
    let check = "entries_respects_bytes_max (rule 7)";
    let store = create(factory, check);
    let written = entries(1, 1, 21, 100);
    append(&store, written.clone(), check).await;
    for (bytes_max, count) in [
        (0, 1),
        (1, 1),
        (100, 1),
        (300, 3),
        (2_000, 20),
        (u64::MAX, 20),
    ] {
        let got = store.entries(1, 21, bytes_max).await.expect("entries");
        assert_eq!(
            got.len(),
            count,
            "[{check}] bytes_max {bytes_max}: entries returned"
        );
        assert_eq!(
            got,
            written[..count],
            "[{check}] bytes_max {bytes_max}: not a prefix"
        );
    }
    // Whatever the rounding, the entries before the last returned one stay under the limit.
    for bytes_max in [150, 250, 999] {
        let got = store.entries(3, 21, bytes_max).await.expect("entries");
        let before_last: u64 = got[..got.len() - 1]
            .iter()
            .map(|e| e.data.len() as u64)
            .sum();
        assert!(
            before_last < bytes_max,
            "[{check}] bytes_max {bytes_max}: did not stop"
        );
        assert_eq!(
            got,
            written[2..2 + got.len()],
            "[{check}] bytes_max {bytes_max}: not a prefix"
        );
    }
}

/// The node reads back any range of what the log holds, at any time (rule 8): after
/// purges, truncations and appends, every range inside the log is served from exactly its
/// first index, with the entries last written there.
pub async fn any_range_reads_back_after_purges_and_truncations<F: StoreFactory>(factory: &mut F) {
    let check = "any_range_reads_back_after_purges_and_truncations (rule 8)";
    let store = create(factory, check);
    append(&store, entries(1, 1, 41, 64), check).await;
    store.purge(LogId::new(1, 10)).await.expect("purge");
    store.truncate(31).await.expect("truncate");
    append(&store, entries(2, 31, 51, 48), check).await;
    let mut expected = entries(1, 11, 31, 64);
    expected.extend(entries(2, 31, 51, 48));
    for low in 11..51 {
        for high in [low + 1, (low + 7).min(51), 51] {
            for bytes_max in [1, 200, u64::MAX] {
                let got = store.entries(low, high, bytes_max).await.expect("entries");
                let from = (low - 11) as usize;
                assert!(
                    !got.is_empty(),
                    "[{check}] [{low}, {high}): nothing returned"
                );
                assert_eq!(
                    got,
                    expected[from..from + got.len()],
                    "[{check}] [{low}, {high}) bytes_max {bytes_max}"
                );
            }
        }
    }
}

/// Reading purged, truncated or never written indexes is `Invalid` (rule 7).
pub async fn entries_outside_the_log_is_invalid<F: StoreFactory>(factory: &mut F) {
    let check = "entries_outside_the_log_is_invalid (rule 7)";
    let store = create(factory, check);
    assert_invalid(
        store.entries(1, 2, u64::MAX).await,
        check,
        "read from an empty log",
    );
    append(&store, entries(1, 1, 6, 3), check).await;
    assert_invalid(
        store.entries(1, 7, u64::MAX).await,
        check,
        "read past the end",
    );
    assert_invalid(
        store.entries(6, 7, u64::MAX).await,
        check,
        "read of index last + 1",
    );
    assert_invalid(
        store.entries(0, 2, u64::MAX).await,
        check,
        "read of index 0",
    );
    assert_invalid(
        store.entries(4, 2, u64::MAX).await,
        check,
        "read with low > high",
    );
}

/// Payloads from empty to large, in batches of many sizes, survive a reopen byte for byte.
pub async fn many_sizes_round_trip<F: StoreFactory>(factory: &mut F) {
    let check = "many_sizes_round_trip (rules 1, 3, 7)";
    let store = create(factory, check);
    let sizes = [0usize, 1, 7, 8, 9, 255, 256, 4_096, 65_537, 3, 100_000, 31];
    let mut written = Vec::new();
    let mut index = 1;
    for round in 0..40usize {
        let batch: Vec<Entry> = (0..(round % 5) + 1)
            .map(|k| {
                let e = entry(
                    round as u64 / 10 + 1,
                    index,
                    sizes[(round + k) % sizes.len()],
                );
                index += 1;
                e
            })
            .collect();
        written.extend(batch.clone());
        append(&store, batch, check).await;
    }
    let store = reopen(factory, store, check);
    let got = read(&store, 1, index, check).await;
    assert_eq!(
        got.len(),
        written.len(),
        "[{check}] entry count after reopen"
    );
    for (got, want) in got.iter().zip(&written) {
        assert_eq!(got, want, "[{check}] entry {} differs", want.index);
    }
}

/// Reads issued while a write is in flight see a consistent log (rule 2).
pub async fn reads_run_concurrently_with_writes<F: StoreFactory>(factory: &mut F) {
    let check = "reads_run_concurrently_with_writes (rule 2)";
    let store = Arc::new(create(factory, check));
    append(&*store, entries(1, 1, 101, 64), check).await;
    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..50 {
                let got = store
                    .entries(1, 101, u64::MAX)
                    .await
                    .expect("concurrent read");
                assert_eq!(
                    got,
                    entries(1, 1, 101, 64),
                    "[{check}] concurrent read differs"
                );
                tokio::task::yield_now().await;
            }
        })
    };
    for low in (101..301).step_by(20) {
        append(&*store, entries(1, low, low + 20, 64), check).await;
    }
    reader
        .await
        .unwrap_or_else(|e| panic!("[{check}] reader task failed: {e}"));
    assert_eq!(
        state(&*store, check).await.last,
        LogId::new(1, 300),
        "[{check}] last id"
    );
}

/// After an injected failed write, every write is `Poisoned` until reopen; reads still work and
/// the reopened store accepts writes again (rule 4). Returns `false` when the factory cannot
/// inject faults.
pub async fn failed_write_poisons_until_reopen<F: StoreFactory>(factory: &mut F) -> bool {
    let check = "failed_write_poisons_until_reopen (rule 4)";
    let store = create(factory, check);
    append(&store, entries(1, 1, 6, 10), check).await;
    if !factory.fail_next_write(&store) {
        return false;
    }
    assert!(
        store.append(entries(1, 6, 7, 10)).await.is_err(),
        "[{check}] injected failure"
    );
    let poisoned = |result: Result<(), StorageError>, what: &str| match result {
        Err(StorageError::Poisoned(_)) => {}
        other => panic!("[{check}] {what} after a failed write: expected Poisoned, got {other:?}"),
    };
    // The failed batch may or may not have reached the disk; ask for the next index either way.
    let next = state(&store, check).await.last.index + 1;
    poisoned(store.append(entries(1, next, next + 1, 10)).await, "append");
    poisoned(
        store.save_hard_state(HardState::default()).await,
        "save_hard_state",
    );
    poisoned(store.truncate(3).await, "truncate");
    poisoned(store.purge(LogId::new(1, 2)).await, "purge");
    assert_eq!(
        read(&store, 1, 6, check).await,
        entries(1, 1, 6, 10),
        "[{check}] reads"
    );
    let store = reopen(factory, store, check);
    assert_eq!(
        read(&store, 1, 6, check).await,
        entries(1, 1, 6, 10),
        "[{check}] acked entries"
    );
    let next = state(&store, check).await.last.index + 1;
    append(&store, entries(2, next, next + 1, 10), check).await;
    true
}

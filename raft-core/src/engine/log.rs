//! The engine's view of the log: every entry after the last compaction point, held in memory
//! (as etcd's raft does with its `MemoryStorage`), plus the commit, apply and persistence
//! cursors. Storage is a write-ahead copy of this; the engine never reads from it.
//!
//! Memory is bounded by `snapshot_distance + snapshot_trailing_entries` entries when snapshots
//! are enabled.

use std::collections::VecDeque;

use crate::types::{Entry, LogId, LogIndex, Term};

/// The in-memory log and its cursors.
///
/// Invariants (checked by [`RaftLog::check`]):
/// `offset.index <= applied <= committed`, `persisted <= last_index`,
/// `entries[i].index == offset.index + 1 + i`, terms never decrease along the log.
#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The last compacted entry: entries up to here are only in a snapshot.
    offset: LogId,
    /// Entries `offset.index + 1 ..= last_index`.
    entries: VecDeque<Entry>,
    /// Highest index known committed.
    pub(crate) committed: LogIndex,
    /// Highest index handed out for applying.
    pub(crate) applied: LogIndex,
    /// Highest index known durable in local storage.
    pub(crate) persisted: LogIndex,
    /// First index not yet handed out for persisting.
    pub(crate) unstable_from: LogIndex,
}

impl RaftLog {
    /// A log restored from storage: `entries` follow `offset` and are all durable.
    pub(crate) fn restore(offset: LogId, entries: Vec<Entry>, committed: LogIndex) -> Self {
        let last = offset.index + entries.len() as u64;
        let log = RaftLog {
            offset,
            entries: entries.into(),
            committed: committed.clamp(offset.index, last),
            applied: offset.index,
            persisted: last,
            unstable_from: last + 1,
        };
        log.check();
        log
    }

    /// Panics if an internal invariant is broken: that is a bug in the engine.
    pub(crate) fn check(&self) {
        assert!(
            self.offset.index <= self.applied && self.applied <= self.committed,
            "log cursors out of order: offset={} applied={} committed={}",
            self.offset,
            self.applied,
            self.committed
        );
        assert!(
            self.committed <= self.last_index(),
            "committed {} past last",
            self.committed
        );
        assert!(
            self.persisted <= self.last_index(),
            "persisted {} past last",
            self.persisted
        );
        if let Some(first) = self.entries.front() {
            assert_eq!(
                first.index,
                self.offset.index + 1,
                "first entry does not follow offset"
            );
            assert!(
                first.term >= self.offset.term,
                "term decreases after offset"
            );
        }
    }

    pub(crate) fn offset(&self) -> LogId {
        self.offset
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.offset.index + 1
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.offset.index + self.entries.len() as u64
    }

    pub(crate) fn last_log_id(&self) -> LogId {
        self.entries
            .back()
            .map(Entry::log_id)
            .unwrap_or(self.offset)
    }

    /// Term of the entry at `index`; `None` if compacted away (below the offset) or absent.
    /// The offset itself answers with its term, which fixes jraft bug 4 (term 0 after a
    /// snapshot).
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.offset.index {
            return Some(self.offset.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn log_id_at(&self, index: LogIndex) -> Option<LogId> {
        self.term_at(index).map(|term| LogId { term, index })
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.offset.index {
            return None;
        }
        self.entries.get((index - self.offset.index - 1) as usize)
    }

    /// Whether our log has an entry with this id (or it is our offset).
    pub(crate) fn matches(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// Entries `[low, high)` limited by count and bytes; at least one if the range is not empty.
    pub(crate) fn slice(
        &self,
        low: LogIndex,
        high: LogIndex,
        count_max: usize,
        bytes_max: u64,
    ) -> Vec<Entry> {
        assert!(
            low > self.offset.index,
            "slice from {low} below offset {}",
            self.offset
        );
        let high = high.min(self.last_index() + 1);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut index = low;
        while index < high && out.len() < count_max {
            let entry = self.entry(index).expect("index within bounds");
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
            index += 1;
        }
        out
    }

    /// Appends entries that directly follow the last one.
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            let last = self.last_log_id();
            assert_eq!(
                entry.index,
                last.index + 1,
                "append leaves a hole after {last}"
            );
            assert!(
                entry.term >= last.term,
                "append of {} lowers the term after {last}",
                entry.index
            );
            self.entries.push_back(entry);
        }
    }

    /// Removes entries from `from` on and returns them, newest first. Never removes committed
    /// entries: that would break state machine safety, so it is a bug.
    pub(crate) fn truncate(&mut self, from: LogIndex) -> Vec<Entry> {
        assert!(
            from > self.committed,
            "truncating from {from} would remove committed entries (committed {})",
            self.committed
        );
        let keep = (from - self.offset.index - 1) as usize;
        let removed: Vec<Entry> = self.entries.drain(keep..).rev().collect();
        self.persisted = self.persisted.min(from - 1);
        self.unstable_from = self.unstable_from.min(from);
        removed
    }

    /// Drops entries up to and including `upto` from memory (after a snapshot covers them).
    pub(crate) fn compact(&mut self, upto: LogIndex) {
        if upto <= self.offset.index {
            return;
        }
        assert!(
            upto <= self.applied,
            "compacting {upto} past applied {}",
            self.applied
        );
        let term = self.term_at(upto).expect("compaction point is in the log");
        let drop = (upto - self.offset.index) as usize;
        self.entries.drain(..drop);
        self.offset = LogId { term, index: upto };
    }

    /// Installs a snapshot ending at `snapshot`: keeps the suffix after it only if our entry at
    /// that index has the same term (fixes jraft bug 8). Returns the discarded uncommitted
    /// entries, newest first.
    pub(crate) fn install_snapshot(&mut self, snapshot: LogId) -> (Vec<Entry>, bool) {
        let keep_suffix = self.matches(snapshot) && snapshot.index >= self.offset.index;
        let mut discarded = Vec::new();
        if keep_suffix {
            let drop = (snapshot.index - self.offset.index) as usize;
            self.entries.drain(..drop);
        } else {
            discarded = self
                .entries
                .drain(..)
                .rev()
                .filter(|e| e.index > self.committed)
                .collect();
            self.persisted = snapshot.index;
            self.unstable_from = snapshot.index + 1;
        }
        self.offset = snapshot;
        self.committed = self.committed.max(snapshot.index);
        self.applied = snapshot.index;
        self.persisted = self.persisted.max(snapshot.index);
        self.unstable_from = self.unstable_from.max(snapshot.index + 1);
        (discarded, keep_suffix)
    }

    /// Entries not yet handed out for persisting; marks them handed out.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let last = self.last_index();
        if self.unstable_from > last {
            return Vec::new();
        }
        let out: Vec<Entry> = (self.unstable_from..=last)
            .map(|i| self.entry(i).expect("unstable entry present").clone())
            .collect();
        self.unstable_from = last + 1;
        out
    }

    /// Committed, durable entries not yet handed out for applying; marks them handed out.
    pub(crate) fn take_committed(&mut self, count_max: usize) -> Vec<Entry> {
        let high = self.committed.min(self.persisted);
        if self.applied >= high {
            return Vec::new();
        }
        let out = self.slice(self.applied + 1, high + 1, count_max, u64::MAX);
        self.applied += out.len() as u64;
        out
    }

    /// The first index of the run of entries with the same term as the entry at `index`
    /// (never below the first index). Used for the conflict hint.
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let term = self.term_at(index).expect("index present");
        let mut first = index;
        while first > self.first_index() && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index whose entry has term `term`, if any (searching back from the end and
    /// stopping once terms drop below it).
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let mut index = self.last_index();
        while index > self.offset.index {
            let t = self.term_at(index).expect("present");
            if t == term {
                return Some(index);
            }
            if t < term {
                return None;
            }
            index -= 1;
        }
        (self.offset.term == term).then_some(self.offset.index)
    }

    pub(crate) fn entries_from(&self, from: LogIndex) -> impl Iterator<Item = &Entry> {
        let skip = from.saturating_sub(self.offset.index + 1) as usize;
        self.entries.iter().skip(skip)
    }
}

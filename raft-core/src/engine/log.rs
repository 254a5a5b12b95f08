//! The engine's view of the log: every entry after the last compaction point, plus the commit,
//! apply and persistence cursors.
//!
//! Every entry's id and kind stay in memory (about 60 bytes an entry; the count is bounded by
//! the snapshot triggers), but not every payload: the log store is the log. Payloads are kept
//! for entries not yet durable and not yet handed out for applying (bounded by the engine's
//! byte limits on what is uncommitted and unapplied) and for the most recent others, up to
//! `log_cache_bytes_max`; older payloads are dropped ("evicted") and read back from the log
//! store when a lagging follower needs them (`Ready::fetches`). Configuration entries keep
//! their payload (the engine decodes them after a truncation).

use std::collections::VecDeque;

use crate::types::{Entry, EntryKind, LogId, LogIndex, Term};

/// A range of entries whose payloads are not in memory: read them from the log store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Evicted {
    /// First index to read.
    pub(crate) low: LogIndex,
    /// One past the last evicted index of the range asked for.
    pub(crate) high: LogIndex,
}

/// The in-memory log and its cursors.
///
/// Invariants (checked by [`RaftLog::check`]):
/// `offset.index <= evicted_upto <= min(applied, persisted)`, `applied <= committed`,
/// `persisted <= last_index`, `entries[i].index == offset.index + 1 + i`, terms never decrease
/// along the log.
#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The last compacted entry: entries up to here are only in a snapshot.
    offset: LogId,
    /// Entries `offset.index + 1 ..= last_index` (evicted ones without their payload).
    entries: VecDeque<Entry>,
    /// `cumulative_bytes[i]`: the [`Entry::size_bytes`] of every entry up to `entries[i]`,
    /// counted from an arbitrary origin (`bytes_at_offset` at the offset).
    cumulative_bytes: VecDeque<u64>,
    bytes_at_offset: u64,
    /// Normal entries at or below this index have no payload in memory.
    evicted_upto: LogIndex,
    /// Highest index known committed.
    pub(crate) committed: LogIndex,
    /// Highest index handed out for applying.
    pub(crate) applied: LogIndex,
    /// Highest index the state machine reported applied (`Engine::on_applied`).
    pub(crate) state_machine_applied: LogIndex,
    /// Highest index known durable in local storage.
    pub(crate) persisted: LogIndex,
    /// First index not yet handed out for persisting.
    pub(crate) unstable_from: LogIndex,
}

impl RaftLog {
    /// A log restored from storage: `entries` follow `offset` and are all durable. Entries at
    /// or below `applied` (a snapshot covers them) may come without their payload.
    pub(crate) fn restore(offset: LogId, entries: Vec<Entry>, committed: LogIndex) -> Self {
        let last = offset.index + entries.len() as u64;
        let mut log = RaftLog {
            offset,
            entries: VecDeque::with_capacity(entries.len()),
            cumulative_bytes: VecDeque::with_capacity(entries.len()),
            bytes_at_offset: 0,
            evicted_upto: offset.index,
            committed: committed.clamp(offset.index, last),
            applied: offset.index,
            state_machine_applied: offset.index,
            persisted: last,
            unstable_from: last + 1,
        };
        log.push_all(entries);
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
        assert!(
            self.offset.index <= self.evicted_upto
                && self.evicted_upto <= self.applied.min(self.persisted),
            "payloads evicted up to {} (offset {}, applied {}, persisted {})",
            self.evicted_upto,
            self.offset,
            self.applied,
            self.persisted
        );
        assert_eq!(self.entries.len(), self.cumulative_bytes.len());
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

    /// The entry at `index`, which has no payload if it was evicted (see
    /// [`RaftLog::has_payload`]).
    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.offset.index {
            return None;
        }
        self.entries.get((index - self.offset.index - 1) as usize)
    }

    /// Whether the entry at `index` is in memory with its payload.
    pub(crate) fn has_payload(&self, index: LogIndex) -> bool {
        self.entry(index)
            .is_some_and(|e| index > self.evicted_upto || e.kind != EntryKind::Normal)
    }

    /// Whether our log has an entry with this id (or it is our offset).
    pub(crate) fn matches(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// The bytes ([`Entry::size_bytes`]) of the entries after `after` up to `upto`, both
    /// clamped to the log.
    pub(crate) fn bytes_between(&self, after: LogIndex, upto: LogIndex) -> u64 {
        let upto = upto.min(self.last_index());
        let after = after.max(self.offset.index);
        if upto <= after {
            return 0;
        }
        self.cumulative_at(upto) - self.cumulative_at(after)
    }

    fn cumulative_at(&self, index: LogIndex) -> u64 {
        if index <= self.offset.index {
            return self.bytes_at_offset;
        }
        self.cumulative_bytes[(index - self.offset.index - 1) as usize]
    }

    /// Payload bytes held in memory (entries after the evicted ones).
    pub(crate) fn cached_bytes(&self) -> u64 {
        self.bytes_between(self.evicted_upto, self.last_index())
    }

    /// Entries `[low, high)` limited by count and bytes; at least one if the range is not
    /// empty. `Err` if the first one's payload was evicted: read that range from the store.
    pub(crate) fn slice(
        &self,
        low: LogIndex,
        high: LogIndex,
        count_max: usize,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, Evicted> {
        assert!(
            low > self.offset.index,
            "slice from {low} below offset {}",
            self.offset
        );
        let high = high.min(self.last_index() + 1);
        if low < high && low <= self.evicted_upto {
            return Err(Evicted {
                low,
                high: high.min(self.evicted_upto + 1),
            });
        }
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
        Ok(out)
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
            self.push(entry);
        }
    }

    fn push(&mut self, entry: Entry) {
        let before = self
            .cumulative_bytes
            .back()
            .copied()
            .unwrap_or(self.bytes_at_offset);
        self.cumulative_bytes.push_back(before + entry.size_bytes());
        self.entries.push_back(entry);
    }

    fn push_all(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            self.push(entry);
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
        self.cumulative_bytes.truncate(keep);
        self.persisted = self.persisted.min(from - 1);
        self.unstable_from = self.unstable_from.min(from);
        removed
    }

    /// Drops the first `count` entries (their bookkeeping too); the offset becomes `new_offset`.
    fn drop_front(&mut self, count: usize, new_offset: LogId) {
        if count > 0 {
            self.bytes_at_offset = self.cumulative_bytes[count - 1];
        }
        self.entries.drain(..count);
        self.cumulative_bytes.drain(..count);
        self.offset = new_offset;
        self.evicted_upto = self.evicted_upto.max(new_offset.index);
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
        let count = (upto - self.offset.index) as usize;
        self.drop_front(count, LogId { term, index: upto });
    }

    /// Installs a snapshot ending at `snapshot`: keeps the suffix after it only if our entry at
    /// that index has the same term (fixes jraft bug 8). Returns the discarded uncommitted
    /// entries, newest first.
    pub(crate) fn install_snapshot(&mut self, snapshot: LogId) -> (Vec<Entry>, bool) {
        let keep_suffix = self.matches(snapshot) && snapshot.index >= self.offset.index;
        let mut discarded = Vec::new();
        if keep_suffix {
            let count = (snapshot.index - self.offset.index) as usize;
            self.drop_front(count, snapshot);
        } else {
            discarded = self
                .entries
                .drain(..)
                .rev()
                .filter(|e| e.index > self.committed)
                .collect();
            self.cumulative_bytes.clear();
            self.offset = snapshot;
            self.evicted_upto = snapshot.index;
            self.persisted = snapshot.index;
            self.unstable_from = snapshot.index + 1;
        }
        self.committed = self.committed.max(snapshot.index);
        self.applied = snapshot.index;
        self.persisted = self.persisted.max(snapshot.index);
        self.unstable_from = self.unstable_from.max(snapshot.index + 1);
        (discarded, keep_suffix)
    }

    /// Marks entries at or below `index` (and applied) as possibly without payload: entries a
    /// snapshot covers, loaded at start without their payload.
    pub(crate) fn evicted_through(&mut self, index: LogIndex) {
        let bound = index.min(self.applied).min(self.persisted);
        self.evicted_upto = self.evicted_upto.max(bound);
    }

    /// Drops the payloads of the oldest entries that are durable and handed out for applying
    /// until the payloads in memory fit in `cache_bytes_max` (or none of them may go).
    pub(crate) fn evict(&mut self, cache_bytes_max: u64) {
        let evictable = self.applied.min(self.persisted);
        while self.evicted_upto < evictable && self.cached_bytes() > cache_bytes_max {
            self.evicted_upto += 1;
            let position = (self.evicted_upto - self.offset.index - 1) as usize;
            let entry = &mut self.entries[position];
            if entry.kind == EntryKind::Normal {
                entry.data = bytes::Bytes::new();
            }
        }
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

    /// Committed, durable entries not yet handed out for applying, while the bytes handed out
    /// and not yet applied stay within `queue_bytes_max` (one entry at least when nothing is
    /// outstanding); marks them handed out.
    pub(crate) fn take_committed(&mut self, count_max: usize, queue_bytes_max: u64) -> Vec<Entry> {
        let high = self.committed.min(self.persisted);
        if self.applied >= high {
            return Vec::new();
        }
        let outstanding = self.bytes_between(self.state_machine_applied, self.applied);
        let bytes_max = queue_bytes_max.saturating_sub(outstanding);
        let next_bytes = self.bytes_between(self.applied, self.applied + 1);
        if outstanding > 0 && next_bytes > bytes_max {
            return Vec::new(); // Full; one entry goes over the limit only into an empty queue.
        }
        let out = self
            .slice(self.applied + 1, high + 1, count_max, bytes_max)
            .expect("entries not yet handed out keep their payload");
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

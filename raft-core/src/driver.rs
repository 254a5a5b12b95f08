//! The rules that turn the engine's output into sends, writes, applies and answers, written
//! once. The async node runs them, and so does every test harness that drives engines, so a
//! harness cannot prove an order the node does not follow.
//!
//! [`Driver`] owns an [`Engine`] and pipelines its [`Ready`]s: at most one durable write is in
//! flight; whatever arrives meanwhile forms the next write (group commit). Each call returns a
//! [`Work`], to be carried out **in field order**:
//!
//! 1. send [`Work::messages`]; start [`Work::fetches`] (reads from the log store for lagging
//!    followers, answered through `Engine::on_entries_fetched`);
//! 2. hand [`Work::apply`] to the state machine, in order (a snapshot restore, committed
//!    entries, a snapshot build labelled with the entry handed over just before it, hooks);
//! 3. answer the reads, fail the proposals whose entries were rolled back or skipped by a
//!    snapshot, start the snapshot transfers;
//! 4. start [`Work::write`]: its [`WriteStep`]s in order, each durable before the next, then
//!    call [`Driver::write_done`] and carry out the work it returns.
//!
//! The rules it keeps:
//! * A leader's AppendEntries leave before its own write (they depend on nothing that write
//!   holds), except while a hard state is not durable: messages of a term wait for that term
//!   to be saved (the engine holds them).
//! * Acknowledgements and votes ([`Ready::persisted_messages`]) leave only after the write.
//! * Committed entries are handed over while a write is in flight (they are already durable
//!   here), but never ahead of a snapshot restore or a snapshot build that an earlier `Ready`
//!   still owes the apply queue: the queue sees entries in log order and a build request right
//!   after the entry it is labelled with.
//! * An installed snapshot's write truncates before it purges: a crash between the two then
//!   leaves a log that still starts where it did, never one whose first entry has a term below
//!   the purge point.

use crate::engine::{Engine, EntryFetch, ReadState, Ready, SnapshotRequest};
use crate::message::Message;
use crate::types::{Entry, HardState, LogId, LogIndex, NodeId, SnapshotMeta};

/// One step of a durable write (the log store's operations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteStep {
    /// Remove every entry from this index on.
    Truncate(LogIndex),
    /// Remove every entry up to and including this id, and record it as the purge point.
    Purge(LogId),
    /// Replace the hard state.
    SaveHardState(HardState),
    /// Append these entries after the last one.
    Append(Vec<Entry>),
}

/// A durable write: its steps, in the order they must be carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The steps; each must be durable before the next starts.
    pub steps: Vec<WriteStep>,
}

/// Work for the state machine, in the order it must see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyWork {
    /// Replace the state with this snapshot (already stored).
    Restore(SnapshotMeta),
    /// Apply these committed entries.
    Entries(Vec<Entry>),
    /// Build a snapshot of the state as it is after the work handed over before this.
    BuildSnapshot(SnapshotRequest),
    /// These entries were appended to the local log (the pre-commit hook).
    PreCommit(Vec<Entry>),
    /// These appended entries were removed before they committed, newest first (the
    /// rollback hook).
    Rollback(Vec<Entry>),
}

/// What to do now. Carry it out in field order (see the module documentation).
#[derive(Debug, Default)]
pub struct Work {
    /// Messages to send.
    pub messages: Vec<Message>,
    /// Entries to read back from the log store for followers; start them now and report
    /// each with `Engine::on_entries_fetched` (through [`Driver::engine_mut`]).
    pub fetches: Vec<EntryFetch>,
    /// Work for the state machine, in order.
    pub apply: Vec<ApplyWork>,
    /// Reads whose index is known: answer each once the state machine has applied it.
    pub read_states: Vec<ReadState>,
    /// Reads that cannot be answered here (the ids given to `Engine::read_index`).
    pub failed_reads: Vec<u64>,
    /// Entries removed before they committed, newest first: a proposal waiting for one of
    /// these lost its place (and its outcome is unknown).
    pub rolled_back: Vec<Entry>,
    /// A snapshot up to this entry replaced the log: proposals waiting for an entry at or
    /// below it will never see it applied on its own.
    pub skipped_to: Option<LogId>,
    /// Peers to stream the latest snapshot to.
    pub send_snapshots: Vec<NodeId>,
    /// A write to start; report it with [`Driver::write_done`] once every step is durable.
    pub write: Option<Write>,
}

impl Work {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.fetches.is_empty()
            && self.apply.is_empty()
            && self.read_states.is_empty()
            && self.failed_reads.is_empty()
            && self.rolled_back.is_empty()
            && self.skipped_to.is_none()
            && self.send_snapshots.is_empty()
            && self.write.is_none()
    }
}

/// What a `Ready` still owes once its write is durable.
#[derive(Debug)]
struct AfterWrite {
    /// The last entry (or snapshot) the write holds, for `Engine::on_persisted`.
    last: Option<LogId>,
    persisted_messages: Vec<Message>,
    /// Only with a snapshot restore: the entries and the reads that follow it.
    committed_entries: Vec<Entry>,
    read_states: Vec<ReadState>,
    failed_reads: Vec<u64>,
    build_snapshot: Option<SnapshotRequest>,
    send_snapshots: Vec<NodeId>,
    restores_snapshot: bool,
}

impl AfterWrite {
    /// Whether everything for the apply queue was handed over already, so that entries
    /// committed later may go before this write is durable.
    fn apply_work_handed_over(&self) -> bool {
        !self.restores_snapshot
            && self.committed_entries.is_empty()
            && self.build_snapshot.is_none()
    }
}

/// Drives an [`Engine`]. See the module documentation.
#[derive(Debug)]
pub struct Driver {
    engine: Engine,
    /// Hand the pre-commit and rollback hooks their entries.
    hooks: bool,
    in_flight: Option<AfterWrite>,
}

impl Driver {
    /// A driver of `engine`; `hooks` adds [`ApplyWork::PreCommit`] and
    /// [`ApplyWork::Rollback`] to the apply work.
    pub fn new(engine: Engine, hooks: bool) -> Self {
        Driver {
            engine,
            hooks,
            in_flight: None,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, for inputs (`tick`, `step`, `propose`, ...). Call [`Driver::poll`] after
    /// them.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Whether a write handed out is not reported durable yet.
    pub fn write_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The work the inputs since the last call produced.
    pub fn poll(&mut self) -> Work {
        let mut work = Work::default();
        match &self.in_flight {
            Some(after) => {
                work.messages = self.engine.take_messages();
                work.fetches = self.engine.take_fetches();
                if after.apply_work_handed_over() {
                    let entries = self.engine.take_committed_entries();
                    push_entries(&mut work.apply, entries);
                }
            }
            None if self.engine.has_ready() => {
                let ready = self.engine.ready();
                self.start(ready, &mut work);
            }
            None => {}
        }
        work
    }

    /// The write handed out last is durable: returns what waited for it.
    pub fn write_done(&mut self) -> Work {
        let after = self
            .in_flight
            .take()
            .expect("write_done without a write in flight");
        let mut work = Work::default();
        self.finish(after, &mut work);
        work
    }

    /// Splits a `Ready` into what can be done now and what waits for its write.
    fn start(&mut self, mut ready: Ready, work: &mut Work) {
        work.messages = std::mem::take(&mut ready.messages);
        work.fetches = std::mem::take(&mut ready.fetches);
        let restore = ready.snapshot.clone();
        if let Some(meta) = &restore {
            work.skipped_to = Some(meta.last_log_id);
            work.apply.push(ApplyWork::Restore(meta.clone()));
        }
        if self.hooks && !ready.rolled_back.is_empty() {
            work.apply
                .push(ApplyWork::Rollback(ready.rolled_back.clone()));
        }
        if self.hooks && !ready.entries.is_empty() {
            work.apply.push(ApplyWork::PreCommit(ready.entries.clone()));
        }
        work.rolled_back = std::mem::take(&mut ready.rolled_back);
        let last = ready
            .entries
            .last()
            .map(Entry::log_id)
            .or(restore.as_ref().map(|m| m.last_log_id));
        if restore.is_none() {
            // Committed entries are durable here already: applying them need not wait for
            // this Ready's own writes (that would add a write cycle to every answer).
            push_entries(
                &mut work.apply,
                std::mem::take(&mut ready.committed_entries),
            );
            work.read_states = std::mem::take(&mut ready.read_states);
            work.failed_reads = std::mem::take(&mut ready.failed_reads);
            if let Some(request) = ready.build_snapshot.take() {
                work.apply.push(ApplyWork::BuildSnapshot(request));
            }
        }
        let write = take_write(&mut ready);
        let after = AfterWrite {
            last,
            persisted_messages: ready.persisted_messages,
            committed_entries: ready.committed_entries,
            read_states: ready.read_states,
            failed_reads: ready.failed_reads,
            build_snapshot: ready.build_snapshot,
            send_snapshots: ready.send_snapshots,
            restores_snapshot: restore.is_some(),
        };
        match write {
            Some(write) => {
                work.write = Some(write);
                self.in_flight = Some(after);
            }
            None => self.finish(after, work),
        }
    }

    /// Steps 3 to 6 of a `Ready`, once its write is durable.
    fn finish(&mut self, after: AfterWrite, work: &mut Work) {
        self.engine.on_persisted(after.last);
        work.messages.extend(after.persisted_messages);
        push_entries(&mut work.apply, after.committed_entries);
        work.read_states.extend(after.read_states);
        work.failed_reads.extend(after.failed_reads);
        work.send_snapshots.extend(after.send_snapshots);
        if let Some(request) = after.build_snapshot {
            work.apply.push(ApplyWork::BuildSnapshot(request));
        }
    }
}

fn push_entries(apply: &mut Vec<ApplyWork>, entries: Vec<Entry>) {
    if !entries.is_empty() {
        apply.push(ApplyWork::Entries(entries));
    }
}

/// The durable part of a `Ready` as ordered steps. A snapshot install truncates first and
/// purges second (see the module documentation); a compaction's purge comes last.
fn take_write(ready: &mut Ready) -> Option<Write> {
    let mut steps = Vec::new();
    if let Some(from) = ready.truncate_from.take() {
        steps.push(WriteStep::Truncate(from));
    }
    if let Some(meta) = &ready.snapshot {
        steps.push(WriteStep::Purge(meta.last_log_id));
    }
    if let Some(hard_state) = ready.hard_state.take() {
        steps.push(WriteStep::SaveHardState(hard_state));
    }
    if !ready.entries.is_empty() {
        steps.push(WriteStep::Append(std::mem::take(&mut ready.entries)));
    }
    if let Some(upto) = ready.purge_to.take() {
        steps.push(WriteStep::Purge(upto));
    }
    (!steps.is_empty()).then_some(Write { steps })
}

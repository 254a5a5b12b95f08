//! The consensus engine: a deterministic state machine with no I/O, no clock and no threads.
//!
//! # Driving the engine
//! Inputs are method calls: [`Engine::tick`] at a fixed interval, [`Engine::step`] for every
//! message from a peer, [`Engine::propose`] for client commands, [`Engine::read_index`] for
//! linearizable reads, [`Engine::change_membership`] and friends, [`Engine::transfer_leadership`].
//! After any input, [`Engine::ready`] returns the work to do as a [`Ready`]. The caller must
//! carry out its parts **in this order**:
//!
//! 1. Send [`Ready::messages`]. They depend on nothing unpersisted (a leader's AppendEntries, so
//!    the leader writes its own log in parallel with replication). When the `Ready` carries a
//!    hard state, its messages are in `persisted_messages` instead: nothing of a term leaves
//!    before the term is durable.
//! 2. If [`Ready::snapshot`] is set, install it: restore the state machine from it and purge the
//!    log store up to it. Then, if [`Ready::truncate_from`] is set, truncate the log store from
//!    there, then persist [`Ready::hard_state`] and append [`Ready::entries`]. Call
//!    [`StateMachine::pre_commit`](crate::node::StateMachine::pre_commit) for each appended entry
//!    and `rollback` for each of [`Ready::rolled_back`] if you use those hooks.
//! 3. When all of step 2 is durable, call [`Engine::on_persisted`] with the last entry's id
//!    (or the snapshot's, or `None`), then send [`Ready::persisted_messages`] (votes and
//!    acknowledgements: never before the state they promise is on disk).
//! 4. Apply [`Ready::committed_entries`] in order; then call [`Engine::on_applied`].
//! 5. Answer each of [`Ready::read_states`] once the applied index reaches its index; fail each
//!    of [`Ready::failed_reads`].
//! 6. Start a transfer of the latest snapshot to each peer in [`Ready::send_snapshots`] and
//!    report the outcome with [`Engine::on_snapshot_sent`]; if [`Ready::build_snapshot`] is set,
//!    build a snapshot of the state machine at that log id (after applying step 4) and report it
//!    with [`Engine::on_snapshot_built`]; purge the log store up to [`Ready::purge_to`].
//!
//! A caller that pipelines may call [`Engine::take_messages`] while step 2 of an earlier
//! `Ready` is still in flight: entries proposed meanwhile are then persisted together in the
//! next `Ready` (group commit). One `Ready`'s writes at a time.
//!
//! [`crate::driver::Driver`] does all of this; the async node and the tests use it. Driving
//! the engine by hand is for runtimes that cannot use it.
//!
//! Steps 4 and 5 need not wait for steps 2 and 3 of the same `Ready` when it carries no
//! snapshot: [`Ready::committed_entries`] holds only entries that are committed *and* already
//! reported durable here through [`Engine::on_persisted`], and confirmed reads depend on a
//! heartbeat quorum, not on local writes. The async node applies them before starting the
//! `Ready`'s writes, which takes a whole write cycle off every answer under load.

mod config;
mod election;
mod fetch;
mod leader;
mod log;
mod membership_change;
mod progress;
mod reads;
mod replication;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tracing::{debug, info, warn};

pub use self::config::{Config, ConfigError};
use self::leader::Leading;
use self::log::RaftLog;
pub use self::progress::{Progress, ReplicationState};
pub use self::reads::{ReadState, FORWARDED_READ_RESEND_HEARTBEATS};
pub use self::snapshot::{
    BuiltSnapshot, SnapshotRequest, SNAPSHOT_BUILD_RETRY_TICKS, SNAPSHOT_POSTPONE_FACTOR_MAX,
    SNAPSHOT_TRIGGER_JITTER_PER_MILLE_MAX,
};
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::types::{Entry, EntryKind, HardState, LogId, LogIndex, NodeId, SnapshotMeta, Term};

/// A server's role (paper section 5.1, plus pre-candidate from thesis section 9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one). Learners and removed servers stay here.
    Follower,
    /// Asking for pre-votes; has not changed its term.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Leads the cluster.
    Leader,
}

/// Why the engine refused a request. None of these is fatal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Only the leader does this; `leader` is the one this server knows, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The current leader as far as this server knows.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is in progress; proposals wait for the new leader.
    #[error("leadership transfer to {0} in progress")]
    TransferInProgress(NodeId),
    /// Too many entries are uncommitted; retry later.
    #[error("too many uncommitted entries ({0}); slow down")]
    Backpressure(u64),
    /// Too many bytes uncommitted or not yet applied; retry later.
    #[error("{0} bytes uncommitted or not yet applied; slow down")]
    BackpressureBytes(u64),
    /// An entry's payload exceeds `entry_bytes_max`.
    #[error("entry of {0} bytes is larger than the limit")]
    EntryTooLarge(u64),
    /// Another membership change has not finished yet (one change at a time).
    #[error("a membership change is already in progress")]
    ChangeInProgress,
    /// The leader has not committed an entry of its own term yet (thesis section 4.1,
    /// the fix of the single-server change bug); retry shortly.
    #[error("the leader has not committed an entry of its term yet")]
    NotReady,
    /// The requested membership or transfer target is not acceptable.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Too many pending reads.
    #[error("too many pending reads")]
    TooManyReads,
}

/// The work an input produced. See the module documentation for the order of the steps.
#[derive(Debug, Default)]
pub struct Ready {
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// A received snapshot to install before anything else is persisted.
    pub snapshot: Option<SnapshotMeta>,
    /// Remove log entries from this index on.
    pub truncate_from: Option<LogIndex>,
    /// The hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append to the log store.
    pub entries: Vec<Entry>,
    /// Entries removed by a conflicting leader (or a snapshot), newest first, for the state
    /// machine's rollback hook (fixes jraft bug 9).
    pub rolled_back: Vec<Entry>,
    /// Messages to send once everything above is durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads whose index is known; answer each once applied up to it.
    pub read_states: Vec<ReadState>,
    /// Reads that cannot be served here (leadership lost); the ids given to `read_index`.
    pub failed_reads: Vec<u64>,
    /// Peers that need the latest snapshot.
    pub send_snapshots: Vec<NodeId>,
    /// Build a snapshot of the state machine at this point.
    pub build_snapshot: Option<SnapshotRequest>,
    /// Purge the log store up to and including this id (a durable snapshot covers it).
    pub purge_to: Option<LogId>,
    /// Entries to read back from the log store for a follower (their payloads are no longer
    /// in memory); report each with [`Engine::on_entries_fetched`]. Independent of step 2:
    /// start them at once.
    pub fetches: Vec<EntryFetch>,
}

/// A read of entries from the log store that the engine needs to replicate to `peer`: the
/// entries `[low, high)`, as many as fit in `bytes_max` (at least one). Hand the result back
/// with [`Engine::on_entries_fetched`], whatever it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryFetch {
    /// The follower the entries are for.
    pub peer: NodeId,
    /// The leader's term when it asked (a later term ignores the answer).
    pub term: Term,
    /// First index to read.
    pub low: LogIndex,
    /// One past the last index to read.
    pub high: LogIndex,
    /// Payload bytes to read, at most (`LogStore::entries`'s limit).
    pub bytes_max: u64,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.snapshot.is_none()
            && self.truncate_from.is_none()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.rolled_back.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.failed_reads.is_empty()
            && self.send_snapshots.is_empty()
            && self.build_snapshot.is_none()
            && self.purge_to.is_none()
            && self.fetches.is_empty()
    }

    /// Whether step 2 (durable writes) has anything to do.
    pub fn needs_persist(&self) -> bool {
        self.snapshot.is_some()
            || self.truncate_from.is_some()
            || self.hard_state.is_some()
            || !self.entries.is_empty()
    }
}

/// What a server restores from storage when it starts.
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    /// The persisted hard state.
    pub hard_state: HardState,
    /// The latest durable snapshot, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// The last purged log id (`LogId::ZERO` if none). Entries follow it.
    pub purged: LogId,
    /// Every entry in the log store, in order.
    pub entries: Vec<Entry>,
    /// The configuration to use when neither the log nor a snapshot has one: the initial
    /// voters of a new cluster, or an empty configuration for a server that waits to be added.
    pub initial_membership: Membership,
}

/// A snapshot of the engine's observable state, for status and metrics.
#[derive(Clone, Debug)]
pub struct Status {
    /// This server.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit_index: LogIndex,
    /// Applied index (handed out for applying).
    pub applied_index: LogIndex,
    /// Last log entry.
    pub last_log_id: LogId,
    /// Highest durable index.
    pub persisted_index: LogIndex,
    /// First index still in the log.
    pub first_index: LogIndex,
    /// Effective configuration (the latest in the log).
    pub membership: Membership,
    /// Per-peer replication state (leader only).
    pub progress: BTreeMap<NodeId, Progress>,
}

/// How often this server campaigned since it started (see [`Engine::campaigns`]): for
/// metrics, where many elections mean an unstable cluster (a lagging loop, a flaky network).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Campaigns {
    /// Pre-vote rounds started (thesis 9.6). A pre-candidate that loses them changes nothing
    /// for the others: no term is raised.
    pub pre_votes: u64,
    /// Elections started: terms this server raised to stand as a candidate (after winning a
    /// pre-vote round, without one, or for a leadership transfer).
    pub elections: u64,
}

/// A configuration entry that is in the log but not known committed.
#[derive(Clone, Debug)]
struct PendingConfig {
    log_id: LogId,
    membership: Membership,
}

/// The consensus engine of one server. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    id: NodeId,
    config: Config,
    rng: SplitMix64,

    role: Role,
    term: Term,
    voted_for: Option<NodeId>,
    leader: Option<NodeId>,
    hard_state_dirty: bool,
    log: RaftLog,

    /// The configuration of the latest committed configuration entry (or snapshot / initial).
    committed_membership: (LogId, Membership),
    /// Configuration entries after the committed one, oldest first. The effective
    /// configuration is the last of these, else the committed one (paper section 6).
    pending_configs: Vec<PendingConfig>,

    /// Ticks since: the last election timeout reset (followers: last heard from a leader).
    election_elapsed: u64,
    randomized_election_ticks: u64,
    heartbeat_elapsed: u64,
    /// Ticks since start, for in-flight timeouts and leases.
    now_tick: u64,

    /// Candidate / pre-candidate: votes received.
    votes: BTreeMap<NodeId, bool>,

    /// Everything only a leader has; `Some` exactly while the role is `Leader`.
    leading: Option<Leading>,
    /// Follower: reads forwarded to the leader, with the tick each was (last) sent at.
    forwarded_reads: BTreeMap<u64, u64>,
    /// A hard state was handed out in a `Ready` whose writes are not reported durable yet:
    /// messages of its term must wait for it (see `take_messages`).
    hard_state_unsaved: bool,
    /// A received snapshot was handed out in a `Ready` whose writes are not reported durable
    /// yet: the log's `persisted` already counts it, but answers must not before it is.
    snapshot_unsaved: bool,
    snapshots: snapshot::SnapshotState,
    campaigns: Campaigns,

    ready: Ready,
}

impl Engine {
    /// Creates the engine of server `id` from what storage holds.
    pub fn new(id: NodeId, config: Config, restored: RestoredState) -> Result<Self, ConfigError> {
        config.validate()?;
        if id == 0 {
            return Err(ConfigError("node id 0 is reserved"));
        }
        let RestoredState {
            hard_state,
            snapshot,
            purged,
            entries,
            initial_membership,
        } = restored;
        let snapshot_id = snapshot
            .as_ref()
            .map(|s| s.last_log_id)
            .unwrap_or(LogId::ZERO);
        let committed = hard_state.commit.max(snapshot_id.index);
        let mut log = RaftLog::restore(purged, entries, committed);
        if snapshot_id.index > log.offset().index {
            // The snapshot is newer than the purge point: the state machine restarts from it.
            let (discarded, _) = log.install_snapshot(snapshot_id);
            debug_assert!(
                discarded.is_empty(),
                "restart discarded uncommitted entries"
            );
        } else {
            log.applied = snapshot_id.index.max(log.offset().index);
        }
        // What the snapshot covers may have been loaded without its payload; the state
        // machine holds (or will hold, once restored) everything up to it.
        log.state_machine_applied = log.applied;
        log.evicted_through(log.applied);
        let log_last_term = log.last_log_id().term;
        let committed_membership = match &snapshot {
            Some(s) => (s.membership_log_id, s.membership.clone()),
            None => (LogId::ZERO, initial_membership),
        };
        let rng = SplitMix64::new(config.random_seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut snapshots = snapshot::SnapshotState::new(snapshot_id, committed_membership.clone());
        snapshots.latest_bytes = snapshot.as_ref().map_or(0, |s| s.size_bytes);
        let mut engine = Engine {
            id,
            config,
            rng,
            role: Role::Follower,
            // A snapshot received just before a crash can carry a newer term than the hard
            // state had time to record; never run behind the terms in our own log.
            term: hard_state.term.max(log_last_term),
            voted_for: if log_last_term > hard_state.term {
                None
            } else {
                hard_state.voted_for
            },
            leader: None,
            hard_state_dirty: log_last_term > hard_state.term,
            log,
            committed_membership,
            pending_configs: Vec::new(),
            election_elapsed: 0,
            randomized_election_ticks: 0,
            heartbeat_elapsed: 0,
            now_tick: 0,
            votes: BTreeMap::new(),
            leading: None,
            forwarded_reads: BTreeMap::new(),
            hard_state_unsaved: false,
            snapshot_unsaved: false,
            snapshots,
            campaigns: Campaigns::default(),
            ready: Ready::default(),
        };
        engine.rebuild_configs_from_log();
        engine.reset_election_timer();
        engine.snapshots.jitter_per_mille = engine
            .rng
            .below(snapshot::SNAPSHOT_TRIGGER_JITTER_PER_MILLE_MAX);
        Ok(engine)
    }

    // ----- observers -----

    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Pre-vote rounds and elections this server started since it was created.
    pub fn campaigns(&self) -> Campaigns {
        self.campaigns
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader this server knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }

    /// Last log entry id.
    pub fn last_log_id(&self) -> LogId {
        self.log.last_log_id()
    }

    /// The highest index reported durable here (through [`Engine::on_persisted`]).
    pub fn persisted_index(&self) -> LogIndex {
        self.log.persisted
    }

    /// The first index still in the log (entries below it are in the latest snapshot).
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    /// The effective configuration: the latest in the log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.pending_configs
            .last()
            .map(|p| &p.membership)
            .unwrap_or(&self.committed_membership.1)
    }

    /// The latest committed configuration.
    pub fn committed_membership(&self) -> &Membership {
        &self.committed_membership.1
    }

    /// The entry at `index`, if it is in memory with its payload (tests, debugging). An entry
    /// whose payload was evicted (see `Config::log_cache_bytes_max`) answers `None`; its id is
    /// still known to [`Engine::log_id_at`].
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log
            .has_payload(index)
            .then(|| self.log.entry(index))
            .flatten()
    }

    /// The id of the entry at `index`, if it is in the log (or is the last compacted one).
    pub fn log_id_at(&self, index: LogIndex) -> Option<LogId> {
        self.log.log_id_at(index)
    }

    /// Payload bytes of the log held in memory (for status and metrics).
    pub fn log_cached_bytes(&self) -> u64 {
        self.log.cached_bytes()
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Status and per-peer progress.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit_index: self.log.committed,
            applied_index: self.log.applied,
            last_log_id: self.log.last_log_id(),
            persisted_index: self.log.persisted,
            first_index: self.log.first_index(),
            membership: self.membership().clone(),
            progress: self
                .leading
                .as_ref()
                .map(|l| l.progress.clone())
                .unwrap_or_default(),
        }
    }

    /// The hard state as it is now (persisted or about to be).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
            commit: self.log.committed,
        }
    }

    // ----- inputs -----

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.now_tick += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => {
                self.tick_election();
                self.resend_forwarded_reads();
            }
        }
    }

    /// Handles a message from a peer. Bad, stale or misdirected messages are dropped with a
    /// logged reason; nothing a peer sends can stop this server.
    pub fn step(&mut self, msg: Message) {
        if let Err(reason) = self.validate_message(&msg) {
            warn!(
                id = self.id,
                from = msg.from,
                kind = msg.body.name(),
                reason,
                "dropped message"
            );
            return;
        }
        if !self.handle_term(&msg) {
            return;
        }
        let Message {
            from, term, body, ..
        } = msg;
        match body {
            MessageBody::VoteRequest {
                last_log_id,
                pre_vote,
                transfer,
            } => self.handle_vote_request(from, term, last_log_id, pre_vote, transfer),
            MessageBody::VoteResponse { granted, pre_vote } => {
                self.handle_vote_response(from, term, granted, pre_vote)
            }
            MessageBody::AppendEntries {
                prev_log_id,
                entries,
                leader_commit,
                round,
            } => self.handle_append_entries(from, prev_log_id, entries, leader_commit, round),
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                conflict,
                round,
            } => self.handle_append_response(from, success, match_index, conflict, round),
            MessageBody::InstallSnapshot { meta } => self.handle_install_snapshot(from, meta),
            MessageBody::InstallSnapshotResponse {
                last_log_id,
                success,
            } => self.handle_install_snapshot_response(from, last_log_id, success),
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
            MessageBody::ReadIndexRequest { request_id } => {
                self.handle_read_index_request(from, request_id)
            }
            MessageBody::ReadIndexResponse {
                request_id,
                read_index,
            } => self.handle_read_index_response(from, request_id, read_index),
        }
    }

    /// Appends a client command (leader only). Returns the entry's id; the command is applied
    /// once that entry commits. If another entry ends up at that index, the command's outcome
    /// is unknown to this server.
    pub fn propose(&mut self, data: Bytes) -> Result<LogId, EngineError> {
        let ids = self.propose_batch(vec![data])?;
        Ok(ids)
    }

    /// Appends several commands at once; returns the id of the last one (they occupy
    /// consecutive indexes ending there).
    pub fn propose_batch(&mut self, batch: Vec<Bytes>) -> Result<LogId, EngineError> {
        self.check_can_propose(batch.len() as u64)?;
        if let Some(too_big) = batch
            .iter()
            .find(|d| d.len() as u64 > self.config.entry_bytes_max)
        {
            return Err(EngineError::EntryTooLarge(too_big.len() as u64));
        }
        let bytes: u64 = batch
            .iter()
            .map(|d| d.len() as u64 + crate::types::ENTRY_OVERHEAD_BYTES)
            .sum();
        self.check_bytes_room(bytes)?;
        let mut index = self.log.last_index();
        let entries = batch.into_iter().map(|data| {
            index += 1;
            Entry {
                term: self.term,
                index,
                kind: EntryKind::Normal,
                data,
            }
        });
        let entries: Vec<Entry> = entries.collect();
        self.append_as_leader(entries);
        Ok(self.log.last_log_id())
    }

    /// Back-pressure in bytes: what is uncommitted, and what the state machine has not
    /// applied yet, stay within their limits (one batch always fits when nothing waits).
    fn check_bytes_room(&self, bytes: u64) -> Result<(), EngineError> {
        let last = self.log.last_index();
        let uncommitted = self.log.bytes_between(self.log.committed, last);
        let unapplied = self.log.bytes_between(self.log.state_machine_applied, last);
        let over = |waiting: u64, max: u64| waiting > 0 && waiting + bytes > max;
        if over(uncommitted, self.config.uncommitted_bytes_max) {
            return Err(EngineError::BackpressureBytes(uncommitted));
        }
        if over(unapplied, self.config.unapplied_bytes_max) {
            return Err(EngineError::BackpressureBytes(unapplied));
        }
        Ok(())
    }

    fn check_can_propose(&self, count: u64) -> Result<(), EngineError> {
        if self.role != Role::Leader {
            return Err(EngineError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some((target, _)) = self.leading.as_ref().and_then(|l| l.transfer) {
            return Err(EngineError::TransferInProgress(target));
        }
        let uncommitted = self.log.last_index() - self.log.committed;
        if uncommitted + count > self.config.uncommitted_entries_max {
            return Err(EngineError::Backpressure(uncommitted));
        }
        Ok(())
    }

    /// Reports that everything the last [`Ready`] asked to persist is durable; `last` is the
    /// id of its last entry (or of its snapshot), `None` when it had neither. Stale reports
    /// (the entry was since replaced) move nothing. One `Ready`'s writes at a time: call
    /// this before taking the next `Ready`.
    pub fn on_persisted(&mut self, last: Option<LogId>) {
        self.hard_state_unsaved = false;
        self.snapshot_unsaved = false;
        let Some(last) = last else { return };
        if !self.log.matches(last) || last.index <= self.log.persisted {
            return;
        }
        self.log.persisted = last.index.min(self.log.last_index());
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Reports that the state machine applied everything handed out up to `index`.
    pub fn on_applied(&mut self, index: LogIndex) {
        self.snapshots.on_applied(index);
        let applied = index.min(self.log.applied);
        self.log.state_machine_applied = self.log.state_machine_applied.max(applied);
        self.log.evict(self.config.log_cache_bytes_max);
    }

    // ----- output -----

    /// Whether [`Engine::ready`] would return work.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
            || self.hard_state_dirty
            || self.leading.as_ref().is_some_and(|l| l.broadcast_pending)
            || self.log.unstable_from <= self.log.last_index()
            || self.log.applied < self.log.committed.min(self.log.persisted)
            || self.snapshot_due()
            || self.reads_pending_output()
    }

    /// Takes the accumulated work. See the module documentation for the order of its steps.
    pub fn ready(&mut self) -> Ready {
        self.flush_broadcast();
        if self.hard_state_dirty {
            self.ready.hard_state = Some(self.hard_state());
            self.hard_state_dirty = false;
            self.hard_state_unsaved = true;
            // Messages of a term whose hard state is not durable wait for it: a leader
            // elected by itself alone that crashed before its term was saved could win the
            // same term again and send other entries at the same indexes.
            let early = std::mem::take(&mut self.ready.messages);
            self.ready.persisted_messages.splice(0..0, early);
        }
        self.snapshot_unsaved |= self.ready.snapshot.is_some();
        self.ready.entries.extend(self.log.take_unstable());
        // With a snapshot in this Ready, these are applied after it is restored (step 4).
        let committed = self.hand_out_committed();
        self.ready.committed_entries.extend(committed);
        self.maybe_request_snapshot();
        self.log.check();
        self.check_leading();
        std::mem::take(&mut self.ready)
    }

    /// Takes only the messages that may be sent before anything is persisted. For runtimes
    /// that keep working while a persist is in flight. Returns nothing while a hard state is
    /// not durable yet (changed since the last `Ready`, or handed out in a `Ready` whose
    /// writes were not reported with [`Engine::on_persisted`]): those messages leave with a
    /// later `Ready`.
    pub fn take_messages(&mut self) -> Vec<Message> {
        if self.hard_state_dirty || self.hard_state_unsaved {
            return Vec::new();
        }
        self.flush_broadcast();
        std::mem::take(&mut self.ready.messages)
    }

    /// Takes only the entries that are ready to apply (step 4): committed, and durable here
    /// as reported through [`Engine::on_persisted`]. For runtimes that keep applying while a
    /// persist is in flight: a leader learns most commits from acknowledgements that arrive
    /// during its next write, and answering them need not wait for that write.
    /// Returns nothing while a received snapshot waits in the next `Ready`: entries after it
    /// are applied only once it is restored.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        debug_assert!(self.ready.committed_entries.is_empty());
        if self.ready.snapshot.is_some() {
            return Vec::new();
        }
        self.hand_out_committed()
    }

    /// Committed, durable entries not handed out yet (a bounded batch); marks them handed out.
    fn hand_out_committed(&mut self) -> Vec<Entry> {
        let apply_batch_max = self.config.entries_per_message_max * 4;
        let queue_bytes_max = self.config.apply_queue_bytes_max;
        let entries = self.log.take_committed(apply_batch_max, queue_bytes_max);
        self.log.evict(self.config.log_cache_bytes_max);
        // Every path that hands entries out for applying passes here, so the configuration
        // a snapshot at the applied index must record is always known.
        self.note_applied_configs(&entries);
        entries
    }

    // ----- shared helpers -----

    fn validate_message(&self, msg: &Message) -> Result<(), &'static str> {
        if msg.to != self.id {
            return Err("addressed to another server");
        }
        if msg.from == self.id || msg.from == 0 {
            return Err("bad sender id");
        }
        if let MessageBody::AppendEntries {
            prev_log_id,
            entries,
            ..
        } = &msg.body
        {
            let mut last = *prev_log_id;
            for entry in entries {
                if entry.index != last.index + 1 || entry.term < last.term || entry.term > msg.term
                {
                    return Err("entries are not a contiguous run following prev_log_id");
                }
                if entry.kind == EntryKind::Membership && Membership::decode(&entry.data).is_err() {
                    return Err("undecodable membership entry");
                }
                last = entry.log_id();
            }
        }
        Ok(())
    }

    /// Applies the term rules (paper section 5.1, thesis 4.2.3 and 9.6). Returns whether the
    /// message should be processed further.
    fn handle_term(&mut self, msg: &Message) -> bool {
        use MessageBody::*;
        if msg.term > self.term {
            match &msg.body {
                VoteRequest {
                    pre_vote, transfer, ..
                } => {
                    if !transfer && self.in_leader_lease() {
                        debug!(
                            id = self.id,
                            from = msg.from,
                            "vote request ignored: leader lease"
                        );
                        return false;
                    }
                    if *pre_vote {
                        return true; // A pre-vote never changes anyone's term.
                    }
                    self.become_follower(msg.term, None);
                }
                VoteResponse {
                    pre_vote: true,
                    granted: true,
                } => return true,
                AppendEntries { .. } | InstallSnapshot { .. } | TimeoutNow => {
                    self.become_follower(msg.term, Some(msg.from))
                }
                _ => self.become_follower(msg.term, None),
            }
            return true;
        }
        if msg.term < self.term {
            match &msg.body {
                // Tell a stale leader about the new term so it steps down (check-quorum and
                // pre-vote would otherwise leave it stuck, thesis 9.6).
                AppendEntries { .. } | InstallSnapshot { .. } => {
                    self.send_persisted(
                        msg.from,
                        MessageBody::AppendEntriesResponse {
                            success: false,
                            match_index: 0,
                            conflict: None,
                            round: 0,
                        },
                    );
                }
                VoteRequest { pre_vote, .. } => {
                    let pre_vote = *pre_vote;
                    self.send_persisted(
                        msg.from,
                        VoteResponse {
                            granted: false,
                            pre_vote,
                        },
                    );
                }
                _ => debug!(
                    id = self.id,
                    from = msg.from,
                    kind = msg.body.name(),
                    "stale term"
                ),
            }
            return false;
        }
        true
    }

    /// A leader is known and was heard from within the minimum election timeout. With lease
    /// reads on, a server that just started also counts as inside a lease for its first
    /// `election_ticks_min` ticks: before its restart it may have promised a leader not to vote
    /// for anyone else, and that promise is what the leader's lease relies on.
    fn in_leader_lease(&self) -> bool {
        let heard_from_leader =
            self.leader.is_some() && self.election_elapsed < self.config.election_ticks_min;
        let just_started = self.config.lease_read && self.now_tick < self.config.election_ticks_min;
        self.config.check_quorum && (heard_from_leader || just_started)
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        self.ready.messages.push(msg);
    }

    /// Whether everything up to `index` in the log is durable here: reported through
    /// [`Engine::on_persisted`], and no received snapshot below it is still being written.
    pub(super) fn durable_through(&self, index: LogIndex) -> bool {
        index <= self.log.persisted && !self.snapshot_unsaved && self.ready.snapshot.is_none()
    }

    fn send_persisted(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        self.ready.persisted_messages.push(msg);
    }

    fn set_hard_state(&mut self, term: Term, voted_for: Option<NodeId>) {
        if term != self.term || voted_for != self.voted_for {
            self.term = term;
            self.voted_for = voted_for;
            self.hard_state_dirty = true;
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.set_hard_state(term, None);
        }
        if self.role != Role::Follower || self.leader != leader {
            info!(id = self.id, term, ?leader, "following");
        }
        let leader_changed = self.leader != leader;
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.stop_leading();
        if leader_changed {
            self.fail_forwarded_reads();
        }
        self.reset_election_timer();
    }

    /// Drops everything only a leader has (no-op when not leading).
    fn stop_leading(&mut self) {
        if let Some(leading) = self.leading.take() {
            self.fail_leader_reads(leading.reads);
        }
    }

    /// The role and the leader-only state agree; a disagreement is a bug in the engine.
    fn check_leading(&self) {
        assert_eq!(
            self.role == Role::Leader,
            self.leading.is_some(),
            "node {}: role {:?} but leader state {}",
            self.id,
            self.role,
            if self.leading.is_some() {
                "present"
            } else {
                "absent"
            }
        );
    }

    /// The leader-only state; panics when not leading (a bug in the caller).
    fn leading(&self) -> &Leading {
        self.leading.as_ref().expect("called on a leader only")
    }

    /// The leader-only state, mutable; panics when not leading (a bug in the caller).
    fn leading_mut(&mut self) -> &mut Leading {
        self.leading.as_mut().expect("called on a leader only")
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let span = self.config.election_ticks_max - self.config.election_ticks_min;
        self.randomized_election_ticks = self.config.election_ticks_min + self.rng.below(span);
    }

    /// Whether this server may start an election: a voter of the effective (latest)
    /// configuration or of the committed one.
    ///
    /// The committed one matters while a change is pending: if the only servers holding the
    /// newest configuration entry are voters being removed by it, their longer logs refuse
    /// votes to everyone else, so they must be able to win (counting votes in their latest
    /// configuration, which keeps election safety) and finish the change. Found by simulation
    /// seed 1039: a leave-joint entry stranded on two outgoing voters deadlocked the cluster.
    fn promotable(&self) -> bool {
        self.membership().is_voter(self.id) || self.committed_membership.1.is_voter(self.id)
    }

    /// Recomputes the pending configurations from configuration entries in the log after the
    /// committed one (at start, after truncation or snapshot install).
    fn rebuild_configs_from_log(&mut self) {
        self.pending_configs.clear();
        let from = self.committed_membership.0.index + 1;
        let mut found: Vec<PendingConfig> = Vec::new();
        for entry in self.log.entries_from(from.max(self.log.first_index())) {
            if entry.kind == EntryKind::Membership {
                let membership = Membership::decode(&entry.data)
                    .unwrap_or_else(|e| panic!("membership entry {} in log: {e}", entry.log_id()));
                found.push(PendingConfig {
                    log_id: entry.log_id(),
                    membership,
                });
            }
        }
        self.pending_configs = found;
        self.advance_committed_membership();
    }

    /// Moves configurations that are now committed out of the pending list. A leader that is
    /// not part of a committed configuration steps down (thesis 4.2.2); a committed joint
    /// configuration is followed by the leave-joint entry.
    fn advance_committed_membership(&mut self) {
        let committed = self.log.committed;
        let mut changed = false;
        while self
            .pending_configs
            .first()
            .is_some_and(|p| p.log_id.index <= committed)
        {
            let p = self.pending_configs.remove(0);
            self.committed_membership = (p.log_id, p.membership);
            changed = true;
        }
        if changed && self.role == Role::Leader {
            self.on_membership_committed();
        }
    }
}

/// The engine's deterministic random number generator (SplitMix64): tiny, seedable, and good
/// enough for election jitter.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, bound)`; 0 when `bound` is 0.
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next() % bound
        }
    }
}

/// Voters of both halves of a configuration, for counting votes.
fn all_voters(m: &Membership) -> BTreeSet<NodeId> {
    m.voters.union(&m.voters_outgoing).copied().collect()
}

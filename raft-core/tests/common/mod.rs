//! A tiny deterministic harness that drives real engines through the node's own
//! [`Driver`](raft_core::driver::Driver): no clock, no threads, no randomness beyond the
//! engines' own seeded election jitter. Every write is made durable at once, and messages wait
//! in one outbox until a test delivers, drops or edits them, so a test can build exactly the
//! interleaving a rule of the paper talks about.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raft_core::driver::{ApplyWork, Driver, Work, WriteStep};
use raft_core::engine::{
    BuiltSnapshot, Config, Engine, EntryFetch, ReadState, RestoredState, Role, SnapshotRequest,
};
use raft_core::{
    Entry, EntryKind, HardState, LogId, LogIndex, Membership, Message, MessageBody, NodeId,
    SnapshotMeta, Term,
};

/// Deliveries per `deliver_all` call, at most: a livelock in the engine fails the test instead
/// of hanging it.
const DELIVERIES_MAX: usize = 100_000;

/// A small, fast configuration: election timeout in [10, 20) ticks, heartbeat every 2 ticks.
pub fn config() -> Config {
    Config {
        election_ticks_min: 10,
        election_ticks_max: 20,
        heartbeat_ticks: 2,
        replication_timeout_ticks: 6,
        random_seed: 7,
        ..Config::default()
    }
}

/// Normal entries `1..=terms.len()` with the given terms; the payload names index and term.
pub fn entries(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, term)| entry(*term, i as LogIndex + 1))
        .collect()
}

/// One normal entry whose payload names its position.
pub fn entry(term: Term, index: LogIndex) -> Entry {
    Entry::normal(term, index, Bytes::from(format!("t{term}i{index}")))
}

/// A restored state: `term`, no vote, the given log from index 1, voters `voters`.
pub fn restored(term: Term, voters: &[NodeId], log: Vec<Entry>) -> RestoredState {
    RestoredState {
        hard_state: HardState {
            term,
            voted_for: None,
            commit: 0,
        },
        snapshot: None,
        purged: LogId::ZERO,
        entries: log,
        initial_membership: Membership::new_voters(voters.iter().copied()),
    }
}

/// Metadata of a snapshot ending at `last` with the given voters (size and checksum unset).
pub fn snapshot_meta(last: LogId, voters: &[NodeId]) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: last,
        membership: Membership::new_voters(voters.iter().copied()),
        membership_log_id: LogId::ZERO,
        size_bytes: 0,
        crc32: 0,
        created_unix_ms: 0,
    }
}

/// Builds a message.
pub fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// An AppendEntries message.
pub fn append(
    from: NodeId,
    to: NodeId,
    term: Term,
    prev: LogId,
    entries: Vec<Entry>,
    leader_commit: LogIndex,
) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::AppendEntries {
            prev_log_id: prev,
            entries,
            leader_commit,
            round: 0,
        },
    )
}

/// A real (not pre-) vote request.
pub fn vote_request(from: NodeId, to: NodeId, term: Term, last: LogId) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::VoteRequest {
            last_log_id: last,
            pre_vote: false,
            transfer: false,
        },
    )
}

/// Whether `m` is an AppendEntries (with or without entries).
pub fn is_append(m: &Message) -> bool {
    matches!(m.body, MessageBody::AppendEntries { .. })
}

/// The entries an AppendEntries carries (empty for anything else).
pub fn append_entries_of(m: &Message) -> &[Entry] {
    match &m.body {
        MessageBody::AppendEntries { entries, .. } => entries,
        _ => &[],
    }
}

/// Whether `m` is a vote or pre-vote request.
pub fn is_vote_request(m: &Message) -> bool {
    matches!(m.body, MessageBody::VoteRequest { .. })
}

/// One server: its engine and what the harness made "durable" or "applied" for it.
#[derive(Debug)]
pub struct Node {
    pub driver: Driver,
    pub hard_state: HardState,
    /// Durable entries after `purged`.
    pub log: Vec<Entry>,
    pub purged: LogId,
    pub snapshot: Option<SnapshotMeta>,
    /// Every entry handed out for applying, in order (a snapshot install resets nothing here;
    /// see `installed`).
    pub applied: Vec<Entry>,
    /// The id of the last entry the "state machine" reflects (applied or installed).
    pub applied_id: LogId,
    /// Snapshots installed from a leader.
    pub installed: Vec<SnapshotMeta>,
    /// Every entry handed out for appending (the pre-commit hook), in order.
    pub appended: Vec<Entry>,
    /// Every entry reported for the rollback hook.
    pub rolled_back: Vec<Entry>,
    /// Every `truncate_from` the engine asked for.
    pub truncations: Vec<LogIndex>,
    /// Every hard state the engine asked to persist, in order.
    pub hard_states: Vec<HardState>,
    pub read_states: Vec<ReadState>,
    pub failed_reads: Vec<u64>,
    /// Every snapshot the engine asked for, with the id of the last entry the state machine
    /// had applied when it asked.
    pub snapshot_requests: Vec<(SnapshotRequest, LogId)>,
    /// Peers the engine asked to send a snapshot to.
    pub snapshot_sends: Vec<NodeId>,
    /// Every read of entries back from the log the engine asked for.
    pub fetches: Vec<EntryFetch>,
}

/// A set of engines and one outbox of messages in flight.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    /// Messages sent and not yet delivered or dropped, in the order they were sent.
    pub outbox: Vec<Message>,
    /// Directed links that lose every message: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Build requested snapshots at once and report them built.
    pub auto_build_snapshots: bool,
    /// Transfer requested snapshots at once (as an InstallSnapshot in the outbox).
    pub auto_send_snapshots: bool,
    /// Every message delivered so far, in order.
    pub history: Vec<Message>,
}

impl Cluster {
    /// A fresh cluster of voters `1..=n` with [`config`].
    pub fn new(n: u64) -> Self {
        Self::with_config(n, config())
    }

    /// A fresh cluster of voters `1..=n`.
    pub fn with_config(n: u64, config: Config) -> Self {
        let voters: Vec<NodeId> = (1..=n).collect();
        let states = voters
            .iter()
            .map(|id| (*id, restored(0, &voters, Vec::new())))
            .collect();
        Self::from_states(config, states)
    }

    /// Servers restored from the given states (to build any log shape a test needs).
    pub fn from_states(config: Config, states: Vec<(NodeId, RestoredState)>) -> Self {
        let mut nodes = BTreeMap::new();
        for (id, state) in states {
            nodes.insert(id, Node::new(id, config.clone(), state));
        }
        Cluster {
            nodes,
            outbox: Vec::new(),
            blocked: BTreeSet::new(),
            auto_build_snapshots: true,
            auto_send_snapshots: true,
            history: Vec::new(),
        }
    }

    /// Adds a server that waits to be added (empty configuration).
    pub fn add_empty_node(&mut self, id: NodeId, config: Config) {
        let state = RestoredState {
            initial_membership: Membership::default(),
            ..RestoredState::default()
        };
        self.nodes.insert(id, Node::new(id, config, state));
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn engine(&self, id: NodeId) -> &Engine {
        self.nodes[&id].driver.engine()
    }

    pub fn engine_mut(&mut self, id: NodeId) -> &mut Engine {
        self.nodes
            .get_mut(&id)
            .expect("known node")
            .driver
            .engine_mut()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    pub fn role(&self, id: NodeId) -> Role {
        self.engine(id).role()
    }

    pub fn term(&self, id: NodeId) -> Term {
        self.engine(id).term()
    }

    pub fn commit(&self, id: NodeId) -> LogIndex {
        self.engine(id).commit_index()
    }

    /// The leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .map(|n| n.driver.engine())
            .filter(|e| e.role() == Role::Leader)
            .max_by_key(|e| e.term())
            .map(|e| e.id())
    }

    /// Runs the Ready loop of `id` until it has nothing left, moving messages to the outbox.
    pub fn process(&mut self, id: NodeId) {
        let (auto_build, auto_send) = (self.auto_build_snapshots, self.auto_send_snapshots);
        let node = self.nodes.get_mut(&id).expect("known node");
        let out = node.process(auto_build, auto_send);
        self.outbox.extend(out);
    }

    pub fn process_all(&mut self) {
        for id in self.ids() {
            self.process(id);
        }
    }

    /// One tick on `id`, then its Ready loop.
    pub fn tick(&mut self, id: NodeId) {
        self.engine_mut(id).tick();
        self.process(id);
    }

    /// `n` ticks on `id`.
    pub fn tick_n(&mut self, id: NodeId, n: u64) {
        for _ in 0..n {
            self.tick(id);
        }
    }

    /// One tick on every server.
    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
    }

    /// Delivers one message (unless its link is blocked or the receiver is unknown), then runs
    /// the receiver's Ready loop.
    pub fn deliver(&mut self, m: Message) {
        if self.blocked.contains(&(m.from, m.to)) || !self.nodes.contains_key(&m.to) {
            return;
        }
        let to = m.to;
        self.history.push(m.clone());
        self.engine_mut(to).step(m);
        self.process(to);
    }

    /// Delivers every message, including the ones that deliveries produce, until none is left.
    pub fn deliver_all(&mut self) {
        let mut count = 0;
        while !self.outbox.is_empty() {
            let batch = std::mem::take(&mut self.outbox);
            for m in batch {
                count += 1;
                assert!(count < DELIVERIES_MAX, "messages never stop: livelock");
                self.deliver(m);
            }
        }
    }

    /// Removes and returns the messages matching `pred`, keeping the others in order.
    pub fn take(&mut self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (taken, kept) = std::mem::take(&mut self.outbox)
            .into_iter()
            .partition(|m| pred(m));
        self.outbox = kept;
        taken
    }

    /// Delivers the messages matching `pred` that are in the outbox now (not the answers they
    /// produce). Returns how many were delivered.
    pub fn deliver_matching(&mut self, pred: impl Fn(&Message) -> bool) -> usize {
        let taken = self.take(pred);
        let n = taken.len();
        for m in taken {
            self.deliver(m);
        }
        n
    }

    /// Drops every message in flight.
    pub fn drop_all(&mut self) {
        self.outbox.clear();
    }

    /// Cuts `id` off from every other server, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Ticks `id` alone until it sends vote (or pre-vote) requests.
    pub fn tick_until_campaign(&mut self, id: NodeId) {
        let limit = self.engine(id).config().election_ticks_max * 2;
        for _ in 0..limit {
            self.tick(id);
            if self
                .outbox
                .iter()
                .any(|m| m.from == id && is_vote_request(m))
            {
                return;
            }
        }
        panic!("{id} never campaigned");
    }

    /// Ticks `id` alone until it campaigns, then delivers everything. Returns its role.
    pub fn campaign(&mut self, id: NodeId) -> Role {
        self.tick_until_campaign(id);
        self.deliver_all();
        self.role(id)
    }

    /// Ticks `id` alone until it campaigns, then delivers only vote traffic, so that the new
    /// leader's first AppendEntries stay in the outbox. Returns its role.
    pub fn campaign_votes_only(&mut self, id: NodeId) -> Role {
        self.tick_until_campaign(id);
        let is_vote = |m: &Message| {
            matches!(
                m.body,
                MessageBody::VoteRequest { .. } | MessageBody::VoteResponse { .. }
            )
        };
        while self.deliver_matching(is_vote) > 0 {}
        self.role(id)
    }

    /// Makes `id` the leader by letting its election timer run out, and replicates its no-op.
    pub fn elect(&mut self, id: NodeId) {
        let role = self.campaign(id);
        assert_eq!(role, Role::Leader, "{id} did not win the election");
        self.deliver_all();
    }

    /// Lets the followers' memory of a leader fade (leader stickiness) by ticking them for an
    /// election timeout while dropping whatever they send.
    pub fn forget_leader(&mut self, ids: &[NodeId]) {
        for &id in ids {
            let n = self.engine(id).config().election_ticks_min;
            for _ in 0..n {
                self.tick(id);
                self.outbox.retain(|m| m.from != id);
            }
        }
    }

    /// Proposes a command on `id` and runs its Ready loop.
    pub fn propose(&mut self, id: NodeId, data: &str) -> LogId {
        let log_id = self
            .engine_mut(id)
            .propose(Bytes::from(data.to_owned()))
            .expect("proposal accepted");
        self.process(id);
        log_id
    }

    /// `n` rounds of: one tick on every server, then deliver everything.
    pub fn run(&mut self, n: u64) {
        for _ in 0..n {
            self.tick_all();
            self.deliver_all();
        }
    }
}

impl Node {
    fn new(id: NodeId, config: Config, state: RestoredState) -> Self {
        let hard_state = state.hard_state;
        let log = state.entries.clone();
        let purged = state.purged;
        let snapshot = state.snapshot.clone();
        let applied_id = snapshot.as_ref().map_or(purged, |s| s.last_log_id);
        let engine = Engine::new(id, config, state).expect("valid engine config");
        Node {
            applied_id,
            driver: Driver::new(engine, true),
            hard_state,
            log,
            purged,
            snapshot,
            applied: Vec::new(),
            installed: Vec::new(),
            appended: Vec::new(),
            rolled_back: Vec::new(),
            truncations: Vec::new(),
            hard_states: Vec::new(),
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            snapshot_requests: Vec::new(),
            snapshot_sends: Vec::new(),
            fetches: Vec::new(),
        }
    }

    /// The last durable log id.
    pub fn last_durable(&self) -> LogId {
        self.log.last().map(Entry::log_id).unwrap_or(self.purged)
    }

    /// Applied entries of kind Normal, as strings.
    pub fn applied_payloads(&self) -> Vec<String> {
        self.applied
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect()
    }

    /// Runs the node's driver until it has nothing left, carrying out its work at once (every
    /// write durable immediately); returns the messages to send.
    fn process(&mut self, auto_build: bool, auto_send: bool) -> Vec<Message> {
        let mut out = Vec::new();
        for _ in 0..1_000 {
            let work = self.driver.poll();
            if work.is_empty() {
                return out;
            }
            self.carry_out(work, &mut out, auto_build, auto_send);
        }
        panic!("the driver never runs out of work");
    }

    /// Carries out the driver's work in its documented order.
    fn carry_out(&mut self, work: Work, out: &mut Vec<Message>, auto_build: bool, auto_send: bool) {
        out.extend(work.messages);
        for fetch in work.fetches {
            let entries = self.read_back(fetch.low, fetch.high);
            self.fetches.push(fetch);
            self.driver.engine_mut().on_entries_fetched(fetch, entries);
        }
        for item in work.apply {
            self.apply(item, auto_build);
        }
        self.read_states.extend(work.read_states);
        self.failed_reads.extend(work.failed_reads);
        for peer in work.send_snapshots {
            self.snapshot_sends.push(peer);
            if auto_send {
                let meta = self.snapshot.clone().expect("a snapshot to send");
                let engine = self.driver.engine();
                let (from, term) = (engine.id(), engine.term());
                out.push(msg(from, peer, term, MessageBody::InstallSnapshot { meta }));
                self.driver.engine_mut().on_snapshot_sent(peer, true);
            }
        }
        if let Some(write) = work.write {
            for step in write.steps {
                self.persist(step);
            }
            let after = self.driver.write_done();
            self.carry_out(after, out, auto_build, auto_send);
        }
    }

    /// The state machine's side of the work (applied at once).
    fn apply(&mut self, item: ApplyWork, auto_build: bool) {
        match item {
            ApplyWork::Restore(meta) => {
                self.applied_id = meta.last_log_id;
                self.snapshot = Some(meta.clone());
                self.installed.push(meta);
            }
            ApplyWork::Entries(entries) => {
                let last = entries.last().expect("a batch is never empty").log_id();
                self.applied_id = last;
                self.applied.extend(entries);
                self.driver.engine_mut().on_applied(last.index);
            }
            ApplyWork::BuildSnapshot(request) => {
                self.snapshot_requests
                    .push((request.clone(), self.applied_id));
                if auto_build {
                    self.snapshot = Some(request.to_meta());
                    self.driver
                        .engine_mut()
                        .on_snapshot_built(Some(BuiltSnapshot {
                            last_log_id: request.last_log_id,
                            size_bytes: 0,
                        }));
                }
            }
            ApplyWork::PreCommit(entries) => self.appended.extend(entries),
            ApplyWork::Rollback(entries) => self.rolled_back.extend(entries),
        }
    }

    /// Entries `[low, high)` from the durable log, if it holds them all.
    fn read_back(&self, low: LogIndex, high: LogIndex) -> Option<Vec<Entry>> {
        let first = self.purged.index + 1;
        if low < first || high > self.last_durable().index + 1 || low >= high {
            return None;
        }
        let from = (low - first) as usize;
        Some(self.log[from..from + (high - low) as usize].to_vec())
    }

    /// One write step, durable at once.
    fn persist(&mut self, step: WriteStep) {
        match step {
            WriteStep::Truncate(from) => {
                self.truncations.push(from);
                let keep = from.saturating_sub(self.purged.index + 1) as usize;
                self.log.truncate(keep);
            }
            WriteStep::Purge(upto) => {
                let snap = self.snapshot.as_ref().map_or(0, |s| s.last_log_id.index);
                assert!(upto.index <= snap, "purge beyond the durable snapshot");
                if upto.index > self.purged.index {
                    let drop = ((upto.index - self.purged.index) as usize).min(self.log.len());
                    self.log.drain(..drop);
                    self.purged = upto;
                }
            }
            WriteStep::SaveHardState(hs) => {
                self.hard_state = hs;
                self.hard_states.push(hs);
            }
            WriteStep::Append(entries) => {
                for e in entries {
                    assert_eq!(
                        e.index,
                        self.last_durable().index + 1,
                        "the driver asked for an append with a hole"
                    );
                    self.log.push(e);
                }
            }
        }
    }
}

//! A deterministic simulated cluster that drives real engines through the node's own
//! [`Driver`](raft_core::driver::Driver): a network that loses,
//! duplicates, delays and reorders messages and can be partitioned (also asymmetrically);
//! disks whose writes become durable only after a delay and are lost on a crash; a key-value
//! state machine per node; and invariant checks after every step.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raft_core::driver::{ApplyWork, Driver, Work, Write, WriteStep};
use raft_core::engine::{BuiltSnapshot, Config, Engine, RestoredState, Role};
use raft_core::{
    Entry, EntryKind, HardState, LogId, LogIndex, Membership, Message, NodeId, SnapshotMeta,
};

pub use super::rng::Rng;

// ---------------------------------------------------------------------------------------------
// The key-value state machine
// ---------------------------------------------------------------------------------------------

pub use crate::command::Command;

/// The state machine: a map plus the id of the last applied entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    pub map: BTreeMap<u64, u64>,
    pub applied: LogId,
}

impl Kv {
    /// Applies an entry; returns the CAS outcome for CAS commands.
    pub fn apply(&mut self, entry: &Entry) -> Option<bool> {
        assert_eq!(entry.index, self.applied.index + 1, "apply out of order");
        self.applied = entry.log_id();
        if entry.kind != EntryKind::Normal {
            return None;
        }
        match Command::decode(&entry.data) {
            Command::Put { key, value } => {
                self.map.insert(key, value);
                None
            }
            Command::Cas { key, expected, new } => {
                let ok = self.map.get(&key).copied() == expected;
                if ok {
                    self.map.insert(key, new);
                }
                Some(ok)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Disks and nodes
// ---------------------------------------------------------------------------------------------

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub purged: LogId,
    pub entries: Vec<Entry>,
    pub snapshot: Option<(SnapshotMeta, Kv)>,
}

impl Disk {
    fn last_index(&self) -> LogIndex {
        self.purged.index + self.entries.len() as u64
    }

    fn truncate(&mut self, from: LogIndex) {
        if from <= self.last_index() {
            assert!(from > self.purged.index, "truncate into the purged prefix");
            self.entries
                .truncate((from - self.purged.index - 1) as usize);
        }
    }

    fn append(&mut self, entries: &[Entry]) {
        for e in entries {
            assert_eq!(
                e.index,
                self.last_index() + 1,
                "disk append leaves a hole: purged {} snapshot {:?}",
                self.purged,
                self.snapshot.as_ref().map(|(m, _)| m.last_log_id)
            );
            self.entries.push(e.clone());
        }
    }

    /// What the node runtime does at start after a crash between publishing a snapshot and
    /// purging the log: keep the log only if it continues the snapshot.
    fn align_with_snapshot(&mut self) {
        let Some((meta, _)) = &self.snapshot else {
            return;
        };
        let snap = meta.last_log_id;
        if snap.index <= self.purged.index {
            return;
        }
        let continues = self.entries.iter().any(|e| e.log_id() == snap);
        if !continues {
            self.entries.clear();
            self.purged = snap;
        }
    }

    /// Entries `[low, high)` if the disk holds them all.
    fn read_back(&self, low: LogIndex, high: LogIndex) -> Option<Vec<Entry>> {
        let first = self.purged.index + 1;
        if low < first || high > self.last_index() + 1 || low >= high {
            return None;
        }
        let from = (low - first) as usize;
        Some(self.entries[from..from + (high - low) as usize].to_vec())
    }

    /// One write step, durable now. A purge never goes past the durable snapshot.
    fn persist(&mut self, step: WriteStep) {
        match step {
            WriteStep::Truncate(from) => self.truncate(from),
            WriteStep::Purge(upto) => {
                let snap = self
                    .snapshot
                    .as_ref()
                    .map_or(0, |(m, _)| m.last_log_id.index);
                assert!(
                    upto.index <= snap,
                    "purging {upto} beyond the durable snapshot {snap}"
                );
                self.purge(upto);
            }
            WriteStep::SaveHardState(hs) => self.hard_state = hs,
            WriteStep::Append(entries) => self.append(&entries),
        }
    }

    fn purge(&mut self, upto: LogId) {
        if upto.index <= self.purged.index {
            return;
        }
        let drop = ((upto.index - self.purged.index) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.purged = upto;
    }
}

/// A write in flight and the step at which it becomes durable.
#[derive(Debug)]
struct PendingWrite {
    due_step: u64,
    write: Write,
}

/// A client operation waiting for its entry to be applied on a node.
#[derive(Clone, Copy, Debug)]
pub struct WaitingWrite {
    pub op: usize,
    pub log_id: LogId,
}

pub struct SimNode {
    pub id: NodeId,
    pub driver: Option<Driver>,
    pub disk: Disk,
    pub kv: Kv,
    write: Option<PendingWrite>,
    /// Received snapshot data waiting for its InstallSnapshot message.
    staged_snapshots: BTreeMap<LogId, Kv>,
    /// Reads whose index is known: (read id, index).
    pub read_states: Vec<(u64, LogIndex)>,
    pub failed_reads: Vec<u64>,
    /// Results of applied entries for client bookkeeping: index -> (term, cas outcome).
    pub applied_results: BTreeMap<LogIndex, (u64, Option<bool>)>,
    /// Highest commit index seen in this incarnation (monotonic commit check).
    commit_seen: LogIndex,
    pub initial_membership: Membership,
}

impl SimNode {
    pub fn is_up(&self) -> bool {
        self.driver.is_some()
    }
    pub fn engine(&self) -> &Engine {
        self.driver.as_ref().expect("node is up").engine()
    }
    fn engine_opt(&self) -> Option<&Engine> {
        self.driver.as_ref().map(Driver::engine)
    }
    fn engine_mut(&mut self) -> &mut Engine {
        self.driver.as_mut().expect("node is up").engine_mut()
    }
}

/// Network and fault knobs, in per-mille.
#[derive(Clone, Debug)]
pub struct Faults {
    pub loss: u64,
    pub duplicate: u64,
    pub delay_steps_max: u64,
    pub persist_delay_steps_max: u64,
    /// Probability that a node's clock skips a tick in a step (clock skew).
    pub tick_skip: u64,
    /// Probability that a write is torn by a crash part way through its steps.
    pub torn_write: u64,
}

impl Faults {
    pub fn none() -> Self {
        Faults {
            loss: 0,
            duplicate: 0,
            delay_steps_max: 1,
            persist_delay_steps_max: 0,
            tick_skip: 0,
            torn_write: 0,
        }
    }
}

#[derive(Clone, Debug)]
struct InFlight {
    deliver_at: u64,
    msg: Message,
    /// Snapshot data travelling with an InstallSnapshot.
    snapshot: Option<Kv>,
}

/// Counters for the summary line.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub steps: u64,
    pub messages: u64,
    pub elections: u64,
    pub crashes: u64,
    pub snapshots_installed: u64,
    pub snapshots_built: u64,
    pub config_changes: u64,
    pub transfers: u64,
    pub torn_writes: u64,
    pub fetches: u64,
    pub ops_completed: u64,
    pub ops_unknown: u64,
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, SimNode>,
    pub config: Config,
    pub faults: Faults,
    pub rng: Rng,
    pub step_no: u64,
    network: Vec<InFlight>,
    /// Directed links that drop everything: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    pub stats: Stats,
    // ---- global knowledge for the invariants ----
    /// term -> the leader elected in it.
    leaders_by_term: BTreeMap<u64, NodeId>,
    /// index -> id of the committed entry there (as far as any node knows).
    committed: BTreeMap<LogIndex, LogId>,
    /// index -> id of the entry applied there by any node.
    applied: BTreeMap<LogIndex, LogId>,
    /// (index, term) -> (term at index - 1, payload) for log matching.
    seen_entries: BTreeMap<(LogIndex, u64), (Option<u64>, Bytes)>,
}

impl Cluster {
    /// A cluster of `voters` initial voters plus `spares` servers that start outside the
    /// configuration (they can be added later).
    pub fn new(seed: u64, voters: u64, spares: u64, config: Config, faults: Faults) -> Self {
        let initial = Membership::new_voters(1..=voters);
        let mut nodes = BTreeMap::new();
        for id in 1..=voters + spares {
            let membership = if id <= voters {
                initial.clone()
            } else {
                Membership::default()
            };
            let node = SimNode {
                id,
                driver: None,
                disk: Disk::default(),
                kv: Kv::default(),
                write: None,
                staged_snapshots: BTreeMap::new(),
                read_states: Vec::new(),
                failed_reads: Vec::new(),
                applied_results: BTreeMap::new(),
                commit_seen: 0,
                initial_membership: membership,
            };
            nodes.insert(id, node);
        }
        let mut cluster = Cluster {
            nodes,
            config: Config {
                random_seed: seed,
                ..config
            },
            faults,
            rng: Rng::new(seed),
            step_no: 0,
            network: Vec::new(),
            blocked: BTreeSet::new(),
            stats: Stats::default(),
            leaders_by_term: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            seen_entries: BTreeMap::new(),
        };
        let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
        for id in ids {
            cluster.start(id);
        }
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect()
    }

    /// The leader with the highest term among live nodes.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(SimNode::engine_opt)
            .filter(|e| e.role() == Role::Leader)
            .max_by_key(|e| e.term())
            .map(|e| e.id())
    }

    /// The engine of a node that is up.
    pub fn engine_mut(&mut self, id: NodeId) -> &mut Engine {
        self.nodes.get_mut(&id).unwrap().engine_mut()
    }

    /// Starts (or restarts) a node from its disk.
    pub fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(node.driver.is_none());
        node.disk.align_with_snapshot();
        let restored = RestoredState {
            hard_state: node.disk.hard_state,
            snapshot: node.disk.snapshot.as_ref().map(|(m, _)| m.clone()),
            purged: node.disk.purged,
            entries: node.disk.entries.clone(),
            initial_membership: node.initial_membership.clone(),
        };
        node.kv = node
            .disk
            .snapshot
            .as_ref()
            .map(|(_, kv)| kv.clone())
            .unwrap_or_default();
        let engine = Engine::new(id, self.config.clone(), restored).expect("valid config");
        node.driver = Some(Driver::new(engine, false));
        node.commit_seen = 0;
        node.applied_results.clear();
    }

    /// Crashes a node: its engine, pending writes and in-memory state are gone.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.driver = None;
        node.write = None;
        node.staged_snapshots.clear();
        node.read_states.clear();
        node.failed_reads.clear();
        self.stats.crashes += 1;
    }

    /// One step of simulated time: tick clocks, deliver messages, complete writes, process
    /// output, check invariants.
    pub fn step(&mut self) {
        self.step_no += 1;
        self.stats.steps += 1;
        for id in self.up_ids() {
            if !self.rng.chance(self.faults.tick_skip) {
                self.engine_mut(id).tick();
            }
        }
        self.deliver_messages();
        self.complete_writes();
        for id in self.up_ids() {
            self.process_ready(id);
        }
        self.check_invariants();
    }

    fn deliver_messages(&mut self) {
        let now = self.step_no;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.network.len() {
            if self.network[i].deliver_at <= now {
                due.push(self.network.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // Reordering: deliver in a random order.
        for k in (1..due.len()).rev() {
            let j = self.rng.below(k as u64 + 1) as usize;
            due.swap(k, j);
        }
        for flight in due {
            self.deliver(flight);
        }
    }

    fn deliver(&mut self, flight: InFlight) {
        let to = flight.msg.to;
        let Some(node) = self.nodes.get_mut(&to) else {
            return;
        };
        let Some(driver) = node.driver.as_mut() else {
            return;
        };
        if let Some(kv) = flight.snapshot {
            node.staged_snapshots.insert(kv.applied, kv);
        }
        self.stats.messages += 1;
        driver.engine_mut().step(flight.msg);
    }

    fn send(&mut self, msg: Message, snapshot: Option<Kv>) {
        if self.blocked.contains(&(msg.from, msg.to)) || self.rng.chance(self.faults.loss) {
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.faults.delay_steps_max);
            let flight = InFlight {
                deliver_at: self.step_no + delay,
                msg: msg.clone(),
                snapshot: snapshot.clone(),
            };
            self.network.push(flight);
        }
    }

    /// Runs the node's driver: messages leave and committed entries are applied now, a write
    /// waits for the disk.
    pub fn process_ready(&mut self, id: NodeId) {
        loop {
            let node = self.nodes.get_mut(&id).unwrap();
            let Some(driver) = node.driver.as_mut() else {
                return;
            };
            let work = driver.poll();
            if work.is_empty() {
                return;
            }
            let Some(write) = self.carry_out(id, work) else {
                continue;
            };
            let delay = self.rng.below(self.faults.persist_delay_steps_max + 1);
            let node = self.nodes.get_mut(&id).unwrap();
            let due_step = self.step_no + delay;
            node.write = Some(PendingWrite { due_step, write });
            if delay > 0 {
                return; // Whatever comes meanwhile waits for this write (group commit).
            }
            self.complete_write(id);
        }
    }

    fn complete_writes(&mut self) {
        for id in self.up_ids() {
            if self.nodes[&id].is_up() {
                self.complete_write(id);
            }
        }
    }

    /// Makes the node's write durable if it is due, and carries out what waited for it. A
    /// torn write crashes the node after a prefix of its steps (and of an append's entries).
    fn complete_write(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        if node
            .write
            .as_ref()
            .is_none_or(|w| w.due_step > self.step_no)
        {
            return;
        }
        let write = node.write.take().unwrap().write;
        let torn = self.rng.chance(self.faults.torn_write);
        let steps_done = if torn {
            self.rng.below(write.steps.len() as u64 + 1) as usize
        } else {
            write.steps.len()
        };
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!(
                "step {} node {id}: {:?} torn {torn}/{steps_done}",
                self.step_no, write.steps
            );
        }
        let mut steps = write.steps.into_iter();
        for step in steps.by_ref().take(steps_done) {
            self.nodes.get_mut(&id).unwrap().disk.persist(step);
        }
        if torn {
            if let Some(WriteStep::Append(entries)) = steps.next() {
                let keep = self.rng.below(entries.len() as u64 + 1) as usize;
                let partial = WriteStep::Append(entries[..keep].to_vec());
                self.nodes.get_mut(&id).unwrap().disk.persist(partial);
            }
            self.stats.torn_writes += 1;
            self.crash(id);
            return;
        }
        let work = self
            .nodes
            .get_mut(&id)
            .unwrap()
            .driver
            .as_mut()
            .unwrap()
            .write_done();
        let more = self.carry_out(id, work);
        assert!(more.is_none(), "the work after a write holds no write");
    }

    /// Carries out the driver's work in its documented order; returns the write to start.
    fn carry_out(&mut self, id: NodeId, work: Work) -> Option<Write> {
        for msg in work.messages {
            self.send(msg, None);
        }
        for fetch in work.fetches {
            // Read back from the durable log (what a real store would answer), or fail.
            let node = self.nodes.get_mut(&id).unwrap();
            let entries = node.disk.read_back(fetch.low, fetch.high);
            self.stats.fetches += 1;
            node.engine_mut().on_entries_fetched(fetch, entries);
        }
        for item in work.apply {
            self.apply_work(id, item);
        }
        let node = self.nodes.get_mut(&id).unwrap();
        node.read_states
            .extend(work.read_states.iter().map(|r| (r.id, r.index)));
        node.failed_reads.extend(work.failed_reads);
        for peer in work.send_snapshots {
            self.send_snapshot(id, peer);
        }
        work.write
    }

    /// The state machine's side of the work.
    fn apply_work(&mut self, id: NodeId, item: ApplyWork) {
        match item {
            ApplyWork::Restore(meta) => {
                let node = self.nodes.get_mut(&id).unwrap();
                let kv = node
                    .staged_snapshots
                    .remove(&meta.last_log_id)
                    .unwrap_or_else(|| {
                        panic!(
                            "node {id}: snapshot {} was never received",
                            meta.last_log_id
                        )
                    });
                assert_eq!(
                    kv.applied, meta.last_log_id,
                    "snapshot data labelled differently"
                );
                // A received snapshot is published (durable) before the node installs it.
                node.disk.snapshot = Some((meta, kv.clone()));
                node.kv = kv;
                self.stats.snapshots_installed += 1;
            }
            ApplyWork::Entries(entries) => self.apply(id, &entries),
            ApplyWork::BuildSnapshot(request) => {
                let node = self.nodes.get_mut(&id).unwrap();
                assert_eq!(
                    node.kv.applied, request.last_log_id,
                    "snapshot label differs from the state"
                );
                node.disk.snapshot = Some((request.to_meta(), node.kv.clone()));
                // Two u64 per pair: the size the next trigger's log ratio is measured against.
                let size_bytes = 16 * node.kv.map.len() as u64;
                node.engine_mut().on_snapshot_built(Some(BuiltSnapshot {
                    last_log_id: request.last_log_id,
                    size_bytes,
                }));
                self.stats.snapshots_built += 1;
            }
            ApplyWork::PreCommit(_) | ApplyWork::Rollback(_) => {}
        }
    }

    fn send_snapshot(&mut self, from: NodeId, to: NodeId) {
        let node = &self.nodes[&from];
        let Some((meta, kv)) = node.disk.snapshot.clone() else {
            panic!("node {from} asked to send a snapshot it does not have");
        };
        let term = node.engine().term();
        let msg = Message {
            from,
            to,
            term,
            body: raft_core::MessageBody::InstallSnapshot { meta },
        };
        let lost = self.blocked.contains(&(from, to)) || self.rng.chance(self.faults.loss);
        if !lost {
            self.send(msg, Some(kv));
        }
        self.engine_mut(from).on_snapshot_sent(to, !lost);
    }

    fn apply(&mut self, id: NodeId, entries: &[Entry]) {
        let node = self.nodes.get_mut(&id).unwrap();
        for entry in entries {
            let outcome = node.kv.apply(entry);
            node.applied_results
                .insert(entry.index, (entry.term, outcome));
            // State machine safety (paper Figure 3): no two servers apply different entries at
            // the same index.
            match self.applied.get(&entry.index) {
                Some(other) => assert_eq!(
                    *other,
                    entry.log_id(),
                    "state machine safety: node {id} applied {} where another applied {other}",
                    entry.log_id()
                ),
                None => {
                    self.applied.insert(entry.index, entry.log_id());
                }
            }
        }
        if let Some(last) = entries.last() {
            node.engine_mut().on_applied(last.index);
        }
    }

    /// Election safety, log matching, leader completeness, monotonic commit and durability of
    /// committed entries. Panics with details on a violation.
    pub fn check_invariants(&mut self) {
        for id in self.up_ids() {
            let engine = self.nodes[&id].engine();
            let (term, role, commit) = (engine.term(), engine.role(), engine.commit_index());
            // Election safety (paper Figure 3): at most one leader per term.
            if role == Role::Leader {
                match self.leaders_by_term.get(&term) {
                    Some(other) if *other != id => {
                        panic!("election safety: nodes {other} and {id} both lead term {term}")
                    }
                    Some(_) => {}
                    None => {
                        self.leaders_by_term.insert(term, id);
                        self.stats.elections += 1;
                        self.check_leader_completeness(id);
                    }
                }
            }
            // Monotonic commit within one incarnation.
            let node = self.nodes.get_mut(&id).unwrap();
            assert!(
                commit >= node.commit_seen,
                "node {id}: commit went back from {} to {commit}",
                node.commit_seen
            );
            node.commit_seen = commit;
            self.record_committed(id);
            self.check_log_matching(id);
        }
    }

    fn record_committed(&mut self, id: NodeId) {
        let engine = self.nodes[&id].engine();
        let commit = engine.commit_index();
        let from = self.committed.keys().next_back().map_or(1, |last| last + 1);
        for index in from..=commit {
            // Ids, not entries: a payload may have left memory (the log store has it).
            if let Some(log_id) = engine.log_id_at(index).filter(|id| id.index > 0) {
                self.committed.insert(index, log_id);
            } else {
                break;
            }
        }
        // Every committed entry this node still holds must be the committed one.
        let low = commit.saturating_sub(64).max(1);
        for index in low..=commit {
            if let (Some(held), Some(known)) = (engine.log_id_at(index), self.committed.get(&index))
            {
                assert_eq!(
                    held, *known,
                    "node {id} holds {held} at committed index {index}, committed was {known}"
                );
            }
        }
    }

    /// Leader completeness (paper section 5.4): a new leader holds every committed entry.
    fn check_leader_completeness(&self, id: NodeId) {
        let engine = self.nodes[&id].engine();
        for (index, log_id) in self.committed.iter().rev().take(256) {
            if let Some(held) = engine
                .log_id_at(*index)
                .filter(|_| *index >= engine.first_index())
            {
                assert_eq!(held, *log_id, "leader completeness: leader {id} at {index}");
            } else {
                assert!(
                    *index <= engine.status().first_index
                        || *index <= engine.latest_snapshot().index,
                    "leader completeness: leader {id} (term {}) lacks committed entry {log_id}",
                    engine.term()
                );
            }
        }
    }

    /// Log matching (paper section 5.3): entries with the same index and term have the same
    /// payload and the same predecessor term.
    fn check_log_matching(&mut self, id: NodeId) {
        let engine = self.nodes[&id].engine();
        let last = engine.persisted_index();
        let first = engine.first_index();
        let low = last.saturating_sub(32).max(first);
        for index in low..=last {
            let Some(entry) = engine.entry(index) else {
                continue;
            };
            let prev_term = engine
                .log_id_at(index - 1)
                .filter(|_| index > first)
                .map(|id| id.term);
            let key = (index, entry.term);
            match self.seen_entries.get(&key) {
                Some((seen_prev, data)) => {
                    assert_eq!(
                        *data, entry.data,
                        "log matching: payload differs at {key:?} on node {id}"
                    );
                    if let (Some(a), Some(b)) = (seen_prev, prev_term) {
                        assert_eq!(
                            *a, b,
                            "log matching: predecessor term differs at {key:?} on node {id}"
                        );
                    }
                }
                None => {
                    self.seen_entries
                        .insert(key, (prev_term, entry.data.clone()));
                }
            }
        }
    }

    /// Runs until `done` holds or `steps_max` steps passed; returns whether it held.
    pub fn run_until(&mut self, steps_max: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..steps_max {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// One line per node: role, term, log, commit and configuration, for failure reports.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            match node.engine_opt() {
                Some(e) => {
                    let s = e.status();
                    out.push_str(&format!(
                        "node {}: {:?} term {} vote {:?} leader {:?} last {} commit {} first {} membership {} (committed {})\n",
                        s.id,
                        s.role,
                        s.term,
                        e.hard_state().voted_for,
                        s.leader,
                        s.last_log_id,
                        s.commit_index,
                        s.first_index,
                        s.membership,
                        e.committed_membership()
                    ));
                }
                None => out.push_str(&format!("node {}: down\n", node.id)),
            }
        }
        out
    }

    /// Removes partitions and faults, restarts crashed nodes.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.faults = Faults::none();
        for id in self.ids() {
            if !self.nodes[&id].is_up() {
                self.start(id);
            }
        }
    }
}

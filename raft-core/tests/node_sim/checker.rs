//! The invariants of the node simulation, checked as things happen: the engine of every node
//! is observed after every step of its event loop ([`EngineObserver`]), every entry a state
//! machine applies is compared with a reference history built from the first application of
//! each index, and every snapshot is checked against that history when it is begun,
//! published and restored. Violations are collected (a check runs inside a node's task,
//! where a panic would only end that task) and the driver fails the seed on the first one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use raft_core::engine::{Engine, Role};
use raft_core::node::EngineObserver;
use raft_core::{
    Entry, EntryKind, LogId, LogIndex, Membership, Message, NodeId, SnapshotMeta, Term,
};

use super::world::lock;
use crate::command::Command;

/// Entries checked for log matching per observation (the newest ones).
const LOG_MATCHING_WINDOW: u64 = 8;
/// Committed entries a new leader is checked for (the newest ones).
const LEADER_COMPLETENESS_WINDOW: usize = 256;

/// The digest of one key's value; a state's digest is the wrapping sum over its keys, so
/// it can be updated in O(1) per write.
pub fn key_digest(key: u64, value: u64) -> u64 {
    let mut z = key
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(value ^ 0xdead_beef);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A key-value state with its digest: the simulated state machine's, and the reference's.
#[derive(Clone, Debug, Default)]
pub struct KvState {
    pub map: BTreeMap<u64, u64>,
    pub applied: LogId,
    pub digest: u64,
}

impl KvState {
    /// Applies one entry; returns the state machine's response.
    pub fn apply(&mut self, entry: &Entry) -> Vec<u8> {
        self.applied = entry.log_id();
        if entry.kind != EntryKind::Normal {
            return Vec::new();
        }
        match Command::decode(&entry.data) {
            Command::Put { key, value } => {
                self.set(key, value);
                Vec::new()
            }
            Command::Cas { key, expected, new } => {
                let ok = self.map.get(&key).copied() == expected;
                if ok {
                    self.set(key, new);
                }
                vec![ok as u8]
            }
        }
    }

    fn set(&mut self, key: u64, value: u64) {
        if let Some(old) = self.map.insert(key, value) {
            self.digest = self.digest.wrapping_sub(key_digest(key, old));
        }
        self.digest = self.digest.wrapping_add(key_digest(key, value));
    }

    /// The state from a snapshot's encoding (see `encode`).
    pub fn decode(bytes: &[u8]) -> Option<KvState> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let applied = LogId::new(word(0)?, word(1)?);
        let count = word(2)? as usize;
        if bytes.len() != (3 + 2 * count) * 8 {
            return None;
        }
        let mut state = KvState {
            applied,
            ..KvState::default()
        };
        for i in 0..count {
            state.set(word(3 + 2 * i)?, word(4 + 2 * i)?);
        }
        Some(state)
    }

    /// Label (last applied id) and contents, little-endian words.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((3 + 2 * self.map.len()) * 8);
        for word in [self.applied.term, self.applied.index, self.map.len() as u64] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for (k, v) in &self.map {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// Counters for the summary line.
#[derive(Clone, Debug, Default)]
pub struct CheckStats {
    pub elections: u64,
    pub messages: u64,
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
    pub entries_applied: u64,
}

#[derive(Default)]
struct Inner {
    violations: Vec<String>,
    trace: u64,
    stats: CheckStats,
    initial: Membership,
    /// Nodes that started with an empty configuration (spares, added later).
    spares: Vec<NodeId>,
    // ---- the reference history, from the first application of each index ----
    /// `applied[i - 1]`: the entry at index `i`.
    applied: Vec<LogId>,
    /// `digests[i - 1]`: the state's digest after applying index `i`.
    digests: Vec<u64>,
    reference: KvState,
    /// Configuration entries of the reference history, in index order.
    configs: Vec<(LogId, Membership)>,
    // ---- what the engines showed ----
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// Committed entries past the reference history.
    committed: BTreeMap<LogIndex, LogId>,
    /// (index, term) -> (term of the entry before, payload digest), for log matching.
    seen_entries: BTreeMap<(LogIndex, Term), (Option<Term>, u64)>,
    /// Per node: the incarnation observed last, its highest commit and how far its committed
    /// entries were recorded, and the snapshot it had.
    incarnations: BTreeMap<NodeId, Observed>,
}

#[derive(Clone, Copy, Debug)]
struct Observed {
    incarnation: u64,
    commit: LogIndex,
    recorded_upto: LogIndex,
    snapshot: LogId,
}

/// The shared checker of one seed.
#[derive(Default)]
pub struct Checker {
    inner: Mutex<Inner>,
}

impl Checker {
    pub fn new(initial: Membership, spares: Vec<NodeId>) -> Arc<Self> {
        let inner = Inner {
            initial,
            spares,
            ..Inner::default()
        };
        Arc::new(Checker {
            inner: Mutex::new(inner),
        })
    }

    pub fn violation(&self, what: String) {
        lock(&self.inner).violations.push(what);
    }

    pub fn first_violation(&self) -> Option<String> {
        lock(&self.inner).violations.first().cloned()
    }

    pub fn trace(&self) -> u64 {
        lock(&self.inner).trace
    }

    pub fn stats(&self) -> CheckStats {
        lock(&self.inner).stats.clone()
    }

    /// Folds an event into the trace hash.
    pub fn trace_event(&self, words: &[u64]) {
        let mut inner = lock(&self.inner);
        for w in words {
            inner.trace = (inner.trace ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn trace_message(&self, msg: &Message) {
        let kind = msg.body.name().len() as u64;
        self.trace_event(&[msg.from, msg.to, msg.term, kind]);
        lock(&self.inner).stats.messages += 1;
    }

    // ----- state machines -----

    /// A state machine applied `entry` and its state's digest is now `digest`.
    pub fn applied(&self, node: NodeId, entry: &Entry, digest: u64) {
        let mut inner = lock(&self.inner);
        inner.stats.entries_applied += 1;
        let known = inner.applied.len() as LogIndex;
        let index = entry.index;
        if index <= known {
            let expected = inner.applied[index as usize - 1];
            if expected != entry.log_id() {
                inner.violations.push(format!(
                    "state machine safety: node {node} applied {} where {expected} was applied",
                    entry.log_id()
                ));
            } else if inner.digests[index as usize - 1] != digest {
                inner.violations.push(format!(
                    "replica state: node {node} differs from the reference after applying {}",
                    entry.log_id()
                ));
            }
            return;
        }
        if index != known + 1 {
            inner.violations.push(format!(
                "node {node} applied {} but the history is known only up to {known}",
                entry.log_id()
            ));
            return;
        }
        inner.reference.apply(entry);
        let reference = inner.reference.digest;
        inner.applied.push(entry.log_id());
        inner.digests.push(reference);
        inner.committed.remove(&index);
        if entry.kind == EntryKind::Membership {
            match Membership::decode(&entry.data) {
                Ok(m) => inner.configs.push((entry.log_id(), m)),
                Err(e) => inner
                    .violations
                    .push(format!("undecodable configuration {}: {e}", entry.log_id())),
            }
        }
        if reference != digest {
            inner.violations.push(format!(
                "replica state: node {node} differs from the reference after applying {}",
                entry.log_id()
            ));
        }
    }

    /// A state machine restored the snapshot `meta` and holds `state` now.
    pub fn restored(&self, node: NodeId, meta: &SnapshotMeta, state: &KvState) {
        let mut inner = lock(&self.inner);
        let at = meta.last_log_id;
        if state.applied != at {
            inner.violations.push(format!(
                "snapshot labelled {at} on node {node} holds the state after {}",
                state.applied
            ));
            return;
        }
        let position = (at.index as usize).saturating_sub(1);
        let expected = inner.digests.get(position).copied();
        let id = inner.applied.get(position).copied();
        if at.index > 0 && (expected != Some(state.digest) || id != Some(at)) {
            inner.violations.push(format!(
                "snapshot {at} restored on node {node} does not hold the reference state \
                 (reference entry {id:?})"
            ));
        }
        inner.stats.snapshots_installed += 1;
    }

    // ----- snapshots -----

    /// The configuration committed at `index` in the reference history, if known that far.
    fn config_at(inner: &Inner, index: LogIndex) -> Option<(LogId, Membership)> {
        if index > inner.applied.len() as LogIndex {
            return None;
        }
        let found = inner.configs.iter().rev().find(|(id, _)| id.index <= index);
        Some(
            found
                .cloned()
                .unwrap_or((LogId::ZERO, inner.initial.clone())),
        )
    }

    fn check_snapshot_meta(inner: &mut Inner, node: NodeId, meta: &SnapshotMeta, when: &str) {
        let at = meta.last_log_id;
        let Some((config_id, config)) = Self::config_at(inner, at.index) else {
            inner.violations.push(format!(
                "snapshot {at} {when} on node {node} before the history reached it"
            ));
            return;
        };
        if meta.membership != config || meta.membership_log_id != config_id {
            inner.violations.push(format!(
                "snapshot {at} {when} on node {node} records configuration {} from {}, \
                 but {} from {config_id} is committed there",
                meta.membership, meta.membership_log_id, config
            ));
        }
    }

    pub fn snapshot_begun(&self, node: NodeId, meta: &SnapshotMeta) {
        let mut inner = lock(&self.inner);
        Self::check_snapshot_meta(&mut inner, node, meta, "begun");
    }

    pub fn snapshot_published(&self, node: NodeId, meta: &SnapshotMeta) {
        let mut inner = lock(&self.inner);
        inner.stats.snapshots_built += 1;
        Self::check_snapshot_meta(&mut inner, node, meta, "published");
    }

    // ----- engines -----

    fn observe(&self, node: NodeId, incarnation: u64, engine: &Engine) {
        let mut inner = lock(&self.inner);
        let (role, term, commit) = (engine.role(), engine.term(), engine.commit_index());
        let last = engine.last_log_id();
        let words = [node, role as u64, term, commit, last.index, last.term];
        for w in words {
            inner.trace = (inner.trace ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let fresh = inner
            .incarnations
            .get(&node)
            .is_none_or(|o| o.incarnation != incarnation);
        let mut observed = match inner.incarnations.get(&node) {
            Some(o) if !fresh => *o,
            _ => Observed {
                incarnation,
                commit: 0,
                recorded_upto: engine.first_index().saturating_sub(1),
                snapshot: engine.latest_snapshot(),
            },
        };
        if role == Role::Leader {
            check_election_safety(&mut inner, node, term, engine);
        }
        if commit < observed.commit {
            inner.violations.push(format!(
                "node {node}: commit index went back from {} to {commit}",
                observed.commit
            ));
        }
        observed.commit = commit;
        record_committed(&mut inner, node, engine, &mut observed);
        check_log_matching(&mut inner, node, engine);
        check_committed_membership(&mut inner, node, engine);
        let installed = engine.latest_snapshot() != observed.snapshot;
        if fresh || installed {
            check_effective_membership(&mut inner, node, engine);
            observed.snapshot = engine.latest_snapshot();
        }
        inner.incarnations.insert(node, observed);
    }
}

fn check_election_safety(inner: &mut Inner, node: NodeId, term: Term, engine: &Engine) {
    match inner.leaders_by_term.get(&term) {
        Some(other) if *other != node => inner.violations.push(format!(
            "election safety: nodes {other} and {node} both lead term {term}"
        )),
        Some(_) => {}
        None => {
            inner.leaders_by_term.insert(term, node);
            inner.stats.elections += 1;
            check_leader_completeness(inner, node, engine);
        }
    }
}

/// The id of the committed entry at `index`, as far as anyone knows.
fn known_committed(inner: &Inner, index: LogIndex) -> Option<LogId> {
    inner
        .applied
        .get(index as usize - 1)
        .copied()
        .or_else(|| inner.committed.get(&index).copied())
}

/// Every committed entry the node holds must be the one committed there.
fn record_committed(inner: &mut Inner, node: NodeId, engine: &Engine, observed: &mut Observed) {
    let from = (observed.recorded_upto + 1).max(engine.first_index());
    for index in from..=engine.commit_index() {
        // Ids, not entries: a payload may have left memory (the log store has it).
        let Some(held) = engine.log_id_at(index) else {
            continue;
        };
        match known_committed(inner, index) {
            Some(id) if id != held => inner.violations.push(format!(
                "node {node} holds {held} at committed index {index}, where {id} was committed"
            )),
            Some(_) => {}
            None => {
                inner.committed.insert(index, held);
            }
        }
    }
    observed.recorded_upto = observed.recorded_upto.max(engine.commit_index());
}

/// Leader completeness (paper section 5.4): a new leader holds every committed entry.
fn check_leader_completeness(inner: &mut Inner, node: NodeId, engine: &Engine) {
    let known = inner.applied.len() as LogIndex;
    let committed: Vec<(LogIndex, LogId)> = (1..=known)
        .rev()
        .take(LEADER_COMPLETENESS_WINDOW)
        .map(|i| (i, inner.applied[i as usize - 1]))
        .chain(inner.committed.iter().map(|(i, id)| (*i, *id)))
        .collect();
    for (index, id) in committed {
        let holds = match engine.log_id_at(index) {
            _ if index < engine.first_index() => true,
            Some(held) => held == id,
            None => false,
        };
        if !holds {
            inner.violations.push(format!(
                "leader completeness: leader {node} of term {} lacks committed entry {id}",
                engine.term()
            ));
            return;
        }
    }
}

/// Log matching (paper section 5.3): entries with the same index and term carry the same
/// payload and follow an entry of the same term. Only durable entries count: a leader that
/// crashed before anything of its term was saved (or sent) may win the same term again and
/// propose other entries, which is harmless as long as the first ones never left it.
fn check_log_matching(inner: &mut Inner, node: NodeId, engine: &Engine) {
    let last = engine.persisted_index();
    let low = last
        .saturating_sub(LOG_MATCHING_WINDOW)
        .max(engine.first_index());
    for index in low..=last {
        let Some(entry) = engine.entry(index) else {
            continue;
        };
        let prev = engine
            .log_id_at(index - 1)
            .filter(|_| index > engine.first_index())
            .map(|id| id.term);
        let payload = entry
            .data
            .iter()
            .fold(entry.kind as u64, |h, b| key_digest(h, *b as u64));
        match inner.seen_entries.get(&(index, entry.term)).copied() {
            None => {
                inner
                    .seen_entries
                    .insert((index, entry.term), (prev, payload));
            }
            Some((seen_prev, seen_payload)) => {
                let prev_differs = matches!((seen_prev, prev), (Some(a), Some(b)) if a != b);
                if seen_payload != payload || prev_differs {
                    inner.violations.push(format!(
                        "log matching: node {node} holds a different entry {}",
                        entry.log_id()
                    ));
                }
            }
        }
    }
}

/// A node's committed configuration is the one committed at its commit index.
fn check_committed_membership(inner: &mut Inner, node: NodeId, engine: &Engine) {
    let commit = engine.commit_index();
    let Some((id, expected)) = Checker::config_at(inner, commit) else {
        return;
    };
    if id == LogId::ZERO && inner.spares.contains(&node) {
        return; // A spare knows no configuration before the one that adds it.
    }
    if *engine.committed_membership() != expected {
        inner.violations.push(format!(
            "node {node} at commit {commit} has committed configuration {}, but {expected} \
             (entry {id}) is committed there",
            engine.committed_membership()
        ));
    }
}

/// After a start or a snapshot install: the effective configuration is the newest in the log.
fn check_effective_membership(inner: &mut Inner, node: NodeId, engine: &Engine) {
    let last = engine.last_log_id().index;
    let newest = (engine.first_index()..=last)
        .rev()
        .filter_map(|i| engine.entry(i))
        .find(|e| e.kind == EntryKind::Membership);
    let expected = match newest {
        Some(entry) => match Membership::decode(&entry.data) {
            Ok(m) => m,
            Err(_) => return,
        },
        None => engine.committed_membership().clone(),
    };
    if *engine.membership() != expected {
        inner.violations.push(format!(
            "node {node}: effective configuration {} but the newest in its log is {expected}",
            engine.membership()
        ));
    }
}

/// Observes one incarnation of one node.
pub struct NodeObserver {
    pub checker: Arc<Checker>,
    pub node: NodeId,
    pub incarnation: u64,
}

impl EngineObserver for NodeObserver {
    fn observe(&self, engine: &Engine) {
        self.checker.observe(self.node, self.incarnation, engine);
    }
}

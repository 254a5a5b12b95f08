//! The async node (not just the engine) under load with slow, jittery log writes, frequent
//! snapshots, follower restarts and a leader kill, applying a non-idempotent command (add to a
//! counter): every replica must apply every entry exactly once, in order, and end with the
//! same count, which must include every acknowledged add.
//!
//! The simulation tests the engine; this tests the node's own ordering duties (apply order,
//! snapshot labels, apply while a write is in flight), which the engine cannot see. The apply
//! task stops a node that hands the state machine an entry out of order or a snapshot request
//! with the wrong label, so such a bug shows up here as a stopped node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::engine::Role;
use raft_core::node::{
    LogState, LogStore, MemLogStore, MemRouter, MemSnapshotStore, MessageHandler, NodeConfig,
    NodeState, RaftHandle, RaftNode, SnapshotBuilder, StateMachine, StateMachineError,
    StorageError,
};
use raft_core::{Entry, EntryKind, HardState, LogId, LogIndex, Membership, NodeId, SnapshotMeta};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A log store whose writes take a pseudo-random 0-3 ms, so that writes are often in flight
/// while acknowledgements, commits and snapshot requests arrive.
struct JitteryLog {
    inner: MemLogStore,
    seed: AtomicU64,
}

impl JitteryLog {
    fn new(seed: u64) -> Self {
        JitteryLog {
            inner: MemLogStore::new(),
            seed: AtomicU64::new(seed | 1),
        }
    }

    async fn pause(&self) {
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        if x % 4 == 0 {
            tokio::time::sleep(Duration::from_micros(x % 1_000)).await;
        }
    }
}

#[async_trait]
impl LogStore for JitteryLog {
    async fn state(&self) -> Result<LogState, StorageError> {
        self.inner.state().await
    }
    async fn save_hard_state(&self, hard_state: HardState) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.save_hard_state(hard_state).await
    }
    async fn append(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.append(entries).await
    }
    async fn truncate(&self, from: LogIndex) -> Result<(), StorageError> {
        self.inner.truncate(from).await
    }
    async fn purge(&self, upto: LogId) -> Result<(), StorageError> {
        self.inner.purge(upto).await
    }
    async fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(low, high, bytes_max).await
    }
}

/// A counter: every normal entry adds its 8-byte little-endian amount. Refuses entries out of
/// order; its snapshots record the index they were taken at, and a restore checks it against
/// the label.
#[derive(Default)]
struct Counter {
    applied: LogIndex,
    total: u64,
    /// Write snapshots in the background (`snapshot_builder`) instead of on the apply task.
    background: bool,
    /// (applied, total), published for the test after every apply.
    view: Arc<Mutex<(LogIndex, u64)>>,
}

#[async_trait]
impl StateMachine for Counter {
    async fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Bytes>, StateMachineError> {
        for entry in entries {
            if entry.index != self.applied + 1 {
                return Err(StateMachineError(format!(
                    "entry {} applied after {}",
                    entry.index, self.applied
                )));
            }
            self.applied = entry.index;
            if entry.kind == EntryKind::Normal {
                let amount: [u8; 8] = entry.data[..]
                    .try_into()
                    .map_err(|_| StateMachineError("bad amount".into()))?;
                self.total += u64::from_le_bytes(amount);
            }
        }
        *self.view.lock().unwrap() = (self.applied, self.total);
        Ok(vec![Bytes::new(); entries.len()])
    }

    async fn build_snapshot(
        &mut self,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let io = |e: std::io::Error| StateMachineError(e.to_string());
        writer.write_u64_le(self.applied).await.map_err(io)?;
        writer.write_u64_le(self.total).await.map_err(io)?;
        writer.flush().await.map_err(io)
    }

    fn snapshot_builder(&mut self) -> Option<Box<dyn SnapshotBuilder>> {
        self.background.then(|| {
            Box::new(CounterSnapshot {
                applied: self.applied,
                total: self.total,
            }) as Box<dyn SnapshotBuilder>
        })
    }

    async fn restore(
        &mut self,
        meta: &SnapshotMeta,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let io = |e: std::io::Error| StateMachineError(e.to_string());
        let applied = reader.read_u64_le().await.map_err(io)?;
        let total = reader.read_u64_le().await.map_err(io)?;
        if applied != meta.last_log_id.index {
            return Err(StateMachineError(format!(
                "snapshot labelled {} holds the state at {applied}",
                meta.last_log_id.index
            )));
        }
        (self.applied, self.total) = (applied, total);
        *self.view.lock().unwrap() = (applied, total);
        Ok(())
    }
}

/// A counter's state captured for a background snapshot.
struct CounterSnapshot {
    applied: LogIndex,
    total: u64,
}

#[async_trait]
impl SnapshotBuilder for CounterSnapshot {
    async fn write(
        self: Box<Self>,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let io = |e: std::io::Error| StateMachineError(e.to_string());
        // Slow enough that applying goes on meanwhile.
        tokio::time::sleep(Duration::from_millis(2)).await;
        writer.write_u64_le(self.applied).await.map_err(io)?;
        writer.write_u64_le(self.total).await.map_err(io)?;
        writer.flush().await.map_err(io)
    }
}

struct Node {
    handle: RaftHandle,
    log: Arc<JitteryLog>,
    snapshots: Arc<MemSnapshotStore>,
    view: Arc<Mutex<(LogIndex, u64)>>,
}

fn config(id: NodeId) -> NodeConfig {
    let mut c = NodeConfig::new(id);
    c.tick_ms = 5;
    c.engine.snapshot_distance = 7;
    c.engine.snapshot_trailing_entries = 4;
    c.request_timeout_ms = 3_000;
    c
}

async fn start(
    router: &MemRouter,
    id: NodeId,
    log: Arc<JitteryLog>,
    snapshots: Arc<MemSnapshotStore>,
    background: bool,
) -> Node {
    let view = Arc::new(Mutex::new((0, 0)));
    let counter = Counter {
        view: view.clone(),
        background,
        ..Counter::default()
    };
    let handle = RaftNode::start(
        config(id),
        log.clone(),
        snapshots.clone(),
        Arc::new(router.transport(id)),
        counter,
        Membership::new_voters(1..=3),
    )
    .await
    .expect("node starts");
    router.register(id, Arc::new(handle.clone()) as Arc<dyn MessageHandler>);
    Node {
        handle,
        log,
        snapshots,
        view,
    }
}

fn leader(nodes: &BTreeMap<NodeId, Node>) -> Option<RaftHandle> {
    nodes
        .values()
        .find(|n| n.handle.status().role == Role::Leader)
        .map(|n| n.handle.clone())
}

/// Adds `amount` through whichever node leads; returns whether the add was acknowledged
/// (`Some(true)`), may or may not have happened (`Some(false)`), or surely did not (`None`).
async fn add(nodes: &Mutex<BTreeMap<NodeId, Node>>, amount: u64) -> Option<bool> {
    let Some(leader) = leader(&nodes.lock().unwrap()) else {
        tokio::time::sleep(Duration::from_millis(5)).await;
        return None;
    };
    match leader
        .propose(Bytes::copy_from_slice(&amount.to_le_bytes()))
        .await
    {
        Ok(_) => Some(true),
        Err(e) if e.is_retryable() => {
            tokio::time::sleep(Duration::from_millis(5)).await;
            None
        }
        Err(_) => Some(false),
    }
}

/// Each node's (applied, count); panics if a node stopped.
fn current_views(nodes: &Mutex<BTreeMap<NodeId, Node>>) -> Vec<(LogIndex, u64)> {
    let guard = nodes.lock().unwrap();
    for node in guard.values() {
        let state = node.handle.status().state;
        assert_eq!(
            state,
            NodeState::Running,
            "node {} stopped",
            node.handle.id()
        );
    }
    guard.values().map(|n| *n.view.lock().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_apply_every_entry_once_in_order_through_restarts_and_a_leader_kill() {
    run_stress(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_snapshots_written_in_the_background() {
    run_stress(true).await;
}

async fn run_stress(background: bool) {
    let router = MemRouter::new();
    let mut map = BTreeMap::new();
    for id in 1..=3 {
        let log = Arc::new(JitteryLog::new(0x9e37_79b9 * id));
        let node = start(
            &router,
            id,
            log,
            Arc::new(MemSnapshotStore::new()),
            background,
        )
        .await;
        map.insert(id, node);
    }
    let nodes = Arc::new(Mutex::new(map));
    let acked = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..32u64 {
        let (nodes, acked, unknown, stop) =
            (nodes.clone(), acked.clone(), unknown.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let amount = 1 + (w * 1_000 + n) % 7;
                match add(&nodes, amount).await {
                    Some(true) => acked.fetch_add(amount, Ordering::Relaxed),
                    Some(false) => unknown.fetch_add(amount, Ordering::Relaxed),
                    None => 0,
                };
            }
        }));
    }

    // Restart followers one at a time (from their stores: the state machine comes back from
    // the latest snapshot plus the log), then kill the leader (shut down, not restarted).
    for round in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let victim = {
            let guard = nodes.lock().unwrap();
            let followers: Vec<NodeId> = guard
                .values()
                .filter(|n| n.handle.status().role != Role::Leader)
                .map(|n| n.handle.id())
                .collect();
            followers[(round as usize) % followers.len().max(1)]
        };
        let old = nodes.lock().unwrap().remove(&victim).unwrap();
        router.unregister(victim);
        old.handle.shutdown().await;
        let node = start(&router, victim, old.log, old.snapshots, background).await;
        nodes.lock().unwrap().insert(victim, node);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = leader(&nodes.lock().unwrap()).map(|h| h.id());
    if let Some(id) = killed {
        let old = nodes.lock().unwrap().remove(&id).unwrap();
        router.unregister(id);
        old.handle.shutdown().await;
        // Back from its stores after the others have moved on.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let node = start(&router, id, old.log, old.snapshots, background).await;
        nodes.lock().unwrap().insert(id, node);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    // No node may have stopped: the apply task stops a node on an ordering bug.
    for node in nodes.lock().unwrap().values() {
        let state = node.handle.status().state;
        assert_eq!(state, NodeState::Running, "node {}", node.handle.id());
    }
    // Every replica applies the same entries and reaches the same count.
    let mut found = None;
    for _ in 0..1_000 {
        let current = leader(&nodes.lock().unwrap());
        if let Some(leader) = current {
            if leader.read_barrier().await.is_ok() {
                found = Some(leader);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = found.expect("a leader serving reads after the load");
    let target = leader.read_barrier().await.unwrap();
    let mut views = Vec::new();
    for _ in 0..1_000 {
        views = current_views(&nodes);
        if views.iter().all(|(applied, _)| *applied >= target) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        views.iter().all(|(applied, _)| *applied >= target),
        "replicas did not catch up to {target}: {views:?}"
    );
    let (_, total) = views[0];
    let (acked, unknown) = (
        acked.load(Ordering::Relaxed),
        unknown.load(Ordering::Relaxed),
    );
    for (applied, other) in &views {
        if *applied == views[0].0 {
            assert_eq!(*other, total, "replicas disagree: {views:?}");
        }
    }
    assert!(
        total >= acked && total <= acked + unknown,
        "count {total}: acknowledged adds {acked}, unknown {unknown}"
    );
    assert!(acked > 100, "only {acked} acknowledged");
}

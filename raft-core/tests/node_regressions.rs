//! Regression tests for defects in the async node's own path (the event loop, its waiters,
//! snapshot handling and start-up), found by a review of that path and by the node
//! simulation. Each test failed (or hung, or panicked) before its fix; ARCHITECTURE.md's
//! invariants table names them.

mod node_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use node_common::{config, TestCluster};
use raft_core::engine::{Engine, Role};
use raft_core::node::{
    EngineObserver, Fatal, MemKv, MemLogStore, MemRouter, MemSnapshotStore, MessageHandler,
    NodeState, RaftError, RaftNode, SnapshotReader, SnapshotStore, SnapshotTransfer,
    SnapshotWriter, StartOptions, StorageError,
};
use raft_core::{ChunkStatus, LogId, Membership, NodeId, SnapshotChunk, SnapshotMeta, Term};

/// The configuration for a test with a paused clock: every task on the test's runtime.
fn paused(mut config: raft_core::node::NodeConfig) -> raft_core::node::NodeConfig {
    config.state_machine_thread = false;
    config
}

/// A zero tick or queue length panicked inside tokio when the node started; now the
/// configuration is checked first.
#[tokio::test]
async fn an_invalid_node_configuration_is_refused_at_start() {
    for broken in [
        |c: &mut raft_core::node::NodeConfig| c.tick_ms = 0,
        |c: &mut raft_core::node::NodeConfig| c.apply_queue_len_max = 0,
        |c: &mut raft_core::node::NodeConfig| c.engine.heartbeat_ticks = 0,
    ] {
        let mut config = paused(config(1));
        broken(&mut config);
        let started = RaftNode::start(
            config,
            Arc::new(MemLogStore::new()),
            Arc::new(MemSnapshotStore::new()),
            Arc::new(MemRouter::new().transport(1)),
            MemKv::new(),
            Membership::new_voters([1]),
        )
        .await;
        assert!(
            matches!(started, Err(RaftError::InvalidConfig(_))),
            "{started:?}"
        );
    }
}

/// A follower offered a snapshot that its commit index already covers answers that it holds
/// it, so the leader resumes sending entries after it. It used to refuse such a snapshot, and
/// a leader whose view of the follower was stale (its log no longer held the follower's match
/// index) sent the same snapshot forever (node simulation seed 397).
#[tokio::test(start_paused = true)]
async fn a_snapshot_a_follower_already_covers_is_acknowledged() {
    let cluster = TestCluster::paused(3).await;
    for i in 0..5 {
        cluster.put(&format!("k{i}"), "v").await;
    }
    let leader = cluster.wait_leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    let status = cluster.handle(follower).status();
    assert!(status.commit_index >= 3);
    let data = Bytes::from_static(b"old state");
    let chunk = SnapshotChunk {
        from: leader,
        to: follower,
        term: status.term,
        meta: SnapshotMeta {
            last_log_id: LogId::new(status.term, 3),
            membership: Membership::new_voters([1, 2, 3]),
            membership_log_id: LogId::ZERO,
            size_bytes: data.len() as u64,
            crc32: crc32fast::hash(&data),
            created_unix_ms: 0,
        },
        offset: 0,
        crc32: crc32fast::hash(&data),
        data,
        done: true,
    };
    let ack = cluster.handle(follower).deliver_snapshot_chunk(chunk).await;
    assert_eq!(ack.status, ChunkStatus::Complete, "{ack:?}");
    cluster.put("after", "v").await;
    assert_eq!(cluster.handle(follower).status().state, NodeState::Running);
}

/// A snapshot store that fails while `failing` is set.
struct FlakySnapshots {
    inner: MemSnapshotStore,
    failing: Arc<AtomicBool>,
}

#[async_trait]
impl SnapshotStore for FlakySnapshots {
    async fn begin(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        if self.failing.load(Ordering::SeqCst) {
            let error = std::io::Error::other("injected: disk full");
            return Err(StorageError::io("begin snapshot", error));
        }
        self.inner.begin(meta).await
    }
    async fn latest(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        self.inner.latest().await
    }
    async fn open(&self, meta: &SnapshotMeta) -> Result<SnapshotReader, StorageError> {
        self.inner.open(meta).await
    }
    async fn read_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        len_bytes_max: u32,
    ) -> Result<Bytes, StorageError> {
        self.inner.read_chunk(meta, offset, len_bytes_max).await
    }
    async fn receive_chunk(
        &self,
        chunk: &SnapshotChunk,
    ) -> Result<(ChunkStatus, u64), StorageError> {
        self.inner.receive_chunk(chunk).await
    }
}

/// A snapshot build that fails is not fatal: the node goes on, the caller gets a retryable
/// error, and a later build succeeds. (Callers were answered `Fatal` while the node lived on.)
#[tokio::test(start_paused = true)]
async fn a_failed_snapshot_build_is_retryable_and_the_node_goes_on() {
    let failing = Arc::new(AtomicBool::new(true));
    let snapshots = FlakySnapshots {
        inner: MemSnapshotStore::new(),
        failing: failing.clone(),
    };
    let router = MemRouter::new();
    let mut config = paused(config(1));
    config.engine.snapshot_distance = 0;
    let handle = RaftNode::start(
        config,
        Arc::new(MemLogStore::new()),
        Arc::new(snapshots),
        Arc::new(router.transport(1)),
        MemKv::new(),
        Membership::new_voters([1]),
    )
    .await
    .unwrap();
    let mut status = handle.watch_status();
    status.wait_for(|s| s.role == Role::Leader).await.unwrap();
    handle.propose(MemKv::set(b"k", b"v")).await.unwrap();
    let failed = handle.trigger_snapshot().await;
    assert!(
        matches!(failed, Err(RaftError::SnapshotFailed(_))),
        "{failed:?}"
    );
    assert!(failed.unwrap_err().is_retryable());
    assert_eq!(handle.status().state, NodeState::Running);
    handle.propose(MemKv::set(b"k", b"w")).await.unwrap();
    failing.store(false, Ordering::SeqCst);
    let built = handle
        .trigger_snapshot()
        .await
        .expect("the store works again");
    assert!(built.index >= 2);
}

/// Sets a flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A snapshot sender that never finishes, and says when it starts and when it is dropped.
struct StuckTransfer {
    started: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

#[async_trait]
impl SnapshotTransfer for StuckTransfer {
    async fn send_snapshot(&self, _: NodeId, _: NodeId, _: Term, _: SnapshotMeta) -> bool {
        let _flag = DropFlag(self.dropped.clone());
        self.started.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
        unreachable!()
    }
}

/// Snapshot transfers belong to the term their leader leads: once it steps down, they stop.
/// (They went on after a step-down, with a stale term, until the node stopped.)
#[tokio::test(start_paused = true)]
async fn snapshot_transfers_stop_when_the_leader_steps_down() {
    let started = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let transfer: Arc<dyn SnapshotTransfer> = Arc::new(StuckTransfer {
        started: started.clone(),
        dropped: dropped.clone(),
    });
    let router = MemRouter::new();
    let membership = Membership::new_voters([1, 2, 3]);
    let mut handles = Vec::new();
    for id in 1..=3 {
        let mut config = paused(config(id));
        config.engine.snapshot_distance = 10;
        config.engine.snapshot_trailing_entries = 0;
        let options = StartOptions {
            snapshot_transfer: Some(transfer.clone()),
            ..StartOptions::default()
        };
        let handle = RaftNode::start_with_options(
            config,
            Arc::new(MemLogStore::new()),
            Arc::new(MemSnapshotStore::new()),
            Arc::new(router.transport(id)),
            MemKv::new(),
            membership.clone(),
            options,
        )
        .await
        .unwrap();
        router.register(id, Arc::new(handle.clone()) as Arc<dyn MessageHandler>);
        handles.push(handle);
    }
    let leader = loop {
        if let Some(h) = handles.iter().find(|h| h.status().role == Role::Leader) {
            break h.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let lagging = if leader.id() == 3 { 2 } else { 3 };
    router.isolate(lagging);
    for i in 0..30u32 {
        leader
            .propose(MemKv::set(&i.to_le_bytes(), b"v"))
            .await
            .unwrap();
    }
    leader.trigger_snapshot().await.unwrap();
    router.heal();
    for _ in 0..200 {
        if started.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.load(Ordering::SeqCst),
        "a snapshot transfer started"
    );
    assert!(!dropped.load(Ordering::SeqCst));
    // The leader loses its quorum and steps down (check-quorum).
    router.isolate(leader.id());
    let mut status = leader.watch_status();
    status.wait_for(|s| s.role != Role::Leader).await.unwrap();
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the transfer outlived the leadership"
    );
}

/// An observer that panics, standing for any bug that panics the event loop.
struct PanickingObserver;

impl EngineObserver for PanickingObserver {
    fn observe(&self, engine: &Engine) {
        if engine.role() == Role::Leader {
            panic!("observer found a bug");
        }
    }
}

/// A node whose event loop panics is marked failed at once, so callers get `Fatal` instead of
/// waiting for their timeout against a node that still claims to run.
#[tokio::test(start_paused = true)]
async fn a_node_whose_event_loop_panics_is_marked_failed() {
    let router = MemRouter::new();
    let options = StartOptions {
        observer: Some(Arc::new(PanickingObserver)),
        ..StartOptions::default()
    };
    let handle = RaftNode::start_with_options(
        paused(config(1)),
        Arc::new(MemLogStore::new()),
        Arc::new(MemSnapshotStore::new()),
        Arc::new(router.transport(1)),
        MemKv::new(),
        Membership::new_voters([1]),
        options,
    )
    .await
    .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), handle.wait_stopped())
        .await
        .expect("the node does not claim to run");
    assert!(
        matches!(&ended, NodeState::Failed(Fatal::Bug(why)) if why.contains("observer found a bug")),
        "{ended:?}"
    );
    let proposal = handle.propose(MemKv::set(b"k", b"v")).await;
    assert!(
        matches!(proposal, Err(RaftError::Fatal(Fatal::Bug(_)))),
        "{proposal:?}"
    );
}

/// A follower's linearizable read whose forwarded request is lost completes within a few
/// heartbeats of the link healing: the request is resent. (It waited for the whole request
/// timeout.)
#[tokio::test(start_paused = true)]
async fn a_follower_read_completes_soon_after_a_lost_request() {
    let cluster = TestCluster::paused(3).await;
    cluster.put("k", "v").await;
    let leader = cluster.wait_leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.router.partition(leader, follower);
    let read = tokio::spawn({
        let handle = cluster.handle(follower).clone();
        async move { handle.read_barrier().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    cluster.router.heal();
    let healed = tokio::time::Instant::now();
    let index = read.await.unwrap().expect("the read completes");
    let waited = healed.elapsed();
    let heartbeat = Duration::from_millis(config(1).tick_ms * config(1).engine.heartbeat_ticks);
    assert!(
        waited <= heartbeat * 6,
        "waited {waited:?} after the heal (heartbeat {heartbeat:?})"
    );
    assert!(index >= 1);
}

/// Reads that timed out leave the engine: on a link that loses them, they never fill the
/// pending-reads limit. (Their ids stayed in the engine until the leader changed, and with a
/// stable leader the follower ended up refusing every read with `TooManyReads`.)
#[tokio::test(start_paused = true)]
async fn reads_that_timed_out_do_not_fill_the_pending_reads_limit() {
    let router = MemRouter::new();
    let membership = Membership::new_voters([1, 2, 3]);
    let mut handles = Vec::new();
    for id in 1..=3 {
        let mut config = paused(config(id));
        config.engine.pending_reads_max = 4;
        config.request_timeout_ms = 100;
        let handle = RaftNode::start(
            config,
            Arc::new(MemLogStore::new()),
            Arc::new(MemSnapshotStore::new()),
            Arc::new(router.transport(id)),
            MemKv::new(),
            membership.clone(),
        )
        .await
        .unwrap();
        router.register(id, Arc::new(handle.clone()) as Arc<dyn MessageHandler>);
        handles.push(handle);
    }
    let leader = loop {
        if let Some(h) = handles.iter().find(|h| h.status().role == Role::Leader) {
            break h.id();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let follower = if leader == 1 { 2 } else { 1 };
    let handle = handles[follower as usize - 1].clone();
    handle.read_barrier().await.expect("a first read works");
    // The follower still hears the leader (it stays its follower) but its requests are lost.
    router.block(follower, leader);
    for _ in 0..6 * 4 {
        let outcome = handle.read_barrier().await;
        assert!(matches!(outcome, Err(RaftError::Timeout)), "{outcome:?}");
    }
    router.heal();
    handle
        .read_barrier()
        .await
        .expect("reads work again once the link heals; none is refused as too many");
}

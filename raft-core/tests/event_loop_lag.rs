//! A state machine step that takes long (here: an apply that blocks its thread for two
//! seconds, as capturing or restoring a large state can) must not stall the event loop: run on
//! its own thread (the default), it does not; run as a task of a single-threaded runtime, it
//! does, and the node's lag histogram shows it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::engine::Role;
use raft_core::node::{
    MemKv, MemLogStore, MemRouter, MemSnapshotStore, MessageHandler, NodeConfig, RaftHandle,
    RaftNode, StateMachine, StateMachineError,
};
use raft_core::{Entry, Membership, SnapshotMeta};
use tokio::io::{AsyncRead, AsyncWrite};

const SLOW_COMMAND: &[u8] = b"slow";
const SLOW_STEP: Duration = Duration::from_secs(2);

/// A `MemKv` whose apply blocks its thread on [`SLOW_COMMAND`].
struct SlowKv(MemKv);

#[async_trait]
impl StateMachine for SlowKv {
    async fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Bytes>, StateMachineError> {
        if entries.iter().any(|e| &e.data[..] == SLOW_COMMAND) {
            std::thread::sleep(SLOW_STEP);
        }
        self.0.apply(entries).await
    }

    async fn build_snapshot(
        &mut self,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        self.0.build_snapshot(writer).await
    }

    async fn restore(
        &mut self,
        meta: &SnapshotMeta,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        self.0.restore(meta, reader).await
    }
}

async fn cluster(state_machine_thread: bool) -> Vec<RaftHandle> {
    let router = MemRouter::new();
    let mut handles = Vec::new();
    for id in 1..=3 {
        let mut config = NodeConfig::new(id);
        // Timeouts long enough that a loaded test machine does not elect by itself.
        config.engine.election_ticks_min = 40;
        config.engine.election_ticks_max = 80;
        config.state_machine_thread = state_machine_thread;
        let handle = RaftNode::start(
            config,
            Arc::new(MemLogStore::new()),
            Arc::new(MemSnapshotStore::new()),
            Arc::new(router.transport(id)),
            SlowKv(MemKv::new()),
            Membership::new_voters([1, 2, 3]),
        )
        .await
        .unwrap();
        router.register(id, Arc::new(handle.clone()) as Arc<dyn MessageHandler>);
        handles.push(handle);
    }
    handles
}

async fn leader(handles: &[RaftHandle]) -> RaftHandle {
    for _ in 0..500 {
        if let Some(h) = handles.iter().find(|h| h.status().role == Role::Leader) {
            return h.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader");
}

/// The largest event-loop lag any node recorded, in milliseconds.
async fn max_lag_ms(handles: &[RaftHandle]) -> u64 {
    // Lag is published with the status at each tick.
    tokio::time::sleep(Duration::from_millis(100)).await;
    handles
        .iter()
        .map(|h| h.status().metrics.event_loop_lag_us.max() / 1000)
        .max()
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_state_machine_on_its_own_thread_does_not_stall_heartbeats() {
    let handles = cluster(true).await;
    let leader = leader(&handles).await;
    let term = leader.status().term;
    leader
        .propose(Bytes::from_static(SLOW_COMMAND))
        .await
        .unwrap();
    leader.propose(MemKv::set(b"k", b"v")).await.unwrap();
    let lag = max_lag_ms(&handles).await;
    assert!(lag < 1_000, "the event loop stalled for {lag} ms");
    for h in &handles {
        assert_eq!(
            h.status().term,
            term,
            "an election happened on node {}",
            h.id()
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_state_machine_on_the_node_runtime_stalls_it_and_the_lag_shows_it() {
    let handles = cluster(false).await;
    let leader = leader(&handles).await;
    let _ = leader.propose(Bytes::from_static(SLOW_COMMAND)).await;
    let lag = max_lag_ms(&handles).await;
    assert!(
        lag >= 1_500,
        "the histogram missed a {SLOW_STEP:?} stall: max {lag} ms"
    );
}

//! A cluster of async nodes over the in-memory router, for the node tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_core::engine::Role;
use raft_core::node::{
    KvMap, MemKv, MemLogStore, MemRouter, MemSnapshotStore, MessageHandler, NodeConfig, RaftHandle,
    RaftNode,
};
use raft_core::{Membership, NodeId};

pub struct TestNode {
    pub handle: RaftHandle,
    pub map: KvMap,
    pub log: Arc<MemLogStore>,
    pub snapshots: Arc<MemSnapshotStore>,
}

pub struct TestCluster {
    pub router: MemRouter,
    pub nodes: BTreeMap<NodeId, TestNode>,
    pub initial: Membership,
    /// The nodes' state machines run on the node's runtime, not on threads of their own: for
    /// tests with a paused clock, which must see every task.
    pub one_runtime: bool,
}

pub fn config(id: NodeId) -> NodeConfig {
    let mut c = NodeConfig::new(id);
    c.tick_ms = 5;
    c.engine.snapshot_distance = 50;
    c.engine.snapshot_trailing_entries = 5;
    c.request_timeout_ms = 2_000;
    c.membership_timeout_ms = 10_000;
    c.state_machine_hooks = true;
    c
}

impl TestCluster {
    pub async fn new(voters: u64) -> Self {
        Self::build(voters, false).await
    }

    /// A cluster for a test with a paused clock (see [`TestCluster::one_runtime`]).
    pub async fn paused(voters: u64) -> Self {
        Self::build(voters, true).await
    }

    async fn build(voters: u64, one_runtime: bool) -> Self {
        let mut cluster = TestCluster {
            router: MemRouter::new(),
            nodes: BTreeMap::new(),
            initial: Membership::new_voters(1..=voters),
            one_runtime,
        };
        for id in 1..=voters {
            let log = Arc::new(MemLogStore::new());
            let snapshots = Arc::new(MemSnapshotStore::new());
            cluster
                .start(id, log, snapshots, cluster.initial.clone())
                .await;
        }
        cluster
    }

    pub async fn start(
        &mut self,
        id: NodeId,
        log: Arc<MemLogStore>,
        snapshots: Arc<MemSnapshotStore>,
        initial: Membership,
    ) {
        let kv = MemKv::new();
        let map = kv.map();
        let transport = Arc::new(self.router.transport(id));
        let mut config = config(id);
        config.state_machine_thread = !self.one_runtime;
        let handle = RaftNode::start(
            config,
            log.clone(),
            snapshots.clone(),
            transport,
            kv,
            initial,
        )
        .await
        .expect("node starts");
        self.router
            .register(id, Arc::new(handle.clone()) as Arc<dyn MessageHandler>);
        self.nodes.insert(
            id,
            TestNode {
                handle,
                map,
                log,
                snapshots,
            },
        );
    }

    pub async fn wait_leader(&self) -> NodeId {
        for _ in 0..400 {
            let leaders: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|n| n.handle.status().role == Role::Leader)
                .map(|n| n.handle.id())
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no single leader elected");
    }

    pub fn handle(&self, id: NodeId) -> &RaftHandle {
        &self.nodes[&id].handle
    }

    pub async fn put(&self, key: &str, value: &str) {
        for _ in 0..100 {
            let leader = self.wait_leader().await;
            match self
                .handle(leader)
                .propose(MemKv::set(key.as_bytes(), value.as_bytes()))
                .await
            {
                Ok(_) => return,
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("put {key}: {e}"),
            }
        }
        panic!("put {key} never succeeded");
    }

    /// A linearizable read through node `id`.
    pub async fn get(&self, id: NodeId, key: &str) -> Option<Bytes> {
        for _ in 0..100 {
            match self.handle(id).read_barrier().await {
                Ok(_) => {
                    return self.nodes[&id]
                        .map
                        .read()
                        .unwrap()
                        .get(key.as_bytes())
                        .cloned()
                }
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("get {key} on {id}: {e}"),
            }
        }
        panic!("read on {id} never succeeded");
    }

    pub async fn stop(&mut self, id: NodeId) -> TestNode {
        let node = self.nodes.remove(&id).unwrap();
        self.router.unregister(id);
        node.handle.shutdown().await;
        node
    }
}

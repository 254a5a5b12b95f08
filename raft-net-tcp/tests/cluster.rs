//! Three raft-core nodes with in-memory stores, talking over real loopback TCP through
//! `TcpTransport` and `TcpServer`: they elect a leader, replicate, survive the leader's
//! shutdown by electing another, and the old leader, restarted on its address from its stores,
//! is reconnected to by itself and catches up through a snapshot sent in chunks over TCP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_core::engine::Role;
use raft_core::node::{
    KvMap, MemKv, MemLogStore, MemSnapshotStore, NodeConfig, RaftHandle, RaftNode,
};
use raft_core::{Membership, NodeId};
use raft_net_tcp::{TcpConfig, TcpServer, TcpTransport};
use tokio::net::TcpListener;
use tokio::time::{sleep, Instant};

const CLUSTER: u64 = 3;
const WAIT: Duration = Duration::from_secs(10);

struct NetNode {
    handle: RaftHandle,
    map: KvMap,
    server: TcpServer,
    transport: Arc<TcpTransport>,
    log: Arc<MemLogStore>,
    snapshots: Arc<MemSnapshotStore>,
}

fn tcp_config(id: NodeId) -> TcpConfig {
    let mut config = TcpConfig::new(CLUSTER, id);
    config.reconnect_backoff_ms_min = 10;
    config.reconnect_backoff_ms_max = 200;
    config.shutdown_grace_ms = 1_000;
    config
}

async fn start_node(
    id: NodeId,
    listener: TcpListener,
    membership: &Membership,
    log: Arc<MemLogStore>,
    snapshots: Arc<MemSnapshotStore>,
) -> NetNode {
    let transport = Arc::new(TcpTransport::new(tcp_config(id)).expect("transport"));
    let kv = MemKv::new();
    let map = kv.map();
    let mut node_config = NodeConfig::new(id);
    node_config.request_timeout_ms = 2_000;
    // Snapshot and compact often, so a node that was down must catch up by snapshot, whose
    // chunks travel on the transport's snapshot connections.
    node_config.engine.snapshot_distance = 20;
    node_config.engine.snapshot_trailing_entries = 2;
    node_config.snapshot_chunk_bytes = 64;
    let handle = RaftNode::start(
        node_config,
        log.clone(),
        snapshots.clone(),
        transport.clone(),
        kv,
        membership.clone(),
    )
    .await
    .expect("node starts");
    let server = TcpServer::serve(listener, tcp_config(id), Arc::new(handle.clone()), None)
        .expect("server starts");
    NetNode {
        handle,
        map,
        server,
        transport,
        log,
        snapshots,
    }
}

async fn stop_node(node: NetNode) -> (Arc<MemLogStore>, Arc<MemSnapshotStore>) {
    node.handle.shutdown().await;
    node.server.shutdown().await;
    node.transport.shutdown();
    (node.log, node.snapshots)
}

async fn wait_leader(nodes: &BTreeMap<NodeId, NetNode>) -> NodeId {
    let deadline = Instant::now() + WAIT;
    loop {
        let leaders: Vec<NodeId> = nodes
            .values()
            .filter(|node| node.handle.status().role == Role::Leader)
            .map(|node| node.handle.id())
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single leader within {WAIT:?}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

async fn put(nodes: &BTreeMap<NodeId, NetNode>, key: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = wait_leader(nodes).await;
        let command = MemKv::set(key.as_bytes(), value.as_bytes());
        match nodes[&leader].handle.propose(command).await {
            Ok(_) => return,
            Err(error) if error.is_retryable() && Instant::now() < deadline => {
                sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("put {key}: {error}"),
        }
    }
}

/// Waits until every node in `nodes` has applied `key = value`.
async fn wait_replicated(nodes: &BTreeMap<NodeId, NetNode>, key: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    let key = Bytes::copy_from_slice(key.as_bytes());
    loop {
        let missing: Vec<NodeId> = nodes
            .iter()
            .filter(|(_, node)| {
                let map = node
                    .map
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                map.get(&key).map(|v| &v[..]) != Some(value.as_bytes())
            })
            .map(|(id, _)| *id)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes {missing:?} never applied {key:?}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_tcp_elect_replicate_and_survive_the_leader() {
    let mut listeners = BTreeMap::new();
    let mut membership = Membership::new_voters(1..=3);
    for id in 1..=3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        membership
            .addresses
            .insert(id, listener.local_addr().unwrap().to_string());
        listeners.insert(id, listener);
    }
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let log = Arc::new(MemLogStore::new());
        let snapshots = Arc::new(MemSnapshotStore::new());
        nodes.insert(
            id,
            start_node(id, listener, &membership, log, snapshots).await,
        );
    }

    // Elect and replicate.
    let first_leader = wait_leader(&nodes).await;
    put(&nodes, "a", "1").await;
    wait_replicated(&nodes, "a", "1").await;
    for id in 1..=3 {
        let stats = nodes[&first_leader].transport.peer_stats(id);
        if id != first_leader {
            assert!(
                stats.expect("peer known").sent_messages > 0,
                "leader talked to {id}"
            );
        }
    }

    // The leader shuts down; the other two elect another and keep replicating.
    let old = nodes.remove(&first_leader).unwrap();
    // Everything the old leader has is committed: a read barrier's index is its last entry
    // (the status's indexes may lag by a tick).
    let old_last_index = old.handle.read_barrier().await.expect("read barrier");
    let old_addr = membership.addresses[&first_leader].clone();
    let (log, snapshots) = stop_node(old).await;
    let second_leader = wait_leader(&nodes).await;
    assert_ne!(second_leader, first_leader);
    put(&nodes, "b", "2").await;
    for i in 0..40 {
        put(&nodes, &format!("k{i}"), "v").await;
    }
    wait_replicated(&nodes, "b", "2").await;
    // Compaction removed entries the old leader lacks: only a snapshot can bring it up to date.
    let deadline = Instant::now() + WAIT;
    while nodes[&second_leader].handle.status().first_index <= old_last_index + 1 {
        assert!(
            Instant::now() < deadline,
            "the leader never compacted its log"
        );
        sleep(Duration::from_millis(10)).await;
    }

    // The old leader restarts on its address from its stores: the others' transports
    // reconnect by themselves and it catches up.
    let listener = TcpListener::bind(&old_addr)
        .await
        .expect("rebind the old address");
    let restarted = start_node(first_leader, listener, &membership, log, snapshots).await;
    nodes.insert(first_leader, restarted);
    put(&nodes, "c", "3").await;
    wait_replicated(&nodes, "c", "3").await;
    wait_replicated(&nodes, "b", "2").await;
    wait_replicated(&nodes, "k0", "v").await;
    assert!(nodes[&first_leader].handle.status().snapshot.index > old_last_index);
    let stats = nodes[&second_leader]
        .transport
        .peer_stats(first_leader)
        .unwrap();
    assert!(
        stats.connections >= 2,
        "reconnected after the restart: {stats:?}"
    );

    for (_, node) in nodes {
        stop_node(node).await;
    }
}

//! A follower far behind a compacted log catches up by snapshot, received into a
//! `FileSnapshotStore`, and then by log, in a raft-core cluster: once over the in-memory
//! router (the follower is cut off, then healed) and once over real loopback TCP with
//! raft-net-tcp (the follower is stopped, then restarted from its directory).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_core::engine::Role;
use raft_core::node::{
    KvMap, MemKv, MemLogStore, MemRouter, MessageHandler, NodeConfig, RaftHandle, RaftNode,
    SnapshotStore, Transport,
};
use raft_core::{Membership, NodeId};
use raft_net_tcp::{TcpConfig, TcpServer, TcpTransport};
use raft_snapshot::{FileSnapshotStore, SenderConfig, SnapshotSender};
use tokio::net::TcpListener;
use tokio::time::{sleep, Instant};

const WAIT: Duration = Duration::from_secs(20);
/// Bytes per value: a few hundred keys make a snapshot of many chunks.
const VALUE_BYTES: usize = 200;

fn node_config(id: NodeId) -> NodeConfig {
    let mut config = NodeConfig::new(id);
    config.tick_ms = 5;
    config.request_timeout_ms = 2_000;
    // Snapshot and compact often, so a node that fell behind can only catch up by snapshot.
    config.engine.snapshot_distance = 50;
    config.engine.snapshot_trailing_entries = 5;
    config.snapshot_chunk_bytes = 1024;
    config
}

struct Node {
    handle: RaftHandle,
    map: KvMap,
    log: Arc<MemLogStore>,
    snapshots: Arc<FileSnapshotStore>,
    tcp: Option<(TcpServer, Arc<TcpTransport>)>,
}

async fn start<T: Transport>(
    id: NodeId,
    log: Arc<MemLogStore>,
    snapshots: Arc<FileSnapshotStore>,
    transport: Arc<T>,
    membership: &Membership,
) -> (RaftHandle, KvMap) {
    let kv = MemKv::new();
    let map = kv.map();
    // The leader streams snapshots with raft-snapshot's windowed sender.
    let sender = SnapshotSender::new(
        snapshots.clone() as Arc<dyn SnapshotStore>,
        transport.clone() as Arc<dyn Transport>,
        SenderConfig {
            chunk_bytes: 1024,
            ..SenderConfig::default()
        },
    )
    .expect("valid sender config");
    let handle = RaftNode::start_with_transfer(
        node_config(id),
        log,
        snapshots,
        transport,
        kv,
        membership.clone(),
        Arc::new(sender),
    )
    .await
    .expect("node starts");
    (handle, map)
}

async fn wait_leader(nodes: &BTreeMap<NodeId, Node>) -> NodeId {
    let deadline = Instant::now() + WAIT;
    loop {
        let leaders: Vec<NodeId> = nodes
            .values()
            .filter(|n| n.handle.status().role == Role::Leader)
            .map(|n| n.handle.id())
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no single leader");
        sleep(Duration::from_millis(10)).await;
    }
}

async fn put(nodes: &BTreeMap<NodeId, Node>, key: &str) {
    let value = vec![b'v'; VALUE_BYTES];
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = wait_leader(nodes).await;
        match nodes[&leader]
            .handle
            .propose(MemKv::set(key.as_bytes(), &value))
            .await
        {
            Ok(_) => return,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}

async fn wait_applied(node: &Node, key: &str) {
    let deadline = Instant::now() + WAIT;
    let key = Bytes::copy_from_slice(key.as_bytes());
    while !node
        .map
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&key)
    {
        assert!(
            Instant::now() < deadline,
            "node {} never applied {key:?}: {:?}",
            node.handle.id(),
            node.handle.status()
        );
        sleep(Duration::from_millis(10)).await;
    }
}

/// Writes keys until the leader's log starts past `index + 1`: the entries after `index` are
/// gone, so only a snapshot can bring a node that stopped at `index` up to date.
async fn write_until_compacted_past(nodes: &BTreeMap<NodeId, Node>, index: u64) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut written = 0;
    loop {
        for _ in 0..20 {
            put(nodes, &format!("k{written}")).await;
            written += 1;
        }
        let leader = wait_leader(nodes).await;
        if nodes[&leader].handle.status().first_index > index + 1 && written >= 200 {
            return written;
        }
        assert!(Instant::now() < deadline, "the leader never compacted");
    }
}

/// Checks that `node` installed a snapshot newer than `behind` and then appended entries past it.
async fn assert_caught_up_by_snapshot_then_log(
    nodes: &BTreeMap<NodeId, Node>,
    node: &Node,
    behind: u64,
    written: usize,
) {
    wait_applied(node, &format!("k{}", written - 1)).await;
    let received = node
        .snapshots
        .latest()
        .await
        .unwrap()
        .expect("a snapshot was received");
    assert!(
        received.last_log_id.index > behind,
        "snapshot {} is past the point the follower stopped at ({behind})",
        received.last_log_id
    );
    assert!(received.size_bytes > 100 * VALUE_BYTES as u64);
    // Then by log: entries written now arrive as entries after the snapshot.
    for i in 0..10 {
        put(nodes, &format!("after{i}")).await;
    }
    wait_applied(node, "after9").await;
    let status = node.handle.status();
    assert!(
        status.last_log_id.index > status.snapshot.index && status.snapshot.index > behind,
        "{status:?}"
    );
    let dir = node.snapshots.dir();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(!name.to_string_lossy().starts_with("tmp-"), "{name:?} left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_behind_follower_catches_up_by_snapshot_then_log_in_memory() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let router = MemRouter::new();
    let membership = Membership::new_voters(1..=3);
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let log = Arc::new(MemLogStore::new());
        let snapshots = Arc::new(FileSnapshotStore::open(dirs[id as usize - 1].path()).unwrap());
        let transport = Arc::new(router.transport(id));
        let (handle, map) = start(id, log.clone(), snapshots.clone(), transport, &membership).await;
        router.register(id, Arc::new(handle.clone()) as Arc<dyn MessageHandler>);
        nodes.insert(
            id,
            Node {
                handle,
                map,
                log,
                snapshots,
                tcp: None,
            },
        );
    }
    put(&nodes, "first").await;
    let leader = wait_leader(&nodes).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    wait_applied(&nodes[&follower], "first").await;

    router.isolate(follower);
    let behind = nodes[&follower].handle.status().last_log_id.index;
    let others: BTreeMap<NodeId, Node> = {
        let mut all = std::mem::take(&mut nodes);
        let f = all.remove(&follower).unwrap();
        nodes.insert(follower, f);
        all
    };
    let written = write_until_compacted_past(&others, behind).await;
    router.heal();
    let mut all = others;
    let f = nodes.remove(&follower).unwrap();
    all.insert(follower, f);
    assert_caught_up_by_snapshot_then_log(&all, &all[&follower], behind, written).await;
    for node in all.values() {
        node.handle.shutdown().await;
    }
}

fn tcp_config(id: NodeId) -> TcpConfig {
    let mut config = TcpConfig::new(7, id);
    config.reconnect_backoff_ms_min = 10;
    config.reconnect_backoff_ms_max = 200;
    config.shutdown_grace_ms = 1_000;
    config
}

async fn start_tcp(
    id: NodeId,
    listener: TcpListener,
    log: Arc<MemLogStore>,
    snapshots: Arc<FileSnapshotStore>,
    membership: &Membership,
) -> Node {
    let transport = Arc::new(TcpTransport::new(tcp_config(id)).unwrap());
    let (handle, map) = start(
        id,
        log.clone(),
        snapshots.clone(),
        transport.clone(),
        membership,
    )
    .await;
    let server =
        TcpServer::serve(listener, tcp_config(id), Arc::new(handle.clone()), None).unwrap();
    Node {
        handle,
        map,
        log,
        snapshots,
        tcp: Some((server, transport)),
    }
}

async fn stop(node: Node) -> Arc<MemLogStore> {
    node.handle.shutdown().await;
    if let Some((server, transport)) = node.tcp {
        server.shutdown().await;
        transport.shutdown();
    }
    node.log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_behind_follower_catches_up_by_snapshot_then_log_over_tcp() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut membership = Membership::new_voters(1..=3);
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        membership
            .addresses
            .insert(id, listener.local_addr().unwrap().to_string());
        listeners.insert(id, listener);
    }
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let snapshots = Arc::new(FileSnapshotStore::open(dirs[id as usize - 1].path()).unwrap());
        let node = start_tcp(
            id,
            listener,
            Arc::new(MemLogStore::new()),
            snapshots,
            &membership,
        )
        .await;
        nodes.insert(id, node);
    }
    put(&nodes, "first").await;
    let leader = wait_leader(&nodes).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    wait_applied(&nodes[&follower], "first").await;

    // The follower stops; the others go on and compact their logs.
    let stopped = nodes.remove(&follower).unwrap();
    let behind = stopped.handle.status().last_log_id.index;
    let log = stop(stopped).await;
    let written = write_until_compacted_past(&nodes, behind).await;

    // It restarts on its address, its snapshot store reopened from its directory.
    let listener = TcpListener::bind(&membership.addresses[&follower])
        .await
        .unwrap();
    let snapshots = Arc::new(FileSnapshotStore::open(dirs[follower as usize - 1].path()).unwrap());
    let restarted = start_tcp(follower, listener, log, snapshots, &membership).await;
    nodes.insert(follower, restarted);
    assert_caught_up_by_snapshot_then_log(&nodes, &nodes[&follower], behind, written).await;
    for (_, node) in nodes {
        stop(node).await;
    }
}

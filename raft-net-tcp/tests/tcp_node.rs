//! `TcpEndpoint::start` and `TcpNode`: a node, its server and its transport started by one
//! call and stopped in order by one value. A leader that shuts down finishes the client
//! request it is handling (it still hears its peers meanwhile); a killed node stops at once
//! and the others go on; a server added later answers the leader through its seed
//! addresses; a mismatched configuration is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use raft_core::engine::Role;
use raft_core::node::{
    KvMap, MemKv, MemLogStore, MemSnapshotStore, NodeConfig, RaftError, RaftHandle, StartOptions,
    Transport, TransportError,
};
use raft_core::{LogId, Membership, NodeId, SnapshotChunk, SnapshotMeta};
use raft_net_tcp::{
    ClientHandler, ClientRequest, ClientResponse, ClusterClient, Error, Idempotency, TcpClient,
    TcpConfig, TcpEndpoint, TcpNode,
};
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

const CLUSTER: u64 = 18;
const WAIT: Duration = Duration::from_secs(10);

/// Proposes each request's payload (a `MemKv` command) after `delay`.
struct SlowKv {
    handle: RaftHandle,
    delay: Duration,
}

#[async_trait]
impl ClientHandler for SlowKv {
    async fn handle(&self, request: ClientRequest) -> ClientResponse {
        sleep(self.delay).await;
        match self.handle.propose(request.payload).await {
            Ok(response) => ClientResponse::Ok(response),
            Err(error) => ClientResponse::from(error),
        }
    }
}

fn tcp_config(id: NodeId) -> TcpConfig {
    let mut config = TcpConfig::new(CLUSTER, id);
    config.reconnect_backoff_ms_min = 10;
    config.reconnect_backoff_ms_max = 200;
    config
}

struct Cluster {
    nodes: BTreeMap<NodeId, TcpNode>,
    maps: BTreeMap<NodeId, KvMap>,
}

async fn start_cluster(handler_delay: Duration) -> Cluster {
    let mut endpoints = BTreeMap::new();
    let mut membership = Membership::builder();
    for id in 1..=3 {
        let endpoint = TcpEndpoint::bind("127.0.0.1:0", tcp_config(id))
            .await
            .unwrap();
        membership = membership.voter(id, endpoint.local_addr());
        endpoints.insert(id, endpoint);
    }
    let membership = membership.build().unwrap();
    let mut nodes = BTreeMap::new();
    let mut maps = BTreeMap::new();
    for (id, endpoint) in endpoints {
        let kv = MemKv::new();
        maps.insert(id, kv.map());
        let node = endpoint
            .with_client_handler(move |handle| {
                Arc::new(SlowKv {
                    handle,
                    delay: handler_delay,
                })
            })
            .start(
                NodeConfig::new(id),
                Arc::new(MemLogStore::new()),
                Arc::new(MemSnapshotStore::new()),
                kv,
                membership.clone(),
                StartOptions::default(),
            )
            .await
            .unwrap();
        nodes.insert(id, node);
    }
    Cluster { nodes, maps }
}

impl Cluster {
    async fn leader(&self) -> NodeId {
        let deadline = Instant::now() + WAIT;
        loop {
            let leaders: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|node| node.handle().status().role == Role::Leader)
                .map(|node| node.handle().id())
                .collect();
            if let [leader] = leaders[..] {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within {WAIT:?}"
            );
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `id` has applied `key`.
    fn holds(&self, id: NodeId, key: &[u8]) -> bool {
        let map = self.maps[&id].read().unwrap();
        map.contains_key(key)
    }

    async fn shutdown(self) {
        for node in self.nodes.into_values() {
            node.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_shuts_down_finishes_the_client_request_it_is_handling() {
    let mut cluster = start_cluster(Duration::from_millis(300)).await;
    let leader = cluster.leader().await;
    let addr = cluster.nodes[&leader].local_addr().to_string();
    let client = TcpClient::new(addr, TcpConfig::new(CLUSTER, 0)).unwrap();
    let write = tokio::spawn(async move { client.request(MemKv::set(b"k", b"v")).await });
    // The server has read the request; its handler waits 300 ms before proposing.
    sleep(Duration::from_millis(100)).await;
    cluster.nodes.remove(&leader).unwrap().shutdown().await;

    // Proposed after the shutdown began, and committed with the peers' acknowledgements.
    let answer = write.await.unwrap().unwrap();
    assert!(matches!(answer, ClientResponse::Ok(_)), "{answer:?}");
    let deadline = Instant::now() + WAIT;
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        while !cluster.holds(id, b"k") {
            assert!(
                Instant::now() < deadline,
                "node {id} never applied the write"
            );
            sleep(Duration::from_millis(10)).await;
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_stops_at_once_and_the_others_go_on() {
    let mut cluster = start_cluster(Duration::ZERO).await;
    let addrs: Vec<String> = cluster
        .nodes
        .values()
        .map(|node| node.local_addr().to_string())
        .collect();
    let client = ClusterClient::new(addrs, CLUSTER);
    // Setting a key to a constant is idempotent: a write sent to the leader just as it was
    // killed (its outcome unknown) may be sent again.
    let write = |key: &'static [u8]| client.request(MemKv::set(key, b"v"), Idempotency::Idempotent);
    write(b"before").await.unwrap();

    let leader = cluster.leader().await;
    let killed = cluster.nodes.remove(&leader).unwrap();
    let killed_addr = killed.local_addr();
    let killed_handle = killed.handle().clone();
    killed.kill();
    // The server's tasks are aborted; the runtime drops them, and their sockets, soon after.
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(killed_addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the killed node still listens");
        sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        killed_handle.propose(MemKv::set(b"x", b"y")).await,
        Err(RaftError::Shutdown)
    ));

    // The client finds the new leader; the write lands on both survivors.
    write(b"after").await.unwrap();
    assert_ne!(cluster.leader().await, leader);
    let deadline = Instant::now() + WAIT;
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        while !cluster.holds(id, b"after") {
            assert!(
                Instant::now() < deadline,
                "node {id} never applied the write"
            );
            sleep(Duration::from_millis(10)).await;
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_added_to_a_running_cluster_answers_the_leader_through_its_seeds() {
    let mut cluster = start_cluster(Duration::ZERO).await;
    let leader = cluster.leader().await;
    let leader_handle = cluster.nodes[&leader].handle().clone();
    leader_handle
        .propose(MemKv::set(b"before", b"v"))
        .await
        .unwrap();

    // A new server knows no configuration; the members' addresses are its seeds.
    let seeds = leader_handle.status().membership.addresses;
    let endpoint = TcpEndpoint::bind("127.0.0.1:0", tcp_config(4))
        .await
        .unwrap()
        .with_seed_peers(&seeds);
    let addr = endpoint.local_addr().to_string();
    let kv = MemKv::new();
    cluster.maps.insert(4, kv.map());
    let node = endpoint
        .start(
            NodeConfig::new(4),
            Arc::new(MemLogStore::new()),
            Arc::new(MemSnapshotStore::new()),
            kv,
            Membership::default(),
            StartOptions::default(),
        )
        .await
        .unwrap();
    cluster.nodes.insert(4, node);
    let added = tokio::time::timeout(WAIT, leader_handle.add_voter(4, addr)).await;
    assert!(
        matches!(added, Ok(Ok(()))),
        "the leader catches the new server up and promotes it: {added:?}"
    );
    let deadline = Instant::now() + WAIT;
    while !cluster.holds(4, b"before") {
        assert!(Instant::now() < deadline, "node 4 never applied the write");
        sleep(Duration::from_millis(10)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_configuration_that_does_not_match_the_endpoint_is_refused() {
    let membership = Membership::builder()
        .voter(1, "127.0.0.1:1")
        .build()
        .unwrap();
    let start = |node: NodeConfig| {
        let membership = membership.clone();
        async move {
            let endpoint = TcpEndpoint::bind("127.0.0.1:0", tcp_config(1))
                .await
                .unwrap();
            let transport = endpoint.transport();
            let started = endpoint
                .start(
                    node,
                    Arc::new(MemLogStore::new()),
                    Arc::new(MemSnapshotStore::new()),
                    MemKv::new(),
                    membership,
                    StartOptions::default(),
                )
                .await;
            (started, transport)
        }
    };
    let (other_id, transport) = start(NodeConfig::new(2)).await;
    assert!(
        matches!(
            other_id,
            Err(Error::InvalidConfig {
                field: "node_id",
                ..
            })
        ),
        "{other_id:?}"
    );
    let chunk = SnapshotChunk {
        from: 1,
        to: 2,
        term: 1,
        meta: SnapshotMeta {
            last_log_id: LogId::new(1, 1),
            membership: membership.clone(),
            membership_log_id: LogId::new(1, 1),
            size_bytes: 1,
            crc32: 0,
            created_unix_ms: 0,
        },
        offset: 0,
        data: vec![0].into(),
        crc32: 0,
        done: true,
    };
    let sent = transport.send_snapshot_chunk(chunk).await;
    assert!(
        matches!(sent, Err(TransportError::Shutdown)),
        "the transport of a node that did not start is shut down: {sent:?}"
    );

    let mut no_ticks = NodeConfig::new(1);
    no_ticks.tick_ms = 0;
    let (invalid, _) = start(no_ticks).await;
    assert!(
        matches!(invalid, Err(Error::Node(RaftError::InvalidConfig(_)))),
        "{invalid:?}"
    );
}

//! A snapshot chunk with invalid metadata, sent to a live node's peer port as a leader would
//! send one, is refused: the node keeps answering, restarts from its data directory, and the
//! cluster goes on committing writes. (A chunk with an invalid membership used to be
//! published and synced, after which the node's snapshot store, and so the node, could not
//! open again.)

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{b, cluster, dump_logs, Resp, WAIT};
use raft_cli::config::CLUSTER_ID_DEFAULT;
use raft_core::membership::{ADDRESS_BYTES_MAX, MEMBERS_MAX};
use raft_core::node::Transport;
use raft_core::{ChunkStatus, LogId, Membership, SnapshotChunk, SnapshotMeta};
use raft_net_tcp::{TcpConfig, TcpTransport};

/// Metadata for a snapshot far ahead of the node, each broken in its own way.
fn invalid_metas(term: u64, index: u64, data: &[u8]) -> Vec<(&'static str, SnapshotMeta)> {
    let valid = SnapshotMeta {
        last_log_id: LogId::new(term, index),
        membership: Membership::new_voters([1, 2, 3]),
        membership_log_id: LogId::new(1, 1),
        size_bytes: data.len() as u64,
        crc32: crc32fast::hash(data),
        created_unix_ms: 1,
    };
    let with = |change: &dyn Fn(&mut SnapshotMeta)| {
        let mut meta = valid.clone();
        change(&mut meta);
        meta
    };
    vec![
        ("no voters", with(&|m| m.membership.voters.clear())),
        (
            "a voter that is also a learner",
            with(&|m| {
                m.membership.learners.insert(2);
            }),
        ),
        (
            "a membership too large for a metadata record",
            with(&|m| {
                m.membership = Membership::new_voters(1..=MEMBERS_MAX as u64);
                m.membership.addresses = (1..=MEMBERS_MAX as u64)
                    .map(|id| (id, "a".repeat(ADDRESS_BYTES_MAX)))
                    .collect();
            }),
        ),
        (
            "a configuration entry after the last entry",
            with(&|m| {
                m.membership_log_id = LogId::new(term, index + 1);
            }),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_chunk_with_invalid_metadata_is_refused_and_the_node_lives_on() {
    let mut cluster = cluster(3).await;
    let client = cluster.client();
    client.put(b("before"), b("1")).await.expect("a write");
    let leader = client.leader_status().await.expect("leader");
    let target = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader.id)
        .expect("a follower");
    let status = client
        .status_at(cluster.addr(target))
        .await
        .expect("status");

    // A peer that speaks the node-to-node protocol, as the leader.
    let transport = TcpTransport::new(TcpConfig::new(CLUSTER_ID_DEFAULT, leader.id)).unwrap();
    transport.set_peers(&BTreeMap::from([(
        target,
        cluster.addr(target).to_string(),
    )]));
    let data = Bytes::from_static(b"not a snapshot of anything");
    let far_ahead = status.commit_index + 1_000_000;
    for (what, meta) in invalid_metas(status.term, far_ahead, &data) {
        let chunk = SnapshotChunk {
            from: leader.id,
            to: target,
            term: status.term,
            meta,
            offset: 0,
            data: data.clone(),
            crc32: crc32fast::hash(&data),
            done: true,
        };
        let ack = transport
            .send_snapshot_chunk(chunk)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            matches!(&ack.status, ChunkStatus::Refused(reason) if reason.contains("metadata")),
            "{what}: {:?}",
            ack.status
        );
    }
    transport.shutdown();

    // The node answers on its Redis port and through the native protocol.
    let mut redis = Resp::connect(&cluster.nodes[&target].redis_addr).await;
    assert_eq!(redis.command(&["PING"]).await, "+PONG\r\n");
    client
        .status_at(cluster.addr(target))
        .await
        .expect("native status");

    // It restarts from its data directory and catches up; the cluster commits writes.
    cluster.kill(target).unwrap();
    cluster.restart(target).unwrap();
    if let Err(e) = cluster.wait_leader(WAIT).await {
        dump_logs(&cluster);
        panic!("after the restart: {e}");
    }
    client.put(b("after"), b("2")).await.expect("a write");
    let committed = client.leader_status().await.expect("leader").commit_index;
    if let Err(e) = cluster.wait_applied(target, committed, WAIT).await {
        dump_logs(&cluster);
        panic!("the restarted node: {e}");
    }
}

//! The node's metrics ([`NodeStatus::metrics`], [`PeerStatus`]) count what the node did:
//! proposals accepted and refused, the latency of each applied one, log writes and their
//! entries, applied entries, snapshots built, sent and installed, leaderships and elections.

use std::sync::Arc;
use std::time::Duration;

mod node_common;

use node_common::TestCluster;
use raft_core::engine::Role;
use raft_core::node::{
    MemKv, MemLogStore, MemSnapshotStore, NodeMetrics, NodeStatus, RaftError, RaftHandle,
};
use raft_core::Membership;

/// How long a metric may take to show what happened (it is published every tick, 5 ms here).
const METRICS_WAIT: Duration = Duration::from_secs(10);

/// Waits until `handle`'s status satisfies `done`; its status then.
async fn status_when(handle: &RaftHandle, done: impl Fn(&NodeStatus) -> bool) -> NodeStatus {
    let deadline = tokio::time::Instant::now() + METRICS_WAIT;
    loop {
        let status = handle.status();
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} never got there: {:?}",
            handle.id(),
            status.metrics
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn metrics(handle: &RaftHandle) -> NodeMetrics {
    handle.status().metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_log_writes_applies_and_snapshots_are_counted() {
    const WRITES: u64 = 120;
    let mut cluster = TestCluster::new(3).await;
    let leader = cluster.wait_leader().await;
    for i in 0..WRITES {
        cluster.put(&format!("k{i}"), "value").await;
    }
    let leader_handle = cluster.handle(leader).clone();
    let last = leader_handle.status().last_log_id.index;
    for id in 1..=3 {
        let status = status_when(cluster.handle(id), |s| {
            s.applied_index >= last && s.metrics.entries_applied >= WRITES
        })
        .await;
        let m = &status.metrics;
        assert!(m.log_write_entries.sum() >= WRITES, "node {id}: {m:?}");
        assert!(m.log_write_entries.count() <= m.log_write_entries.sum());
        assert!(m.log_write_us.count() >= m.log_write_entries.count());
        assert!(m.log_appended_bytes >= WRITES * "value".len() as u64);
        assert!(m.leader_changes >= 1, "node {id} saw no leader: {m:?}");
    }
    // Every accepted proposal was applied (no leader change in between: the proposals
    // were all answered), and each one's latency was recorded.
    let m = status_when(&leader_handle, |s| {
        s.metrics.proposal_apply_us.count() == s.metrics.proposals_accepted
    })
    .await
    .metrics;
    assert!(m.proposals_accepted >= WRITES, "{m:?}");
    assert!(m.campaigns.elections >= 1, "the leader was elected: {m:?}");
    assert!(m.proposal_apply_us.max() > 0);
    let peers = leader_handle.status().peers;
    assert_eq!(peers.len(), 2, "{peers:?}");
    for peer in &peers {
        assert!(
            peer.inflight_messages as usize <= node_common::config(1).engine.inflight_messages_max
        );
    }

    // A follower refuses proposals, and says why.
    let follower = if leader == 1 { 2 } else { 1 };
    let refused = cluster
        .handle(follower)
        .propose(MemKv::set(b"k", b"v"))
        .await;
    assert!(
        matches!(refused, Err(RaftError::NotLeader { .. })),
        "{refused:?}"
    );
    status_when(cluster.handle(follower), |s| {
        s.metrics.proposals_refused.not_leader == 1 && s.metrics.proposals_refused.total() == 1
    })
    .await;

    // A snapshot built on the leader, sent to a new server and installed there.
    leader_handle.trigger_snapshot().await.expect("snapshot");
    let built = status_when(&leader_handle, |s| s.metrics.snapshots_built.completed >= 1)
        .await
        .metrics
        .snapshots_built;
    assert!(built.bytes > 0, "{built:?}");
    assert_eq!(built.duration_us.count(), built.completed);
    cluster
        .start(
            4,
            Arc::new(MemLogStore::new()),
            Arc::new(MemSnapshotStore::new()),
            Membership::default(),
        )
        .await;
    leader_handle
        .add_voter(4, "node-4".into())
        .await
        .expect("add voter");
    let installed = status_when(cluster.handle(4), |s| {
        s.metrics.snapshots_installed.completed == 1
    })
    .await
    .metrics
    .snapshots_installed;
    assert!(installed.bytes > 0, "{installed:?}");
    assert_eq!(installed.failed, 0);
    let sent = status_when(&leader_handle, |s| s.metrics.snapshots_sent.completed >= 1)
        .await
        .metrics
        .snapshots_sent;
    assert!(sent.bytes >= installed.bytes, "{sent:?} {installed:?}");
    assert!(metrics(&leader_handle).event_loop_lag_us.count() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_is_counted_as_an_election_and_a_leader_change() {
    let mut cluster = TestCluster::new(3).await;
    let old = cluster.wait_leader().await;
    cluster.put("k", "v").await;
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let before: Vec<NodeMetrics> = survivors
        .iter()
        .map(|id| metrics(cluster.handle(*id)))
        .collect();
    cluster.stop(old).await;
    let new = cluster.wait_leader().await;
    assert_ne!(new, old);
    for (id, before) in survivors.iter().zip(&before) {
        let status = status_when(cluster.handle(*id), |s| {
            s.leader == Some(new) && s.metrics.leader_changes > before.leader_changes
        })
        .await;
        if *id == new {
            assert_eq!(status.role, Role::Leader);
            let (now, then) = (status.metrics.campaigns, before.campaigns);
            assert!(now.elections > then.elections, "{now:?} {then:?}");
            assert!(
                now.pre_votes > then.pre_votes,
                "pre-vote is on: {now:?} {then:?}"
            );
        }
    }
}

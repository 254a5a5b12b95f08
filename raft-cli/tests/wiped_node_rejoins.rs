//! A member is removed, its data directory wiped, and it joins again under the same id: it
//! catches up (through a snapshot, since the leader compacted its log) and serves reads.

mod common;

use std::time::Duration;

use common::{b, cluster, dump_logs, WAIT};
use raft_cli::proto::{Reply, Request};
use raft_cli::workload::{verify, WriteLoad};
use tokio::time::{sleep, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_and_catches_up() {
    let mut cluster = cluster(3).await;
    let client = cluster.client();
    let addrs: Vec<String> = cluster.nodes.values().map(|n| n.addr.clone()).collect();
    let leader = client.leader_status().await.unwrap();
    let victim = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader.id)
        .unwrap();

    client.call(&Request::Remove { id: victim }).await.unwrap();
    cluster.stop(victim).unwrap();
    cluster.wipe(victim).unwrap();
    // Enough writes for a snapshot and a compacted log while the node is away.
    let report = WriteLoad::start(&addrs, 4, "away", 100).join().await;
    assert_eq!(report.acked.len(), 400);
    let leader = client.leader_status().await.unwrap();
    let leader_addr = cluster.addr(leader.id).to_string();
    client
        .call_at(&leader_addr, &Request::Snapshot)
        .await
        .unwrap();

    cluster.start_joining(victim, &leader_addr).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = client.leader_status().await.unwrap();
        if leader.members.iter().any(|m| m.id == victim && m.voter) && !leader.joint {
            break;
        }
        if Instant::now() > deadline {
            dump_logs(&cluster);
            panic!("node {victim} did not rejoin");
        }
        sleep(Duration::from_millis(20)).await;
    }
    let commit = client.leader_status().await.unwrap().commit_index;
    let status = cluster.wait_applied(victim, commit, WAIT).await.unwrap();
    assert!(status.snapshot_index > 0, "caught up without a snapshot");

    let lost = verify(&client, &report.acked).await.unwrap();
    assert!(lost.is_empty());
    let (key, value) = (&report.acked[0].key, &report.acked[0].value);
    let reply = client
        .call_at(
            cluster.addr(victim),
            &Request::Get {
                keys: vec![key.clone()],
            },
        )
        .await
        .unwrap();
    assert_eq!(reply, Reply::Values(vec![Some(value.clone())]));
    let _ = b;
}

//! Adding a node (it joins, catches up, is promoted) and removing another (the leader) while
//! writers run: no acknowledged write is lost and the new member serves reads.

mod common;

use std::time::Duration;

use common::{b, cluster, dump_logs, WAIT};
use raft_cli::proto::{Reply, Request};
use raft_cli::workload::{verify, WriteLoad};
use tokio::time::{sleep, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_nodes_under_load() {
    let mut cluster = cluster(3).await;
    let client = cluster.client();
    let mut addrs: Vec<String> = cluster.nodes.values().map(|n| n.addr.clone()).collect();
    let first = WriteLoad::start(&addrs, 4, "before", 100).join().await;

    // Join node 4 under load.
    let load = WriteLoad::start(&addrs, 4, "add", u64::MAX);
    let via = cluster.addr(1).to_string();
    cluster.start_joining(4, &via).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = client.leader_status().await.unwrap();
        if leader.members.iter().any(|m| m.id == 4 && m.voter) && !leader.joint {
            break;
        }
        if Instant::now() > deadline {
            dump_logs(&cluster);
            panic!("node 4 was not promoted");
        }
        sleep(Duration::from_millis(20)).await;
    }
    let added = load.finish().await;
    addrs.push(cluster.addr(4).to_string());

    // Remove the leader under load.
    let load = WriteLoad::start(&addrs, 4, "remove", u64::MAX);
    sleep(Duration::from_millis(300)).await;
    let leader = client.leader_status().await.unwrap();
    client
        .call(&Request::Remove { id: leader.id })
        .await
        .expect("remove");
    sleep(Duration::from_millis(500)).await;
    cluster.stop(leader.id).unwrap();
    let removed = load.finish().await;
    let now = cluster.wait_leader(WAIT).await.unwrap();
    assert!(!now.members.iter().any(|m| m.id == leader.id));
    assert_eq!(now.members.len(), 3);

    let mut acked = first.acked;
    acked.extend(added.acked);
    acked.extend(removed.acked);
    let lost = verify(&client, &acked).await.unwrap();
    assert!(lost.is_empty(), "lost {lost:?}");

    // The new member serves a linearizable read of the newest data itself.
    client.put(b("last"), b("write")).await.unwrap();
    let reply = client
        .call_at(
            cluster.addr(4),
            &Request::Get {
                keys: vec![b("last")],
            },
        )
        .await
        .unwrap();
    assert_eq!(reply, Reply::Values(vec![Some(b("write"))]));
}

//! A 3-node cluster of real processes serves writes through its leader and linearizable reads
//! on every member: a read on any node, issued after a write was acknowledged, sees it.

mod common;

use common::{b, cluster, dump_logs};
use raft_cli::client::ClientError;
use raft_cli::kv::KvCommand;
use raft_cli::proto::{Reply, Request, ServiceError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_writes_and_linearizable_reads_on_every_member() {
    let cluster = cluster(3).await;
    let client = cluster.client();
    for round in 0..20 {
        let value = format!("v{round}");
        client.put(b("x"), b(&value)).await.expect("put");
        for node in cluster.nodes.values() {
            let reply = client
                .call_at(&node.addr, &Request::Get { keys: vec![b("x")] })
                .await;
            match reply {
                Ok(Reply::Values(values)) => {
                    assert_eq!(
                        values,
                        vec![Some(b(&value))],
                        "stale read on node {}",
                        node.id
                    )
                }
                other => {
                    dump_logs(&cluster);
                    panic!("read on node {}: {other:?}", node.id);
                }
            }
        }
    }

    // Compare-and-set and delete through the leader.
    assert_eq!(
        client.cas(b("x"), Some(b("v19")), b("new")).await.unwrap(),
        (true, Some(b("v19")))
    );
    assert_eq!(
        client
            .cas(b("x"), Some(b("v19")), b("newer"))
            .await
            .unwrap(),
        (false, Some(b("new")))
    );
    assert!(!client.cas(b("x"), None, b("absent-only")).await.unwrap().0);
    assert!(client.delete(b("x")).await.unwrap());
    assert_eq!(client.get(b("x")).await.unwrap(), None);

    // A follower refuses a write and names the leader; nothing is written.
    let leader = client.leader_status().await.unwrap();
    let follower = cluster.nodes.values().find(|n| n.id != leader.id).unwrap();
    let write = Request::Write(KvCommand::Delete {
        keys: vec![b("nothing")],
    });
    let refused = client.call_at(&follower.addr, &write).await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Refused(ServiceError::NotLeader { .. }))
        ),
        "{refused:?}"
    );
}

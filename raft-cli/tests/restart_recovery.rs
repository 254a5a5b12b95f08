//! Every node stopped (SIGKILL, then separately SIGTERM) and started again from its data
//! directory: all acknowledged data comes back, through snapshots and the log.

mod common;

use common::{b, cluster, dump_logs, WAIT};
use raft_cli::workload::{verify, WriteLoad};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_brings_back_all_data() {
    let mut cluster = cluster(3).await;
    let addrs: Vec<String> = cluster.nodes.values().map(|n| n.addr.clone()).collect();
    // 600 writes: several snapshots (every 200 entries) and a log tail after the last one.
    let report = WriteLoad::start(&addrs, 6, "restart", 100).join().await;
    assert_eq!(report.acked.len(), 600, "{} errors", report.errors);
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();

    for graceful in [false, true] {
        if graceful {
            cluster.stop_all().expect("every node stops on SIGTERM");
        } else {
            cluster.kill_all();
        }
        for id in &ids {
            cluster.restart(*id).unwrap();
        }
        if let Err(e) = cluster.wait_leader(WAIT).await {
            dump_logs(&cluster);
            panic!("after restart (graceful: {graceful}): {e}");
        }
        let client = cluster.client();
        let lost = verify(&client, &report.acked).await.unwrap();
        assert!(lost.is_empty(), "graceful {graceful}: lost {lost:?}");
        client.put(b("alive"), b("yes")).await.unwrap();
    }
}

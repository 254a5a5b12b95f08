//! SIGKILL of the leader under write load: a new leader is elected and serves, and every write
//! that was acknowledged before, during or after the failure is still readable.

mod common;

use std::time::{Duration, Instant};

use common::{b, cluster, dump_logs, WAIT};
use raft_cli::workload::{verify, WriteLoad};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = cluster(3).await;
    let old = cluster.wait_leader(WAIT).await.unwrap();
    let addrs: Vec<String> = cluster.nodes.values().map(|n| n.addr.clone()).collect();
    let load = WriteLoad::start(&addrs, 8, "failover", u64::MAX);
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.kill(old.id).unwrap();
    let killed_at = Instant::now();
    let new = cluster.wait_leader(WAIT).await.unwrap();
    assert_ne!(new.id, old.id);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let report = load.finish().await;
    let resumed = report.first_ack_of_write_sent_after(killed_at);
    if resumed.is_none() {
        dump_logs(&cluster);
        panic!("no write was acknowledged after the leader died");
    }
    eprintln!(
        "{} acknowledged, {} unknown, {} errors; writes resumed after {:?}",
        report.acked.len(),
        report.unknown,
        report.errors,
        resumed.unwrap().duration_since(killed_at)
    );

    let client = cluster.client();
    let lost = verify(&client, &report.acked).await.unwrap();
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    client.put(b("after"), b("failover")).await.unwrap();
    assert_eq!(client.get(b("after")).await.unwrap(), Some(b("failover")));
}

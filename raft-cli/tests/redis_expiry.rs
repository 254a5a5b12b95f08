//! Keys expire on every replica alike, deleted by the leader through the log: a key is
//! absent for every reader once its deadline passes, and deleted from every node's table
//! soon after (within the leader's look-up interval and a commit), also for more keys at once
//! than one deletion entry holds and after the leader is killed; deadlines survive a restart;
//! a key that expires between WATCH and EXEC makes EXEC abort.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, Resp, WAIT};
use raft_cli::expiry::REAP_INTERVAL_MS;
use raft_cli::local::LocalCluster;
use raft_core::NodeId;

/// How late after its deadline a key may still be stored on some node: the leader's
/// look-up interval plus a commit and apply on every node, with room for a debug build on
/// a busy machine.
const STORED_AFTER_DEADLINE_MAX: Duration = Duration::from_millis(REAP_INTERVAL_MS + 1_900);

async fn redis(cluster: &LocalCluster, id: NodeId) -> Resp {
    Resp::connect(&cluster.nodes[&id].redis_addr).await
}

/// Waits until every running node's DBSIZE is `keys`; how long it took.
async fn wait_for_dbsize(cluster: &LocalCluster, keys: u64, within: Duration) -> Duration {
    let started = Instant::now();
    for node in cluster.nodes.values().filter(|n| n.is_running()) {
        let mut conn = Resp::connect(&node.redis_addr).await;
        loop {
            let reply = conn.command(&["DBSIZE"]).await;
            if reply == format!(":{keys}\r\n") {
                break;
            }
            assert!(
                started.elapsed() < within,
                "node {} still holds {reply:?} keys after {within:?}",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_vanish_for_readers_and_are_deleted_on_every_node() {
    let mut cluster = cluster(3).await;
    let leader = cluster.client().leader_status().await.unwrap().id;
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let mut f = redis(&cluster, follower).await;
    let mut l = redis(&cluster, leader).await;

    // One key, written through a follower.
    assert_eq!(f.command(&["SET", "e", "v", "PX", "800"]).await, "+OK\r\n");
    let set_at = Instant::now();
    assert_eq!(l.command(&["GET", "e"]).await, "$1\r\nv\r\n");
    let pttl = f.command(&["PTTL", "e"]).await;
    let left: i64 = pttl.trim_start_matches(':').trim().parse().unwrap();
    assert!((1..=800).contains(&left), "PTTL {pttl:?}");
    assert!(l.command(&["INFO"]).await.contains("expires=1"));

    // A key watched while present and expired before EXEC: EXEC aborts.
    assert_eq!(f.command(&["WATCH", "e"]).await, "+OK\r\n");
    assert_eq!(f.command(&["MULTI"]).await, "+OK\r\n");
    assert_eq!(f.command(&["SET", "other", "1"]).await, "+QUEUED\r\n");
    tokio::time::sleep(Duration::from_millis(800).saturating_sub(set_at.elapsed())).await;
    let deadline = Instant::now();
    assert_eq!(f.command(&["EXEC"]).await, "*-1\r\n");

    // Absent for every reader, then gone from every table.
    for conn in [&mut f, &mut l] {
        assert_eq!(conn.command(&["GET", "e"]).await, "$-1\r\n");
        assert_eq!(conn.command(&["TTL", "e"]).await, ":-2\r\n");
    }
    let took = wait_for_dbsize(&cluster, 0, WAIT).await + deadline.elapsed();
    assert!(
        took < STORED_AFTER_DEADLINE_MAX,
        "stored {took:?} after its deadline"
    );

    // 1,200 keys expiring together (more than one deletion entry holds).
    let mut pipeline = Vec::new();
    for i in 0..1_200 {
        let key = format!("many{i}");
        pipeline.extend_from_slice(
            format!(
                "*5\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n$2\r\nPX\r\n$3\r\n500\r\n",
                key.len()
            )
            .as_bytes(),
        );
    }
    l.send(&pipeline).await;
    for _ in 0..1_200 {
        assert_eq!(l.reply().await.unwrap(), b"+OK\r\n");
    }
    // The last key's deadline is at most 500 ms after its reply.
    let took = wait_for_dbsize(&cluster, 0, WAIT).await;
    assert!(
        took < Duration::from_millis(500) + STORED_AFTER_DEADLINE_MAX,
        "{took:?}"
    );
    assert!(f.command(&["INFO"]).await.contains("expires=0"));

    // Deadlines survive a restart (the log and snapshots carry them); the leader killed,
    // its successor deletes what expires.
    assert_eq!(
        l.command(&["SET", "kept", "v", "EX", "1000"]).await,
        "+OK\r\n"
    );
    assert_eq!(
        l.command(&["SET", "later", "v", "PX", "1500"]).await,
        "+OK\r\n"
    );
    cluster.kill(follower).unwrap();
    cluster.restart(follower).unwrap();
    cluster.wait_leader(WAIT).await.unwrap();
    let mut f = redis_when_up(&cluster, follower).await;
    let ttl = f.command(&["TTL", "kept"]).await;
    let left: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!((990..=1000).contains(&left), "TTL after a restart {ttl:?}");
    cluster.kill(leader).unwrap();
    let killed_at = Instant::now();
    cluster.wait_leader(WAIT).await.unwrap();
    wait_for_dbsize(&cluster, 1, WAIT).await;
    assert!(killed_at.elapsed() < WAIT);
    assert_eq!(f.command(&["EXISTS", "kept", "later"]).await, ":1\r\n");
}

/// Connects once the restarted node's Redis port accepts connections.
async fn redis_when_up(cluster: &LocalCluster, id: NodeId) -> Resp {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(&cluster.nodes[&id].redis_addr)
            .await
            .is_ok()
        {
            return redis(cluster, id).await;
        }
        assert!(started.elapsed() < WAIT, "node {id} did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

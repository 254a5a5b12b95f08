//! A SCAN cursor means the same on every node and across a leader change: an iteration
//! begun on the leader, with keys written and deleted between calls, goes on on a follower
//! after the leader is killed, and returns every key present throughout exactly once.

mod common;

use std::collections::HashMap;

use common::{cluster, Resp, WAIT};

/// Keys present for the whole iteration.
const STABLE_KEYS: usize = 300;

/// One SCAN call: the next cursor and the keys; the error reply (no leader yet for the read
/// barrier) as the cursor.
async fn scan(conn: &mut Resp, cursor: &str) -> (String, Vec<String>) {
    let reply = conn.command(&["SCAN", cursor, "COUNT", "20"]).await;
    if reply.starts_with('-') {
        return (reply, Vec::new());
    }
    let mut lines = reply.split("\r\n");
    assert_eq!(lines.next(), Some("*2"), "{reply}");
    lines.next();
    let next = lines.next().expect("a cursor").to_string();
    let keys = lines
        .skip(1)
        .filter(|line| !line.is_empty() && !line.starts_with('$'))
        .map(str::to_string)
        .collect();
    (next, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_begun_on_the_leader_ends_on_a_follower_after_failover() {
    let mut cluster = cluster(3).await;
    let leader = cluster.client().leader_status().await.unwrap().id;
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let mut l = Resp::connect(&cluster.nodes[&leader].redis_addr).await;
    let mut mset = vec!["MSET".to_string()];
    for i in 0..STABLE_KEYS {
        mset.extend([format!("stable:{i}"), "v".into()]);
    }
    let words: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(l.command(&words).await, "+OK\r\n");

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut cursor = String::from("0");
    for call in 0..5 {
        let (next, keys) = scan(&mut l, &cursor).await;
        assert!(!next.starts_with('-'), "{next}");
        for key in keys {
            *seen.entry(key).or_default() += 1;
        }
        let churn = format!("churn:{call}");
        assert_eq!(l.command(&["SET", &churn, "v"]).await, "+OK\r\n");
        cursor = next;
    }
    assert_ne!(cursor, "0", "the iteration ended before the failover");

    cluster.kill(leader).unwrap();
    cluster.wait_leader(WAIT).await.unwrap();
    let mut f = Resp::connect(&cluster.nodes[&follower].redis_addr).await;
    let mut calls = 0;
    while cursor != "0" {
        calls += 1;
        assert!(calls < 10_000, "the iteration does not end");
        let (next, keys) = scan(&mut f, &cursor).await;
        if next.starts_with('-') {
            // No leader yet for the read barrier: ask again.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        for key in keys {
            *seen.entry(key).or_default() += 1;
        }
        cursor = next;
    }
    for i in 0..STABLE_KEYS {
        let key = format!("stable:{i}");
        assert_eq!(
            seen.get(&key),
            Some(&1),
            "{key} seen {:?} times",
            seen.get(&key)
        );
    }
}

//! Leadership stays put under a heavy write load that crosses several snapshots (issue 17).
//!
//! Three nodes with fsync on; pipelined Redis clients write 150,000 100-byte values to the
//! leader, so every node builds several snapshots of a growing state while it appends,
//! replicates and applies at full speed. No fault is injected, so the term must never change:
//! a leader that stalled its event loop, or whose followers stopped answering, for an
//! election timeout would lose its leadership, and a client would see `-NOLEADER` or
//! `-UNKNOWN ... truncated by a new leader`.
//!
//! The election timeout is 1-2 s here, not the default 150-300 ms: this runs as a debug build
//! on a shared CI machine, where the machine alone can hold a process back for 150 ms (a run at
//! load average 20 lost its leader at 143,000 keys with the defaults). It still catches any
//! step that stops a node for a second or more. The release build with the defaults is held to
//! the default timeouts by the redis-benchmark runs in the README (`RAFT_LOAD_KEYS` and
//! `RAFT_LOAD_DEFAULT_TIMEOUTS=1` run this test that way, for example with 10,000,000 keys in
//! release for the soak the README describes).

mod common;

use std::time::{Duration, Instant};

use common::{dump_logs, Resp};

/// Keys written by default: enough for several snapshots at the distance below.
const KEYS_DEFAULT: usize = 150_000;

/// Entries between snapshots (each node adds its own 0-10 % jitter).
const SNAPSHOT_DISTANCE: usize = 30_000;

/// Election timeout bounds of the test's nodes unless `RAFT_LOAD_DEFAULT_TIMEOUTS` is set.
const ELECTION_TIMEOUT_MS: [&str; 2] = ["1000", "2000"];

/// Concurrent pipelined connections to the leader.
const CONNECTIONS: usize = 8;

/// Commands sent on a connection before its replies are read.
const PIPELINE_DEPTH: usize = 128;

/// Bytes of each value (redis-benchmark's `-d 100`).
const VALUE_BYTES: usize = 100;

/// Longest time the whole load may take (a debug build on two busy cores).
const LOAD_TIME_MAX: Duration = Duration::from_secs(600);

fn keys() -> usize {
    std::env::var("RAFT_LOAD_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KEYS_DEFAULT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_term_never_changes_under_pipelined_writes_across_snapshots() {
    let distance = SNAPSHOT_DISTANCE.to_string();
    let mut args = vec!["--snapshot-distance", &distance, "--log-level", "info"];
    if std::env::var_os("RAFT_LOAD_DEFAULT_TIMEOUTS").is_none() {
        args.extend([
            "--election-timeout-ms-min",
            ELECTION_TIMEOUT_MS[0],
            "--election-timeout-ms-max",
            ELECTION_TIMEOUT_MS[1],
        ]);
    }
    let cluster = common::cluster_with_exactly(3, &args).await;
    let leader = cluster.wait_leader(common::WAIT).await.unwrap_or_else(|e| {
        dump_logs(&cluster);
        panic!("{e}")
    });
    let redis_addr = cluster.nodes[&leader.id].redis_addr.clone();

    let keys = keys();
    let started = Instant::now();
    let writers: Vec<_> = (0..CONNECTIONS)
        .map(|writer| tokio::spawn(write_keys(redis_addr.clone(), writer, keys)))
        .collect();
    let load = async {
        for writer in writers {
            writer.await?;
        }
        Ok::<(), tokio::task::JoinError>(())
    };
    match tokio::time::timeout(LOAD_TIME_MAX, load).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            dump_logs(&cluster);
            panic!("a writer failed: {e}");
        }
        Err(_) => {
            dump_logs(&cluster);
            panic!("{keys} writes took longer than {LOAD_TIME_MAX:?}");
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{keys} pipelined writes in {elapsed:.1?} ({:.0}/s)",
        keys as f64 / elapsed.as_secs_f64()
    );

    let client = cluster.client();
    for (id, node) in &cluster.nodes {
        let status = client.status_at(&node.addr).await.expect("status");
        eprintln!(
            "node {id}: {} term {} snapshot {} applied {}",
            status.role, status.term, status.snapshot_index, status.applied_index
        );
        let late = cluster.log_tail(*id, 100_000);
        for line in late.lines().filter(|l| l.contains("late")).take(5) {
            eprintln!("  node {id}: {line}");
        }
        if status.term != leader.term || status.leader != Some(leader.id) {
            dump_logs(&cluster);
            panic!(
                "node {id} is in term {} with leader {:?}; the load started in term {} under \
                 node {}: an election happened without a fault",
                status.term, status.leader, leader.term, leader.id
            );
        }
        assert!(
            status.snapshot_index >= (2 * SNAPSHOT_DISTANCE) as u64,
            "node {id} took fewer snapshots than the test means to cross (latest at {})",
            status.snapshot_index
        );
    }
    let mut conn = Resp::connect(&redis_addr).await;
    assert_eq!(conn.command(&["DBSIZE"]).await, format!(":{keys}\r\n"));
}

/// Writes this writer's share of `keys` distinct keys in pipelined batches; every reply must
/// be `+OK`.
async fn write_keys(addr: String, writer: usize, keys: usize) {
    let mut conn = Resp::connect(&addr).await;
    let value = "v".repeat(VALUE_BYTES);
    let mine: Vec<usize> = (writer..keys).step_by(CONNECTIONS).collect();
    for batch in mine.chunks(PIPELINE_DEPTH) {
        let mut request = String::new();
        for key in batch {
            let key = format!("key:{key:012}");
            request.push_str(&format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                key.len(),
                value.len()
            ));
        }
        conn.send(request.as_bytes()).await;
        for key in batch {
            let reply = conn.reply().await.expect("connection open");
            assert_eq!(
                reply,
                b"+OK\r\n",
                "SET key:{key:012}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
}

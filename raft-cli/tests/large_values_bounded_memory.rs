//! Memory bounded in bytes with large values: 1 MiB overwrites of one key keep every node's
//! resident memory under a fixed bound, whatever the number of writes (the log store is the
//! log: the node keeps a bounded window of it in memory), and a follower that was down
//! catches up from the log, read back from the leader's store, not from a snapshot.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{dump_logs, WAIT};
use raft_cli::local::LocalCluster;

/// Resident memory every node must stay under (its peak, `VmHWM`).
const RSS_BYTES_MAX: u64 = 256 << 20;
const VALUE_BYTES: usize = 1 << 20;
/// Clients writing at once.
const WRITERS: usize = 4;

/// Flags: snapshots rare enough (by count) that the log, not a snapshot, carries the
/// follower's catch-up, but due by bytes (the default 64 MiB); byte limits below the
/// defaults, so that what they let the queues hold (8 + 24 MiB of payloads, 4 MiB in flight
/// per peer, with the fixed 16 MiB per peer queue and 16 MiB inbound queue: 88 MiB) leaves
/// room under `RSS_BYTES_MAX` for the allocator and the buffers. With the defaults (160 MiB
/// by the same sum) a busy machine, where every queue fills, saw peaks of 277-510 MiB.
const ARGS: &[&str] = &[
    "--snapshot-trailing-entries",
    "100000",
    "--log-cache-bytes-max",
    "8388608",
    "--unapplied-bytes-max",
    "25165824",
    "--uncommitted-bytes-max",
    "16777216",
    "--apply-queue-bytes-max",
    "8388608",
    "--inflight-bytes-max",
    "4194304",
    "--log-level",
    "info",
];

/// The peak resident memory of process `pid`, in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number");
    kib * 1024
}

/// A 1 MiB value whose first bytes say which write it is.
fn value(n: usize) -> Bytes {
    let mut v = vec![(n % 251) as u8; VALUE_BYTES];
    v[..8].copy_from_slice(&(n as u64).to_le_bytes());
    Bytes::from(v)
}

/// `count` overwrites of key `k` by `WRITERS` clients at once; returns the last value written
/// (the writers take turns by number, so the highest number is written last).
async fn overwrite(cluster: &LocalCluster, count: usize) -> usize {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = cluster.client();
        tasks.push(tokio::spawn(async move {
            let mut n = w;
            while n < count {
                client
                    .put(Bytes::from_static(b"k"), value(n))
                    .await
                    .unwrap_or_else(|e| panic!("write {n}: {e}"));
                n += WRITERS;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    count - 1
}

fn check_peaks(cluster: &mut LocalCluster, when: &str) {
    for (id, node) in cluster.nodes.iter_mut() {
        let Some(pid) = node.pid() else { continue };
        let peak = peak_rss_bytes(pid);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let memory: Vec<&str> = status
            .lines()
            .filter(|l| l.starts_with("VmHWM") || l.starts_with("Rss"))
            .collect();
        if std::env::var("SHOW_MEM").is_ok() {
            eprintln!("{when}: node {id}: {memory:?}");
        }
        assert!(
            peak < RSS_BYTES_MAX,
            "{when}: node {id} peaked at {} MiB ({memory:?})",
            peak >> 20
        );
    }
}

async fn value_number(cluster: &LocalCluster) -> u64 {
    let got = cluster
        .client()
        .get(Bytes::from_static(b"k"))
        .await
        .expect("read")
        .expect("the key exists");
    assert_eq!(got.len(), VALUE_BYTES);
    u64::from_le_bytes(got[..8].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_overwriting_a_large_value_stays_within_its_memory_bound() {
    let mut cluster = common::cluster_with_exactly(1, ARGS).await;
    cluster.wait_leader(WAIT).await.expect("a leader");
    let last = overwrite(&cluster, 1_500).await;
    check_peaks(&mut cluster, "after 1,500 overwrites of 1 MiB");
    // Whichever writer finished last, the value is one of the last few written.
    let seen = value_number(&cluster).await;
    assert!(seen as usize + WRITERS > last, "read write {seen}");
    cluster.kill(1).unwrap();
    cluster.restart(1).unwrap();
    cluster
        .wait_leader(WAIT)
        .await
        .expect("the node leads again");
    assert_eq!(
        value_number(&cluster).await,
        seen,
        "the same value after a restart"
    );
    check_peaks(&mut cluster, "after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_large_values_from_the_log() {
    let mut cluster = common::cluster_with_exactly(3, ARGS).await;
    let leader = cluster.wait_leader(WAIT).await.expect("a leader").id;
    let follower = if leader == 3 { 2 } else { 3 };
    overwrite(&cluster, 40).await;
    cluster.kill(follower).unwrap();
    let last = overwrite(&cluster, 400).await;
    cluster.restart(follower).unwrap();
    let commit = cluster
        .client()
        .leader_status()
        .await
        .expect("status")
        .commit_index;
    let started = Instant::now();
    if let Err(e) = cluster.wait_applied(follower, commit, WAIT).await {
        dump_logs(&cluster);
        panic!("the follower did not catch up: {e}");
    }
    let caught_up_in = started.elapsed();
    check_peaks(&mut cluster, "after the catch-up");
    let log = cluster.log_tail(follower, 100_000);
    assert!(
        !log.contains("installing snapshot"),
        "the follower installed a snapshot instead of reading the log"
    );
    assert!(value_number(&cluster).await as usize + WRITERS > last);
    assert!(caught_up_in < Duration::from_secs(60));
}

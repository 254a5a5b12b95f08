//! `raft demo`: a local 3-node cluster of child processes that shows, in under half a minute,
//! replication, a leader killed with SIGKILL, a new election with no acknowledged write lost,
//! a restart from disk, a fourth node caught up through a snapshot, its removal, and a summary.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::client::ClusterClient;
use crate::local::LocalCluster;
use crate::proto::{Reply, Request};
use crate::workload::{verify, LoadReport, WriteLoad};

/// Concurrent writers during the demo.
const WRITERS: usize = 16;
/// Writes per writer in the first phase.
const WRITES_EACH: u64 = 200;
/// Time the cluster takes load before its leader is killed.
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(500);
/// Time the load goes on after writes resumed under the new leader.
const LOAD_AFTER_RECOVERY: Duration = Duration::from_millis(500);
/// Longest wait for any step of the demo.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Flags of every child: snapshots keep only 100 entries below them, so the fourth node
/// has to catch up through a snapshot; logs at warn level into the node's log file.
const NODE_ARGS: &[&str] = &["--snapshot-trailing-entries", "100", "--log-level", "info"];

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn percentiles(h: &Histogram<u64>) -> String {
    let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
        q(0.5),
        q(0.95),
        q(0.99),
        q(0.999)
    )
}

/// Runs the demo.
pub async fn run() -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("locating the raft binary")?;
    let began = Instant::now();
    println!("raft demo: a 3-node cluster on this machine, fsync on, default timeouts\n");
    let mut cluster = LocalCluster::start(&binary, 3, NODE_ARGS)?;
    let result = steps(&mut cluster, began).await;
    if result.is_err() {
        for id in cluster.nodes.keys() {
            eprintln!("--- node {id} log ---\n{}", cluster.log_tail(*id, 20));
        }
    }
    print!(
        "cleaning up: stopping the nodes, removing {} ... ",
        cluster.dir().display()
    );
    let stopped = cluster.stop_all();
    drop(cluster);
    println!("done");
    result?;
    stopped?;
    println!("\ntotal demo time {}", ms(began.elapsed()));
    Ok(())
}

async fn steps(cluster: &mut LocalCluster, began: Instant) -> anyhow::Result<()> {
    for node in cluster.nodes.values() {
        println!(
            "  node {} raft {} redis {} pid {}",
            node.id,
            node.addr,
            node.redis_addr,
            node.pid().unwrap_or(0)
        );
    }
    let leader = cluster.wait_leader(STEP_TIMEOUT).await?;
    println!(
        "1. node {} was elected leader in term {} ({} after start)",
        leader.id,
        leader.term,
        ms(began.elapsed())
    );

    let addrs: Vec<String> = cluster.nodes.values().map(|n| n.addr.clone()).collect();
    let load = WriteLoad::start(&addrs, WRITERS, "demo", WRITES_EACH);
    let steady = load.join().await;
    println!(
        "2. {WRITERS} clients wrote {} keys: {:.0} acknowledged writes/s; latency {}",
        steady.acked.len(),
        steady.writes_per_s(),
        percentiles(&steady.latency_us)
    );
    if steady.acked.is_empty() {
        bail!("no write was acknowledged");
    }

    let (failover, under_load, new_leader) = kill_leader_under_load(cluster, &addrs).await?;
    let client = cluster.client();
    let mut acked = steady.acked.clone();
    acked.extend(under_load.acked.iter().cloned());
    let lost = verify(&client, &acked).await?;
    if !lost.is_empty() {
        bail!(
            "{} acknowledged writes are missing, e.g. {:?}",
            lost.len(),
            lost[0]
        );
    }
    println!(
        "4. all {} acknowledged writes are readable (linearizable reads); {} writes had an \
         unknown outcome when the leader died and are not counted",
        acked.len(),
        under_load.unknown
    );

    let killed = leader.id;
    cluster.restart(killed)?;
    let status = cluster
        .wait_leader(STEP_TIMEOUT)
        .await
        .context("waiting for the cluster after the restart")?;
    let caught = cluster
        .wait_applied(killed, status.commit_index, STEP_TIMEOUT)
        .await?;
    println!(
        "5. node {killed} restarted from its data directory and caught up to index {} as a {}",
        caught.applied_index, caught.role
    );

    snapshot_and_add_fourth(cluster, &client, new_leader).await?;

    println!("\nsummary");
    println!(
        "  throughput   {:.0} acknowledged writes/s with {WRITERS} clients",
        steady.writes_per_s()
    );
    println!("  latency      {}", percentiles(&steady.latency_us));
    println!(
        "  failover     writes resumed {} after SIGKILL of the leader",
        ms(failover)
    );
    println!(
        "  durability   {} acknowledged writes checked, 0 lost",
        acked.len()
    );
    Ok(())
}

/// Kills the leader while writers run; returns the write unavailability, the load's report
/// and the new leader's id.
async fn kill_leader_under_load(
    cluster: &mut LocalCluster,
    addrs: &[String],
) -> anyhow::Result<(Duration, LoadReport, u64)> {
    let leader = cluster.wait_leader(STEP_TIMEOUT).await?;
    let load = WriteLoad::start(addrs, WRITERS, "failover", u64::MAX);
    tokio::time::sleep(LOAD_BEFORE_KILL).await;
    cluster.kill(leader.id)?;
    let killed_at = Instant::now();
    let new_leader = cluster.wait_leader(STEP_TIMEOUT).await?;
    let elected = killed_at.elapsed();
    let deadline = Instant::now() + STEP_TIMEOUT;
    let resumed = loop {
        // Poll the writers' progress through a cheap read of the new leader's status.
        let status = cluster
            .client()
            .status_at(cluster.addr(new_leader.id))
            .await?;
        if status.commit_index > new_leader.commit_index {
            break killed_at.elapsed();
        }
        if Instant::now() >= deadline {
            bail!("no write was committed by the new leader within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(LOAD_AFTER_RECOVERY).await;
    let report = load.finish().await;
    let failover = report
        .first_ack_of_write_sent_after(killed_at)
        .map_or(resumed, |t| t.duration_since(killed_at));
    println!(
        "3. SIGKILL of leader node {} under load; node {} elected in term {} after {}; \
         writes resumed after {}",
        leader.id,
        new_leader.id,
        new_leader.term,
        ms(elected),
        ms(failover)
    );
    Ok((failover, report, new_leader.id))
}

async fn snapshot_and_add_fourth(
    cluster: &mut LocalCluster,
    client: &ClusterClient,
    leader_id: u64,
) -> anyhow::Result<()> {
    let leader_addr = cluster.addr(leader_id).to_string();
    let index = match client.call_at(&leader_addr, &Request::Snapshot).await? {
        Reply::Snapshot { index } => index,
        other => bail!("unexpected reply {other:?}"),
    };
    println!("6. leader node {leader_id} built a snapshot at index {index} and compacted its log");

    let started = Instant::now();
    cluster.start_joining(4, &leader_addr)?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let leader = client.leader_status().await?;
        let voter = leader.members.iter().any(|m| m.id == 4 && m.voter);
        if voter {
            let node4 = cluster
                .wait_applied(4, leader.commit_index, STEP_TIMEOUT)
                .await?;
            if node4.snapshot_index < index {
                bail!("node 4 caught up without the snapshot at {index}");
            }
            let probe = Bytes::from_static(b"demo:0:0");
            let value = match client
                .call_at(cluster.addr(4), &Request::Get { keys: vec![probe] })
                .await?
            {
                Reply::Values(mut v) => v.pop().flatten(),
                _ => None,
            };
            println!(
                "7. node 4 joined, installed the snapshot at index {} and caught up to {} in {}; \
                 it reads demo:0:0 = {:?}",
                node4.snapshot_index,
                node4.applied_index,
                ms(started.elapsed()),
                value.map(|v| String::from_utf8_lossy(&v).into_owned())
            );
            break;
        }
        if Instant::now() >= deadline {
            bail!("node 4 was not promoted within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    client.call(&Request::Remove { id: 4 }).await?;
    cluster.stop(4)?;
    let members = client.leader_status().await?.members;
    let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
    println!(
        "8. node 4 removed and stopped; members now {}",
        ids.join(", ")
    );
    Ok(())
}

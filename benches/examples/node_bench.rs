//! Whole nodes in one process, in the shape of openraft's `benchmarks/minimal`: `--members`
//! `RaftNode`s over the in-memory router (a message is a function call into the receiver's
//! queue), in-memory log and snapshot stores, a state machine that does nothing, and
//! closed-loop clients that propose empty commands to the leader through its `RaftHandle`
//! (`--batch B`: B commands per `propose_many` call, each answered on its own). It measures
//! what the node itself costs: the event loop, the driver, the engine, the hand-offs between
//! tasks and threads; no disk, no sockets, no serialization.
//!
//! ```sh
//! cargo run --release -p benches --example node_bench -- --clients 64 --ops 1000000
//! cargo run --release -p benches --example node_bench -- --clients 256 --batch 4
//! ```
//!
//! Prints entries/s and the latency of each call (proposed until applied on the leader and
//! answered) at p50 and p99. `--sm-thread false` applies on the node's runtime instead of
//! the state machine's own thread (`NodeConfig::state_machine_thread`, on by default);
//! `--worker-threads N` sizes the tokio runtime (default: one per core).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{
    MemLogStore, MemRouter, MemSnapshotStore, MessageHandler, NodeConfig, RaftHandle, RaftNode,
    StateMachine, StateMachineError,
};
use raft_core::{Entry, Membership, NodeId, SnapshotMeta};
use tokio::io::{AsyncRead, AsyncWrite};

/// Commands a `--batch` call may carry (the node's own limit).
const BATCH_MAX: usize = raft_core::node::PROPOSE_MANY_COMMANDS_MAX;

/// Longest wait for the first leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Args {
    clients: usize,
    ops: u64,
    members: u64,
    batch: usize,
    sm_thread: bool,
    worker_threads: usize,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = Args {
            clients: 64,
            ops: 1_000_000,
            members: 3,
            batch: 1,
            sm_thread: true,
            worker_threads: 0,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--bench" {
                continue; // cargo bench passes it
            }
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--clients" => args.clients = value.parse().map_err(|e| bad(&e))?,
                "--ops" => args.ops = value.parse().map_err(|e| bad(&e))?,
                "--members" => args.members = value.parse().map_err(|e| bad(&e))?,
                "--batch" => args.batch = value.parse().map_err(|e| bad(&e))?,
                "--sm-thread" => args.sm_thread = value.parse().map_err(|e| bad(&e))?,
                "--worker-threads" => args.worker_threads = value.parse().map_err(|e| bad(&e))?,
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if args.clients == 0 || args.members == 0 || args.batch == 0 || args.batch > BATCH_MAX {
            return Err(format!(
                "--clients and --members must be positive, --batch within 1..={BATCH_MAX}"
            ));
        }
        Ok(args)
    }
}

/// A state machine with no data: every entry is answered with an empty response.
#[derive(Debug, Default)]
struct Nothing;

#[async_trait]
impl StateMachine for Nothing {
    async fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Bytes>, StateMachineError> {
        Ok(vec![Bytes::new(); entries.len()])
    }

    async fn build_snapshot(
        &mut self,
        _writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        Ok(())
    }

    async fn restore(
        &mut self,
        _meta: &SnapshotMeta,
        _reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        Ok(())
    }
}

/// Starts the members and returns their handles.
async fn start_cluster(args: &Args) -> Vec<RaftHandle> {
    let router = MemRouter::new();
    let membership = Membership::new_voters(1..=args.members);
    let mut handles = Vec::new();
    for id in 1..=args.members {
        let mut config = NodeConfig::new(id);
        config.state_machine_thread = args.sm_thread;
        // Snapshots of an empty state are cheap, but keep them out of the measurement.
        config.engine.snapshot_distance = 0;
        config.engine.snapshot_log_bytes = 0;
        let handle = RaftNode::start(
            config,
            Arc::new(MemLogStore::new()),
            Arc::new(MemSnapshotStore::new()),
            Arc::new(router.transport(id)),
            Nothing,
            membership.clone(),
        )
        .await
        .expect("node starts");
        router.register(id, Arc::new(handle.clone()) as Arc<dyn MessageHandler>);
        handles.push(handle);
    }
    handles
}

async fn wait_leader(handles: &[RaftHandle]) -> RaftHandle {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let leader: Option<NodeId> = handles[0].status().leader;
        if let Some(handle) = handles
            .iter()
            .find(|h| leader == Some(h.id()) && h.status().leader == leader)
        {
            return handle.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {LEADER_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One closed-loop client: `calls` calls of `batch` commands; returns each call's latency in
/// nanoseconds.
async fn client(leader: RaftHandle, calls: u64, batch: usize) -> Vec<u64> {
    let mut latencies = Vec::with_capacity(calls as usize);
    for _ in 0..calls {
        let start = Instant::now();
        if batch == 1 {
            leader.propose(Bytes::new()).await.expect("write");
        } else {
            let answers = leader.propose_many(vec![Bytes::new(); batch]).await;
            for answer in answers {
                answer.expect("write");
            }
        }
        latencies.push(start.elapsed().as_nanos() as u64);
    }
    latencies
}

fn percentile(sorted: &[u64], q: f64) -> Duration {
    let at = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    Duration::from_nanos(sorted[at])
}

async fn run(args: Args) {
    let handles = start_cluster(&args).await;
    let leader = wait_leader(&handles).await;
    let calls_per_client = (args.ops / args.batch as u64 / args.clients as u64).max(1);
    // A short warm-up: allocations, the first AppendEntries round, thread wake-ups.
    let warm_up: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(client(leader.clone(), 10, args.batch)))
        .collect();
    for task in warm_up {
        task.await.expect("client");
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(client(leader.clone(), calls_per_client, args.batch)))
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let entries = latencies.len() as u64 * args.batch as u64;
    println!(
        "members {} clients {} batch {} sm_thread {}: {} entries in {:.2?}: {:.0} entries/s, \
         {:.0} calls/s; call latency p50 {:.1?} p99 {:.1?}",
        args.members,
        args.clients,
        args.batch,
        args.sm_thread,
        entries,
        elapsed,
        entries as f64 / elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
    for handle in handles {
        handle.shutdown().await;
    }
}

fn main() -> std::process::ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("node_bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.worker_threads > 0 {
        runtime.worker_threads(args.worker_threads);
    }
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    runtime.block_on(run(args));
    std::process::ExitCode::SUCCESS
}

//! A replicated counter: three servers agree on one number, and keep agreeing while one of
//! them dies and another takes its place.
//!
//! ```text
//! cargo run -p raft-examples --example replicated_counter
//! ```
//!
//! (`cargo test --workspace` runs it too.) Every server is built from the workspace's crates:
//!
//! - **raft-core** runs the consensus and calls the state machine below, [`Counter`].
//! - **raft-log** keeps each server's log on disk ([`RaftLogStore`]).
//! - **raft-snapshot** keeps its snapshots on disk ([`FileSnapshotStore`]) and streams them to
//!   servers that are too far behind ([`SnapshotSender`]).
//! - **raft-net-tcp** connects the servers ([`TcpEndpoint`], [`TcpNode`]: server, transport
//!   and the native client protocol) and gives clients a [`ClusterClient`] that finds the
//!   leader by itself.
//!
//! The program starts three servers on loopback ports in a temporary directory, increments
//! the counter through the client, reads it linearizably on a follower, kills the leader,
//! goes on writing through the new one, adds a fourth server that catches up from a snapshot
//! and removes the dead one, and shuts everything down, printing each step.
//!
//! To make it your own service: replace [`Counter`] (what a command does to the state, how
//! the state is written to and read from a snapshot) and [`Request`] with [`CounterService`]
//! (what clients may ask), and run [`start_server`] once per machine, each with its own data
//! directory and the same initial membership. Restarting a server is the same call with the
//! same directory and address.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::engine::Role;
use raft_core::node::{
    NodeConfig, RaftError, RaftHandle, StartOptions, StateMachine, StateMachineError,
};
use raft_core::{Entry, EntryKind, Membership, NodeId, SnapshotMeta};
use raft_log::RaftLogStore;
use raft_net_tcp::{
    ClientHandler, ClientRequest, ClientResponse, ClusterClient, ClusterError, Idempotency,
    TcpConfig, TcpEndpoint, TcpNode,
};
use raft_snapshot::{FileSnapshotStore, SenderConfig, SnapshotSender};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every server and client of one cluster uses the same id; a connection from another
/// cluster is refused in the handshake.
const CLUSTER_ID: u64 = 2026;
/// Increments sent before the leader is killed, and again after.
const INCREMENTS_PER_PHASE: u64 = 100;
/// How long the program waits for the cluster at any one step before it gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// The state machine: what the servers replicate.

/// The replicated state: one number. Each log entry the leader commits is a command, an
/// `i64` delta in 8 little-endian bytes; every server applies the same commands in the same
/// order and so holds the same number.
#[derive(Debug, Default)]
struct Counter {
    /// Shared with the server's [`CounterService`], which reads it after a read barrier.
    value: Arc<AtomicI64>,
}

impl Counter {
    /// Applies one entry and returns its answer: the new value for a delta, nothing for the
    /// entries raft-core adds itself (a new leader's blank entry, configuration changes).
    fn apply_one(&self, entry: &Entry) -> Bytes {
        if entry.kind != EntryKind::Normal {
            return Bytes::new();
        }
        // A malformed command is answered, never failed: an error from `apply` stops the
        // server, at every restart, since the entry stays in the log. (The service below
        // only proposes well-formed commands anyway.)
        let Ok(delta) = <[u8; 8]>::try_from(&entry.data[..]) else {
            return Bytes::new();
        };
        let delta = i64::from_le_bytes(delta);
        // Wrapping, so that every server computes the same thing whatever the numbers.
        let new = self.value.load(Ordering::SeqCst).wrapping_add(delta);
        self.value.store(new, Ordering::SeqCst);
        Bytes::copy_from_slice(&new.to_le_bytes())
    }
}

#[async_trait]
impl StateMachine for Counter {
    async fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Bytes>, StateMachineError> {
        Ok(entries.iter().map(|entry| self.apply_one(entry)).collect())
    }

    async fn build_snapshot(
        &mut self,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let value = self.value.load(Ordering::SeqCst);
        writer
            .write_all(&value.to_le_bytes())
            .await
            .map_err(|e| StateMachineError(format!("writing the snapshot: {e}")))
    }

    async fn restore(
        &mut self,
        _meta: &SnapshotMeta,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        // Read to the end: the snapshot store checks the size and checksum there. One byte
        // more than a value may hold shows a snapshot that is not ours.
        let mut bytes = Vec::with_capacity(8);
        (&mut *reader)
            .take(9)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| StateMachineError(format!("reading the snapshot: {e}")))?;
        let value = <[u8; 8]>::try_from(&bytes[..])
            .map_err(|_| StateMachineError(format!("a snapshot of {} bytes", bytes.len())))?;
        self.value
            .store(i64::from_le_bytes(value), Ordering::SeqCst);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The service: what clients may ask a server, over raft-net-tcp's native client protocol.

/// A client's request, as its payload bytes carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    /// Read the counter (linearizable, on any server): `[0]`.
    Get,
    /// Add to the counter (through the leader): `[1, delta as 8 bytes little-endian]`.
    Add(i64),
}

impl Request {
    fn encode(self) -> Bytes {
        match self {
            Request::Get => Bytes::from_static(&[0]),
            Request::Add(delta) => {
                let mut bytes = vec![1];
                bytes.extend_from_slice(&delta.to_le_bytes());
                Bytes::from(bytes)
            }
        }
    }

    /// Decodes untrusted bytes.
    fn decode(bytes: &[u8]) -> Option<Request> {
        match bytes {
            [0] => Some(Request::Get),
            [1, delta @ ..] => Some(Request::Add(i64::from_le_bytes(delta.try_into().ok()?))),
            _ => None,
        }
    }
}

/// Serves [`Request`]s on one server. Every answer is the counter's value in 8 bytes.
struct CounterService {
    handle: RaftHandle,
    value: Arc<AtomicI64>,
}

impl CounterService {
    async fn execute(&self, request: Request) -> Result<Bytes, RaftError> {
        match request {
            // Replicated through the log; answered with the value right after this delta,
            // once the entry is committed and applied here. A server that is not the leader
            // answers NotLeader with the leader's address, and the client goes there.
            Request::Add(delta) => {
                self.handle
                    .propose(Bytes::copy_from_slice(&delta.to_le_bytes()))
                    .await
            }
            // Linearizable on any server, followers too: once the read barrier resolves, this
            // server has applied every write acknowledged before the request arrived.
            Request::Get => {
                self.handle.read_barrier().await?;
                let value = self.value.load(Ordering::SeqCst);
                Ok(Bytes::copy_from_slice(&value.to_le_bytes()))
            }
        }
    }
}

#[async_trait]
impl ClientHandler for CounterService {
    async fn handle(&self, request: ClientRequest) -> ClientResponse {
        let Some(request) = Request::decode(&request.payload) else {
            return ClientResponse::Error("malformed request".into());
        };
        match self.execute(request).await {
            Ok(value) => ClientResponse::Ok(value),
            // Tells the client what it may do next: go to the leader, retry (nothing was
            // done), or report that the outcome is unknown.
            Err(error) => ClientResponse::from(error),
        }
    }
}

// ---------------------------------------------------------------------------------------
// One server.

/// A running server and what the program looks at.
struct Server {
    node: TcpNode,
    value: Arc<AtomicI64>,
}

impl Server {
    fn handle(&self) -> &RaftHandle {
        self.node.handle()
    }
}

/// Starts the server `id` on `endpoint`, with its log and snapshots under `dir`.
///
/// `membership` is the initial configuration of a new cluster (every server gets the same),
/// or an empty one for a server that joins a running cluster later.
async fn start_server(
    id: NodeId,
    endpoint: TcpEndpoint,
    dir: &Path,
    membership: Membership,
) -> Result<Server, BoxError> {
    let log = Arc::new(RaftLogStore::open(
        dir.join("log"),
        raft_log::Options::default(),
    )?);
    let snapshots = Arc::new(FileSnapshotStore::open(dir.join("snapshots"))?);
    // Snapshots go to lagging servers in 1 MiB chunks, 4 in flight, resuming after failures.
    let sender = SnapshotSender::new(
        snapshots.clone(),
        endpoint.transport(),
        SenderConfig::default(),
    )?;
    let mut config = NodeConfig::new(id);
    // Snapshot every 100 entries and keep only 20 entries below the snapshot, so that the
    // server added later must catch up from a snapshot. (The defaults, 100,000 and 10,000,
    // suit a real service.)
    config.engine.snapshot_distance = 100;
    config.engine.snapshot_trailing_entries = 20;
    let counter = Counter::default();
    let value = counter.value.clone();
    let shared = value.clone();
    let options = StartOptions {
        snapshot_transfer: Some(Arc::new(sender)),
        ..StartOptions::default()
    };
    let node = endpoint
        .with_client_handler(move |handle| {
            Arc::new(CounterService {
                handle,
                value: shared,
            })
        })
        .start(config, log, snapshots, counter, membership, options)
        .await?;
    Ok(Server { node, value })
}

// ---------------------------------------------------------------------------------------
// The program.

/// What happened, for the test below to check.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
struct Outcome {
    /// Increments the client saw acknowledged.
    acknowledged: u64,
    /// Increments whose outcome the client could not know (sent to a leader as it died).
    unknown: u64,
    /// The counter at the end, read linearizably on the new server.
    final_value: i64,
    /// The snapshot the new server caught up from.
    snapshot_index: u64,
}

async fn run() -> Result<Outcome, BoxError> {
    let data = tempfile::tempdir()?;
    println!(
        "step 1: three servers on loopback TCP, data in {}",
        data.path().display()
    );
    // Bind first: the initial membership names every server's address.
    let mut endpoints = BTreeMap::new();
    let mut membership = Membership::builder();
    for id in 1..=3 {
        let endpoint = TcpEndpoint::bind("127.0.0.1:0", TcpConfig::new(CLUSTER_ID, id)).await?;
        println!("  node {id} listens on {}", endpoint.local_addr());
        membership = membership.voter(id, endpoint.local_addr());
        endpoints.insert(id, endpoint);
    }
    let membership = membership.build()?;
    let mut servers = BTreeMap::new();
    for (id, endpoint) in endpoints {
        let dir = data.path().join(format!("node-{id}"));
        let server = start_server(id, endpoint, &dir, membership.clone()).await?;
        servers.insert(id, server);
    }
    let (leader, term) = wait_for_leader(&servers).await?;
    println!("  node {leader} leads (term {term})");

    println!("step 2: {INCREMENTS_PER_PHASE} increments through the cluster client");
    let addrs: Vec<String> = servers
        .values()
        .map(|s| s.node.local_addr().to_string())
        .collect();
    let client = ClusterClient::new(addrs, CLUSTER_ID);
    let mut writes = Writes::default();
    writes.increment(&client, INCREMENTS_PER_PHASE).await?;
    println!("  {writes}");

    println!("step 3: a linearizable read on a follower");
    read_on_follower(&servers, &client, &writes).await?;

    println!("step 4: the leader, node {leader}, is killed");
    let killed_at = Instant::now();
    servers
        .remove(&leader)
        .expect("the leader runs")
        .node
        .kill();
    let (new_leader, new_term) = wait_for_leader(&servers).await?;
    println!(
        "  node {new_leader} leads (term {new_term}), elected {} ms after the kill",
        killed_at.elapsed().as_millis()
    );
    writes.increment(&client, INCREMENTS_PER_PHASE).await?;
    println!("  {INCREMENTS_PER_PHASE} more increments; in all {writes}");
    read_on_follower(&servers, &client, &writes).await?;

    println!("step 5: node 4 replaces node {leader}, catching up from a snapshot");
    let snapshot_index = add_server(&mut servers, 4, data.path()).await?;
    let new_addr = servers[&4].node.local_addr().to_string();
    let final_value = read_at(&client, &new_addr).await?;
    writes.check(final_value)?;
    println!("  node 4 installed the snapshot of index {snapshot_index}; it reads {final_value}");
    change_membership(
        &servers,
        |m| !m.contains(leader),
        |handle| async move { handle.remove_server(leader).await },
    )
    .await?;
    let members: Vec<NodeId> = servers[&4]
        .handle()
        .status()
        .membership
        .all_members()
        .collect();
    println!("  node {leader} removed; the members are now {members:?}");

    println!("step 6: clean shutdown");
    for (id, server) in servers {
        // Stops taking clients, finishes their requests, stops the node, closes connections.
        server.node.shutdown().await;
        println!("  node {id} stopped");
    }
    println!(
        "done: {} increments acknowledged, {} of unknown outcome; the counter is {final_value}",
        writes.acknowledged, writes.unknown
    );
    Ok(Outcome {
        acknowledged: writes.acknowledged,
        unknown: writes.unknown,
        final_value,
        snapshot_index,
    })
}

/// The increments sent, as the client saw them.
#[derive(Debug, Default)]
struct Writes {
    acknowledged: u64,
    /// Sent, but the client cannot know whether they were applied: never count them as done.
    unknown: u64,
}

impl Writes {
    /// Sends `count` increments of 1, one after another.
    async fn increment(&mut self, client: &ClusterClient, count: u64) -> Result<(), BoxError> {
        for _ in 0..count {
            // An increment applied twice counts twice: not idempotent, so the client retries
            // it only where it provably was not executed.
            let sent = client.request(Request::Add(1).encode(), Idempotency::NotIdempotent);
            match sent.await {
                Ok(_new_value) => self.acknowledged += 1,
                Err(ClusterError::OutcomeUnknown(why)) => {
                    println!("  one increment of unknown outcome ({why})");
                    self.unknown += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Every acknowledged increment is in `value`; those of unknown outcome may be.
    fn check(&self, value: i64) -> Result<(), BoxError> {
        let (low, high) = (self.acknowledged, self.acknowledged + self.unknown);
        if !(low as i64..=high as i64).contains(&value) {
            return Err(format!("the counter is {value}, expected {low} to {high}").into());
        }
        Ok(())
    }
}

impl std::fmt::Display for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} acknowledged", self.acknowledged)?;
        if self.unknown > 0 {
            write!(f, ", {} of unknown outcome", self.unknown)?;
        }
        Ok(())
    }
}

/// Reads the counter on a server that does not lead, and checks it holds every increment.
async fn read_on_follower(
    servers: &BTreeMap<NodeId, Server>,
    client: &ClusterClient,
    writes: &Writes,
) -> Result<(), BoxError> {
    let (id, follower) = servers
        .iter()
        .find(|(_, server)| server.handle().status().role != Role::Leader)
        .ok_or("no follower")?;
    let value = read_at(client, &follower.node.local_addr().to_string()).await?;
    writes.check(value)?;
    // What the follower's own state machine holds agrees (and is what the read returned).
    let local = follower.value.load(Ordering::SeqCst);
    println!("  node {id}, a follower, reads {value} (its state machine holds {local})");
    Ok(())
}

/// A linearizable read at the server at `addr` only (no redirect: any server serves reads).
/// A read changes nothing, so it is asked again while the server cannot serve it yet (it
/// knows no leader right after an election, say).
async fn read_at(client: &ClusterClient, addr: &str) -> Result<i64, BoxError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match client.request_at(addr, Request::Get.encode()).await? {
            ClientResponse::Ok(value) => return Ok(i64::from_le_bytes(value[..].try_into()?)),
            ClientResponse::Error(why) => return Err(format!("read at {addr}: {why}").into()),
            not_now if Instant::now() >= deadline => {
                return Err(format!("read at {addr}: {not_now:?}").into())
            }
            _not_now => sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Starts server `id` with an empty configuration, has the leader add it as a voter (caught
/// up as a learner first), and returns the index of the snapshot it installed.
async fn add_server(
    servers: &mut BTreeMap<NodeId, Server>,
    id: NodeId,
    data: &Path,
) -> Result<u64, BoxError> {
    let (leader, _) = wait_for_leader(servers).await?;
    let leader = servers[&leader].handle().clone();
    // A snapshot now, so the log the leader keeps starts well after index 1 and the new
    // server, whose log is empty, must be sent the snapshot.
    let snapshot = leader.trigger_snapshot().await?;
    let first_index = wait_for(|| {
        let first = leader.status().first_index;
        (first > 1).then_some(first)
    })
    .await?;
    println!(
        "  the leader's snapshot covers index {}; its log now starts at index {first_index}",
        snapshot.index
    );
    // The new server knows no configuration yet: the members' addresses let it answer the
    // leader that catches it up.
    let seeds = leader.status().membership.addresses;
    let endpoint = TcpEndpoint::bind("127.0.0.1:0", TcpConfig::new(CLUSTER_ID, id))
        .await?
        .with_seed_peers(&seeds);
    let addr = endpoint.local_addr().to_string();
    let dir = data.join(format!("node-{id}"));
    let server = start_server(id, endpoint, &dir, Membership::default()).await?;
    let handle = server.handle().clone();
    servers.insert(id, server);
    change_membership(
        servers,
        |m| m.voters.contains(&id),
        |leader| {
            let addr = addr.clone();
            async move { leader.add_voter(id, addr).await }
        },
    )
    .await?;
    // It could only have got there by installing a snapshot: the entries below the leader's
    // first index are in no log any more.
    let installed = handle.status().snapshot.index;
    if installed < first_index - 1 {
        return Err(format!("node {id} has snapshot {installed}, not a sent one").into());
    }
    Ok(installed)
}

/// Runs a membership change on whichever server leads, again if leadership moves before it
/// is done (the change may have committed meanwhile: `done` looks at the configuration).
async fn change_membership<F, Fut>(
    servers: &BTreeMap<NodeId, Server>,
    done: impl Fn(&Membership) -> bool,
    change: F,
) -> Result<(), BoxError>
where
    F: Fn(RaftHandle) -> Fut,
    Fut: Future<Output = Result<(), RaftError>>,
{
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let (leader, _) = wait_for_leader(servers).await?;
        let handle = servers[&leader].handle().clone();
        if done(&handle.status().committed_membership) {
            return Ok(());
        }
        match change(handle).await {
            Ok(()) => return Ok(()),
            Err(error) if error.is_retryable() && Instant::now() < deadline => {
                println!("  ({error}; asking the leader again)");
                sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Waits until exactly one of `servers` leads, and returns it with its term.
async fn wait_for_leader(servers: &BTreeMap<NodeId, Server>) -> Result<(NodeId, u64), BoxError> {
    wait_for(|| {
        let leaders: Vec<(NodeId, u64)> = servers
            .iter()
            .map(|(id, server)| (*id, server.handle().status()))
            .filter(|(_, status)| status.role == Role::Leader)
            .map(|(id, status)| (id, status.term))
            .collect();
        match leaders[..] {
            [leader] => Some(leader),
            _ => None,
        }
    })
    .await
}

/// Polls `check` every 10 ms until it returns something, for at most [`STEP_TIMEOUT`].
async fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> Result<T, BoxError> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(found) = check() {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing happened within {STEP_TIMEOUT:?}").into());
        }
        sleep(Duration::from_millis(10)).await;
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

#[cfg_attr(test, allow(dead_code))]
fn main() -> Result<(), BoxError> {
    runtime()?.block_on(run()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole program, as `cargo test --workspace` runs it (`-- --nocapture` shows its
    /// steps).
    #[test]
    fn the_replicated_counter_runs_from_start_to_clean_shutdown() {
        let outcome = runtime()
            .unwrap()
            .block_on(async { tokio::time::timeout(Duration::from_secs(120), run()).await })
            .expect("the program ends on its own")
            .expect("every step succeeds");
        let sent = 2 * INCREMENTS_PER_PHASE;
        assert_eq!(outcome.acknowledged + outcome.unknown, sent);
        assert!(outcome.snapshot_index > 1, "{outcome:?}");
        assert!(
            (outcome.acknowledged..=sent).contains(&(outcome.final_value as u64)),
            "{outcome:?}"
        );
    }

    #[test]
    fn requests_decode_what_they_encode_and_refuse_anything_else() {
        for request in [Request::Get, Request::Add(-7), Request::Add(i64::MAX)] {
            assert_eq!(Request::decode(&request.encode()), Some(request));
        }
        for garbage in [&[][..], &[2], &[0, 0], &[1, 1, 2, 3]] {
            assert_eq!(Request::decode(garbage), None);
        }
    }
}

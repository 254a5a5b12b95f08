//! What a node does with a client request: writes go through the log, reads wait for a read
//! barrier and then read the local map, admin requests call the node's handle. The Redis front
//! end additionally forwards requests that need the leader to it, over the native client
//! protocol.
//!
//! Replies are bounded: a read that would answer with more than `reply_bytes_max` bytes is
//! refused before its reply is built (Redis's client output buffer limits are the model),
//! and the values in a reply share the stored ones rather than copying them.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::engine::Role;
use raft_core::node::{RaftError, RaftHandle};
use raft_net_tcp::tls::TlsConfig;
use raft_net_tcp::{ClientHandler, ClientRequest, ClientResponse, TcpClient, TcpConfig};
use tokio::sync::Mutex;

use crate::backup::serve::BackupSessions;
use crate::kv::{
    read_db, Answer, Budget, Data, KvCommand, KvResponse, ReadOp, SharedDb, Version,
    REPLY_ITEM_OVERHEAD_BYTES,
};
use crate::metrics::ClientMetrics;
use crate::proto::{
    decode_outcome_bytes, encode_outcome, encode_write_outcome, encoded_set_write, MemberInfo,
    Outcome, PeerProgress, Reply, Request, ServiceError, StatusReport,
};
use crate::snapshots::Snapshots;

/// Default reply budget, in bytes: the most a read may answer with. Twice the largest value
/// (a value fits in one log entry, 4 MiB by default), so MGET of two of them still works;
/// beyond it, one small request for the same large key many times would make the node
/// build a reply thousands of times the request's size.
pub const REPLY_BYTES_MAX_DEFAULT: usize = 8 << 20;
/// Largest accepted reply budget: a native reply travels in one frame of raft-net-tcp's
/// (16 MiB at most by default), with room for the frame's own fields.
pub const REPLY_BYTES_MAX_LIMIT: usize = 15 << 20;
/// Smallest accepted reply budget: enough for the replies that do not grow with the data
/// (status, counts, errors).
pub const REPLY_BYTES_MAX_MIN: usize = 64 << 10;
const _: () = assert!(REPLY_BYTES_MAX_LIMIT < raft_net_tcp::FRAME_BYTES_MAX_DEFAULT as usize);

/// Leader addresses a node keeps a forwarding connection to, at most. A cluster has few
/// members; the bound only matters if membership churns for a long time.
const FORWARD_CLIENTS_MAX: usize = 64;

/// The commands native requests are counted under in the metrics: the key-value writes, the
/// other requests, and last `malformed` for a request that did not decode.
pub(crate) const NATIVE_COMMANDS: &[&str] = &[
    "set",
    "delete",
    "incr",
    "redis_write",
    "get",
    "exists",
    "dbsize",
    "status",
    "add_learner",
    "add_voter",
    "promote",
    "remove",
    "transfer_leader",
    "snapshot",
    "backup_begin",
    "backup_chunk",
    "malformed",
];
/// The kinds failed native requests are counted under: the [`ServiceError`] variants, and
/// last `malformed`.
pub(crate) const NATIVE_ERROR_KINDS: &[&str] = &[
    "not_leader",
    "no_leader",
    "outcome_unknown",
    "unavailable",
    "invalid",
    "failed",
    "malformed",
];

/// Executes requests on one node.
#[derive(Debug)]
pub struct Service {
    handle: RaftHandle,
    db: SharedDb,
    /// This node's own Raft address, so it never forwards to itself.
    own_addr: String,
    client_config: TcpConfig,
    forward_clients: Mutex<HashMap<String, Arc<TcpClient>>>,
    /// The reply budget, in bytes.
    reply_bytes_max: usize,
    /// Requests counted by the client endpoints.
    client_metrics: ClientMetrics,
    /// Backups being read from this node.
    backups: BackupSessions,
}

impl Service {
    /// A service over a running node, its state machine's table and its snapshot store
    /// (backups read from it). `cluster_id` is used for forwarding connections;
    /// `reply_bytes_max` is the reply budget (see [`Service::read_values`]).
    pub fn new(
        handle: RaftHandle,
        db: SharedDb,
        snapshots: Arc<Snapshots>,
        own_addr: String,
        cluster_id: u64,
        reply_bytes_max: usize,
    ) -> Service {
        Service {
            handle,
            db,
            own_addr,
            client_config: {
                let mut config = TcpConfig::new(cluster_id, 0);
                // Longer than the leader's own request timeout, so its answer (even "outcome
                // unknown") arrives before the forwarding connection gives up.
                config.request_timeout_ms = crate::client::REQUEST_TIMEOUT_MS_DEFAULT;
                config
            },
            forward_clients: Mutex::new(HashMap::new()),
            reply_bytes_max,
            client_metrics: ClientMetrics::default(),
            backups: BackupSessions::new(snapshots),
        }
    }

    /// Forwards requests to the leader over TLS, presenting the node's own certificate
    /// (`None`: plaintext).
    pub fn with_forwarding_tls(mut self, tls: Option<TlsConfig>) -> Service {
        self.client_config.tls = tls;
        self
    }

    /// The node's handle.
    pub fn handle(&self) -> &RaftHandle {
        &self.handle
    }

    /// What the client endpoints counted (requests by command, errors by kind).
    pub fn client_metrics(&self) -> &ClientMetrics {
        &self.client_metrics
    }

    /// Executes `request` on this node only.
    pub async fn execute(&self, request: Request) -> Outcome {
        match request {
            Request::Write(command) => {
                let response = self.handle.propose(self.stamp(command).encode()).await;
                let bytes = response.map_err(from_raft)?;
                KvResponse::decode_bytes(&bytes)
                    .map(Reply::Write)
                    .map_err(|e| ServiceError::Failed(format!("undecodable response: {e}")))
            }
            Request::Get { keys } => {
                self.barrier().await?;
                self.read_values(&keys).map(Reply::Values)
            }
            Request::Exists { keys } => {
                self.barrier().await?;
                let db = read_db(&self.db);
                let now_ms = self.now_ms_with(&db);
                let count = keys.iter().filter(|k| db.live(k, now_ms).is_some()).count();
                Ok(Reply::Count(count as u64))
            }
            Request::DbSize => {
                self.barrier().await?;
                Ok(Reply::Count(read_db(&self.db).len() as u64))
            }
            Request::Status => Ok(Reply::Status(Box::new(self.status()))),
            Request::AddLearner { id, addr } => {
                self.handle.add_learner(id, addr).await.map_err(from_raft)?;
                Ok(Reply::Done)
            }
            Request::AddVoter { id, addr } => {
                self.handle.add_voter(id, addr).await.map_err(from_raft)?;
                Ok(Reply::Done)
            }
            Request::Promote { id } => {
                let addr = self.handle.status().membership.addresses.get(&id).cloned();
                let addr = addr
                    .ok_or_else(|| ServiceError::Invalid(format!("node {id} is not a member")))?;
                self.handle.add_voter(id, addr).await.map_err(from_raft)?;
                Ok(Reply::Done)
            }
            Request::Remove { id } => {
                self.handle.remove_server(id).await.map_err(from_raft)?;
                Ok(Reply::Done)
            }
            Request::TransferLeader { id } => {
                self.handle
                    .transfer_leadership(id)
                    .await
                    .map_err(from_raft)?;
                Ok(Reply::Done)
            }
            Request::Snapshot => {
                let id = self.handle.trigger_snapshot().await.map_err(from_raft)?;
                Ok(Reply::Snapshot { index: id.index })
            }
            Request::BackupBegin => self.backups.begin(&self.handle).await,
            Request::BackupChunk { session, offset } => self.backups.chunk(session, offset).await,
        }
    }

    /// The values of `keys` (`None` for a key that is absent, expired or not a string),
    /// sharing the stored values: none is copied, however often `keys` names it. Refused with [`ServiceError::Invalid`] when
    /// the reply would hold more than the reply budget, counting each value's bytes and
    /// 16 bytes per key. While the map is locked, each key costs a look-up and a reference;
    /// the reply is encoded after it is unlocked.
    pub fn read_values(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, ServiceError> {
        let mut reply_bytes = 0usize;
        let mut values = Vec::with_capacity(keys.len());
        {
            let db = read_db(&self.db);
            let now_ms = self.now_ms_with(&db);
            for key in keys {
                let value = db.live(key, now_ms).and_then(|slot| match &slot.data {
                    Data::Str(value) => Some(value),
                    _ => None,
                });
                reply_bytes += REPLY_ITEM_OVERHEAD_BYTES + value.map_or(0, |v| v.len());
                // Past the budget only the sizes are added up, for the error message.
                if reply_bytes <= self.reply_bytes_max {
                    values.push(value.map(|v| Bytes::from_owner(v.clone())));
                }
            }
        }
        if reply_bytes > self.reply_bytes_max {
            return Err(ServiceError::Invalid(format!(
                "reply of {reply_bytes} bytes exceeds the limit of {} (reply_bytes_max); \
                 ask for fewer keys at a time",
                self.reply_bytes_max
            )));
        }
        Ok(values)
    }

    /// Executes a Redis read on this node: after a read barrier, on the table as it stands,
    /// keys past their deadline by this node's clock absent, the reply within the budget.
    pub async fn read(&self, op: &ReadOp) -> Result<Answer, ServiceError> {
        self.barrier().await?;
        let db = read_db(&self.db);
        let now_ms = self.now_ms_with(&db);
        Ok(crate::kv::ops_read(&db, op, now_ms, &mut self.budget()))
    }

    /// Executes the reads of a transaction on this node, at one moment after a read barrier:
    /// a nil array if a watched key changed since it was watched, otherwise every answer.
    /// (A transaction that only reads needs no log entry.)
    pub async fn read_transaction(
        &self,
        ops: &[ReadOp],
        watched: &[(Bytes, Version)],
    ) -> Result<Answer, ServiceError> {
        self.barrier().await?;
        let db = read_db(&self.db);
        let now_ms = self.now_ms_with(&db);
        Ok(crate::kv::ops_read_batch(
            &db,
            ops,
            watched,
            now_ms,
            &mut self.budget(),
        ))
    }

    /// The versions of `keys` after a read barrier (WATCH): linearizable, so an EXEC applied
    /// later on any replica compares them with the keys' versions at its own index.
    pub async fn watch(&self, keys: &[Bytes]) -> Result<Vec<(Bytes, Version)>, ServiceError> {
        self.barrier().await?;
        let db = read_db(&self.db);
        let now_ms = self.now_ms_with(&db);
        Ok(keys
            .iter()
            .map(|key| (key.clone(), db.version(key, now_ms)))
            .collect())
    }

    /// Up to `max` keys expired by this node's clock, earliest deadline first (what the
    /// leader proposes to delete).
    pub fn expired_keys(&self, max: usize) -> Vec<Bytes> {
        let db = read_db(&self.db);
        let now_ms = self.now_ms_with(&db);
        db.due(now_ms, max)
    }

    /// Keys with a deadline in this node's table.
    pub fn expiring_keys(&self) -> usize {
        read_db(&self.db).expiring_len()
    }

    /// The reply budget, in bytes.
    pub fn reply_bytes_max(&self) -> usize {
        self.reply_bytes_max
    }

    fn budget(&self) -> Budget {
        Budget::new(self.reply_bytes_max)
    }

    /// This node's clock, in milliseconds since the Unix epoch, never behind the latest
    /// stamp its table applied.
    fn now_ms_with(&self, db: &crate::kv::Db) -> u64 {
        wall_clock_ms().max(db.clock_ms())
    }

    /// `command` as the leader proposes it: stamped with its clock if it needs one (every
    /// command but a plain set; a stamp put on by someone else is replaced), and a Redis
    /// batch's reply budget no larger than this node's (a native client could ask for any).
    fn stamp(&self, command: KvCommand) -> KvCommand {
        if !command.needs_clock() {
            return command;
        }
        let mut command = match command {
            KvCommand::Clocked { command, .. } => command,
            command => Box::new(command),
        };
        if let KvCommand::Redis(batch) = command.as_mut() {
            batch.reply_bytes_max = batch.reply_bytes_max.min(self.reply_bytes_max as u64);
        }
        let now_ms = self.now_ms_with(&read_db(&self.db));
        KvCommand::Clocked { now_ms, command }
    }

    /// Proposes a write already encoded as the log holds it (see
    /// [`encoded_set_write`]) and returns its encoded outcome, without decoding the state
    /// machine's answer. Errors as [`Service::execute`] reports them.
    pub async fn write_encoded(&self, command: Bytes) -> Result<Bytes, ServiceError> {
        let answer = self.handle.propose(command).await.map_err(from_raft)?;
        Ok(encode_write_outcome(&answer))
    }

    /// Executes `request` here, or at the leader when this node is not the leader.
    pub async fn execute_or_forward(&self, request: Request) -> Outcome {
        let idempotent = request.is_idempotent();
        let forward_copy = request.needs_leader().then(|| request.clone());
        let outcome = match forward_copy {
            Some(copy) => {
                // Ask the node first only when it believes it leads, so a follower does not
                // pay a round trip through its own event loop for every forwarded write.
                let not_leading = self.handle.with_status(|status| {
                    (status.role != Role::Leader)
                        .then(|| not_leader(status.leader, status.leader_address()))
                });
                match not_leading {
                    None => self.execute(copy).await,
                    Some(error) => Err(error),
                }
            }
            None => self.execute(request.clone()).await,
        };
        match outcome {
            Err(ServiceError::NotLeader {
                addr: Some(addr), ..
            }) if addr != self.own_addr => self.forward(&addr, &request, idempotent).await,
            Err(ServiceError::NotLeader { .. }) => Err(ServiceError::NoLeader),
            other => other,
        }
    }

    async fn forward(&self, addr: &str, request: &Request, idempotent: bool) -> Outcome {
        let client = self.forward_client(addr).await?;
        match client.request(request.encode()).await {
            Ok(ClientResponse::Ok(payload)) => decode_outcome_bytes(&payload)
                .map_err(|e| ServiceError::Failed(format!("undecodable answer: {e}")))?,
            // The leader changed between our look-up and its answer; nothing was done.
            Ok(ClientResponse::NotLeader { .. }) => Err(ServiceError::NoLeader),
            Ok(ClientResponse::Error(reason)) => Err(ServiceError::Failed(reason)),
            Ok(ClientResponse::Unavailable(why)) => Err(ServiceError::Unavailable(why)),
            Ok(ClientResponse::OutcomeUnknown(why)) => Err(ServiceError::OutcomeUnknown(why)),
            Err(e) if idempotent || !was_sent(&e) => Err(ServiceError::Unavailable(format!(
                "leader at {addr} unreachable: {e}"
            ))),
            Err(e) => Err(ServiceError::OutcomeUnknown(format!(
                "lost the leader at {addr} while forwarding: {e}"
            ))),
        }
    }

    async fn forward_client(&self, addr: &str) -> Result<Arc<TcpClient>, ServiceError> {
        let mut clients = self.forward_clients.lock().await;
        if let Some(client) = clients.get(addr) {
            return Ok(client.clone());
        }
        if clients.len() >= FORWARD_CLIENTS_MAX {
            clients.clear();
        }
        let client = TcpClient::new(addr, self.client_config.clone())
            .map_err(|e| ServiceError::Failed(e.to_string()))?;
        let client = Arc::new(client);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    async fn barrier(&self) -> Result<(), ServiceError> {
        self.handle
            .read_barrier()
            .await
            .map(|_| ())
            .map_err(from_raft)
    }

    /// This node's status.
    pub fn status(&self) -> StatusReport {
        let status = self.handle.status();
        let membership = &status.membership;
        let role = match status.role {
            Role::Leader => "leader",
            Role::Candidate | Role::PreCandidate => "candidate",
            Role::Follower if membership.is_learner(status.id) => "learner",
            Role::Follower => "follower",
        };
        let members = membership
            .all_members()
            .map(|id| MemberInfo {
                id,
                addr: membership.addresses.get(&id).cloned().unwrap_or_default(),
                voter: membership.is_voter(id),
            })
            .collect();
        StatusReport {
            id: status.id,
            role: role.to_string(),
            term: status.term,
            leader: status.leader,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            last_index: status.last_log_id.index,
            snapshot_index: status.snapshot.index,
            joint: membership.is_joint(),
            members,
            peers: status
                .peers
                .iter()
                .map(|p| PeerProgress {
                    id: p.id,
                    match_index: p.match_index,
                })
                .collect(),
            keys: read_db(&self.db).len() as u64,
        }
    }
}

/// The wall clock, in milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Whether a failed client request may have reached the server. Only failures to connect
/// prove that it did not.
pub fn was_sent(error: &raft_net_tcp::Error) -> bool {
    use raft_net_tcp::Error;
    match error {
        Error::Io(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
        ),
        Error::ConnectTimeout { .. }
        | Error::Handshake(_)
        | Error::HandshakeTimeout { .. }
        | Error::BackingOff { .. }
        | Error::TooManyInFlight { .. }
        | Error::InvalidConfig { .. }
        | Error::UnknownPeer(_)
        | Error::Shutdown => false,
        _ => true,
    }
}

fn not_leader(leader: Option<u64>, addr: Option<String>) -> ServiceError {
    match leader {
        None => ServiceError::NoLeader,
        Some(_) => ServiceError::NotLeader { leader, addr },
    }
}

/// Maps a node error to what a client sees.
pub fn from_raft(error: RaftError) -> ServiceError {
    match error {
        RaftError::NotLeader { leader, address } => not_leader(leader, address),
        RaftError::OutcomeUnknown(why) => ServiceError::OutcomeUnknown(why),
        RaftError::Refused(why) => ServiceError::Unavailable(why.to_string()),
        RaftError::Timeout => ServiceError::Unavailable("timed out".into()),
        RaftError::Shutdown => ServiceError::Failed("the node is shutting down".into()),
        RaftError::Fatal(why) => ServiceError::Failed(why.to_string()),
        other => ServiceError::Failed(other.to_string()),
    }
}

/// Serves the native client protocol for a [`Service`]: never forwards, answers
/// "not the leader" so the client goes to the leader itself.
#[derive(Debug)]
pub struct NativeHandler(pub Arc<Service>);

#[async_trait]
impl ClientHandler for NativeHandler {
    async fn handle(&self, request: ClientRequest) -> ClientResponse {
        let counters = &self.0.client_metrics().native;
        // The common write goes into the log as the client encoded it, and its answer back
        // as the state machine encoded it: no decoding and re-encoding on the leader.
        if let Some(command) = encoded_set_write(&request.payload) {
            counters.request("set");
            return match self.0.write_encoded(command).await {
                Ok(outcome) => ClientResponse::Ok(outcome),
                Err(error) => {
                    counters.error(error_kind(&error));
                    respond(Err(error))
                }
            };
        }
        match Request::decode(&request.payload) {
            Ok(request) => {
                counters.request(native_command(&request));
                let outcome = self.0.execute(request).await;
                if let Err(error) = &outcome {
                    counters.error(error_kind(error));
                }
                respond(outcome)
            }
            Err(e) => {
                counters.request("malformed");
                counters.error("malformed");
                ClientResponse::Error(format!("malformed request: {e}"))
            }
        }
    }
}

/// The name a native request is counted under (one of [`NATIVE_COMMANDS`]).
fn native_command(request: &Request) -> &'static str {
    match request {
        Request::Write(KvCommand::Set { .. }) => "set",
        Request::Write(KvCommand::Delete { .. }) => "delete",
        Request::Write(KvCommand::Incr { .. }) => "incr",
        Request::Write(KvCommand::Clocked { .. } | KvCommand::Redis(_)) => "redis_write",
        Request::Get { .. } => "get",
        Request::Exists { .. } => "exists",
        Request::DbSize => "dbsize",
        Request::Status => "status",
        Request::AddLearner { .. } => "add_learner",
        Request::AddVoter { .. } => "add_voter",
        Request::Promote { .. } => "promote",
        Request::Remove { .. } => "remove",
        Request::TransferLeader { .. } => "transfer_leader",
        Request::Snapshot => "snapshot",
        Request::BackupBegin => "backup_begin",
        Request::BackupChunk { .. } => "backup_chunk",
    }
}

/// The kind a failed native request is counted under (one of [`NATIVE_ERROR_KINDS`]).
fn error_kind(error: &ServiceError) -> &'static str {
    match error {
        ServiceError::NotLeader { .. } => "not_leader",
        ServiceError::NoLeader => "no_leader",
        ServiceError::OutcomeUnknown(_) => "outcome_unknown",
        ServiceError::Unavailable(_) => "unavailable",
        ServiceError::Invalid(_) => "invalid",
        ServiceError::Failed(_) => "failed",
    }
}

/// The native protocol's response carrying `outcome`.
fn respond(outcome: Outcome) -> ClientResponse {
    match outcome {
        Err(ServiceError::NotLeader { leader, addr }) => ClientResponse::NotLeader {
            leader_id: leader,
            leader_addr: addr,
        },
        outcome => ClientResponse::Ok(encode_outcome(&outcome)),
    }
}

//! The public face of the node: configuration, errors, status, and the cloneable handle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::error::Fatal;
use super::metrics::NodeMetrics;
use super::runtime::{self, Command};
use super::storage::{LogStore, SnapshotStore};
use super::tasks::Tasks;
use super::transport::{MessageHandler, SnapshotTransfer, Transport};
use super::StateMachine;
use crate::engine::{Config, Engine, EngineError, ReplicationState, Role};
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::types::{
    ChunkStatus, LogId, LogIndex, NodeId, SnapshotChunk, SnapshotChunkAck, SnapshotMeta, Term,
};

/// Commands one [`RaftHandle::propose_many`] call may carry: a batch is one request to the
/// node's event loop, which handles it in one go, so its size bounds how long the loop is
/// busy with it.
pub const PROPOSE_MANY_COMMANDS_MAX: usize = 4096;

/// Parameters of the async node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This server's id (never 0).
    pub id: NodeId,
    /// The engine's parameters (in ticks).
    pub engine: Config,
    /// Milliseconds per engine tick. With the engine defaults (15-30 ticks election timeout,
    /// 3 ticks heartbeat) 10 ms gives 150-300 ms elections and 30 ms heartbeats.
    pub tick_ms: u64,
    /// Requests from handles waiting for the node, at most; more wait in `send`.
    pub command_queue_len_max: usize,
    /// Inbound messages waiting for the node, at most; more are dropped (Raft retries).
    pub inbound_queue_len_max: usize,
    /// Bytes of inbound messages waiting for the node (`Message::size_bytes`), at most; more
    /// are dropped (one message always fits into an empty queue).
    pub inbound_queue_bytes_max: u64,
    /// Batches waiting for the state machine, at most; the node waits when it is full.
    pub apply_queue_len_max: usize,
    /// Bytes per snapshot chunk sent to a follower.
    pub snapshot_chunk_bytes: u32,
    /// A handle call (propose, read, membership change) gives up after this long. A proposal
    /// that times out has an unknown outcome.
    pub request_timeout_ms: u64,
    /// Membership changes that catch a server up may take longer: their own timeout.
    pub membership_timeout_ms: u64,
    /// Call the state machine's `pre_commit` and `rollback` hooks.
    pub state_machine_hooks: bool,
    /// Run the state machine on a thread of its own (with a single-threaded tokio runtime),
    /// so that a long step of it (capturing a large state for a snapshot, restoring one, a
    /// big table growing) never delays the event loop's heartbeats, whatever runtime the node
    /// runs on. Off: the state machine runs as a task of the node's runtime (simulations, which
    /// need one thread).
    pub state_machine_thread: bool,
}

impl NodeConfig {
    /// Defaults for server `id`. The engine's random seed (election timeouts) comes from the
    /// operating system, so that servers restarted together do not time out in lockstep run
    /// after run; set `engine.random_seed` for a reproducible run.
    pub fn new(id: NodeId) -> Self {
        NodeConfig {
            id,
            engine: Config {
                random_seed: os_random_seed(),
                ..Config::default()
            },
            tick_ms: 10,
            command_queue_len_max: 16_384,
            inbound_queue_len_max: 16_384,
            inbound_queue_bytes_max: 16 << 20,
            apply_queue_len_max: 64,
            snapshot_chunk_bytes: 1 << 20,
            request_timeout_ms: 5_000,
            membership_timeout_ms: 60_000,
            state_machine_hooks: false,
            state_machine_thread: true,
        }
    }

    /// Checks that the parameters make sense, the engine's included. [`RaftNode::start`]
    /// refuses a configuration that does not pass (a zero queue length or tick would
    /// otherwise panic inside tokio).
    pub fn validate(&self) -> Result<(), RaftError> {
        let invalid = |why: &str| Err(RaftError::InvalidConfig(why.to_string()));
        if self.id == 0 {
            return invalid("node id 0 is reserved");
        }
        if let Err(e) = self.engine.validate() {
            return Err(RaftError::InvalidConfig(e.to_string()));
        }
        if self.tick_ms == 0 {
            return invalid("tick_ms must be at least 1");
        }
        if self.command_queue_len_max == 0
            || self.inbound_queue_len_max == 0
            || self.inbound_queue_bytes_max == 0
            || self.apply_queue_len_max == 0
        {
            return invalid("queue lengths must be at least 1");
        }
        if self.snapshot_chunk_bytes == 0 {
            return invalid("snapshot_chunk_bytes must be at least 1");
        }
        if self.request_timeout_ms == 0 || self.membership_timeout_ms == 0 {
            return invalid("timeouts must be at least 1 ms");
        }
        Ok(())
    }
}

/// A seed from the operating system's randomness (std's per-process hash keys).
fn os_random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish()
}

/// Why a request to the node failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    /// This server is not the leader; try `leader` (at `address`) if known.
    #[error("not the leader; leader is {leader:?} at {address:?}")]
    NotLeader {
        /// The leader as far as this server knows.
        leader: Option<NodeId>,
        /// Its address from the configuration, if known.
        address: Option<String>,
    },
    /// The command was appended but this server cannot tell whether it was committed (leader
    /// change, timeout). It may or may not take effect: never report it as done.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The engine refused the request (back-pressure, change in progress, invalid request).
    #[error("refused: {0}")]
    Refused(EngineError),
    /// No answer in time; nothing was changed by this request (reads, admin calls).
    #[error("timed out")]
    Timeout,
    /// The node was shut down.
    #[error("the node is shut down")]
    Shutdown,
    /// The node stopped after a storage or state machine failure (or a bug): it is dead.
    #[error("the node failed: {0}")]
    Fatal(Fatal),
    /// The configuration given to [`RaftNode::start`] is not valid; nothing was started.
    #[error("invalid node configuration: {0}")]
    InvalidConfig(String),
    /// Building a snapshot failed; the node goes on and tries again later.
    #[error("building a snapshot failed: {0}")]
    SnapshotFailed(String),
}

impl RaftError {
    /// Whether retrying the same request on another server (or later) may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            // No retry makes an entry smaller or an invalid request valid.
            RaftError::Refused(EngineError::EntryTooLarge(_) | EngineError::Invalid(_)) => false,
            RaftError::NotLeader { .. }
            | RaftError::Refused(_)
            | RaftError::Timeout
            | RaftError::SnapshotFailed(_) => true,
            _ => false,
        }
    }
}

/// Whether the node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Serving.
    Running,
    /// Shut down on request.
    Stopped,
    /// Stopped by a fatal error.
    Failed(Fatal),
}

/// One peer's replication state, as seen by the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Highest index known replicated there.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Replication mode.
    pub state: ReplicationState,
    /// AppendEntries with entries sent and not acknowledged yet (the pipelining window in
    /// use, at most `inflight_messages_max`).
    pub inflight_messages: u64,
    /// Payload bytes of those messages.
    pub inflight_bytes: u64,
}

/// Status and metrics of a node. Refreshed every tick and on role changes (see
/// [`RaftHandle::status`]).
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// This server.
    pub id: NodeId,
    /// Running or not.
    pub state: NodeState,
    /// Role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit_index: LogIndex,
    /// Index the state machine has applied.
    pub applied_index: LogIndex,
    /// Last log entry.
    pub last_log_id: LogId,
    /// First index still in the log.
    pub first_index: LogIndex,
    /// Latest snapshot.
    pub snapshot: LogId,
    /// Effective configuration: the latest in the log, committed or not.
    pub membership: Membership,
    /// The latest committed configuration.
    pub committed_membership: Membership,
    /// Per-peer progress (leader only).
    pub peers: Vec<PeerStatus>,
    /// Proposals waiting for their entry to be applied here.
    pub proposals_waiting: u64,
    /// Linearizable reads waiting for their read index or for the state machine.
    pub reads_waiting: u64,
    /// Payload bytes of the log held in memory (see `engine::Config::log_cache_bytes_max`).
    pub log_cached_bytes: u64,
    /// Counters and histograms since start (refreshed every tick).
    pub metrics: NodeMetrics,
}

impl NodeStatus {
    pub(crate) fn initial(id: NodeId) -> Self {
        NodeStatus {
            id,
            state: NodeState::Running,
            role: Role::Follower,
            term: 0,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            last_log_id: LogId::ZERO,
            first_index: 1,
            snapshot: LogId::ZERO,
            membership: Membership::default(),
            committed_membership: Membership::default(),
            peers: Vec::new(),
            proposals_waiting: 0,
            reads_waiting: 0,
            log_cached_bytes: 0,
            metrics: NodeMetrics::default(),
        }
    }

    /// The leader's address from the configuration, if known.
    pub fn leader_address(&self) -> Option<String> {
        self.leader
            .and_then(|l| self.membership.addresses.get(&l).cloned())
    }
}

/// Sees the engine between the steps of a node's event loop: for simulations, tests and
/// debugging (invariant checks, traces). It runs on the event loop, so it must be quick.
pub trait EngineObserver: Send + Sync + 'static {
    /// Called each time the node has handled a batch of inputs and carried out what the
    /// engine asked for. `engine` is in a consistent state: no input is half-handled.
    fn observe(&self, engine: &Engine);
}

/// Optional parts of a node. See [`RaftNode::start_with_options`].
#[derive(Clone, Default)]
pub struct StartOptions {
    /// The snapshot sender (for example `raft-snapshot`'s windowed, resumable one). Default:
    /// the built-in [`super::StopAndWaitSender`].
    pub snapshot_transfer: Option<Arc<dyn SnapshotTransfer>>,
    /// Sees the engine after every step of the event loop. Default: none.
    pub observer: Option<Arc<dyn EngineObserver>>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("snapshot_transfer", &self.snapshot_transfer.is_some())
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// Starts nodes. See [`RaftNode::start`].
#[derive(Debug)]
pub struct RaftNode;

impl RaftNode {
    /// Starts a node from what `log` and `snapshots` hold and returns its handle.
    ///
    /// `initial_membership` is used only while neither the log nor a snapshot holds a
    /// configuration: give every server of a new cluster the same initial voters, and a server
    /// that will be added later an empty configuration. Pass the same value on every restart.
    pub async fn start<L, S, T, M>(
        config: NodeConfig,
        log: Arc<L>,
        snapshots: Arc<S>,
        transport: Arc<T>,
        state_machine: M,
        initial_membership: Membership,
    ) -> Result<RaftHandle, RaftError>
    where
        L: LogStore,
        S: SnapshotStore,
        T: Transport,
        M: StateMachine,
    {
        let options = StartOptions::default();
        runtime::start(
            config,
            log,
            snapshots,
            transport,
            state_machine,
            initial_membership,
            options,
        )
        .await
    }

    /// Like [`RaftNode::start`], with a snapshot sender of your choice (for example
    /// `raft-snapshot`'s windowed, resumable sender) instead of the built-in
    /// [`super::StopAndWaitSender`].
    pub async fn start_with_transfer<L, S, T, M>(
        config: NodeConfig,
        log: Arc<L>,
        snapshots: Arc<S>,
        transport: Arc<T>,
        state_machine: M,
        initial_membership: Membership,
        snapshot_transfer: Arc<dyn SnapshotTransfer>,
    ) -> Result<RaftHandle, RaftError>
    where
        L: LogStore,
        S: SnapshotStore,
        T: Transport,
        M: StateMachine,
    {
        let options = StartOptions {
            snapshot_transfer: Some(snapshot_transfer),
            ..StartOptions::default()
        };
        runtime::start(
            config,
            log,
            snapshots,
            transport,
            state_machine,
            initial_membership,
            options,
        )
        .await
    }

    /// Like [`RaftNode::start`], with the optional parts in `options`.
    pub async fn start_with_options<L, S, T, M>(
        config: NodeConfig,
        log: Arc<L>,
        snapshots: Arc<S>,
        transport: Arc<T>,
        state_machine: M,
        initial_membership: Membership,
        options: StartOptions,
    ) -> Result<RaftHandle, RaftError>
    where
        L: LogStore,
        S: SnapshotStore,
        T: Transport,
        M: StateMachine,
    {
        runtime::start(
            config,
            log,
            snapshots,
            transport,
            state_machine,
            initial_membership,
            options,
        )
        .await
    }
}

pub(crate) struct HandleInner {
    pub(crate) id: NodeId,
    pub(crate) config: NodeConfig,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) inbound: mpsc::Sender<Message>,
    /// Bytes of the messages in `inbound`.
    pub(crate) inbound_bytes: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) status: watch::Receiver<NodeStatus>,
    pub(crate) state: watch::Receiver<NodeState>,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) tasks: Tasks,
}

/// A cloneable handle to a running node. Also the [`MessageHandler`] a transport server
/// delivers inbound traffic to.
#[derive(Clone)]
pub struct RaftHandle {
    pub(crate) inner: Arc<HandleInner>,
}

impl std::fmt::Debug for RaftHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHandle")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl RaftHandle {
    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Status and metrics. Role, term, leader, membership, snapshot and the log indexes
    /// (commit, applied, last, first) are published as they change; per-peer progress and
    /// the counters ([`NodeStatus::metrics`]) are refreshed every tick (`tick_ms`).
    pub fn status(&self) -> NodeStatus {
        self.inner.status.borrow().clone()
    }

    /// Runs `f` on the current status without copying it (cheaper than [`RaftHandle::status`]
    /// on a request path). `f` must be quick: the status cannot be updated meanwhile.
    pub fn with_status<R>(&self, f: impl FnOnce(&NodeStatus) -> R) -> R {
        f(&self.inner.status.borrow())
    }

    /// A receiver that sees every status update (see [`RaftHandle::status`] for how fresh).
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.inner.status.clone()
    }

    fn dead_error(&self) -> RaftError {
        match &self.inner.status.borrow().state {
            NodeState::Failed(fatal) => RaftError::Fatal(fatal.clone()),
            _ => RaftError::Shutdown,
        }
    }

    async fn call<R>(
        &self,
        timeout_ms: u64,
        make: impl FnOnce(oneshot::Sender<Result<R, RaftError>>) -> Command,
        on_timeout: RaftError,
    ) -> Result<R, RaftError> {
        if *self.inner.state.borrow() != NodeState::Running {
            return Err(self.dead_error());
        }
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(make(tx)).await.is_err() {
            return Err(self.dead_error());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        self.answer(deadline, rx, on_timeout).await
    }

    /// Waits for the node's answer to a command sent: `on_timeout` past `deadline`.
    async fn answer<R>(
        &self,
        deadline: tokio::time::Instant,
        rx: oneshot::Receiver<Result<R, RaftError>>,
        on_timeout: RaftError,
    ) -> Result<R, RaftError> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            // The node took the request and stopped (or was killed) without answering: a
            // write may have been appended, so its outcome is unknown, like a timeout's.
            Ok(Err(_)) if matches!(on_timeout, RaftError::OutcomeUnknown(_)) => {
                Err(RaftError::OutcomeUnknown(format!(
                    "the node stopped before answering ({})",
                    self.dead_error()
                )))
            }
            Ok(Err(_)) => Err(self.dead_error()),
            Err(_) => Err(on_timeout),
        }
    }

    /// Replicates `command` and returns the state machine's response once it is applied on
    /// this server (the leader).
    pub async fn propose(&self, command: Bytes) -> Result<Bytes, RaftError> {
        let unknown = RaftError::OutcomeUnknown("no answer within the request timeout".into());
        let timeout = self.inner.config.request_timeout_ms;
        self.call(
            timeout,
            |tx| Command::Propose { data: command, tx },
            unknown,
        )
        .await
    }

    /// Replicates `commands` as consecutive entries and returns each one's response, in
    /// order, as [`RaftHandle::propose`] would for each. The node takes them as one request,
    /// so they are appended in one log write and sent in the same AppendEntries: one hand-off
    /// to the node for the whole batch instead of one per command. Each command is answered
    /// on its own: some may be refused (a full log, a lost leadership) while others commit.
    /// At most [`PROPOSE_MANY_COMMANDS_MAX`] commands per call; more are refused with
    /// `RaftError::Refused(EngineError::Invalid)` without being sent.
    pub async fn propose_many(&self, commands: Vec<Bytes>) -> Vec<Result<Bytes, RaftError>> {
        if commands.len() > PROPOSE_MANY_COMMANDS_MAX {
            let refused = || {
                Err(RaftError::Refused(EngineError::Invalid(format!(
                    "{} commands in one propose_many, at most {PROPOSE_MANY_COMMANDS_MAX}",
                    commands.len()
                ))))
            };
            return (0..commands.len()).map(|_| refused()).collect();
        }
        if *self.inner.state.borrow() != NodeState::Running {
            return commands.iter().map(|_| Err(self.dead_error())).collect();
        }
        let mut batch = Vec::with_capacity(commands.len());
        let mut answers = Vec::with_capacity(commands.len());
        for data in commands {
            let (tx, rx) = oneshot::channel();
            batch.push((data, tx));
            answers.push(rx);
        }
        if self
            .inner
            .commands
            .send(Command::ProposeMany { batch })
            .await
            .is_err()
        {
            return answers.iter().map(|_| Err(self.dead_error())).collect();
        }
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut results = Vec::with_capacity(answers.len());
        for rx in answers {
            let unknown = RaftError::OutcomeUnknown("no answer within the request timeout".into());
            results.push(self.answer(deadline, rx, unknown).await);
        }
        results
    }

    /// A linearizable read barrier (ReadIndex, thesis 6.4): resolves once this server's state
    /// machine has applied everything committed before the call, so reading the state machine
    /// afterwards observes every write acknowledged before the call. Works on followers too.
    pub async fn read_barrier(&self) -> Result<LogIndex, RaftError> {
        let timeout = self.inner.config.request_timeout_ms;
        self.call(timeout, |tx| Command::Read { tx }, RaftError::Timeout)
            .await
    }

    /// Adds a learner; resolves when the configuration entry is committed.
    pub async fn add_learner(&self, id: NodeId, address: String) -> Result<(), RaftError> {
        let change = MembershipChange::AddLearner(id, address);
        self.change(change).await
    }

    /// Adds a voter: caught up as a learner first, promoted automatically; resolves when a
    /// committed configuration lists it as a voter.
    pub async fn add_voter(&self, id: NodeId, address: String) -> Result<(), RaftError> {
        self.change(MembershipChange::AddVoter(id, address)).await
    }

    /// Removes a server (voter, learner, or the leader itself); resolves when committed.
    pub async fn remove_server(&self, id: NodeId) -> Result<(), RaftError> {
        self.change(MembershipChange::Remove(id)).await
    }

    /// Moves to an arbitrary configuration (joint consensus when more than one voter
    /// changes); resolves when the final configuration is committed.
    pub async fn change_membership(&self, target: Membership) -> Result<(), RaftError> {
        self.change(MembershipChange::Replace(target)).await
    }

    async fn change(&self, change: MembershipChange) -> Result<(), RaftError> {
        let timeout = self.inner.config.membership_timeout_ms;
        self.call(
            timeout,
            |tx| Command::Membership { change, tx },
            RaftError::Timeout,
        )
        .await
    }

    /// Hands leadership to `target`; resolves once this server sees it lead.
    pub async fn transfer_leadership(&self, target: NodeId) -> Result<(), RaftError> {
        let timeout = self.inner.config.request_timeout_ms;
        self.call(
            timeout,
            |tx| Command::Transfer { target, tx },
            RaftError::Timeout,
        )
        .await
    }

    /// Builds a snapshot now; resolves with its last log id once it is durable.
    pub async fn trigger_snapshot(&self) -> Result<LogId, RaftError> {
        let timeout = self.inner.config.membership_timeout_ms;
        self.call(timeout, |tx| Command::Snapshot { tx }, RaftError::Timeout)
            .await
    }

    /// Stops the node: finishes the write in flight, lets the state machine finish its queue,
    /// fails every waiting request with [`RaftError::Shutdown`]. Idempotent.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Shutdown { tx })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        self.wait_stopped().await;
    }

    /// Stops every task of the node at once, without finishing or answering anything: what a
    /// crash of the process does (writes in flight may be torn, waiting callers see
    /// [`RaftError::Shutdown`] or time out). For tests and simulations of crashes; a real
    /// shutdown is [`RaftHandle::shutdown`].
    pub fn kill(&self) {
        self.inner.tasks.kill();
    }

    /// Waits until the node has stopped (shut down, or failed) and returns how it ended.
    /// Unlike a status watch, this wakes only when the node's state changes.
    pub async fn wait_stopped(&self) -> NodeState {
        let mut state = self.inner.state.clone();
        let ended = state.wait_for(|s| *s != NodeState::Running).await;
        ended.map_or(NodeState::Stopped, |s| s.clone())
    }
}

/// A membership change request.
#[derive(Clone, Debug)]
pub(crate) enum MembershipChange {
    AddLearner(NodeId, String),
    AddVoter(NodeId, String),
    Remove(NodeId),
    Replace(Membership),
}

impl MembershipChange {
    /// Whether a committed configuration shows this change done.
    pub(crate) fn is_done(&self, committed: &Membership) -> bool {
        if committed.is_joint() {
            return false;
        }
        match self {
            MembershipChange::AddLearner(id, _) => committed.is_learner(*id),
            MembershipChange::AddVoter(id, _) => committed.voters.contains(id),
            MembershipChange::Remove(id) => !committed.contains(*id),
            MembershipChange::Replace(target) => {
                committed.voters == target.voters && committed.learners == target.learners
            }
        }
    }
}

#[async_trait]
impl MessageHandler for RaftHandle {
    fn deliver(&self, msg: Message) {
        // An InstallSnapshot is only valid when this node produced it itself, after receiving
        // and verifying every chunk (`deliver_install`); from the network it would name a
        // snapshot the store does not have and stop the node when the restore fails.
        if matches!(msg.body, MessageBody::InstallSnapshot { .. }) {
            warn!(
                id = self.inner.id,
                from = msg.from,
                "InstallSnapshot from the network dropped"
            );
            return;
        }
        self.enqueue(msg);
    }

    async fn deliver_snapshot_chunk(&self, chunk: SnapshotChunk) -> SnapshotChunkAck {
        let (status, next_offset) = self.receive_chunk(&chunk).await;
        let term = self.inner.status.borrow().term;
        SnapshotChunkAck {
            from: self.inner.id,
            term,
            snapshot: chunk.meta.last_log_id,
            status,
            next_offset,
        }
    }
}

impl RaftHandle {
    async fn receive_chunk(&self, chunk: &SnapshotChunk) -> (ChunkStatus, u64) {
        let (term, commit, running) = {
            let s = self.inner.status.borrow();
            (s.term, s.commit_index, s.state == NodeState::Running)
        };
        if !running {
            return (ChunkStatus::Retry("node not running".into()), 0);
        }
        if chunk.to != self.inner.id {
            return (
                ChunkStatus::Refused("addressed to another server".into()),
                0,
            );
        }
        if chunk.term < term {
            return (
                ChunkStatus::Refused(format!("stale term {} < {term}", chunk.term)),
                0,
            );
        }
        let snapshot = chunk.meta.last_log_id;
        if snapshot.index <= commit {
            // Everything in it is committed here already: nothing to receive. The engine
            // answers the leader that this server holds the snapshot's last entry, so the
            // leader resumes sending entries after it. (A refusal left a leader whose view of
            // this server was stale sending the same snapshot forever: it probes only from
            // the match index it knows, which its log no longer holds.)
            self.deliver_install(chunk, chunk.meta.clone());
            return (ChunkStatus::Complete, chunk.meta.size_bytes);
        }
        // A snapshot received completely before whose install message was lost: hand it over again.
        if let Ok(Some(latest)) = self.inner.snapshots.latest().await {
            if latest.last_log_id == snapshot {
                let size = latest.size_bytes;
                self.deliver_install(chunk, latest);
                return (ChunkStatus::Complete, size);
            }
        }
        match self.inner.snapshots.receive_chunk(chunk).await {
            Ok((ChunkStatus::Complete, next)) => {
                // Install what the store published (it checked the leader's metadata), not
                // the metadata the chunk carried.
                let stored = self.inner.snapshots.latest().await.ok().flatten();
                let meta = stored
                    .filter(|m| m.last_log_id == snapshot)
                    .unwrap_or_else(|| chunk.meta.clone());
                self.deliver_install(chunk, meta);
                (ChunkStatus::Complete, next)
            }
            Ok(outcome) => outcome,
            Err(e) => (ChunkStatus::Retry(format!("storage: {e}")), chunk.offset),
        }
    }

    fn deliver_install(&self, chunk: &SnapshotChunk, meta: SnapshotMeta) {
        let msg = Message {
            from: chunk.from,
            to: self.inner.id,
            term: chunk.term,
            body: MessageBody::InstallSnapshot { meta },
        };
        self.enqueue(msg);
    }

    fn enqueue(&self, msg: Message) {
        use std::sync::atomic::Ordering;
        let bytes = msg.size_bytes();
        let queued = &self.inner.inbound_bytes;
        let before = queued.fetch_add(bytes, Ordering::Relaxed);
        if before > 0 && before + bytes > self.inner.config.inbound_queue_bytes_max {
            queued.fetch_sub(bytes, Ordering::Relaxed);
            debug!(
                id = self.inner.id,
                "inbound queue full (bytes); message dropped"
            );
            return;
        }
        if self.inner.inbound.try_send(msg).is_err() {
            queued.fetch_sub(bytes, Ordering::Relaxed);
            debug!(
                id = self.inner.id,
                "inbound queue full or node stopped; message dropped"
            );
        }
    }
}

/// Peers of the effective configuration with their addresses.
pub(crate) fn addresses(m: &Membership) -> BTreeMap<NodeId, String> {
    m.addresses.clone()
}

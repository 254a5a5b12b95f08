//! The node's event loop: owns the engine, runs its `Ready` steps in the documented order,
//! writes the log in a background task (group commit: whatever arrives during one write forms
//! the next), and hands committed entries to the apply task.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::apply::{self, ApplyItem, Responder};
use super::raft::{
    addresses, EngineObserver, HandleInner, MembershipChange, NodeConfig, NodeState, NodeStatus,
    PeerStatus, RaftError, RaftHandle, StartOptions,
};
use super::storage::{LogStore, SnapshotStore, StorageError};
use super::tasks::Tasks;
use super::transport::{SnapshotTransfer, Transport};
use super::StateMachine;
use crate::engine::{Engine, EngineError, Ready, RestoredState, Role};
use crate::membership::Membership;
use crate::message::Message;
use crate::types::{ChunkStatus, LogId, LogIndex, NodeId, SnapshotChunk, SnapshotMeta, Term};

/// Bytes read per call while loading the log at start.
const LOAD_BATCH_BYTES_MAX: u64 = 64 << 20;
/// Commands taken from the queue per loop iteration, at most, so that ticks and inbound
/// messages are never starved.
const COMMANDS_PER_ITERATION_MAX: usize = 4096;
/// Inbound messages stepped per loop iteration, at most.
const INBOUND_PER_ITERATION_MAX: usize = 4096;
/// Times a snapshot chunk is retried before the transfer is reported failed.
const SNAPSHOT_CHUNK_RETRIES_MAX: u32 = 8;

type Reply<T> = oneshot::Sender<Result<T, RaftError>>;

/// A request from a handle.
pub(crate) enum Command {
    Propose {
        data: Bytes,
        tx: Reply<Bytes>,
    },
    Read {
        tx: Reply<LogIndex>,
    },
    Membership {
        change: MembershipChange,
        tx: Reply<()>,
    },
    Transfer {
        target: NodeId,
        tx: Reply<()>,
    },
    Snapshot {
        tx: Reply<LogId>,
    },
    Shutdown {
        tx: oneshot::Sender<()>,
    },
}

/// Something a background task finished.
pub(crate) enum Event {
    Persisted(Result<(), StorageError>),
    Applied { index: LogIndex, count: u64 },
    SnapshotBuilt(Result<SnapshotMeta, String>),
    SnapshotSent { peer: NodeId, success: bool },
    Fatal(String),
}

/// The part of a `Ready` that waits for its write to be durable.
struct AfterPersist {
    last: Option<LogId>,
    ready: Ready,
}

impl AfterPersist {
    /// Whether the Ready has already handed everything it had for the apply queue over
    /// (committed entries, snapshot request, snapshot install), so that entries committed
    /// later may go to the apply task before this write is durable.
    fn ready_handed_out(&self) -> bool {
        self.ready.committed_entries.is_empty()
            && self.ready.build_snapshot.is_none()
            && self.ready.snapshot.is_none()
    }
}

struct Runtime<L, S, T> {
    id: NodeId,
    config: NodeConfig,
    engine: Engine,
    log: Arc<L>,
    snapshots: Arc<S>,
    transport: Arc<T>,
    snapshot_transfer: Arc<dyn SnapshotTransfer>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Receiver<Message>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    apply_tx: mpsc::Sender<ApplyItem>,
    apply_task: JoinHandle<()>,
    status_tx: watch::Sender<NodeStatus>,
    /// The node's state alone, for waiting on the end without waking at every status update.
    state_tx: watch::Sender<NodeState>,

    in_flight: Option<AfterPersist>,
    /// Proposals waiting for their entry to be applied: index -> (term, reply).
    proposals: BTreeMap<LogIndex, (Term, Reply<Bytes>)>,
    next_read_id: u64,
    /// Reads waiting for their read index.
    reads_waiting: BTreeMap<u64, Reply<LogIndex>>,
    /// Reads with a known index, waiting for the state machine: (index, reply).
    reads_ready: VecDeque<(LogIndex, Reply<LogIndex>)>,
    applied_index: LogIndex,
    membership_waiters: Vec<(MembershipChange, Reply<()>)>,
    transfer_waiters: Vec<(NodeId, Reply<()>)>,
    snapshot_waiters: Vec<Reply<LogId>>,
    transfers: BTreeMap<NodeId, JoinHandle<()>>,
    tasks: Tasks,
    observer: Option<Arc<dyn EngineObserver>>,
    peers_published: BTreeMap<NodeId, String>,
    proposals_total: u64,
    applied_total: u64,
}

/// Loads the stores, starts the apply task and the event loop.
pub(crate) async fn start<L, S, T, M>(
    config: NodeConfig,
    log: Arc<L>,
    snapshots: Arc<S>,
    transport: Arc<T>,
    mut state_machine: M,
    initial_membership: Membership,
    options: StartOptions,
) -> Result<RaftHandle, RaftError>
where
    L: LogStore,
    S: SnapshotStore,
    T: Transport,
    M: StateMachine,
{
    let fatal = |what: &str, e: &dyn std::fmt::Display| RaftError::Fatal(format!("{what}: {e}"));
    let state = log
        .state()
        .await
        .map_err(|e| fatal("reading the log state", &e))?;
    let entries = load_entries(log.as_ref(), state.purged.index + 1, state.last.index + 1)
        .await
        .map_err(|e| fatal("loading the log", &e))?;
    let snapshot = snapshots
        .latest()
        .await
        .map_err(|e| fatal("reading snapshots", &e))?;
    if let Some(meta) = &snapshot {
        if meta.last_log_id.index < state.purged.index {
            let why = format!(
                "snapshot {} is older than the purged log {}",
                meta.last_log_id, state.purged
            );
            return Err(RaftError::Fatal(why));
        }
        let mut reader = snapshots
            .open(meta)
            .await
            .map_err(|e| fatal("opening snapshot", &e))?;
        state_machine
            .restore(meta, &mut reader)
            .await
            .map_err(|e| fatal("restoring the state machine", &e))?;
    } else if state.purged.index > 0 {
        return Err(RaftError::Fatal(
            "the log was purged but no snapshot exists".into(),
        ));
    }
    let (state, entries) = match &snapshot {
        Some(meta) => align_log_with_snapshot(log.as_ref(), state, entries, meta.last_log_id)
            .await
            .map_err(|e| fatal("aligning the log with the snapshot", &e))?,
        None => (state, entries),
    };
    let restored = RestoredState {
        hard_state: state.hard_state,
        snapshot: snapshot.clone(),
        purged: state.purged,
        entries,
        initial_membership,
    };
    let engine = Engine::new(config.id, config.engine.clone(), restored)
        .map_err(|e| RaftError::Fatal(e.to_string()))?;
    let applied_index = snapshot
        .map_or(0, |s| s.last_log_id.index)
        .max(state.purged.index);

    let StartOptions {
        snapshot_transfer,
        observer,
    } = options;
    let snapshot_transfer = snapshot_transfer.unwrap_or_else(|| {
        let chunk_bytes = config.snapshot_chunk_bytes;
        Arc::new(StopAndWaitSender::new(
            snapshots.clone(),
            transport.clone(),
            chunk_bytes,
        ))
    });
    let (commands_tx, commands) = mpsc::channel(config.command_queue_len_max);
    let (inbound_tx, inbound) = mpsc::channel(config.inbound_queue_len_max);
    let (events_tx, events) = mpsc::unbounded_channel();
    let (apply_tx, apply_rx) = mpsc::channel(config.apply_queue_len_max);
    let (status_tx, status_rx) = watch::channel(NodeStatus::initial(config.id));
    let (state_tx, state_rx) = watch::channel(NodeState::Running);
    let snapshots_dyn: Arc<dyn SnapshotStore> = snapshots.clone();
    let tasks = Tasks::default();
    let apply_task = tasks.spawn(apply::run(
        state_machine,
        apply_rx,
        events_tx.clone(),
        snapshots_dyn.clone(),
        tasks.clone(),
    ));
    let handle = RaftHandle {
        inner: Arc::new(HandleInner {
            id: config.id,
            config: config.clone(),
            commands: commands_tx,
            inbound: inbound_tx,
            status: status_rx,
            state: state_rx,
            snapshots: snapshots_dyn,
            tasks: tasks.clone(),
        }),
    };
    let mut runtime = Runtime {
        id: config.id,
        config,
        engine,
        log,
        snapshots,
        transport,
        snapshot_transfer,
        commands,
        inbound,
        events_tx,
        events,
        apply_tx,
        apply_task,
        status_tx,
        state_tx,
        in_flight: None,
        proposals: BTreeMap::new(),
        next_read_id: 1,
        reads_waiting: BTreeMap::new(),
        reads_ready: VecDeque::new(),
        applied_index,
        membership_waiters: Vec::new(),
        transfer_waiters: Vec::new(),
        snapshot_waiters: Vec::new(),
        transfers: BTreeMap::new(),
        tasks: tasks.clone(),
        observer,
        peers_published: BTreeMap::new(),
        proposals_total: 0,
        applied_total: 0,
    };
    runtime.publish_peers();
    runtime.publish_status(NodeState::Running);
    let (status_tx, state_tx) = (runtime.status_tx.clone(), runtime.state_tx.clone());
    let event_loop = tasks.spawn(runtime.run());
    tasks.spawn(supervise(event_loop, status_tx, state_tx, tasks.clone()));
    Ok(handle)
}

/// Marks the node failed if its event loop panics (a bug): callers then see `Fatal` at once
/// instead of timing out against a node that claims to run. The node's other tasks stop.
async fn supervise(
    event_loop: JoinHandle<()>,
    status_tx: watch::Sender<NodeStatus>,
    state_tx: watch::Sender<NodeState>,
    tasks: Tasks,
) {
    let Err(e) = event_loop.await else { return };
    if !e.is_panic() {
        return; // Killed: a simulated crash leaves no trace.
    }
    let panic = e.into_panic();
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    let reason = format!("bug: the event loop panicked: {message}");
    error!(reason, "node failed");
    let state = NodeState::Failed(reason);
    status_tx.send_modify(|s| s.state = state.clone());
    state_tx.send_replace(state);
    tasks.kill();
}

/// A crash between publishing a received snapshot and purging the log leaves a log that does
/// not continue the snapshot. Make it do so now, exactly as the install would have: keep the
/// suffix after the snapshot only if the log holds the snapshot's last entry.
async fn align_log_with_snapshot<L: LogStore>(
    log: &L,
    state: super::storage::LogState,
    entries: Vec<crate::types::Entry>,
    snapshot: LogId,
) -> Result<(super::storage::LogState, Vec<crate::types::Entry>), StorageError> {
    if snapshot.index <= state.purged.index {
        return Ok((state, entries));
    }
    let holds_snapshot_entry = entries
        .iter()
        .any(|e| e.index == snapshot.index && e.term == snapshot.term);
    if holds_snapshot_entry {
        return Ok((state, entries));
    }
    warn!(%snapshot, last = %state.last, "log does not continue the snapshot; discarding it");
    log.truncate(state.purged.index + 1).await?;
    log.purge(snapshot).await?;
    let state = super::storage::LogState {
        purged: snapshot,
        last: snapshot,
        ..state
    };
    Ok((state, Vec::new()))
}

async fn load_entries<L: LogStore>(
    log: &L,
    mut low: LogIndex,
    high: LogIndex,
) -> Result<Vec<crate::types::Entry>, StorageError> {
    let mut out = Vec::new();
    while low < high {
        let batch = log.entries(low, high, LOAD_BATCH_BYTES_MAX).await?;
        if batch.is_empty() {
            return Err(StorageError::Corrupt(format!(
                "log returned no entry at {low}"
            )));
        }
        low += batch.len() as u64;
        out.extend(batch);
    }
    Ok(out)
}

impl<L: LogStore, S: SnapshotStore, T: Transport> Runtime<L, S, T> {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome: Result<Option<oneshot::Sender<()>>, String> = loop {
            tokio::select! {
                biased;
                Some(event) = self.events.recv() => {
                    if let Err(e) = self.handle_event(event).await { break Err(e) }
                }
                _ = ticker.tick() => {
                    self.engine.tick();
                    self.prune_waiters();
                    self.publish_status(NodeState::Running);
                }
                Some(msg) = self.inbound.recv() => self.engine.step(msg),
                command = self.commands.recv() => match command {
                    None => break Ok(None),
                    Some(Command::Shutdown { tx }) => break Ok(Some(tx)),
                    Some(command) => self.handle_command(command),
                },
            }
            // Take everything else that is already queued before producing output: the more
            // inputs one `Ready` covers, the fewer, fuller messages and writes it makes.
            if let Some(tx) = self.drain_queued_inputs() {
                break Ok(Some(tx));
            }
            if let Err(e) = self.drive().await {
                break Err(e);
            }
            if let Some(observer) = &self.observer {
                observer.observe(&self.engine);
            }
        };
        self.stop(outcome).await;
    }

    /// Steps every inbound message and handles every command already queued (each bounded
    /// per iteration so ticks are never starved), so that concurrent proposals become one
    /// batch. Returns a shutdown request if one was found.
    fn drain_queued_inputs(&mut self) -> Option<oneshot::Sender<()>> {
        for _ in 0..INBOUND_PER_ITERATION_MAX {
            match self.inbound.try_recv() {
                Ok(msg) => self.engine.step(msg),
                Err(_) => break,
            }
        }
        for _ in 0..COMMANDS_PER_ITERATION_MAX {
            match self.commands.try_recv() {
                Ok(Command::Shutdown { tx }) => return Some(tx),
                Ok(command) => self.handle_command(command),
                Err(_) => break,
            }
        }
        None
    }

    fn not_leader(&self) -> RaftError {
        let leader = self.engine.leader();
        let address = leader.and_then(|l| self.engine.membership().addresses.get(&l).cloned());
        RaftError::NotLeader { leader, address }
    }

    fn engine_error(&self, e: EngineError) -> RaftError {
        match e {
            EngineError::NotLeader { .. } => self.not_leader(),
            other => RaftError::Refused(other),
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Propose { data, tx } => match self.engine.propose(data) {
                Ok(log_id) => {
                    self.proposals_total += 1;
                    self.proposals.insert(log_id.index, (log_id.term, tx));
                }
                Err(e) => {
                    let _ = tx.send(Err(self.engine_error(e)));
                }
            },
            Command::Read { tx } => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                match self.engine.read_index(id) {
                    Ok(()) => {
                        self.reads_waiting.insert(id, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(self.engine_error(e)));
                    }
                }
            }
            Command::Membership { change, tx } => self.start_membership_change(change, tx),
            Command::Transfer { target, tx } => match self.engine.transfer_leadership(target) {
                Ok(()) => self.transfer_waiters.push((target, tx)),
                Err(e) => {
                    let _ = tx.send(Err(self.engine_error(e)));
                }
            },
            Command::Snapshot { tx } => {
                if self.engine.request_snapshot() {
                    self.snapshot_waiters.push(tx);
                } else {
                    let _ = tx.send(Ok(self.engine.latest_snapshot()));
                }
            }
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    fn start_membership_change(&mut self, change: MembershipChange, tx: Reply<()>) {
        if change.is_done(self.engine.committed_membership()) && self.engine.role() == Role::Leader
        {
            let _ = tx.send(Ok(()));
            return;
        }
        let result = match &change {
            MembershipChange::AddLearner(id, addr) => self.engine.add_learner(*id, addr.clone()),
            MembershipChange::AddVoter(id, addr) => self.engine.add_voter(*id, addr.clone()),
            MembershipChange::Remove(id) => self.engine.remove_server(*id),
            MembershipChange::Replace(target) => self.engine.change_membership(target.clone()),
        };
        match result {
            Ok(_) => self.membership_waiters.push((change, tx)),
            Err(e) => {
                let _ = tx.send(Err(self.engine_error(e)));
            }
        }
    }

    /// Runs the engine's output: messages now; the durable part in a background write when
    /// no other write is in flight (else it waits and grows: group commit).
    async fn drive(&mut self) -> Result<(), String> {
        if self.in_flight.is_some() {
            for msg in self.engine.take_messages() {
                self.transport.send(msg);
            }
            // Commits learnt meanwhile are answered now, not after the write in flight; but
            // only if that write's Ready has nothing left for the apply queue, which must
            // see entries in log order and a snapshot request right after the entry it is
            // labelled with.
            if self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.ready_handed_out())
            {
                let entries = self.engine.take_committed_entries();
                self.apply_entries(entries).await?;
            }
            self.publish_indexes();
            return Ok(());
        }
        if !self.engine.has_ready() {
            self.check_waiters();
            return Ok(());
        }
        let mut ready = self.engine.ready();
        for msg in std::mem::take(&mut ready.messages) {
            self.transport.send(msg);
        }
        self.fail_replaced_proposals(&ready);
        if let Some(meta) = &ready.snapshot {
            self.send_apply(ApplyItem::Restore(meta.clone())).await?;
        }
        if self.config.state_machine_hooks {
            if !ready.rolled_back.is_empty() {
                self.send_apply(ApplyItem::Rollback(ready.rolled_back.clone()))
                    .await?;
            }
            if !ready.entries.is_empty() {
                self.send_apply(ApplyItem::PreCommit(ready.entries.clone()))
                    .await?;
            }
        }
        let last = ready
            .entries
            .last()
            .map(|e| e.log_id())
            .or(ready.snapshot.as_ref().map(|m| m.last_log_id));
        if ready.snapshot.is_none() {
            // The engine hands out only entries that are already durable here (and committed
            // on a quorum), so applying them need not wait for this Ready's own writes:
            // waiting would add a whole write cycle to every answer under load. A snapshot
            // request is labelled with the last of them, so it follows them at once.
            self.apply_committed(&mut ready).await?;
            self.take_read_states(&mut ready);
            self.request_build(&mut ready).await?;
        }
        if ready.needs_persist() || ready.purge_to.is_some() {
            self.spawn_persist(&mut ready);
            self.in_flight = Some(AfterPersist { last, ready });
        } else {
            self.after_persist(AfterPersist { last, ready }).await?;
        }
        self.publish_peers();
        self.check_waiters();
        Ok(())
    }

    fn spawn_persist(&mut self, ready: &mut Ready) {
        let log = self.log.clone();
        let events = self.events_tx.clone();
        let snapshot = ready.snapshot.as_ref().map(|m| m.last_log_id);
        let truncate_from = ready.truncate_from;
        let hard_state = ready.hard_state;
        let entries = std::mem::take(&mut ready.entries);
        let purge_to = ready.purge_to.take();
        self.tasks.spawn(async move {
            let result = async {
                if let Some(upto) = snapshot {
                    log.purge(upto).await?;
                }
                if let Some(from) = truncate_from {
                    log.truncate(from).await?;
                }
                if let Some(hs) = hard_state {
                    log.save_hard_state(hs).await?;
                }
                if !entries.is_empty() {
                    log.append(entries).await?;
                }
                if let Some(upto) = purge_to {
                    log.purge(upto).await?;
                }
                Ok(())
            }
            .await;
            let _ = events.send(Event::Persisted(result));
        });
    }

    /// Steps 3 to 6 of a `Ready`, once its writes are durable.
    async fn after_persist(&mut self, done: AfterPersist) -> Result<(), String> {
        let AfterPersist { last, mut ready } = done;
        self.engine.on_persisted(last);
        for msg in std::mem::take(&mut ready.persisted_messages) {
            self.transport.send(msg);
        }
        self.apply_committed(&mut ready).await?;
        self.take_read_states(&mut ready);
        for peer in ready.send_snapshots.drain(..) {
            self.start_snapshot_transfer(peer).await;
        }
        self.request_build(&mut ready).await
    }

    /// Asks the apply task for the snapshot the Ready requests, if not asked yet. Must follow
    /// the Ready's committed entries and precede any later ones: the request is labelled with
    /// the last entry handed out when the Ready was taken.
    async fn request_build(&mut self, ready: &mut Ready) -> Result<(), String> {
        match ready.build_snapshot.take() {
            Some(request) => {
                self.send_apply(ApplyItem::BuildSnapshot(request.to_meta()))
                    .await
            }
            None => Ok(()),
        }
    }

    /// Hands the Ready's committed entries (if not handed yet) to the apply task, with the
    /// proposals waiting for them.
    async fn apply_committed(&mut self, ready: &mut Ready) -> Result<(), String> {
        let entries = std::mem::take(&mut ready.committed_entries);
        self.apply_entries(entries).await
    }

    /// Hands committed entries to the apply task, with the proposals waiting for them.
    async fn apply_entries(&mut self, entries: Vec<crate::types::Entry>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let responders = self.take_responders(&entries);
        self.send_apply(ApplyItem::Apply {
            entries,
            responders,
        })
        .await
    }

    /// Queues the Ready's confirmed reads until the applied index reaches them, and fails
    /// its failed reads. Reads depend on a heartbeat quorum, not on anything persisted here.
    fn take_read_states(&mut self, ready: &mut Ready) {
        for read in ready.read_states.drain(..) {
            if let Some(tx) = self.reads_waiting.remove(&read.id) {
                self.reads_ready.push_back((read.index, tx));
            }
        }
        for id in ready.failed_reads.drain(..) {
            if let Some(tx) = self.reads_waiting.remove(&id) {
                let _ = tx.send(Err(self.not_leader()));
            }
        }
        self.answer_reads();
    }

    async fn send_apply(&mut self, item: ApplyItem) -> Result<(), String> {
        self.apply_tx
            .send(item)
            .await
            .map_err(|_| "the apply task stopped".to_string())
    }

    /// Pairs committed entries with the proposals waiting for them. A proposal whose index
    /// holds another term's entry lost its place: its outcome is unknown to us.
    fn take_responders(&mut self, entries: &[crate::types::Entry]) -> Vec<Option<Responder>> {
        entries
            .iter()
            .map(|entry| {
                let (term, tx) = self.proposals.remove(&entry.index)?;
                if term == entry.term {
                    Some(tx)
                } else {
                    let _ = tx.send(Err(RaftError::OutcomeUnknown(
                        "replaced by another leader's entry".into(),
                    )));
                    None
                }
            })
            .collect()
    }

    fn fail_replaced_proposals(&mut self, ready: &Ready) {
        for entry in &ready.rolled_back {
            if let Some((term, tx)) = self.proposals.remove(&entry.index) {
                if term == entry.term {
                    let why = "entry truncated by a new leader; it may still commit elsewhere";
                    let _ = tx.send(Err(RaftError::OutcomeUnknown(why.into())));
                } else {
                    self.proposals.insert(entry.index, (term, tx));
                }
            }
        }
    }

    fn answer_reads(&mut self) {
        let applied = self.applied_index;
        let mut waiting = VecDeque::new();
        for (index, tx) in self.reads_ready.drain(..) {
            if index <= applied {
                let _ = tx.send(Ok(index));
            } else {
                waiting.push_back((index, tx));
            }
        }
        self.reads_ready = waiting;
    }

    async fn handle_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Persisted(Ok(())) => {
                let done = self.in_flight.take().expect("a write was in flight");
                self.after_persist(done).await?;
            }
            Event::Persisted(Err(e)) => return Err(format!("log store: {e}")),
            Event::Applied { index, count } => {
                self.applied_index = self.applied_index.max(index);
                self.applied_total += count;
                self.engine.on_applied(index);
                self.answer_reads();
            }
            Event::SnapshotBuilt(Ok(meta)) => {
                info!(id = self.id, snapshot = %meta.last_log_id, bytes = meta.size_bytes, "snapshot built");
                self.engine.on_snapshot_built(Some(meta.last_log_id));
                for tx in self.snapshot_waiters.drain(..) {
                    let _ = tx.send(Ok(meta.last_log_id));
                }
            }
            Event::SnapshotBuilt(Err(e)) => {
                warn!(id = self.id, error = %e, "building a snapshot failed");
                self.engine.on_snapshot_built(None);
                for tx in self.snapshot_waiters.drain(..) {
                    let _ = tx.send(Err(RaftError::Fatal(e.clone())));
                }
            }
            Event::SnapshotSent { peer, success } => {
                self.transfers.remove(&peer);
                self.engine.on_snapshot_sent(peer, success);
            }
            Event::Fatal(e) => return Err(e),
        }
        Ok(())
    }

    async fn start_snapshot_transfer(&mut self, peer: NodeId) {
        if let Some(old) = self.transfers.remove(&peer) {
            old.abort();
        }
        let meta = match self.snapshots.latest().await {
            Ok(Some(meta)) => meta,
            other => {
                warn!(id = self.id, peer, ?other, "no snapshot to send");
                self.engine.on_snapshot_sent(peer, false);
                return;
            }
        };
        let transfer = self.snapshot_transfer.clone();
        let (from, term) = (self.id, self.engine.term());
        let events = self.events_tx.clone();
        let task = self.tasks.spawn(async move {
            let success = transfer.send_snapshot(from, peer, term, meta).await;
            let _ = events.send(Event::SnapshotSent { peer, success });
        });
        self.transfers.insert(peer, task);
    }

    fn check_waiters(&mut self) {
        let leading = self.engine.role() == Role::Leader;
        let waiters = std::mem::take(&mut self.membership_waiters);
        for (change, tx) in waiters {
            if change.is_done(self.engine.committed_membership()) {
                let _ = tx.send(Ok(()));
            } else if !leading {
                // The change may still commit under the next leader: say so, don't time out.
                let why = "leadership lost while the change was pending";
                let _ = tx.send(Err(RaftError::OutcomeUnknown(why.into())));
            } else {
                self.membership_waiters.push((change, tx));
            }
        }
        let leader = self.engine.leader();
        let waiters = std::mem::take(&mut self.transfer_waiters);
        for (target, tx) in waiters {
            if leader == Some(target) {
                let _ = tx.send(Ok(()));
            } else {
                self.transfer_waiters.push((target, tx));
            }
        }
        self.refresh_status();
    }

    /// Publishes what changed since the last status, compared with the published status
    /// itself: the whole status when role, term, leader, snapshot or membership changed, else
    /// only the log indexes, in place. (Under load the indexes move on every loop iteration,
    /// and rebuilding the status, peers and membership included, each time was a few percent
    /// of a leader.) Progress and counters are refreshed at each tick.
    fn refresh_status(&mut self) {
        let rebuild = {
            let published = self.status_tx.borrow();
            published.role != self.engine.role()
                || published.term != self.engine.term()
                || published.leader != self.engine.leader()
                || published.snapshot != self.engine.latest_snapshot()
                || published.membership != *self.engine.membership()
                || published.committed_membership != *self.engine.committed_membership()
        };
        if rebuild {
            self.publish_status(NodeState::Running);
        } else {
            self.publish_indexes();
        }
    }

    /// Updates the published status's log indexes in place if they moved; watchers are
    /// woken only then.
    fn publish_indexes(&self) {
        let commit = self.engine.commit_index();
        let applied = self.applied_index;
        let last = self.engine.last_log_id();
        let first = self.engine.first_index();
        self.status_tx.send_if_modified(|s| {
            let moved = (
                s.commit_index,
                s.applied_index,
                s.last_log_id,
                s.first_index,
            ) != (commit, applied, last, first);
            if moved {
                (
                    s.commit_index,
                    s.applied_index,
                    s.last_log_id,
                    s.first_index,
                ) = (commit, applied, last, first);
            }
            moved
        });
    }

    /// Drops waiters whose caller gave up (timed out).
    fn prune_waiters(&mut self) {
        self.membership_waiters.retain(|(_, tx)| !tx.is_closed());
        self.transfer_waiters.retain(|(_, tx)| !tx.is_closed());
        self.snapshot_waiters.retain(|tx| !tx.is_closed());
        self.reads_waiting.retain(|_, tx| !tx.is_closed());
    }

    /// Gives the transport the address of every member of the effective and the committed
    /// configuration: while a change is pending, servers it removes (a leader removing
    /// itself, above all) must still receive answers until it commits.
    fn publish_peers(&mut self) {
        let mut current = addresses(self.engine.committed_membership());
        current.extend(addresses(self.engine.membership()));
        if current != self.peers_published {
            self.transport.set_peers(&current);
            self.peers_published = current;
        }
    }

    fn publish_status(&mut self, state: NodeState) {
        let s = self.engine.status();
        let peers = s
            .progress
            .iter()
            .map(|(id, p)| PeerStatus {
                id: *id,
                match_index: p.match_index,
                next_index: p.next_index,
                state: p.state,
            })
            .collect();
        let status = NodeStatus {
            id: self.id,
            state,
            role: s.role,
            term: s.term,
            leader: s.leader,
            commit_index: s.commit_index,
            applied_index: self.applied_index,
            last_log_id: s.last_log_id,
            first_index: s.first_index,
            snapshot: self.engine.latest_snapshot(),
            membership: s.membership,
            committed_membership: self.engine.committed_membership().clone(),
            peers,
            proposals_total: self.proposals_total,
            applied_total: self.applied_total,
        };
        self.status_tx.send_replace(status);
    }

    /// Ends the loop: finishes the write in flight, drains the apply queue, fails every
    /// waiting request.
    async fn stop(mut self, outcome: Result<Option<oneshot::Sender<()>>, String>) {
        for (_, task) in std::mem::take(&mut self.transfers) {
            task.abort();
        }
        let (state, error) = match &outcome {
            Ok(_) => (NodeState::Stopped, RaftError::Shutdown),
            Err(reason) => {
                error!(id = self.id, reason, "node failed; stopping");
                (
                    NodeState::Failed(reason.clone()),
                    RaftError::Fatal(reason.clone()),
                )
            }
        };
        if self.in_flight.is_some() && outcome.is_ok() {
            // Let the write finish so nothing half-done is left behind by a clean shutdown.
            while let Some(event) = self.events.recv().await {
                if matches!(event, Event::Persisted(_)) {
                    break;
                }
            }
        }
        let proposals = std::mem::take(&mut self.proposals);
        for (_, (_, tx)) in proposals {
            let _ = tx.send(Err(RaftError::OutcomeUnknown("node stopped".into())));
        }
        for (_, tx) in std::mem::take(&mut self.reads_waiting) {
            let _ = tx.send(Err(error.clone()));
        }
        for (_, tx) in self.reads_ready.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        for (_, tx) in self.membership_waiters.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        for (_, tx) in self.transfer_waiters.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        for tx in self.snapshot_waiters.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        let Runtime {
            apply_tx,
            apply_task,
            status_tx,
            state_tx,
            ..
        } = self;
        drop(apply_tx);
        let _ = apply_task.await;
        status_tx.send_modify(|s| s.state = state.clone());
        state_tx.send_replace(state);
        if let Ok(Some(tx)) = outcome {
            let _ = tx.send(());
        }
    }
}

/// raft-core's default [`SnapshotTransfer`]: streams a snapshot chunk by chunk, one chunk in
/// flight (stop-and-wait), resuming from the offset the receiver acknowledges after any
/// failure. It gives up after `SNAPSHOT_CHUNK_RETRIES_MAX` failures in a row that gain no new
/// ground, so a snapshot the receiver can never verify is not resent forever.
pub struct StopAndWaitSender<S, T> {
    snapshots: Arc<S>,
    transport: Arc<T>,
    chunk_bytes: u32,
}

impl<S, T> std::fmt::Debug for StopAndWaitSender<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopAndWaitSender")
            .field("chunk_bytes", &self.chunk_bytes)
            .finish()
    }
}

impl<S: SnapshotStore, T: Transport> StopAndWaitSender<S, T> {
    /// A sender reading from `snapshots` and sending `chunk_bytes` per chunk over `transport`.
    pub fn new(snapshots: Arc<S>, transport: Arc<T>, chunk_bytes: u32) -> Self {
        StopAndWaitSender {
            snapshots,
            transport,
            chunk_bytes: chunk_bytes.max(1),
        }
    }
}

#[async_trait::async_trait]
impl<S: SnapshotStore, T: Transport> SnapshotTransfer for StopAndWaitSender<S, T> {
    async fn send_snapshot(
        &self,
        from: NodeId,
        to: NodeId,
        term: Term,
        meta: SnapshotMeta,
    ) -> bool {
        let mut offset = 0u64;
        let mut furthest = 0u64;
        let mut failures = 0u32;
        loop {
            let data = match self
                .snapshots
                .read_chunk(&meta, offset, self.chunk_bytes)
                .await
            {
                Ok(data) => data,
                Err(e) => {
                    warn!(to, error = %e, "reading snapshot chunk failed");
                    return false;
                }
            };
            let done = offset + data.len() as u64 >= meta.size_bytes;
            let crc32 = crc32fast::hash(&data);
            let chunk = SnapshotChunk {
                from,
                to,
                term,
                meta: meta.clone(),
                offset,
                crc32,
                data,
                done,
            };
            match self.transport.send_snapshot_chunk(chunk).await {
                Ok(ack) => match ack.status {
                    ChunkStatus::Complete => return true,
                    ChunkStatus::Accepted => offset = ack.next_offset,
                    ChunkStatus::Retry(why) => {
                        warn!(to, offset, why, "snapshot chunk to be resent");
                        offset = ack.next_offset;
                        failures += 1;
                    }
                    ChunkStatus::Refused(why) => {
                        info!(to, why, "snapshot refused");
                        return false;
                    }
                },
                Err(e) => {
                    warn!(to, error = %e, "snapshot chunk failed");
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(failures))).await;
                }
            }
            if offset > furthest {
                furthest = offset;
                failures = 0;
            }
            if failures > SNAPSHOT_CHUNK_RETRIES_MAX {
                return false;
            }
        }
    }
}

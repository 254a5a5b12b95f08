//! The node's event loop: feeds ticks, messages and requests to the [`Driver`] and carries out
//! the work it returns (sends, the write pipeline in `write.rs`, the apply task in `apply.rs`,
//! snapshot transfers), answering the callers kept in `waiters.rs`. Start-up is in
//! `recovery.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::apply::{self, ApplyItem};
use super::error::Fatal;
use super::metrics::NodeMetrics;
use super::raft::{
    addresses, EngineObserver, HandleInner, MembershipChange, NodeConfig, NodeState, NodeStatus,
    PeerStatus, RaftError, RaftHandle, StartOptions,
};
use super::recovery::{self, Recovered};
use super::storage::{LogStore, SnapshotStore, StorageError};
use super::tasks::Tasks;
use super::transfer_sender::StopAndWaitSender;
use super::transport::{SnapshotTransfer, Transport};
use super::waiters::{Reply, Waiters};
use super::write::{self, WriteReport};
use super::StateMachine;
use crate::driver::{ApplyWork, Driver, Work};
use crate::engine::{BuiltSnapshot, EngineError, EntryFetch, Role};
use crate::membership::Membership;
use crate::message::Message;
use crate::types::{Entry, LogId, LogIndex, NodeId, SnapshotMeta, Term};

/// A late-heartbeat warning is logged at most this often.
const LATE_WARNING_INTERVAL_MS: u64 = 1_000;
/// Commands taken from the queue per loop iteration, at most (a batch of proposals counts
/// each), so that ticks and inbound messages are never starved.
const COMMANDS_PER_ITERATION_MAX: usize = 4096;
/// Inbound messages stepped per loop iteration, at most.
const INBOUND_PER_ITERATION_MAX: usize = 4096;

/// A request from a handle.
pub(crate) enum Command {
    Propose {
        data: Bytes,
        tx: Reply<Bytes>,
    },
    ProposeMany {
        batch: Vec<(Bytes, Reply<Bytes>)>,
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

impl Command {
    /// What the command counts for against [`COMMANDS_PER_ITERATION_MAX`]: a batch of
    /// proposals counts each of them.
    fn weight(&self) -> usize {
        match self {
            Command::ProposeMany { batch } => batch.len().max(1),
            _ => 1,
        }
    }
}

/// Something a background task finished.
pub(crate) enum Event {
    Persisted(Result<WriteReport, StorageError>),
    Applied {
        index: LogIndex,
        count: u64,
    },
    /// A snapshot of `bytes` received from the leader was restored in `took`.
    Restored {
        index: LogIndex,
        bytes: u64,
        took: Duration,
    },
    SnapshotBuilt(Result<SnapshotMeta, String>),
    SnapshotSent {
        peer: NodeId,
        success: bool,
    },
    Fetched(EntryFetch, Result<Vec<Entry>, StorageError>),
    Fatal(Fatal),
}

impl Event {
    /// What the event is, for the late-heartbeat warning.
    fn name(&self) -> &'static str {
        match self {
            Event::Persisted(_) => "a finished log write",
            Event::Applied { .. } => "entries applied",
            Event::Restored { .. } => "a snapshot restored",
            Event::SnapshotBuilt(_) => "a finished snapshot",
            Event::SnapshotSent { .. } => "a finished snapshot transfer",
            Event::Fetched(..) => "entries read back from the log",
            Event::Fatal(_) => "a fatal error",
        }
    }
}

struct Runtime<L, S, T> {
    id: NodeId,
    config: NodeConfig,
    driver: Driver,
    log: Arc<L>,
    snapshots: Arc<S>,
    transport: Arc<T>,
    snapshot_transfer: Arc<dyn SnapshotTransfer>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Receiver<Message>,
    /// Bytes of the messages in `inbound` (shared with the handles that enqueue them).
    inbound_bytes: Arc<AtomicU64>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    apply_tx: mpsc::Sender<ApplyItem>,
    apply_task: JoinHandle<()>,
    status_tx: watch::Sender<NodeStatus>,
    /// The node's state alone, for waiting on the end without waking at every status update.
    state_tx: watch::Sender<NodeState>,
    waiters: Waiters,
    /// The index the state machine has applied (reported by the apply task).
    applied_index: LogIndex,
    /// Snapshot transfers to followers, one per peer (leader only).
    transfers: BTreeMap<NodeId, Transfer>,
    tasks: Tasks,
    observer: Option<Arc<dyn EngineObserver>>,
    /// The configurations the transport's peer list was last built from (committed,
    /// effective), and that list.
    peers_from: (Membership, Membership),
    peers_published: BTreeMap<NodeId, String>,
    /// The longest step since the last tick (for the warning when heartbeats go out late).
    busiest_step: (Duration, &'static str),
    late_warned_at: Option<Instant>,
    /// What the node counted and timed (published with the status at each tick).
    metrics: NodeMetrics,
    /// The last leadership counted in `metrics.leader_changes`: its term and leader.
    leadership_seen: Option<(Term, NodeId)>,
    /// When the snapshot build in progress was handed to the state machine.
    snapshot_build_started: Option<Instant>,
}

/// A snapshot transfer to a follower.
struct Transfer {
    task: JoinHandle<()>,
    started: Instant,
    /// The size of the snapshot sent.
    bytes: u64,
}

/// Loads the stores, starts the apply task and the event loop.
pub(crate) async fn start<L, S, T, M>(
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
    config.validate()?;
    let recovered = recovery::recover(
        &config,
        log.as_ref(),
        snapshots.as_ref(),
        state_machine,
        initial_membership,
    )
    .await
    .map_err(RaftError::Fatal)?;
    let Recovered {
        engine,
        state_machine,
        applied,
    } = recovered;
    let StartOptions {
        snapshot_transfer,
        observer,
    } = options;
    let snapshot_transfer = snapshot_transfer.unwrap_or_else(|| {
        let sender = StopAndWaitSender::new(
            snapshots.clone(),
            transport.clone(),
            config.snapshot_chunk_bytes,
        );
        Arc::new(sender)
    });
    let (commands_tx, commands) = mpsc::channel(config.command_queue_len_max);
    let (inbound_tx, inbound) = mpsc::channel(config.inbound_queue_len_max);
    let inbound_bytes = Arc::new(AtomicU64::new(0));
    let (events_tx, events) = mpsc::unbounded_channel();
    let (apply_tx, apply_rx) = mpsc::channel(config.apply_queue_len_max);
    let (status_tx, status_rx) = watch::channel(NodeStatus::initial(config.id));
    let (state_tx, state_rx) = watch::channel(NodeState::Running);
    let snapshots_dyn: Arc<dyn SnapshotStore> = snapshots.clone();
    let tasks = Tasks::default();
    let apply = apply::run(
        state_machine,
        apply_rx,
        events_tx.clone(),
        snapshots_dyn.clone(),
        tasks.clone(),
    );
    let apply_task = if config.state_machine_thread {
        spawn_on_own_thread(config.id, &tasks, apply).map_err(|e| {
            RaftError::Fatal(Fatal::StateMachine(format!("starting its thread: {e}")))
        })?
    } else {
        tasks.spawn(apply)
    };
    let handle = RaftHandle {
        inner: Arc::new(HandleInner {
            id: config.id,
            config: config.clone(),
            commands: commands_tx,
            inbound: inbound_tx,
            inbound_bytes: inbound_bytes.clone(),
            status: status_rx,
            state: state_rx,
            snapshots: snapshots_dyn,
            tasks: tasks.clone(),
        }),
    };
    let driver = Driver::new(engine, config.state_machine_hooks);
    let mut runtime = Runtime {
        id: config.id,
        config,
        driver,
        log,
        snapshots,
        transport,
        snapshot_transfer,
        commands,
        inbound,
        inbound_bytes,
        events_tx,
        events,
        apply_tx,
        apply_task,
        status_tx: status_tx.clone(),
        state_tx: state_tx.clone(),
        waiters: Waiters::default(),
        applied_index: applied,
        transfers: BTreeMap::new(),
        tasks: tasks.clone(),
        observer,
        peers_from: Default::default(),
        peers_published: BTreeMap::new(),
        busiest_step: (Duration::ZERO, ""),
        late_warned_at: None,
        metrics: NodeMetrics::default(),
        leadership_seen: None,
        snapshot_build_started: None,
    };
    runtime.publish_peers();
    runtime.publish_status(NodeState::Running);
    let event_loop = tasks.spawn(runtime.run());
    tasks.spawn(supervise(event_loop, status_tx, state_tx, tasks.clone()));
    Ok(handle)
}

/// Runs `future` on a thread of its own with a single-threaded runtime; the thread ends with
/// the future (or when the node is killed). The handle can be awaited from any runtime.
fn spawn_on_own_thread<F>(id: NodeId, tasks: &Tasks, future: F) -> std::io::Result<JoinHandle<()>>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("raft-apply-{id}"))
        .build()?;
    // `ended` resolves when the task's future is dropped: it finished, or was aborted.
    let (alive, ended) = oneshot::channel::<()>();
    let task = runtime.spawn(async move {
        let _alive = alive;
        future.await;
    });
    tasks.register(task.abort_handle());
    std::thread::Builder::new()
        .name(format!("raft-apply-{id}"))
        .spawn(move || {
            let _ = runtime.block_on(ended);
        })?;
    Ok(task)
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
    let fatal = Fatal::Bug(format!("the event loop panicked: {message}"));
    error!(reason = %fatal, "node failed");
    let state = NodeState::Failed(fatal);
    status_tx.send_modify(|s| s.state = state.clone());
    state_tx.send_replace(state);
    tasks.kill();
}

impl<L: LogStore, S: SnapshotStore, T: Transport> Runtime<L, S, T> {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome: Result<Option<oneshot::Sender<()>>, Fatal> = loop {
            let step: &'static str;
            tokio::select! {
                biased;
                Some(event) = self.events.recv() => {
                    step = event.name();
                    if let Err(e) = self.handle_event(event).await { break Err(e) }
                }
                scheduled = ticker.tick() => {
                    step = "a tick";
                    self.tick(scheduled);
                }
                Some(msg) = self.inbound.recv() => {
                    step = "messages from peers";
                    self.step(msg);
                }
                command = self.commands.recv() => match command {
                    None => break Ok(None),
                    Some(Command::Shutdown { tx }) => break Ok(Some(tx)),
                    Some(command) => {
                        step = "client requests";
                        self.handle_command(command);
                    }
                },
            }
            let started = Instant::now();
            // Take everything else that is already queued before producing output: the more
            // inputs one poll covers, the fewer, fuller messages and writes it makes.
            if let Some(tx) = self.drain_queued_inputs() {
                break Ok(Some(tx));
            }
            if let Err(e) = self.drive().await {
                break Err(e);
            }
            self.note_step(started.elapsed(), step);
            if let Some(observer) = &self.observer {
                observer.observe(self.driver.engine());
            }
        };
        self.stop(outcome).await;
    }

    fn step(&mut self, msg: Message) {
        self.inbound_bytes
            .fetch_sub(msg.size_bytes(), Ordering::Relaxed);
        self.driver.engine_mut().step(msg);
    }

    /// A tick: messages already waiting go first (a follower whose loop was busy must not
    /// time out with its leader's heartbeat in the queue), then the engine's clock moves.
    fn tick(&mut self, scheduled: Instant) {
        let lag = Instant::now().saturating_duration_since(scheduled);
        self.metrics.event_loop_lag_us.record_duration(lag);
        self.warn_if_heartbeats_late(lag);
        self.busiest_step = (Duration::ZERO, "");
        for _ in 0..INBOUND_PER_ITERATION_MAX {
            match self.inbound.try_recv() {
                Ok(msg) => self.step(msg),
                Err(_) => break,
            }
        }
        self.driver.engine_mut().tick();
        for read in self.waiters.prune() {
            self.driver.engine_mut().cancel_read(read);
        }
        self.publish_status(NodeState::Running);
    }

    /// Remembers the longest step since the last tick, to name it when a tick is late.
    fn note_step(&mut self, took: Duration, what: &'static str) {
        if took > self.busiest_step.0 {
            self.busiest_step = (took, what);
        }
    }

    /// A leader whose ticks fire later than a heartbeat interval sends its heartbeats late:
    /// say so (at most once per [`LATE_WARNING_INTERVAL_MS`]), with the step that kept the
    /// loop busy longest.
    fn warn_if_heartbeats_late(&mut self, lag: Duration) {
        let engine = self.driver.engine();
        let heartbeat_ms = engine.config().heartbeat_ticks * self.config.tick_ms;
        if engine.role() != Role::Leader || lag < Duration::from_millis(heartbeat_ms) {
            return;
        }
        let now = Instant::now();
        let quiet = Duration::from_millis(LATE_WARNING_INTERVAL_MS);
        if self
            .late_warned_at
            .is_some_and(|at| now.saturating_duration_since(at) < quiet)
        {
            return;
        }
        self.late_warned_at = Some(now);
        let (took, what) = self.busiest_step;
        warn!(
            id = self.id,
            late_ms = lag.as_millis() as u64,
            heartbeat_ms,
            busiest_step = what,
            busiest_step_ms = took.as_millis() as u64,
            "leader failed to send out heartbeats on time: its event loop was busy"
        );
    }

    /// Steps every inbound message and handles every command already queued (each bounded
    /// per iteration so ticks are never starved), so that concurrent proposals become one
    /// batch. Returns a shutdown request if one was found.
    fn drain_queued_inputs(&mut self) -> Option<oneshot::Sender<()>> {
        for _ in 0..INBOUND_PER_ITERATION_MAX {
            match self.inbound.try_recv() {
                Ok(msg) => self.step(msg),
                Err(_) => break,
            }
        }
        let mut budget = COMMANDS_PER_ITERATION_MAX;
        while budget > 0 {
            match self.commands.try_recv() {
                Ok(Command::Shutdown { tx }) => return Some(tx),
                Ok(command) => {
                    budget = budget.saturating_sub(command.weight());
                    self.handle_command(command);
                }
                Err(_) => break,
            }
        }
        None
    }

    fn not_leader(&self) -> RaftError {
        not_leader(self.driver.engine())
    }

    fn engine_error(&self, e: EngineError) -> RaftError {
        match e {
            EngineError::NotLeader { .. } => self.not_leader(),
            other => RaftError::Refused(other),
        }
    }

    fn propose(&mut self, data: Bytes, tx: Reply<Bytes>) {
        match self.driver.engine_mut().propose(data) {
            Ok(log_id) => {
                self.metrics.proposals_accepted += 1;
                self.waiters.add_proposal(log_id, tx, Instant::now());
            }
            Err(e) => {
                self.metrics.proposals_refused.count(&e);
                let _ = tx.send(Err(self.engine_error(e)));
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Propose { data, tx } => self.propose(data, tx),
            Command::ProposeMany { batch } => {
                for (data, tx) in batch {
                    self.propose(data, tx);
                }
            }
            Command::Read { tx } => {
                let id = self.waiters.next_read_id();
                match self.driver.engine_mut().read_index(id) {
                    Ok(()) => self.waiters.add_read(id, tx),
                    Err(e) => {
                        let _ = tx.send(Err(self.engine_error(e)));
                    }
                }
            }
            Command::Membership { change, tx } => self.start_membership_change(change, tx),
            Command::Transfer { target, tx } => {
                match self.driver.engine_mut().transfer_leadership(target) {
                    Ok(()) => self.waiters.add_transfer(target, tx),
                    Err(e) => {
                        let _ = tx.send(Err(self.engine_error(e)));
                    }
                }
            }
            Command::Snapshot { tx } => {
                if self.driver.engine_mut().request_snapshot() {
                    self.waiters.add_snapshot(tx);
                } else {
                    let _ = tx.send(Ok(self.driver.engine().latest_snapshot()));
                }
            }
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    fn start_membership_change(&mut self, change: MembershipChange, tx: Reply<()>) {
        let engine = self.driver.engine_mut();
        if change.is_done(engine.committed_membership()) && engine.role() == Role::Leader {
            let _ = tx.send(Ok(()));
            return;
        }
        let result = match &change {
            MembershipChange::AddLearner(id, addr) => engine.add_learner(*id, addr.clone()),
            MembershipChange::AddVoter(id, addr) => engine.add_voter(*id, addr.clone()),
            MembershipChange::Remove(id) => engine.remove_server(*id),
            MembershipChange::Replace(target) => engine.change_membership(target.clone()),
        };
        match result {
            Ok(_) => self.waiters.add_membership_change(change, tx),
            Err(e) => {
                let _ = tx.send(Err(self.engine_error(e)));
            }
        }
    }

    /// Carries out whatever the inputs since the last call produced.
    async fn drive(&mut self) -> Result<(), Fatal> {
        let work = self.driver.poll();
        if !work.is_empty() {
            self.carry_out(work).await?;
        }
        self.after_step();
        Ok(())
    }

    /// Carries out the driver's work in its documented order.
    async fn carry_out(&mut self, work: Work) -> Result<(), Fatal> {
        let Work {
            messages,
            fetches,
            apply,
            read_states,
            failed_reads,
            rolled_back,
            skipped_to,
            send_snapshots,
            write,
        } = work;
        for msg in messages {
            self.transport.send(msg);
        }
        for fetch in fetches {
            self.spawn_fetch(fetch);
        }
        self.waiters.fail_rolled_back(&rolled_back);
        if let Some(upto) = skipped_to {
            self.waiters.fail_skipped(upto);
        }
        for item in apply {
            self.hand_over(item).await?;
        }
        let engine = self.driver.engine();
        self.waiters
            .reads_known(read_states, failed_reads, || not_leader(engine));
        self.waiters.answer_reads(self.applied_index);
        for peer in send_snapshots {
            self.start_snapshot_transfer(peer).await;
        }
        if let Some(write) = write {
            write::spawn(&self.tasks, self.log.clone(), write, self.events_tx.clone());
        }
        Ok(())
    }

    /// Reads entries back from the log store for a lagging follower, off the event loop.
    fn spawn_fetch(&self, fetch: EntryFetch) {
        let (log, events) = (self.log.clone(), self.events_tx.clone());
        self.tasks.spawn(async move {
            let read = log.read_back(fetch.low, fetch.high, fetch.bytes_max).await;
            let _ = events.send(Event::Fetched(fetch, read));
        });
    }

    /// Hands work to the apply task (committed entries with the proposals waiting for them).
    async fn hand_over(&mut self, work: ApplyWork) -> Result<(), Fatal> {
        let item = match work {
            ApplyWork::Entries(entries) => {
                let responders = self.waiters.responders_for(&entries);
                ApplyItem::Apply {
                    entries,
                    responders,
                }
            }
            ApplyWork::Restore(meta) => ApplyItem::Restore(meta),
            ApplyWork::BuildSnapshot(request) => {
                self.snapshot_build_started = Some(Instant::now());
                ApplyItem::BuildSnapshot(request.to_meta())
            }
            ApplyWork::PreCommit(entries) => ApplyItem::PreCommit(entries),
            ApplyWork::Rollback(entries) => ApplyItem::Rollback(entries),
        };
        let started = Instant::now();
        let sent = self.apply_tx.send(item).await;
        self.note_step(
            started.elapsed(),
            "waiting for the state machine (its queue was full)",
        );
        sent.map_err(|_| Fatal::Bug("the apply task stopped".into()))
    }

    async fn handle_event(&mut self, event: Event) -> Result<(), Fatal> {
        match event {
            Event::Persisted(Ok(report)) => {
                self.record_write(report);
                let work = self.driver.write_done();
                self.carry_out(work).await?;
            }
            Event::Persisted(Err(e)) => return Err(Fatal::LogStore(e.to_string())),
            Event::Applied { index, count } => self.on_applied(index, count),
            Event::Restored { index, bytes, took } => {
                self.metrics
                    .snapshots_installed
                    .record_completed(bytes, took);
                self.on_applied(index, 0);
            }
            Event::SnapshotBuilt(Ok(meta)) => {
                info!(id = self.id, snapshot = %meta.last_log_id, bytes = meta.size_bytes, "snapshot built");
                if let Some(started) = self.snapshot_build_started.take() {
                    let took = started.elapsed();
                    let built = &mut self.metrics.snapshots_built;
                    built.record_completed(meta.size_bytes, took);
                }
                let built = meta.last_log_id;
                self.driver
                    .engine_mut()
                    .on_snapshot_built(Some(BuiltSnapshot {
                        last_log_id: built,
                        size_bytes: meta.size_bytes,
                    }));
                self.waiters.snapshot_built(Ok(built));
            }
            Event::SnapshotBuilt(Err(e)) => {
                // The node goes on without this snapshot; the engine tries again later.
                warn!(id = self.id, error = %e, "building a snapshot failed");
                self.snapshot_build_started = None;
                self.metrics.snapshots_built.failed += 1;
                self.driver.engine_mut().on_snapshot_built(None);
                self.waiters
                    .snapshot_built(Err(RaftError::SnapshotFailed(e)));
            }
            Event::SnapshotSent { peer, success } => {
                if let Some(transfer) = self.transfers.remove(&peer) {
                    let sent = &mut self.metrics.snapshots_sent;
                    if success {
                        sent.record_completed(transfer.bytes, transfer.started.elapsed());
                    } else {
                        sent.failed += 1;
                    }
                }
                self.driver.engine_mut().on_snapshot_sent(peer, success);
            }
            Event::Fetched(fetch, read) => {
                let entries = read
                    .inspect_err(|e| warn!(id = self.id, error = %e, "reading entries back failed"))
                    .ok();
                self.driver.engine_mut().on_entries_fetched(fetch, entries);
            }
            Event::Fatal(e) => return Err(e),
        }
        Ok(())
    }

    /// The state machine applied up to `index` (`count` entries; none for a restore).
    fn on_applied(&mut self, index: LogIndex, count: u64) {
        self.applied_index = self.applied_index.max(index);
        self.metrics.entries_applied += count;
        self.waiters.proposals_applied(
            self.applied_index,
            Instant::now(),
            &mut self.metrics.proposal_apply_us,
        );
        self.driver.engine_mut().on_applied(index);
        self.waiters.answer_reads(self.applied_index);
    }

    fn record_write(&mut self, report: WriteReport) {
        let metrics = &mut self.metrics;
        if report.entries > 0 {
            metrics.log_write_entries.record(report.entries);
            metrics.log_appended_bytes += report.bytes;
        }
        metrics.log_write_us.record_duration(report.took);
    }

    async fn start_snapshot_transfer(&mut self, peer: NodeId) {
        if let Some(old) = self.transfers.remove(&peer) {
            old.task.abort();
        }
        let meta = match self.snapshots.latest().await {
            Ok(Some(meta)) => meta,
            other => {
                warn!(id = self.id, peer, ?other, "no snapshot to send");
                self.driver.engine_mut().on_snapshot_sent(peer, false);
                return;
            }
        };
        let transfer = self.snapshot_transfer.clone();
        let (from, term) = (self.id, self.driver.engine().term());
        let events = self.events_tx.clone();
        let bytes = meta.size_bytes;
        let task = self.tasks.spawn(async move {
            let success = transfer.send_snapshot(from, peer, term, meta).await;
            let _ = events.send(Event::SnapshotSent { peer, success });
        });
        let started = Instant::now();
        let transfer = Transfer {
            task,
            started,
            bytes,
        };
        self.transfers.insert(peer, transfer);
    }

    /// After every iteration: stop what only a leader does once it no longer leads, keep the
    /// transport's peers and the status current, answer membership and transfer waiters.
    fn after_step(&mut self) {
        let engine = self.driver.engine();
        let leading = engine.role() == Role::Leader;
        if !leading && !self.transfers.is_empty() {
            // Snapshot transfers belong to a term this server no longer leads.
            for (_, transfer) in std::mem::take(&mut self.transfers) {
                transfer.task.abort();
            }
        }
        self.waiters
            .check_membership_changes(engine.committed_membership(), leading);
        self.waiters.check_transfers(engine.leader());
        self.count_leadership();
        self.publish_peers();
        self.refresh_status();
    }

    /// Counts a leadership this server had not seen yet. A term has at most one leader, so
    /// (term, leader) names a leadership: a leader re-elected in a later term counts again,
    /// and one this server lost sight of and heard from again in the same term does not.
    fn count_leadership(&mut self) {
        let engine = self.driver.engine();
        let Some(leader) = engine.leader() else {
            return;
        };
        let leadership = (engine.term(), leader);
        if self.leadership_seen != Some(leadership) {
            self.leadership_seen = Some(leadership);
            self.metrics.leader_changes += 1;
        }
    }

    /// Publishes what changed since the last status, compared with the published status
    /// itself: the whole status when role, term, leader, snapshot or a configuration changed,
    /// else only the log indexes, in place. (Under load the indexes move on every loop
    /// iteration, and rebuilding the status, peers and membership included, each time was a
    /// few percent of a leader.) Progress and counters are refreshed at each tick.
    fn refresh_status(&mut self) {
        let engine = self.driver.engine();
        let rebuild = {
            let published = self.status_tx.borrow();
            published.role != engine.role()
                || published.term != engine.term()
                || published.leader != engine.leader()
                || published.snapshot != engine.latest_snapshot()
                || published.membership != *engine.membership()
                || published.committed_membership != *engine.committed_membership()
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
        let engine = self.driver.engine();
        let indexes = (
            engine.commit_index(),
            self.applied_index,
            engine.last_log_id(),
            engine.first_index(),
        );
        self.status_tx.send_if_modified(|s| {
            let published = (
                s.commit_index,
                s.applied_index,
                s.last_log_id,
                s.first_index,
            );
            let moved = published != indexes;
            if moved {
                (
                    s.commit_index,
                    s.applied_index,
                    s.last_log_id,
                    s.first_index,
                ) = indexes;
            }
            moved
        });
    }

    /// Gives the transport the address of every member of the effective and the committed
    /// configuration: while a change is pending, servers it removes (a leader removing
    /// itself, above all) must still receive answers until it commits.
    fn publish_peers(&mut self) {
        let engine = self.driver.engine();
        let (committed, effective) = (engine.committed_membership(), engine.membership());
        if self.peers_from.0 == *committed && self.peers_from.1 == *effective {
            return;
        }
        self.peers_from = (committed.clone(), effective.clone());
        let mut current = addresses(committed);
        current.extend(addresses(effective));
        for voter in effective.voters.iter().chain(&effective.voters_outgoing) {
            if *voter != self.id && !current.contains_key(voter) {
                warn!(
                    id = self.id,
                    voter, "no address known for a voter; it cannot be reached"
                );
            }
        }
        if current != self.peers_published {
            self.transport.set_peers(&current);
            self.peers_published = current;
        }
    }

    fn publish_status(&mut self, state: NodeState) {
        let engine = self.driver.engine();
        let s = engine.status();
        let peers = s
            .progress
            .iter()
            .map(|(id, p)| PeerStatus {
                id: *id,
                match_index: p.match_index,
                next_index: p.next_index,
                state: p.state,
                inflight_messages: p.inflight_messages() as u64,
                inflight_bytes: p.inflight_bytes(),
            })
            .collect();
        self.metrics.campaigns = engine.campaigns();
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
            snapshot: engine.latest_snapshot(),
            membership: s.membership,
            committed_membership: engine.committed_membership().clone(),
            peers,
            proposals_waiting: self.waiters.proposals_waiting(),
            reads_waiting: self.waiters.reads_waiting(),
            log_cached_bytes: engine.log_cached_bytes(),
            metrics: self.metrics.clone(),
        };
        self.status_tx.send_replace(status);
    }

    /// Ends the loop: finishes the write in flight (on a clean shutdown), drains the apply
    /// queue, answers every waiting caller.
    async fn stop(mut self, outcome: Result<Option<oneshot::Sender<()>>, Fatal>) {
        for (_, transfer) in std::mem::take(&mut self.transfers) {
            transfer.task.abort();
        }
        let (state, error) = match &outcome {
            Ok(_) => (NodeState::Stopped, RaftError::Shutdown),
            Err(fatal) => {
                error!(id = self.id, reason = %fatal, "node failed; stopping");
                // Said at once: the apply task may take a while to drain, and nobody should
                // take this node for a running one meanwhile.
                let failed = NodeState::Failed(fatal.clone());
                self.status_tx.send_modify(|s| s.state = failed.clone());
                self.state_tx.send_replace(failed.clone());
                (failed, RaftError::Fatal(fatal.clone()))
            }
        };
        if self.driver.write_in_flight() && outcome.is_ok() {
            // Let the write finish so nothing half-done is left behind by a clean shutdown.
            while let Some(event) = self.events.recv().await {
                if matches!(event, Event::Persisted(_)) {
                    break;
                }
            }
        }
        self.waiters.fail_all(&error);
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

/// "Not the leader", with the leader this engine knows and its address, if any.
fn not_leader(engine: &crate::engine::Engine) -> RaftError {
    let leader = engine.leader();
    let address = leader.and_then(|l| engine.membership().addresses.get(&l).cloned());
    RaftError::NotLeader { leader, address }
}

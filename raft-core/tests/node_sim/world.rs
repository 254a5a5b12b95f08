//! The simulated world the nodes run in: a network, and per node a disk holding the log and
//! a snapshot store. Everything draws from one seeded random stream and runs on one thread
//! with a paused tokio clock, so the same seed gives the same run.
//!
//! * The network loses, duplicates, delays (so reorders) messages, and can be partitioned,
//!   also one way. Snapshot chunks travel separately and can be cut: lost on the way there or
//!   on the way back.
//! * A disk keeps what was synced. A write is durable when its future resolves (the
//!   `LogStore` contract); on a crash, the one write in flight is lost, kept, or (an append)
//!   torn after a prefix of its entries. A write can also fail, after which the store refuses
//!   every write, and the node must stop.
//! * The snapshot store keeps published snapshots across crashes; a snapshot being written
//!   when the node dies is never published. Its writes can fail too.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{
    LogState, LogStore, MemSnapshotStore, MessageHandler, RaftHandle, SnapshotReader,
    SnapshotStore, SnapshotWriter, StorageError, Transport, TransportError,
};
use raft_core::{
    ChunkStatus, Entry, HardState, LogId, LogIndex, Message, MessageBody, NodeId, SnapshotChunk,
    SnapshotChunkAck, SnapshotMeta,
};
use tokio::io::AsyncWrite;

use super::checker::Checker;
use crate::rng::Rng;

/// Locks a mutex of the simulation; a panic elsewhere cannot leave these half-updated in a
/// way that matters (the seed fails anyway).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The world's random stream, shared by every simulated part.
pub type SharedRng = Arc<Mutex<Rng>>;

/// Network fault knobs (per mille, milliseconds).
#[derive(Clone, Debug)]
pub struct NetFaults {
    pub loss: u64,
    pub duplicate: u64,
    pub delay_ms_max: u64,
    /// A snapshot chunk is lost on the way (either way) with this probability.
    pub chunk_loss: u64,
}

impl NetFaults {
    pub fn none() -> Self {
        NetFaults {
            loss: 0,
            duplicate: 0,
            delay_ms_max: 1,
            chunk_loss: 0,
        }
    }
}

#[derive(Default)]
struct NetInner {
    /// Where messages to each node that is up are delivered.
    handles: BTreeMap<NodeId, RaftHandle>,
    /// Directed links that drop everything: (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    faults: Option<NetFaults>,
}

/// The network: routes messages between the nodes that are up.
pub struct Net {
    inner: Mutex<NetInner>,
    rng: SharedRng,
    checker: Arc<Checker>,
}

impl Net {
    pub fn new(rng: SharedRng, checker: Arc<Checker>, faults: NetFaults) -> Arc<Self> {
        let inner = NetInner {
            faults: Some(faults),
            ..NetInner::default()
        };
        Arc::new(Net {
            inner: Mutex::new(inner),
            rng,
            checker,
        })
    }

    pub fn set_faults(&self, faults: NetFaults) {
        lock(&self.inner).faults = Some(faults);
    }

    pub fn register(&self, id: NodeId, handle: RaftHandle) {
        lock(&self.inner).handles.insert(id, handle);
    }

    pub fn unregister(&self, id: NodeId) {
        lock(&self.inner).handles.remove(&id);
    }

    pub fn block(&self, from: NodeId, to: NodeId) {
        lock(&self.inner).blocked.insert((from, to));
    }

    pub fn heal(&self) {
        lock(&self.inner).blocked.clear();
    }

    /// The delays of the copies of one message (none: lost).
    fn route(&self, from: NodeId, to: NodeId) -> Vec<u64> {
        let inner = lock(&self.inner);
        if inner.blocked.contains(&(from, to)) {
            return Vec::new();
        }
        let faults = inner.faults.clone().expect("faults set");
        drop(inner);
        let mut rng = lock(&self.rng);
        if rng.chance(faults.loss) {
            return Vec::new();
        }
        let copies = if rng.chance(faults.duplicate) { 2 } else { 1 };
        (0..copies)
            .map(|_| rng.below(faults.delay_ms_max + 1))
            .collect()
    }

    fn handle(&self, id: NodeId) -> Option<RaftHandle> {
        lock(&self.inner).handles.get(&id).cloned()
    }

    fn deliver(&self, msg: Message) {
        if let Some(handle) = self.handle(msg.to) {
            self.checker.trace_message(&msg);
            handle.deliver(msg);
        }
    }

    /// Whether a snapshot chunk (or its acknowledgement) is lost on the way.
    fn chunk_lost(&self, from: NodeId, to: NodeId) -> bool {
        let inner = lock(&self.inner);
        if inner.blocked.contains(&(from, to)) {
            return true;
        }
        let loss = inner.faults.as_ref().map_or(0, |f| f.chunk_loss);
        drop(inner);
        lock(&self.rng).chance(loss)
    }

    fn delay_ms(&self) -> u64 {
        let max = lock(&self.inner)
            .faults
            .as_ref()
            .map_or(1, |f| f.delay_ms_max);
        lock(&self.rng).below(max + 1)
    }
}

/// One node's sending half.
pub struct SimTransport {
    pub net: Arc<Net>,
    pub id: NodeId,
}

#[async_trait]
impl Transport for SimTransport {
    fn send(&self, msg: Message) {
        debug_assert!(
            !matches!(msg.body, MessageBody::InstallSnapshot { .. }),
            "InstallSnapshot travels as chunks"
        );
        for delay in self.net.route(self.id, msg.to) {
            let (net, msg) = (self.net.clone(), msg.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                net.deliver(msg);
            });
        }
    }

    async fn send_snapshot_chunk(
        &self,
        chunk: SnapshotChunk,
    ) -> Result<SnapshotChunkAck, TransportError> {
        let (from, to) = (self.id, chunk.to);
        let cut = |reason: &str| TransportError::Unreachable {
            node: to,
            reason: reason.into(),
        };
        tokio::time::sleep(Duration::from_millis(self.net.delay_ms())).await;
        if self.net.chunk_lost(from, to) {
            return Err(cut("chunk lost"));
        }
        let Some(handle) = self.net.handle(to) else {
            return Err(cut("receiver down"));
        };
        let ack = handle.deliver_snapshot_chunk(chunk).await;
        tokio::time::sleep(Duration::from_millis(self.net.delay_ms())).await;
        if self.net.chunk_lost(to, from) {
            return Err(cut("acknowledgement lost"));
        }
        Ok(ack)
    }

    fn set_peers(&self, _addresses: &BTreeMap<NodeId, String>) {}
}

// ---------------------------------------------------------------------------------------------
// The disk: log and hard state
// ---------------------------------------------------------------------------------------------

/// A log as stored: hard state, purge point and the entries after it.
#[derive(Clone, Debug, Default)]
pub struct LogImage {
    pub hard_state: HardState,
    pub purged: LogId,
    pub entries: VecDeque<Entry>,
}

impl LogImage {
    pub fn last(&self) -> LogId {
        self.entries.back().map_or(self.purged, Entry::log_id)
    }

    fn apply(&mut self, op: &WriteOp) {
        match op {
            WriteOp::HardState(hs) => self.hard_state = *hs,
            WriteOp::Append(entries) => self.entries.extend(entries.iter().cloned()),
            WriteOp::Truncate(from) => {
                let keep = (from - self.purged.index - 1).min(self.entries.len() as u64);
                self.entries.truncate(keep as usize);
            }
            WriteOp::Purge(upto) => {
                if upto.index > self.purged.index {
                    let drop = (upto.index - self.purged.index).min(self.entries.len() as u64);
                    self.entries.drain(..drop as usize);
                    self.purged = *upto;
                }
            }
        }
    }

    /// The contract's checks of a write (rules 1, 5 and 6).
    fn check(&self, op: &WriteOp) -> Result<(), StorageError> {
        match op {
            WriteOp::Append(entries) => {
                for (expected, e) in (self.last().index + 1..).zip(entries) {
                    if e.index != expected {
                        return Err(StorageError::Invalid(format!(
                            "append of {} after {}",
                            e.index,
                            self.last()
                        )));
                    }
                }
            }
            WriteOp::Truncate(from) if *from <= self.purged.index => {
                return Err(StorageError::Invalid(format!(
                    "truncate from {from} at or below the purged {}",
                    self.purged
                )));
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum WriteOp {
    HardState(HardState),
    Append(Vec<Entry>),
    Truncate(LogIndex),
    Purge(LogId),
}

/// Disk fault knobs (per mille, milliseconds).
#[derive(Clone, Debug)]
pub struct DiskFaults {
    /// A write takes up to this long to become durable.
    pub sync_ms_max: u64,
    /// A write fails with this probability (the node must then stop).
    pub fail: u64,
}

#[derive(Debug, Default)]
struct DiskInner {
    durable: LogImage,
    /// What the running process sees: `durable` plus the write in flight.
    current: LogImage,
    in_flight: Option<WriteOp>,
    /// Why writes are refused until the next start (contract rule 4).
    poisoned: Option<String>,
    incarnation: u64,
    failed_writes: u64,
    /// Reads of entries (start-up loads and reads back for followers).
    reads: u64,
}

/// One node's disk. It outlives the node's incarnations.
pub struct Disk {
    inner: Mutex<DiskInner>,
    rng: SharedRng,
    pub faults: Mutex<DiskFaults>,
}

impl Disk {
    pub fn new(rng: SharedRng, faults: DiskFaults) -> Arc<Self> {
        Arc::new(Disk {
            inner: Mutex::new(DiskInner::default()),
            rng,
            faults: Mutex::new(faults),
        })
    }

    /// A store for a new incarnation of the node.
    pub fn open(self: &Arc<Self>) -> SimLogStore {
        let mut inner = lock(&self.inner);
        inner.incarnation += 1;
        inner.poisoned = None;
        SimLogStore {
            disk: self.clone(),
            incarnation: inner.incarnation,
        }
    }

    /// The node died: the write in flight (if any, returned) is lost, kept or torn.
    pub fn crash(&self) -> bool {
        let mut inner = lock(&self.inner);
        let in_flight = inner.in_flight.take();
        let cut = in_flight.is_some();
        if let Some(op) = in_flight {
            let mut rng = lock(&self.rng);
            let kept = match op {
                WriteOp::Append(mut entries) => {
                    let keep = rng.below(entries.len() as u64 + 1) as usize;
                    entries.truncate(keep);
                    Some(WriteOp::Append(entries))
                }
                other => rng.chance(500).then_some(other),
            };
            if let Some(op) = kept {
                inner.durable.apply(&op);
            }
        }
        inner.current = inner.durable.clone();
        inner.incarnation += 1;
        cut
    }

    /// Writes that failed by injection so far.
    pub fn reads(&self) -> u64 {
        lock(&self.inner).reads
    }

    pub fn failed_writes(&self) -> u64 {
        lock(&self.inner).failed_writes
    }
}

/// One incarnation's log store on a [`Disk`].
pub struct SimLogStore {
    disk: Arc<Disk>,
    incarnation: u64,
}

impl SimLogStore {
    fn check_alive(&self, inner: &DiskInner) -> Result<(), StorageError> {
        if inner.incarnation != self.incarnation {
            return Err(StorageError::Poisoned("the process died".into()));
        }
        Ok(())
    }

    async fn write(&self, op: WriteOp) -> Result<(), StorageError> {
        let (delay, fail) = {
            let mut inner = lock(&self.disk.inner);
            self.check_alive(&inner)?;
            if let Some(cause) = &inner.poisoned {
                return Err(StorageError::Poisoned(cause.clone()));
            }
            assert!(inner.in_flight.is_none(), "concurrent writes (contract 2)");
            inner.current.check(&op)?;
            inner.current.apply(&op);
            inner.in_flight = Some(op);
            let faults = lock(&self.disk.faults).clone();
            let mut rng = lock(&self.disk.rng);
            (rng.below(faults.sync_ms_max + 1), rng.chance(faults.fail))
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mut inner = lock(&self.disk.inner);
        self.check_alive(&inner)?;
        if fail {
            // The write may or may not reach the disk: the crash that follows decides.
            let cause = "injected write failure".to_string();
            inner.poisoned = Some(cause.clone());
            inner.failed_writes += 1;
            return Err(StorageError::io("write", std::io::Error::other(cause)));
        }
        let op = inner.in_flight.take().expect("write in flight");
        inner.durable.apply(&op);
        Ok(())
    }
}

#[async_trait]
impl LogStore for SimLogStore {
    async fn state(&self) -> Result<LogState, StorageError> {
        let inner = lock(&self.disk.inner);
        self.check_alive(&inner)?;
        Ok(LogState {
            hard_state: inner.current.hard_state,
            purged: inner.current.purged,
            last: inner.current.last(),
        })
    }

    async fn save_hard_state(&self, hard_state: HardState) -> Result<(), StorageError> {
        self.write(WriteOp::HardState(hard_state)).await
    }

    async fn append(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.write(WriteOp::Append(entries)).await
    }

    async fn truncate(&self, from: LogIndex) -> Result<(), StorageError> {
        self.write(WriteOp::Truncate(from)).await
    }

    async fn purge(&self, upto: LogId) -> Result<(), StorageError> {
        self.write(WriteOp::Purge(upto)).await
    }

    async fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut inner = lock(&self.disk.inner);
        self.check_alive(&inner)?;
        inner.reads += 1;
        let log = &inner.current;
        let first = log.purged.index + 1;
        if low < high && (low < first || high > log.last().index + 1) {
            return Err(StorageError::Invalid(format!(
                "entries [{low}, {high}) outside [{first}, {}]",
                log.last().index
            )));
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in low..high {
            if !out.is_empty() && bytes >= bytes_max {
                break;
            }
            let entry = log.entries[(index - first) as usize].clone();
            bytes += entry.data.len() as u64;
            out.push(entry);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The snapshot store
// ---------------------------------------------------------------------------------------------

/// Snapshot store fault knobs (per mille, milliseconds).
#[derive(Clone, Debug)]
pub struct SnapshotFaults {
    /// Finishing (syncing and publishing) a snapshot takes up to this long.
    pub finish_ms_max: u64,
    /// Building a snapshot fails with this probability.
    pub fail: u64,
}

#[derive(Debug, Default)]
struct SnapInner {
    incarnation: u64,
}

/// One node's snapshot storage, outliving its incarnations.
pub struct SnapshotDisk {
    node: NodeId,
    store: MemSnapshotStore,
    inner: Mutex<SnapInner>,
    rng: SharedRng,
    pub faults: Mutex<SnapshotFaults>,
    checker: Arc<Checker>,
}

impl SnapshotDisk {
    pub fn new(
        node: NodeId,
        rng: SharedRng,
        faults: SnapshotFaults,
        checker: Arc<Checker>,
    ) -> Arc<Self> {
        Arc::new(SnapshotDisk {
            node,
            store: MemSnapshotStore::new(),
            inner: Mutex::new(SnapInner::default()),
            rng,
            faults: Mutex::new(faults),
            checker,
        })
    }

    pub fn open(self: &Arc<Self>) -> SimSnapshots {
        let mut inner = lock(&self.inner);
        inner.incarnation += 1;
        SimSnapshots {
            disk: self.clone(),
            incarnation: inner.incarnation,
        }
    }

    pub fn crash(&self) {
        lock(&self.inner).incarnation += 1;
    }
}

/// One incarnation's snapshot store.
pub struct SimSnapshots {
    disk: Arc<SnapshotDisk>,
    incarnation: u64,
}

impl SimSnapshots {
    fn check_alive(&self) -> Result<(), StorageError> {
        if lock(&self.disk.inner).incarnation != self.incarnation {
            return Err(StorageError::Poisoned("the process died".into()));
        }
        Ok(())
    }
}

/// A snapshot being written: published only if its incarnation is still alive.
struct SimWriter {
    inner: Box<dyn SnapshotWriter>,
    disk: Arc<SnapshotDisk>,
    incarnation: u64,
}

impl AsyncWrite for SimWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl SnapshotWriter for SimWriter {
    async fn finish(self: Box<Self>) -> Result<SnapshotMeta, StorageError> {
        let (delay, fail) = {
            let faults = lock(&self.disk.faults).clone();
            let mut rng = lock(&self.disk.rng);
            (rng.below(faults.finish_ms_max + 1), rng.chance(faults.fail))
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if lock(&self.disk.inner).incarnation != self.incarnation {
            return Err(StorageError::Poisoned("the process died".into()));
        }
        if fail {
            self.inner.abort().await;
            return Err(StorageError::io(
                "snapshot sync",
                std::io::Error::other("injected snapshot failure"),
            ));
        }
        let meta = self.inner.finish().await?;
        self.disk.checker.snapshot_published(self.disk.node, &meta);
        Ok(meta)
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await;
    }
}

#[async_trait]
impl SnapshotStore for SimSnapshots {
    async fn begin(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        self.check_alive()?;
        self.disk.checker.snapshot_begun(self.disk.node, &meta);
        let inner = self.disk.store.begin(meta).await?;
        Ok(Box::new(SimWriter {
            inner,
            disk: self.disk.clone(),
            incarnation: self.incarnation,
        }))
    }

    async fn latest(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        self.check_alive()?;
        self.disk.store.latest().await
    }

    async fn open(&self, meta: &SnapshotMeta) -> Result<SnapshotReader, StorageError> {
        self.check_alive()?;
        self.disk.store.open(meta).await
    }

    async fn read_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        len_bytes_max: u32,
    ) -> Result<Bytes, StorageError> {
        self.check_alive()?;
        self.disk
            .store
            .read_chunk(meta, offset, len_bytes_max)
            .await
    }

    async fn receive_chunk(
        &self,
        chunk: &SnapshotChunk,
    ) -> Result<(ChunkStatus, u64), StorageError> {
        self.check_alive()?;
        let outcome = self.disk.store.receive_chunk(chunk).await?;
        if outcome.0 == ChunkStatus::Complete {
            self.disk
                .checker
                .snapshot_published(self.disk.node, &chunk.meta);
        }
        Ok(outcome)
    }
}

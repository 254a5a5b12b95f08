//! [`SnapshotSender`]: streams a snapshot to one follower with a bounded window of chunks in
//! flight, resuming from the offset the receiver acknowledges.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use raft_core::node::{SnapshotStore, StorageError, Transport, TransportError};
use raft_core::{ChunkStatus, LogId, NodeId, SnapshotChunk, SnapshotChunkAck, SnapshotMeta, Term};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

/// Default chunk size: 1 MiB. Large enough that per-chunk overhead (a frame, an ack, a CRC,
/// a positioned write) is negligible, small enough to fit any transport's frame limit.
pub const CHUNK_BYTES_DEFAULT: u32 = 1 << 20;
/// Default chunks in flight: 4. With 1 MiB chunks, 4 MiB in flight covers the
/// bandwidth-delay product of a 1 Gbit/s link with 30 ms round trips, and bounds the sender's
/// memory to 4 MiB of chunk data.
pub const WINDOW_CHUNKS_DEFAULT: u32 = 4;
/// Largest window accepted: more in flight only adds memory, never throughput.
pub const WINDOW_CHUNKS_MAX: u32 = 64;
/// Default time one chunk may wait for its acknowledgement (reading it, sending it, the
/// receiver writing it): 10 s.
pub const CHUNK_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time the last chunk may wait: 60 s. Its acknowledgement waits for the receiver to
/// sync the data and publish the snapshot (but never for the state machine to restore it, which
/// happens after the acknowledgement), so it gets a budget of its own.
pub const LAST_CHUNK_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Default failures (transport errors, timeouts, rejected chunks) before a transfer gives up.
/// The count restarts whenever the receiver gets further than it ever got.
pub const RETRIES_MAX_DEFAULT: u32 = 8;
/// Default first delay after a transport failure; doubles up to the maximum.
pub const RETRY_BACKOFF_MS_MIN_DEFAULT: u64 = 50;
/// Default longest delay between attempts after transport failures.
pub const RETRY_BACKOFF_MS_MAX_DEFAULT: u64 = 2_000;

/// Limits and timeouts of a [`SnapshotSender`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// Bytes per chunk.
    pub chunk_bytes: u32,
    /// Chunks sent and not yet acknowledged, at most. Memory is bounded by
    /// `chunk_bytes * window_chunks`.
    pub window_chunks: u32,
    /// Time one chunk may wait for its acknowledgement, in milliseconds.
    pub chunk_timeout_ms: u64,
    /// Time the last chunk may wait for its acknowledgement (the receiver syncs and publishes
    /// before answering), in milliseconds.
    pub last_chunk_timeout_ms: u64,
    /// Failures in a row before the transfer gives up.
    pub retries_max: u32,
    /// First delay after a transport failure, in milliseconds.
    pub retry_backoff_ms_min: u64,
    /// Longest delay after transport failures, in milliseconds.
    pub retry_backoff_ms_max: u64,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            chunk_bytes: CHUNK_BYTES_DEFAULT,
            window_chunks: WINDOW_CHUNKS_DEFAULT,
            chunk_timeout_ms: CHUNK_TIMEOUT_MS_DEFAULT,
            last_chunk_timeout_ms: LAST_CHUNK_TIMEOUT_MS_DEFAULT,
            retries_max: RETRIES_MAX_DEFAULT,
            retry_backoff_ms_min: RETRY_BACKOFF_MS_MIN_DEFAULT,
            retry_backoff_ms_max: RETRY_BACKOFF_MS_MAX_DEFAULT,
        }
    }
}

impl SenderConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason| Err(Error::InvalidConfig { field, reason });
        if self.chunk_bytes == 0 {
            return invalid("chunk_bytes", "must be at least 1");
        }
        if !(1..=WINDOW_CHUNKS_MAX).contains(&self.window_chunks) {
            return invalid("window_chunks", "must be in 1..=WINDOW_CHUNKS_MAX");
        }
        if self.chunk_timeout_ms == 0 || self.last_chunk_timeout_ms == 0 {
            return invalid("chunk_timeout_ms", "timeouts must be at least 1 ms");
        }
        if self.retry_backoff_ms_min > self.retry_backoff_ms_max {
            return invalid(
                "retry_backoff_ms_min",
                "must not exceed retry_backoff_ms_max",
            );
        }
        Ok(())
    }
}

/// Who sends a snapshot to whom, and in which term (copied into every chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The leader sending.
    pub from: NodeId,
    /// The follower receiving.
    pub to: NodeId,
    /// The leader's term.
    pub term: Term,
}

/// What a completed transfer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferReport {
    /// The snapshot the receiver now holds (newer than the one asked for if it was superseded).
    pub snapshot: SnapshotMeta,
    /// Offset of the first chunk the receiver accepted: above 0 when the transfer resumed one
    /// that an earlier sender started.
    pub resumed_from: u64,
    /// Bytes of chunk data that reached the receiver (it answered, whatever it answered),
    /// resends included. A chunk that failed in the transport (counted in `chunks_failed`)
    /// or was still in flight when the transfer completed is not counted.
    pub bytes_sent: u64,
    /// Chunks that reached the receiver, resends included; counted like `bytes_sent`.
    pub chunks_sent: u64,
    /// Chunks the receiver rejected (bad CRC, unexpected offset).
    pub chunks_rejected: u64,
    /// Chunks that failed in the transport (error or timeout).
    pub chunks_failed: u64,
    /// Times the transfer went back to the receiver's offset (or to offset 0 of a newer
    /// snapshot).
    pub rewinds: u64,
    /// Times a newer snapshot replaced the one being sent.
    pub superseded: u32,
    /// Wall time of the whole transfer.
    pub elapsed: Duration,
}

/// Sends snapshots from a store to followers through any raft-core [`Transport`].
///
/// A transfer keeps up to `window_chunks` chunks in flight. Each chunk carries the snapshot's
/// metadata, its offset, its CRC32 and whether it is the last one, and waits at most
/// `chunk_timeout_ms` (`last_chunk_timeout_ms` for the last chunk) for its acknowledgement.
///
/// - **Resuming**: whenever a chunk is rejected (bad CRC, unexpected offset) or fails in the
///   transport, the sender stops sending, lets the chunks in flight finish, and continues from
///   the offset the receiver acknowledged. A new sender (after a restart or a new leader) starts
///   at offset 0; a receiver that already holds part of the same snapshot answers with its
///   offset and the transfer continues from there.
/// - **Superseding**: before each chunk is read the store's latest snapshot is checked; a newer
///   one replaces the transfer, which starts over with it.
/// - **Giving up**: after `retries_max` failures (rejected chunks, transport errors, timeouts)
///   without the receiver getting further than it ever got, with an exponential backoff
///   between transport failures. A snapshot whose whole checksum never matches is therefore
///   sent at most `retries_max + 1` times.
///
/// Memory: at most `window_chunks` chunks of `chunk_bytes`, whatever the snapshot's size.
/// Dropping the future returned by [`SnapshotSender::send`] cancels the transfer.
#[derive(Clone)]
pub struct SnapshotSender {
    config: SenderConfig,
    store: Arc<dyn SnapshotStore>,
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for SnapshotSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSender")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type SendFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A chunk's fate, tagged with the epoch it was sent in.
struct Outcome {
    epoch: u64,
    offset: u64,
    len: u64,
    result: Result<SnapshotChunkAck, TransportError>,
}

/// What the sender does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Fill the window from `next`.
    Streaming,
    /// Wait for the chunks in flight, then continue from `resume` (after `delay`).
    Draining { resume: u64, delay: bool },
}

/// One transfer's state.
struct Transfer {
    target: Target,
    meta: SnapshotMeta,
    /// Bumped on every rewind and supersede; answers to chunks of an older epoch are stale.
    epoch: u64,
    mode: Mode,
    /// Next offset to send.
    next: u64,
    /// Whether the last chunk of this epoch was sent.
    last_sent: bool,
    /// What the receiver acknowledged last.
    acked: u64,
    /// The highest offset the receiver ever acknowledged for this snapshot. Only going past it
    /// counts as progress and resets `failures`: a transfer whose whole-snapshot checksum
    /// keeps failing, or that keeps losing the same chunks, must give up.
    high_water: u64,
    /// No chunk was accepted yet (the first one tells where the transfer resumed).
    first_accept: bool,
    failures: u32,
    last_failure: String,
    report: TransferReport,
}

impl SnapshotSender {
    /// A sender reading from `store` and sending through `transport`.
    pub fn new(
        store: Arc<dyn SnapshotStore>,
        transport: Arc<dyn Transport>,
        config: SenderConfig,
    ) -> Result<SnapshotSender> {
        config.validate()?;
        Ok(SnapshotSender {
            config,
            store,
            transport,
        })
    }

    /// The sender's configuration.
    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// Sends the store's latest snapshot to `target.to`.
    pub async fn send_latest(&self, target: Target) -> Result<TransferReport> {
        let meta = self.store.latest().await?.ok_or(Error::NoSnapshot)?;
        self.send(target, meta).await
    }

    /// Sends `meta` (or a newer snapshot that appears in the store meanwhile) to `target.to`
    /// and returns once the receiver acknowledged the last chunk with `Complete`.
    ///
    /// Fails with [`Error::Refused`] if the receiver will never take the snapshot, and with
    /// [`Error::RetriesExhausted`] after `retries_max` failures in a row.
    pub async fn send(&self, target: Target, meta: SnapshotMeta) -> Result<TransferReport> {
        let started = Instant::now();
        let mut transfer = Transfer::new(target, meta);
        info!(to = target.to, snapshot = %transfer.meta.last_log_id, bytes = transfer.meta.size_bytes, "snapshot transfer started");
        let mut in_flight: FuturesUnordered<SendFuture> = FuturesUnordered::new();
        loop {
            if transfer.failures > self.config.retries_max {
                warn!(to = target.to, snapshot = %transfer.meta.last_log_id, offset = transfer.acked, failures = transfer.failures, "snapshot transfer gave up");
                return Err(Error::RetriesExhausted {
                    snapshot: transfer.meta.last_log_id,
                    node: target.to,
                    offset: transfer.acked,
                    failures: transfer.failures,
                    last: transfer.last_failure,
                });
            }
            if transfer.mode == Mode::Streaming {
                self.check_superseded(&mut transfer).await?;
            }
            self.fill_window(&mut transfer, &mut in_flight).await?;
            let Some(outcome) = in_flight.next().await else {
                self.window_empty(&mut transfer).await;
                continue;
            };
            transfer.count_sent(&outcome);
            let complete = if outcome.epoch == transfer.epoch {
                transfer.on_outcome(outcome)?
            } else {
                transfer.on_stale(&outcome)
            };
            if complete {
                // Chunks answered together with the last one still count as sent.
                while let Some(Some(outcome)) = in_flight.next().now_or_never() {
                    transfer.count_sent(&outcome);
                }
                return Ok(transfer.finish(started));
            }
        }
    }

    /// While streaming, reads and sends chunks until the window is full or the last chunk is
    /// sent.
    async fn fill_window(
        &self,
        transfer: &mut Transfer,
        in_flight: &mut FuturesUnordered<SendFuture>,
    ) -> Result<()> {
        while transfer.mode == Mode::Streaming
            && !transfer.last_sent
            && in_flight.len() < self.config.window_chunks as usize
        {
            match self.next_chunk(transfer).await {
                Ok(send) => in_flight.push(send),
                // Pruned by a newer snapshot between the check and the read: switch to it.
                Err(Error::Storage(StorageError::NotFound(_))) => {
                    let before = transfer.meta.last_log_id;
                    self.check_superseded(transfer).await?;
                    if transfer.meta.last_log_id == before {
                        return Err(Error::NotFound(before));
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Nothing is in flight any more: a drain ends, or the last chunk was answered without
    /// `Complete`.
    async fn window_empty(&self, transfer: &mut Transfer) {
        match transfer.mode {
            Mode::Draining { resume, delay } => {
                if delay {
                    tokio::time::sleep(self.backoff(transfer.failures)).await;
                }
                transfer.rewind_to(resume);
            }
            Mode::Streaming => {
                // Everything was answered, the last chunk included, yet the receiver never
                // said Complete: ask again from where it is.
                transfer.failures += 1;
                let acked = transfer.acked;
                transfer.start_drain(acked, true, "last chunk not completed".into());
            }
        }
    }

    /// Switches to a newer snapshot if the store has one.
    async fn check_superseded(&self, transfer: &mut Transfer) -> Result<()> {
        let Some(latest) = self.store.latest().await? else {
            return Ok(());
        };
        if latest.last_log_id > transfer.meta.last_log_id {
            info!(to = transfer.target.to, old = %transfer.meta.last_log_id, new = %latest.last_log_id, "snapshot transfer superseded by a newer snapshot");
            transfer.meta = latest.clone();
            transfer.report.snapshot = latest;
            transfer.report.superseded += 1;
            transfer.epoch += 1;
            transfer.acked = 0;
            transfer.high_water = 0;
            transfer.failures = 0;
            transfer.mode = Mode::Draining {
                resume: 0,
                delay: false,
            };
        }
        Ok(())
    }

    /// Reads the chunk at `transfer.next` and returns the future that sends it.
    async fn next_chunk(&self, transfer: &mut Transfer) -> Result<SendFuture> {
        let offset = transfer.next;
        let meta = &transfer.meta;
        let data = self
            .store
            .read_chunk(meta, offset, self.config.chunk_bytes)
            .await?;
        let len = data.len() as u64;
        let done = offset + len >= meta.size_bytes;
        if !done && len == 0 {
            return Err(Error::Storage(raft_core::node::StorageError::Invalid(
                format!(
                    "snapshot {} returned no bytes at offset {offset} of {}",
                    meta.last_log_id, meta.size_bytes
                ),
            )));
        }
        let chunk = SnapshotChunk {
            from: transfer.target.from,
            to: transfer.target.to,
            term: transfer.target.term,
            meta: meta.clone(),
            offset,
            crc32: crc32fast::hash(&data),
            data,
            done,
        };
        transfer.next = offset + len;
        transfer.last_sent = done;
        let timeout = Duration::from_millis(if done {
            self.config.last_chunk_timeout_ms
        } else {
            self.config.chunk_timeout_ms
        });
        let transport = self.transport.clone();
        let epoch = transfer.epoch;
        let to = transfer.target.to;
        Ok(Box::pin(async move {
            let result =
                match tokio::time::timeout(timeout, transport.send_snapshot_chunk(chunk)).await {
                    Ok(result) => result,
                    Err(_) => Err(TransportError::Timeout(to)),
                };
            Outcome {
                epoch,
                offset,
                len,
                result,
            }
        }))
    }

    fn backoff(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(16);
        let ms = self
            .config
            .retry_backoff_ms_min
            .saturating_mul(1 << shift)
            .min(self.config.retry_backoff_ms_max);
        Duration::from_millis(ms)
    }
}

impl Transfer {
    fn new(target: Target, meta: SnapshotMeta) -> Transfer {
        Transfer {
            target,
            report: TransferReport {
                snapshot: meta.clone(),
                resumed_from: 0,
                bytes_sent: 0,
                chunks_sent: 0,
                chunks_rejected: 0,
                chunks_failed: 0,
                rewinds: 0,
                superseded: 0,
                elapsed: Duration::ZERO,
            },
            meta,
            epoch: 0,
            mode: Mode::Streaming,
            next: 0,
            last_sent: false,
            acked: 0,
            high_water: 0,
            first_accept: true,
            failures: 0,
            last_failure: String::new(),
        }
    }

    /// Counts a chunk as sent once the receiver answered it: only then is it known to have
    /// left this process (a transport error may come before anything reached a socket).
    fn count_sent(&mut self, outcome: &Outcome) {
        if outcome.result.is_ok() {
            self.report.bytes_sent += outcome.len;
            self.report.chunks_sent += 1;
        }
    }

    /// Handles the fate of a chunk of the current epoch; returns whether the transfer is
    /// complete.
    fn on_outcome(&mut self, outcome: Outcome) -> Result<bool> {
        let Outcome {
            offset,
            len,
            result,
            ..
        } = outcome;
        match result {
            Ok(ack) => {
                if self.first_accept && ack.status == ChunkStatus::Accepted {
                    self.report.resumed_from = offset;
                    self.first_accept = false;
                }
                self.on_ack(ack, offset, len)
            }
            Err(error) => {
                self.on_transport_error(error, offset);
                Ok(false)
            }
        }
    }

    /// Handles the answer to a chunk sent before the last rewind or supersede: it only tells
    /// how far the receiver got. Returns whether the transfer is complete.
    fn on_stale(&mut self, outcome: &Outcome) -> bool {
        let Ok(ack) = &outcome.result else {
            self.report.chunks_failed += 1;
            return false;
        };
        if ack.snapshot != self.meta.last_log_id {
            return false;
        }
        match (&ack.status, &mut self.mode) {
            (ChunkStatus::Complete, _) => true,
            (ChunkStatus::Accepted, Mode::Draining { resume, .. }) => {
                // Written after all (a reordering transport, or a chunk that overtook the
                // failure): progress, and a better place to resume from.
                *resume = (*resume).max(ack.next_offset);
                self.progress(ack.next_offset);
                false
            }
            _ => false,
        }
    }

    /// Handles an acknowledgement of the current epoch; returns whether the transfer is
    /// complete.
    fn on_ack(&mut self, ack: SnapshotChunkAck, offset: u64, len: u64) -> Result<bool> {
        match ack.status {
            ChunkStatus::Complete => Ok(true),
            ChunkStatus::Accepted if ack.next_offset == offset + len => {
                self.acked = self.acked.max(ack.next_offset);
                self.progress(ack.next_offset);
                Ok(false)
            }
            ChunkStatus::Accepted => {
                // Written, but the receiver expects another offset than ours: follow it.
                self.start_drain(
                    ack.next_offset,
                    false,
                    "receiver expects another offset".into(),
                );
                Ok(false)
            }
            ChunkStatus::Retry(why) => {
                debug!(
                    to = self.target.to,
                    offset,
                    expected = ack.next_offset,
                    why,
                    "snapshot chunk rejected"
                );
                self.report.chunks_rejected += 1;
                self.failures += 1;
                self.start_drain(ack.next_offset, false, why);
                Ok(false)
            }
            ChunkStatus::Refused(reason) => {
                info!(to = self.target.to, snapshot = %self.meta.last_log_id, reason, "snapshot refused");
                Err(Error::Refused {
                    snapshot: self.meta.last_log_id,
                    node: self.target.to,
                    reason,
                })
            }
        }
    }

    /// The receiver acknowledged `offset`: progress if it is new ground.
    fn progress(&mut self, offset: u64) {
        if offset > self.high_water {
            self.high_water = offset;
            self.failures = 0;
        }
    }

    fn on_transport_error(&mut self, error: TransportError, offset: u64) {
        debug!(to = self.target.to, offset, %error, "snapshot chunk failed");
        self.report.chunks_failed += 1;
        self.failures += 1;
        // The receiver may hold more than it acknowledged; if so it says so, and we follow.
        self.start_drain(self.acked, true, error.to_string());
    }

    /// Stops sending; once the chunks in flight are answered, continues from `resume`.
    fn start_drain(&mut self, resume: u64, delay: bool, why: String) {
        self.epoch += 1;
        self.last_failure = why;
        self.mode = Mode::Draining { resume, delay };
    }

    fn rewind_to(&mut self, offset: u64) {
        debug!(to = self.target.to, snapshot = %self.meta.last_log_id, offset, "snapshot transfer resumes");
        self.report.rewinds += 1;
        self.next = offset.min(self.meta.size_bytes);
        self.acked = self.next;
        self.last_sent = false;
        self.mode = Mode::Streaming;
    }

    fn finish(&mut self, started: Instant) -> TransferReport {
        self.report.elapsed = started.elapsed();
        info!(to = self.target.to, snapshot = %self.meta.last_log_id, bytes_sent = self.report.bytes_sent,
            rejected = self.report.chunks_rejected, failed = self.report.chunks_failed,
            elapsed_ms = self.report.elapsed.as_millis() as u64, "snapshot transfer complete");
        self.report.clone()
    }
}

impl TransferReport {
    /// The last entry the transferred snapshot includes.
    pub fn last_log_id(&self) -> LogId {
        self.snapshot.last_log_id
    }
}

/// Plugs the windowed sender into raft-core's node: pass it to
/// `raft_core::node::RaftNode::start_with_transfer`.
#[async_trait::async_trait]
impl raft_core::node::SnapshotTransfer for SnapshotSender {
    async fn send_snapshot(
        &self,
        from: NodeId,
        to: NodeId,
        term: Term,
        meta: SnapshotMeta,
    ) -> bool {
        match self.send(Target { from, to, term }, meta).await {
            Ok(report) => {
                debug!(to, bytes = report.bytes_sent, "snapshot transfer complete");
                true
            }
            Err(e) => {
                warn!(to, error = %e, "snapshot transfer failed");
                false
            }
        }
    }
}

//! The client side for node-to-node traffic: [`TcpTransport`], raft-core's `Transport`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use raft_core::node::{Transport, TransportError};
use raft_core::{Message, NodeId, SnapshotChunk, SnapshotChunkAck};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tracing::{debug, info, warn};

use crate::backoff::{self, Backoff};
use crate::config::TcpConfig;
use crate::connection::{self, FrameReader, FrameWriter};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::handshake::Channel;
use crate::mux::{MuxConn, WRITE_BATCH_BYTES};
use crate::server::PeerAddresses;

/// Sends Raft messages and snapshot chunks to the other members over TCP.
///
/// # Connections
/// Each peer gets two connections, both opened lazily (on the first message or chunk for it):
/// one carries Raft messages, in order, one way; the other carries snapshot chunks and their
/// acknowledgements, so a large transfer never delays heartbeats. Every handshake checks that
/// the node that answered is the node the address book names.
///
/// # Reconnecting
/// After a failed connection attempt or a lost connection the peer's task waits an
/// exponentially growing, jittered delay (`reconnect_backoff_ms_min` doubling up to
/// `reconnect_backoff_ms_max`), then reconnects when the next message arrives. A snapshot
/// chunk sent while the snapshot connection is backing off fails at once with
/// `TransportError::Unreachable`.
///
/// # Queue policy
/// Each peer has a queue of at most `queue_len_max` messages and `queue_bytes_max` bytes of
/// them (a lagging peer's retransmissions cannot pile up in memory). [`Transport::send`] never
/// blocks: when the queue is full the new message is dropped (and counted in
/// [`PeerStats::dropped_queue_full`]). Messages queued while a peer is unreachable are dropped
/// after each failed attempt (counted in [`PeerStats::dropped_unreachable`]): they are stale by
/// then, and Raft resends whatever still matters. Both are what the `Transport` contract
/// allows: messages may be lost, never reordered within one connection.
#[derive(Debug)]
pub struct TcpTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<TcpConfig>,
    runtime: tokio::runtime::Handle,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    /// The address book used while the node knows no configuration; see
    /// [`TcpTransport::set_seed_peers`].
    seeds: Mutex<BTreeMap<NodeId, String>>,
    shut_down: AtomicBool,
}

/// Counters of one peer, as returned by [`TcpTransport::peer_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's address.
    pub addr: String,
    /// Messages written to the peer's socket.
    pub sent_messages: u64,
    /// Messages dropped because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because the peer was unreachable or the connection broke.
    pub dropped_unreachable: u64,
    /// Messages dropped because they could not be encoded (larger than `frame_bytes_max`).
    pub dropped_too_large: u64,
    /// Raft connections established so far.
    pub connections: u64,
    /// Snapshot chunks the peer acknowledged.
    pub snapshot_chunks_acked: u64,
}

#[derive(Debug, Default)]
struct PeerCounters {
    sent_messages: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unreachable: AtomicU64,
    dropped_too_large: AtomicU64,
    connections: AtomicU64,
    snapshot_chunks_acked: AtomicU64,
}

impl PeerCounters {
    fn add(counter: &AtomicU64, count: u64) {
        counter.fetch_add(count, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Peer {
    addr: String,
    queue: mpsc::Sender<Message>,
    /// Bytes of the messages in `queue` (`Message::size_bytes`).
    queued_bytes: Arc<AtomicU64>,
    counters: Arc<PeerCounters>,
    snapshot: Arc<SnapshotLink>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // A removed peer's queued messages are dropped with it (Transport rule 3).
        self.task.abort();
    }
}

impl TcpTransport {
    /// A transport with no peers yet; call [`Transport::set_peers`]. Must be called inside a
    /// tokio runtime, where the per-peer tasks will run.
    pub fn new(config: TcpConfig) -> Result<TcpTransport> {
        config.validate_node()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        Ok(TcpTransport {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                runtime,
                peers: Mutex::new(BTreeMap::new()),
                seeds: Mutex::new(BTreeMap::new()),
                shut_down: AtomicBool::new(false),
            }),
        })
    }

    /// Addresses to send to while the node knows no configuration, that is until the node
    /// gives an address book that is not empty ([`Transport::set_peers`]), and again whenever
    /// it gives an empty one.
    ///
    /// A server added to a running cluster starts with an empty configuration and learns the
    /// members from the leader that catches it up; without the members' addresses its answers
    /// to that leader would be dropped, and the leader would never learn what to send it.
    pub fn set_seed_peers(&self, seeds: &BTreeMap<NodeId, String>) {
        *self.inner.seeds() = seeds.clone();
        if self.inner.peers().is_empty() {
            self.inner.set_book(seeds);
        }
    }

    /// This transport's configuration.
    pub fn config(&self) -> &TcpConfig {
        &self.inner.config
    }

    /// The counters of `node`, if it is in the address book.
    pub fn peer_stats(&self, node: NodeId) -> Option<PeerStats> {
        let peers = self.inner.peers();
        let peer = peers.get(&node)?;
        let counters = &peer.counters;
        Some(PeerStats {
            addr: peer.addr.clone(),
            sent_messages: counters.sent_messages.load(Ordering::Relaxed),
            dropped_queue_full: counters.dropped_queue_full.load(Ordering::Relaxed),
            dropped_unreachable: counters.dropped_unreachable.load(Ordering::Relaxed),
            dropped_too_large: counters.dropped_too_large.load(Ordering::Relaxed),
            connections: counters.connections.load(Ordering::Relaxed),
            snapshot_chunks_acked: counters.snapshot_chunks_acked.load(Ordering::Relaxed),
        })
    }

    /// Closes every connection and drops every queued message; later sends are dropped and
    /// snapshot chunks fail with `TransportError::Shutdown`.
    pub fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::Relaxed);
        let peers = std::mem::take(&mut *self.inner.peers());
        info!(
            node = self.inner.config.node_id,
            peers = peers.len(),
            "transport shut down"
        );
    }
}

impl Inner {
    fn peers(&self) -> MutexGuard<'_, BTreeMap<NodeId, Peer>> {
        // Every critical section is a lookup, insert or remove: a panic in one cannot leave
        // the map half-updated, so a poisoned lock is still usable.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start_peer(&self, node: NodeId, addr: &str) -> Peer {
        let config = self.config.clone();
        let (queue, queued) = mpsc::channel(config.queue_len_max as usize);
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let counters = Arc::new(PeerCounters::default());
        let seed = backoff::seed(config.node_id ^ node.rotate_left(32));
        let backoff = Backoff::new(
            config.reconnect_backoff_ms_min,
            config.reconnect_backoff_ms_max,
            seed,
        );
        let task = PeerTask {
            node,
            addr: addr.to_owned(),
            config: config.clone(),
            queued,
            queued_bytes: queued_bytes.clone(),
            counters: counters.clone(),
            backoff,
        };
        let snapshot_seed = seed.rotate_left(17);
        let snapshot = SnapshotLink::new(node, addr, config, counters.clone(), snapshot_seed);
        Peer {
            addr: addr.to_owned(),
            queue,
            queued_bytes,
            counters,
            snapshot: Arc::new(snapshot),
            task: self.runtime.spawn(task.run()),
        }
    }
}

impl PeerAddresses for TcpTransport {
    /// The address of `node` in the address book.
    fn peer_addr(&self, node: NodeId) -> Option<String> {
        self.inner.peers().get(&node).map(|peer| peer.addr.clone())
    }
}

#[async_trait]
impl Transport for TcpTransport {
    fn send(&self, msg: Message) {
        if self.inner.shut_down.load(Ordering::Relaxed) {
            return;
        }
        let peers = self.inner.peers();
        let Some(peer) = peers.get(&msg.to) else {
            debug!(
                to = msg.to,
                kind = msg.body.name(),
                "no address for peer; message dropped"
            );
            return;
        };
        let bytes = msg.size_bytes();
        let before = peer.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before > 0 && before + bytes > self.inner.config.queue_bytes_max {
            peer.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            PeerCounters::add(&peer.counters.dropped_queue_full, 1);
            debug!(
                to = msg.to,
                kind = msg.body.name(),
                "peer queue full (bytes); message dropped"
            );
            return;
        }
        match peer.queue.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                peer.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                PeerCounters::add(&peer.counters.dropped_queue_full, 1);
                debug!(
                    to = msg.to,
                    kind = msg.body.name(),
                    "peer queue full; message dropped"
                );
            }
            Err(TrySendError::Closed(msg)) => {
                peer.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                // Only after the task was aborted, i.e. while the peer is being replaced.
                debug!(
                    to = msg.to,
                    kind = msg.body.name(),
                    "peer task gone; message dropped"
                );
            }
        }
    }

    async fn send_snapshot_chunk(
        &self,
        chunk: SnapshotChunk,
    ) -> Result<SnapshotChunkAck, TransportError> {
        let node = chunk.to;
        if self.inner.shut_down.load(Ordering::Relaxed) {
            return Err(TransportError::Shutdown);
        }
        let link = self
            .inner
            .peers()
            .get(&node)
            .map(|peer| peer.snapshot.clone());
        let Some(link) = link else {
            return Err(TransportError::UnknownPeer(node));
        };
        // One bound for connecting, handshaking and waiting for the acknowledgement
        // (Transport rule 2).
        match timeout(self.inner.config.request_timeout(), link.send(chunk)).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(error)) => {
                debug!(to = node, %error, "snapshot chunk not delivered");
                Err(error.into_transport_error(node))
            }
            Err(_) => Err(TransportError::Timeout(node)),
        }
    }

    fn set_peers(&self, addresses: &BTreeMap<NodeId, String>) {
        if addresses.is_empty() {
            let seeds = self.inner.seeds().clone();
            self.inner.set_book(&seeds);
        } else {
            self.inner.set_book(addresses);
        }
    }
}

impl Inner {
    fn seeds(&self) -> MutexGuard<'_, BTreeMap<NodeId, String>> {
        // Only ever replaced whole: a poisoned lock still holds a consistent map.
        self.seeds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `addresses` the address book: peers no longer in it, or at another address, are
    /// dropped; new ones are started.
    fn set_book(&self, addresses: &BTreeMap<NodeId, String>) {
        if self.shut_down.load(Ordering::Relaxed) {
            return;
        }
        let own_id = self.config.node_id;
        let mut peers = self.peers();
        // Removed peers and peers whose address changed are dropped (their tasks end).
        peers.retain(|node, peer| addresses.get(node) == Some(&peer.addr));
        for (node, addr) in addresses {
            if *node == own_id || *node == 0 || peers.contains_key(node) {
                continue;
            }
            debug!(peer = node, addr, "peer added");
            let peer = self.start_peer(*node, addr);
            peers.insert(*node, peer);
        }
    }
}

/// The task that owns one peer's Raft connection.
struct PeerTask {
    node: NodeId,
    addr: String,
    config: Arc<TcpConfig>,
    queued: mpsc::Receiver<Message>,
    queued_bytes: Arc<AtomicU64>,
    counters: Arc<PeerCounters>,
    backoff: Backoff,
}

impl PeerTask {
    async fn run(mut self) {
        loop {
            // Lazy: connect only when there is something to send.
            let Some(first) = self.next().await else {
                return;
            };
            let connected =
                connection::connect(&self.addr, &self.config, Channel::Raft, Some(self.node)).await;
            let stream = match connected {
                Ok((stream, _hello)) => stream,
                Err(error) => {
                    PeerCounters::add(&self.counters.dropped_unreachable, 1);
                    self.back_off(&error).await;
                    continue;
                }
            };
            PeerCounters::add(&self.counters.connections, 1);
            if self.backoff.failures() > 0 {
                info!(peer = self.node, addr = %self.addr, "reconnected to peer");
            }
            self.backoff.reset();
            let (reader, writer) = connection::split(stream, &self.config, None);
            match self.pump(reader, writer, first).await {
                Ok(()) => return,
                Err(error) => self.back_off(&error).await,
            }
        }
    }

    /// The next queued message, once there is one (`None`: the queue closed).
    async fn next(&mut self) -> Option<Message> {
        let message = self.queued.recv().await?;
        self.queued_bytes
            .fetch_sub(message.size_bytes(), Ordering::Relaxed);
        Some(message)
    }

    /// The next queued message, if one is queued now.
    fn try_next(&mut self) -> Option<Message> {
        let message = self.queued.try_recv().ok()?;
        self.queued_bytes
            .fetch_sub(message.size_bytes(), Ordering::Relaxed);
        Some(message)
    }

    /// Waits the next backoff delay, then drops what queued up meanwhile.
    async fn back_off(&mut self, error: &Error) {
        let delay = self.backoff.next_delay();
        let retry_in_ms = delay.as_millis() as u64;
        if self.backoff.failures() == 1 {
            warn!(peer = self.node, addr = %self.addr, %error, retry_in_ms, "peer unreachable");
        } else {
            debug!(peer = self.node, addr = %self.addr, %error, retry_in_ms, "peer still unreachable");
        }
        sleep(delay).await;
        let mut dropped = 0;
        while self.try_next().is_some() {
            dropped += 1;
        }
        PeerCounters::add(&self.counters.dropped_unreachable, dropped);
    }

    /// Writes queued messages in batches until the queue closes (`Ok`) or the connection fails.
    async fn pump(
        &mut self,
        mut reader: FrameReader,
        mut writer: FrameWriter,
        first: Message,
    ) -> Result<()> {
        let mut next = Some(first);
        loop {
            let mut batched = 0;
            while let Some(message) = next.take() {
                batched += self.queue_message(&mut writer, message);
                if writer.queued_bytes() < WRITE_BATCH_BYTES {
                    next = self.try_next();
                }
            }
            if let Err(error) = writer.flush().await {
                PeerCounters::add(&self.counters.dropped_unreachable, batched);
                return Err(error);
            }
            PeerCounters::add(&self.counters.sent_messages, batched);
            tokio::select! {
                message = self.next() => match message {
                    Some(message) => next = Some(message),
                    None => return Ok(()),
                },
                frame = reader.read_frame() => match frame? {
                    None => return Err(Error::ConnectionClosed),
                    Some(Frame::Error { reason, .. }) => {
                        warn!(peer = self.node, reason, "peer reported an error");
                    }
                    Some(frame) => {
                        warn!(peer = self.node, kind = frame.name(), "unexpected frame from peer; ignored");
                    }
                },
            }
        }
    }

    /// Encodes one message into the batch; returns how many messages were queued (0 or 1).
    fn queue_message(&self, writer: &mut FrameWriter, message: Message) -> u64 {
        let kind = message.body.name();
        match writer.queue(&Frame::Raft(message)) {
            Ok(()) => 1,
            Err(error) => {
                PeerCounters::add(&self.counters.dropped_too_large, 1);
                warn!(peer = self.node, kind, %error, "message cannot be sent; dropped");
                0
            }
        }
    }
}

/// One peer's snapshot connection, opened on the first chunk and reopened after failures.
#[derive(Debug)]
struct SnapshotLink {
    node: NodeId,
    addr: String,
    config: Arc<TcpConfig>,
    counters: Arc<PeerCounters>,
    state: tokio::sync::Mutex<LinkState>,
}

#[derive(Debug)]
struct LinkState {
    connection: Option<Arc<MuxConn>>,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl SnapshotLink {
    fn new(
        node: NodeId,
        addr: &str,
        config: Arc<TcpConfig>,
        counters: Arc<PeerCounters>,
        seed: u64,
    ) -> SnapshotLink {
        let backoff = Backoff::new(
            config.reconnect_backoff_ms_min,
            config.reconnect_backoff_ms_max,
            seed,
        );
        SnapshotLink {
            node,
            addr: addr.to_owned(),
            config,
            counters,
            state: tokio::sync::Mutex::new(LinkState {
                connection: None,
                backoff,
                retry_at: None,
            }),
        }
    }

    async fn send(&self, chunk: SnapshotChunk) -> Result<SnapshotChunkAck> {
        let connection = self.connection().await?;
        match connection
            .call(|id| Frame::SnapshotChunk { id, chunk })
            .await?
        {
            Frame::SnapshotAck { ack, .. } => {
                PeerCounters::add(&self.counters.snapshot_chunks_acked, 1);
                Ok(ack)
            }
            frame => Err(Error::UnexpectedFrame { kind: frame.name() }),
        }
    }

    async fn connection(&self) -> Result<Arc<MuxConn>> {
        let mut state = self.state.lock().await;
        if let Some(connection) = &state.connection {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        state.connection = None;
        if let Some(retry_at) = state.retry_at {
            let now = Instant::now();
            if now < retry_at {
                let remaining_ms = (retry_at - now).as_millis() as u64;
                return Err(Error::BackingOff {
                    node: self.node,
                    remaining_ms,
                });
            }
        }
        match MuxConn::open(&self.addr, &self.config, Channel::Snapshot, Some(self.node)).await {
            Ok(connection) => {
                state.backoff.reset();
                state.retry_at = None;
                let connection = Arc::new(connection);
                state.connection = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                let delay = state.backoff.next_delay();
                state.retry_at = Some(Instant::now() + delay);
                warn!(peer = self.node, addr = %self.addr, %error, retry_in_ms = delay.as_millis() as u64,
                    "snapshot connection failed");
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_needs_a_runtime_and_a_node_id() {
        assert!(matches!(
            TcpTransport::new(TcpConfig::new(1, 1)),
            Err(Error::NoRuntime)
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        assert!(TcpTransport::new(TcpConfig::new(1, 1)).is_ok());
        assert!(matches!(
            TcpTransport::new(TcpConfig::new(1, 0)),
            Err(Error::InvalidConfig {
                field: "node_id",
                ..
            })
        ));
    }
}

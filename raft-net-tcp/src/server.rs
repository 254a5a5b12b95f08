//! The server side: [`TcpServer`] accepts connections from peers and native clients.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use raft_core::node::MessageHandler;
use raft_core::{Message, NodeId};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout};
use tracing::{debug, error, info, warn};

use crate::config::TcpConfig;
use crate::connection::{self, AcceptPolicy, FrameReader, FrameWriter};
use crate::error::{Error, Result};
use crate::frame::{ClientRequest, ClientResponse, Frame};
use crate::handshake::{Channel, Rejection};

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Bytes of ready client responses gathered into one write, at most.
const RESPONSE_BATCH_BYTES_MAX: usize = 256 << 10;

/// Serves the native client protocol: turns a request's opaque payload into a response.
///
/// Requests of one connection are handled concurrently (at most `inflight_requests_max` at
/// once), and each is bounded by `request_timeout_ms`; responses go out as they complete.
/// The handlers of one connection are polled by that connection's task, so `handle` must not
/// block the thread (await instead); long synchronous work would hold up the connection's
/// other requests.
#[async_trait]
pub trait ClientHandler: Send + Sync + 'static {
    /// Handles one request.
    async fn handle(&self, request: ClientRequest) -> ClientResponse;
}

/// The members' addresses as this node knows them, for [`TcpServer::serve_with_peer_addresses`]:
/// with TLS, a peer connection is accepted only with a certificate that names the host of
/// the address its node has here. [`crate::TcpTransport`] implements it with its address
/// book (the configuration's addresses, or the seeds before there is one).
pub trait PeerAddresses: Send + Sync + 'static {
    /// The address (`host:port`) of `node`, if it is a member.
    fn peer_addr(&self, node: NodeId) -> Option<String>;
}

/// Counters of a server, as returned by [`TcpServer::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted from the listener.
    pub connections_accepted: u64,
    /// Connections currently being served (handshake included), from peers and clients.
    pub connections_open: u64,
    /// Client connections currently being served (after their handshake).
    pub client_connections_open: u64,
    /// Connections closed because their handshake failed.
    pub handshakes_failed: u64,
    /// Connections closed because of a protocol error or a timeout.
    pub connections_failed: u64,
    /// Frames answered with an error frame (unknown kind, wrong channel, wrong sender).
    pub frames_rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    handshakes_failed: AtomicU64,
    connections_failed: AtomicU64,
    frames_rejected: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Decrements `connections_open` when a connection task ends, however it ends.
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shared {
    config: TcpConfig,
    raft: Arc<dyn MessageHandler>,
    client: Option<Arc<dyn ClientHandler>>,
    peer_addresses: Option<Arc<dyn PeerAddresses>>,
    counters: Arc<Counters>,
    /// Client connections being served (after their handshake), for
    /// [`TcpServer::drain_clients`].
    clients_open: watch::Sender<u64>,
}

/// Decrements the open client connections when a client connection ends, however it ends.
struct ClientGuard<'a>(&'a watch::Sender<u64>);

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

/// Reads the counters of a [`TcpServer`] ([`TcpServer::stats_handle`]); cloneable.
#[derive(Clone, Debug)]
pub struct ServerStatsHandle {
    counters: Arc<Counters>,
    clients_open: watch::Receiver<u64>,
}

impl ServerStatsHandle {
    /// The server's counters now.
    pub fn stats(&self) -> ServerStats {
        let counters = &self.counters;
        ServerStats {
            connections_accepted: counters.connections_accepted.load(Ordering::Relaxed),
            connections_open: counters.connections_open.load(Ordering::Relaxed),
            client_connections_open: *self.clients_open.borrow(),
            handshakes_failed: counters.handshakes_failed.load(Ordering::Relaxed),
            connections_failed: counters.connections_failed.load(Ordering::Relaxed),
            frames_rejected: counters.frames_rejected.load(Ordering::Relaxed),
        }
    }
}

/// How far a server is in stopping. Each phase includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// No new connections; client connections finish the requests they read and close;
    /// peer connections go on ([`TcpServer::drain_clients`]).
    Draining,
    /// Every connection finishes what it read and closes ([`TcpServer::shutdown`]).
    Closing,
}

/// A running server: an accept loop with a connection limit and one task per connection.
///
/// Each connection starts with the handshake (see [`crate::handshake`]), then serves the
/// channel it asked for:
/// - **raft**: each message is handed to the [`MessageHandler`]; a message whose `from` is not
///   the node of the handshake, or whose `to` is not this node, is dropped with a warning.
/// - **snapshot**: chunks are handed to the handler one at a time, in order; each is answered
///   with its acknowledgement.
/// - **client** (only with a [`ClientHandler`]): requests are handled concurrently and answered
///   in completion order.
///
/// A frame of an unknown kind, or of a kind that does not belong on the channel, is answered
/// with an error frame and the connection goes on. A malformed frame, an idle connection
/// (`idle_timeout_ms`) or a frame trickling in (`frame_timeout_ms`) closes that connection
/// only. At most `connections_max` connections are served at once; more wait in the listen
/// backlog.
///
/// Dropping the server aborts everything at once; [`TcpServer::shutdown`] is graceful, and
/// [`TcpServer::drain_clients`] stops the clients first while peers are still served.
#[derive(Debug)]
pub struct TcpServer {
    local_addr: SocketAddr,
    phase: watch::Sender<Phase>,
    clients_open: watch::Receiver<u64>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    shutdown_grace: Duration,
}

impl TcpServer {
    /// Binds `addr` and serves it (see [`TcpServer::serve`]).
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: TcpConfig,
        raft: Arc<dyn MessageHandler>,
        client: Option<Arc<dyn ClientHandler>>,
    ) -> Result<TcpServer> {
        let listener = TcpListener::bind(addr).await?;
        TcpServer::serve(listener, config, raft, client)
    }

    /// Serves an already bound listener (handy when the address must be known before the
    /// handlers exist, e.g. with port 0). Must be called inside a tokio runtime.
    ///
    /// With TLS ([`TcpConfig::tls`]) a peer must present a certificate signed by the CA;
    /// [`TcpServer::serve_with_peer_addresses`] also checks that it names the peer's host.
    pub fn serve(
        listener: TcpListener,
        config: TcpConfig,
        raft: Arc<dyn MessageHandler>,
        client: Option<Arc<dyn ClientHandler>>,
    ) -> Result<TcpServer> {
        TcpServer::start(listener, config, raft, client, None)
    }

    /// Like [`TcpServer::serve`]; with TLS, a peer connection is accepted only if the
    /// certificate presented names the host of the address that `peer_addresses` gives for
    /// the node of its hello (a node it does not know is refused), so that a holder of a
    /// certificate for one member, or of a client certificate, cannot speak as another
    /// member. Without TLS there is no certificate, and `peer_addresses` is not consulted.
    pub fn serve_with_peer_addresses(
        listener: TcpListener,
        config: TcpConfig,
        raft: Arc<dyn MessageHandler>,
        client: Option<Arc<dyn ClientHandler>>,
        peer_addresses: Arc<dyn PeerAddresses>,
    ) -> Result<TcpServer> {
        TcpServer::start(listener, config, raft, client, Some(peer_addresses))
    }

    fn start(
        listener: TcpListener,
        config: TcpConfig,
        raft: Arc<dyn MessageHandler>,
        client: Option<Arc<dyn ClientHandler>>,
        peer_addresses: Option<Arc<dyn PeerAddresses>>,
    ) -> Result<TcpServer> {
        config.validate_node()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let local_addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let (clients_open, clients_open_rx) = watch::channel(0);
        let shutdown_grace = config.shutdown_grace();
        info!(node = config.node_id, %local_addr, tls = config.tls_enabled(), "server listening");
        let shared = Arc::new(Shared {
            config,
            raft,
            client,
            peer_addresses,
            counters: counters.clone(),
            clients_open,
        });
        let task = runtime.spawn(accept_loop(listener, shared, phase_rx));
        Ok(TcpServer {
            local_addr,
            phase,
            clients_open: clients_open_rx,
            task: Some(task),
            counters,
            shutdown_grace,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        self.stats_handle().stats()
    }

    /// A handle that reads the server's counters, usable after the server is gone (for a
    /// metrics endpoint that does not own the server).
    pub fn stats_handle(&self) -> ServerStatsHandle {
        ServerStatsHandle {
            counters: self.counters.clone(),
            clients_open: self.clients_open.clone(),
        }
    }

    /// Stops serving clients while peers are still served: stops accepting connections (the
    /// listener is closed, so a client that connects now is refused and knows its request
    /// went nowhere), lets each client connection finish the requests it already read, send
    /// their responses and close, and returns once every client connection is closed, or
    /// after `shutdown_grace_ms`. Connections from peers go on until
    /// [`TcpServer::shutdown`]: a node finishing its clients' requests still hears from its
    /// peers, which a leader needs to commit them.
    pub async fn drain_clients(&self) {
        self.phase.send_if_modified(|phase| {
            let starts = *phase < Phase::Draining;
            if starts {
                *phase = Phase::Draining;
            }
            starts
        });
        let mut clients_open = self.clients_open.clone();
        let all_closed = clients_open.wait_for(|open| *open == 0);
        let drained = timeout(self.shutdown_grace, all_closed).await.is_ok();
        if drained {
            debug!(addr = %self.local_addr, "client connections drained");
        } else {
            let open = *self.clients_open.borrow();
            warn!(addr = %self.local_addr, open, "client connections still open after the grace period");
        }
    }

    /// Stops accepting, lets every connection finish the requests it already read (their
    /// responses are sent), closes the connections and returns. Requests still running after
    /// `shutdown_grace_ms` are aborted.
    pub async fn shutdown(mut self) {
        self.phase.send_replace(Phase::Closing);
        let Some(mut task) = self.task.take() else {
            return;
        };
        match timeout(self.shutdown_grace, &mut task).await {
            Ok(_) => info!(addr = %self.local_addr, "server shut down"),
            Err(_) => {
                warn!(addr = %self.local_addr, grace_ms = self.shutdown_grace.as_millis() as u64,
                    "requests still running after the grace period; aborting them");
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Resolves once the server reached `phase` (or the server handle is gone).
async fn wait_phase(phase: &mut watch::Receiver<Phase>, reached: Phase) {
    let _ = phase.wait_for(|now| *now >= reached).await;
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, phase: watch::Receiver<Phase>) {
    let mut stop_accepting = phase.clone();
    let permits = Arc::new(Semaphore::new(shared.config.connections_max as usize));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // Wait for a free slot before accepting, so excess connections stay in the backlog.
        let permit = tokio::select! {
            _ = wait_phase(&mut stop_accepting, Phase::Draining) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer_addr) = tokio::select! {
            _ = wait_phase(&mut stop_accepting, Phase::Draining) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accept failed");
                    sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        Counters::add(&shared.counters.connections_accepted);
        shared
            .counters
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(shared.counters.clone());
        let shared = shared.clone();
        let phase = phase.clone();
        connections.spawn(async move {
            serve_connection(stream, peer_addr, &shared, phase).await;
            drop(guard);
            drop(permit);
        });
    }
    drop(listener);
    debug!(
        open = connections.len(),
        "stopped accepting; waiting for connections"
    );
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    peer_addr: SocketAddr,
    shared: &Shared,
    phase: watch::Receiver<Phase>,
) {
    let config = &shared.config;
    let policy = AcceptPolicy {
        client_served: shared.client.is_some(),
        peer_addresses: shared.peer_addresses.as_deref(),
    };
    let accepted = connection::accept(stream, config, policy).await;
    let (stream, hello, channel) = match accepted {
        Ok(accepted) => accepted,
        Err(error) => {
            Counters::add(&shared.counters.handshakes_failed);
            match handshake_hint(&error) {
                Some(hint) => {
                    warn!(%peer_addr, %error, hint, "handshake failed; connection closed")
                }
                None => warn!(%peer_addr, %error, "handshake failed; connection closed"),
            }
            return;
        }
    };
    let peer = hello.node_id;
    debug!(%peer_addr, peer, %channel, "connection accepted");
    let (reader, writer) = connection::split(stream, config, Some(config.idle_timeout()));
    // Clients stop being read when the server drains; peers only when it closes.
    let (stop_reading_at, _client) = match channel {
        Channel::Client => {
            shared.clients_open.send_modify(|open| *open += 1);
            (Phase::Draining, Some(ClientGuard(&shared.clients_open)))
        }
        Channel::Raft | Channel::Snapshot => (Phase::Closing, None),
    };
    let mut link = Link {
        reader,
        writer,
        shared,
        phase,
        stop_reading_at,
        peer,
    };
    let result = match (channel, &shared.client) {
        (Channel::Raft, _) => link.serve_raft().await,
        (Channel::Snapshot, _) => link.serve_snapshot().await,
        (Channel::Client, Some(handler)) => link.serve_client(handler.clone()).await,
        // The handshake refuses the client channel without a handler.
        (Channel::Client, None) => Ok(()),
    };
    match result {
        Ok(()) => debug!(%peer_addr, peer, %channel, "connection closed"),
        Err(error @ Error::IdleTimeout { .. }) => {
            debug!(%peer_addr, peer, %channel, %error, "idle connection closed");
        }
        Err(error) => {
            Counters::add(&shared.counters.connections_failed);
            warn!(%peer_addr, peer, %channel, %error, "connection closed after an error");
        }
    }
}

/// A hint for the log line of a failed handshake, where the error alone does not say what
/// to fix.
fn handshake_hint(error: &Error) -> Option<&'static str> {
    match error {
        // A TLS record starts with 0x16 (handshake), then the version's major byte 0x03.
        Error::Handshake(Rejection::BadMagic { found }) if found[..2] == [0x16, 0x03] => {
            Some("the other side speaks TLS and this server has no TLS configured")
        }
        Error::Handshake(Rejection::TlsRequired) => {
            Some("the other side sent a plaintext hello; configure TLS on it")
        }
        _ => None,
    }
}

/// One accepted connection after its handshake.
struct Link<'a> {
    reader: FrameReader,
    writer: FrameWriter,
    shared: &'a Shared,
    phase: watch::Receiver<Phase>,
    /// The phase of the server's stop at which this connection reads no more frames.
    stop_reading_at: Phase,
    /// The node id the other side gave in its handshake (0 for a client).
    peer: NodeId,
}

impl Link<'_> {
    /// The next frame, or `None` when the peer closed or the server's stop reached this
    /// connection.
    async fn next_frame(&mut self) -> Result<Option<Frame>> {
        tokio::select! {
            _ = wait_phase(&mut self.phase, self.stop_reading_at) => Ok(None),
            frame = self.reader.read_frame() => frame,
        }
    }

    async fn serve_raft(&mut self) -> Result<()> {
        while let Some(frame) = self.next_frame().await? {
            match frame {
                Frame::Raft(message) => self.deliver(message),
                frame => self.reject(&frame, Channel::Raft).await?,
            }
        }
        Ok(())
    }

    fn deliver(&self, message: Message) {
        let own_id = self.shared.config.node_id;
        if message.from != self.peer {
            warn!(
                peer = self.peer,
                from = message.from,
                kind = message.body.name(),
                "message from another node than the connection's; dropped"
            );
            return;
        }
        if message.to != own_id {
            warn!(
                peer = self.peer,
                to = message.to,
                node = own_id,
                kind = message.body.name(),
                "message for another node; dropped"
            );
            return;
        }
        self.shared.raft.deliver(message);
    }

    async fn serve_snapshot(&mut self) -> Result<()> {
        while let Some(frame) = self.next_frame().await? {
            match frame {
                Frame::SnapshotChunk { id, chunk } if chunk.from == self.peer => {
                    // One chunk at a time: chunks of a snapshot must be written in order.
                    let ack = self.shared.raft.deliver_snapshot_chunk(chunk).await;
                    self.writer.send(&Frame::SnapshotAck { id, ack }).await?;
                    self.reader.touch();
                }
                frame => self.reject(&frame, Channel::Snapshot).await?,
            }
        }
        Ok(())
    }

    /// Serves pipelined client requests. The handlers' futures are polled by this task
    /// (not spawned): the answers a commit makes ready together wake this one task once and
    /// leave in one write, and no task is created per request.
    async fn serve_client(&mut self, handler: Arc<dyn ClientHandler>) -> Result<()> {
        let inflight_max = self.shared.config.inflight_requests_max as usize;
        let request_timeout = self.shared.config.request_timeout();
        let mut inflight = FuturesUnordered::new();
        let mut reading = true;
        loop {
            if !reading && inflight.is_empty() {
                return Ok(());
            }
            // A client waiting for answers is not idle, however long its requests take.
            self.reader.set_busy(!inflight.is_empty());
            tokio::select! {
                Some(frame) = inflight.next() => {
                    self.queue_or_error(&frame);
                    if !inflight.is_empty() {
                        // Answers of one commit become ready together, possibly while this
                        // task already runs: give the rest a chance to join this write.
                        tokio::task::yield_now().await;
                    }
                    // Answers that are ready too go out in the same write: with many
                    // requests pipelined on one connection this saves a system call (and a
                    // wakeup of the client) per answer.
                    while self.writer.queued_bytes() < RESPONSE_BATCH_BYTES_MAX {
                        match inflight.next().now_or_never() {
                            Some(Some(frame)) => self.queue_or_error(&frame),
                            _ => break,
                        }
                    }
                    self.writer.flush().await?;
                }
                frame = self.next_frame(), if reading && inflight.len() < inflight_max => {
                    match frame? {
                        None => reading = false,
                        Some(Frame::ClientRequest(request)) => {
                            inflight.push(answer(handler.clone(), request, request_timeout));
                        }
                        Some(frame) => self.reject(&frame, Channel::Client).await?,
                    }
                }
                else => return Ok(()),
            }
        }
    }

    /// Queues a response; one that is too large to encode is replaced by an error frame.
    fn queue_or_error(&mut self, frame: &Frame) {
        if let Err(error) = self.writer.queue(frame) {
            warn!(id = frame.id(), %error, "response cannot be sent");
            let reason = format!("response cannot be sent: {error}");
            let error_frame = Frame::Error {
                id: frame.id(),
                reason,
            };
            // A short error frame always encodes.
            if let Err(error) = self.writer.queue(&error_frame) {
                error!(id = frame.id(), %error, "error frame cannot be sent");
            }
        }
    }

    /// Answers a frame that does not belong here with an error frame; the connection goes on.
    async fn reject(&mut self, frame: &Frame, channel: Channel) -> Result<()> {
        Counters::add(&self.shared.counters.frames_rejected);
        let reason = match frame {
            Frame::Unknown { kind, .. } => format!("unknown message type {kind}"),
            Frame::SnapshotChunk { chunk, .. } if channel == Channel::Snapshot => format!(
                "chunk from node {} on the connection of node {}",
                chunk.from, self.peer
            ),
            frame => format!(
                "{} frame not expected on the {channel} channel",
                frame.name()
            ),
        };
        warn!(
            peer = self.peer,
            kind = frame.kind(),
            id = frame.id(),
            reason,
            "frame rejected"
        );
        self.writer
            .send(&Frame::Error {
                id: frame.id(),
                reason,
            })
            .await
    }
}

/// Runs one client request through the handler, bounded by `request_timeout`; a handler that
/// panics fails its own request only.
async fn answer(
    handler: Arc<dyn ClientHandler>,
    request: ClientRequest,
    request_timeout: Duration,
) -> Frame {
    let id = request.id;
    let handled = AssertUnwindSafe(timeout(request_timeout, handler.handle(request)));
    // Cut off or panicking, the handler may have done part of its work (a proposal may
    // still commit): the outcome is unknown, not a failure.
    let response = match handled.catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => ClientResponse::OutcomeUnknown(format!(
            "no answer within the server's request timeout of {} ms",
            request_timeout.as_millis()
        )),
        Err(_) => {
            error!(id, "client handler panicked");
            ClientResponse::OutcomeUnknown("internal error: the request handler panicked".into())
        }
    };
    Frame::ClientResponse { id, response }
}

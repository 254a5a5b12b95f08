//! [`TcpEndpoint`] and [`TcpNode`]: a raft-core node on TCP, its server, transport and
//! snapshot sender started in one call and stopped in order by one value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use raft_core::node::{
    LogStore, NodeConfig, RaftHandle, RaftNode, SnapshotStore, StartOptions, StateMachine,
};
use raft_core::{Membership, NodeId};
use tokio::net::{TcpListener, ToSocketAddrs};
use tracing::info;

use crate::config::TcpConfig;
use crate::error::{Error, Result};
use crate::server::{ClientHandler, ServerStats, TcpServer};
use crate::transport::TcpTransport;

/// Added to the node's membership timeout to give the server's request timeout: a client
/// request may wait that long for a membership change, and the node's own answer (success,
/// or its own timeout) must always come before the server cuts the request off.
pub const SERVER_TIMEOUT_MARGIN_MS: u64 = 5_000;

/// Builds the handler of the native client protocol once the node's handle exists.
type ClientHandlerFactory = Box<dyn FnOnce(RaftHandle) -> Arc<dyn ClientHandler> + Send>;

/// A node's place on the network before the node starts: its bound listener (so its address
/// is known, even with port 0, and can go into the initial configuration) and its
/// [`TcpTransport`] (so a snapshot sender can be built on it). [`TcpEndpoint::start`] starts
/// the node on them.
pub struct TcpEndpoint {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: TcpConfig,
    transport: Arc<TcpTransport>,
    client_handler: Option<ClientHandlerFactory>,
}

impl std::fmt::Debug for TcpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpEndpoint")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .field("client_handler", &self.client_handler.is_some())
            .finish_non_exhaustive()
    }
}

impl TcpEndpoint {
    /// Binds `addr` (`127.0.0.1:0` picks a free port) and creates the transport. `config`
    /// names the cluster and this node (`node_id`, not 0) and holds the limits of both the
    /// server and the transport. Must be called inside a tokio runtime.
    pub async fn bind(addr: impl ToSocketAddrs, config: TcpConfig) -> Result<TcpEndpoint> {
        config.validate_node()?;
        let listener = TcpListener::bind(addr).await?;
        TcpEndpoint::from_listener(listener, config)
    }

    /// Like [`TcpEndpoint::bind`], on a listener bound already.
    pub fn from_listener(listener: TcpListener, config: TcpConfig) -> Result<TcpEndpoint> {
        let local_addr = listener.local_addr()?;
        let transport = Arc::new(TcpTransport::new(config.clone())?);
        Ok(TcpEndpoint {
            listener,
            local_addr,
            config,
            transport,
            client_handler: None,
        })
    }

    /// The address the node will serve peers and clients on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's transport, for a snapshot sender (raft-snapshot's `SnapshotSender::new`
    /// takes it) or its counters.
    pub fn transport(&self) -> Arc<TcpTransport> {
        self.transport.clone()
    }

    /// Gives the transport the members' addresses to use until the node learns its
    /// configuration ([`TcpTransport::set_seed_peers`]). A server added to a running cluster
    /// (started with an empty configuration) needs them: without them its answers to the
    /// leader that catches it up are lost. Take them from a member's configuration
    /// (`RaftHandle::status().membership.addresses` on a member, or a status request).
    pub fn with_seed_peers(self, seeds: &BTreeMap<NodeId, String>) -> TcpEndpoint {
        self.transport.set_seed_peers(seeds);
        self
    }

    /// Serves the native client protocol with the handler `make` builds from the node's
    /// handle once the node runs. Without one the server refuses client connections.
    pub fn with_client_handler(
        mut self,
        make: impl FnOnce(RaftHandle) -> Arc<dyn ClientHandler> + Send + 'static,
    ) -> TcpEndpoint {
        self.client_handler = Some(Box::new(make));
        self
    }

    /// Starts the node ([`RaftNode::start_with_options`]: `options` may carry a snapshot
    /// sender, default raft-core's `StopAndWaitSender`) with this endpoint's transport, then
    /// serves peers (and clients, with a client handler) on the listener.
    ///
    /// `node.id` must be the `node_id` of the endpoint's [`TcpConfig`]. The server's request
    /// timeout is raised to at least `node.membership_timeout_ms` +
    /// [`SERVER_TIMEOUT_MARGIN_MS`], so the node answers every client request itself before
    /// the server would cut it off. If the node does not start, the transport is shut down
    /// and the error is returned as [`Error::Node`].
    pub async fn start<L, S, M>(
        self,
        node: NodeConfig,
        log: Arc<L>,
        snapshots: Arc<S>,
        state_machine: M,
        initial_membership: Membership,
        options: StartOptions,
    ) -> Result<TcpNode>
    where
        L: LogStore,
        S: SnapshotStore,
        M: StateMachine,
    {
        let TcpEndpoint {
            listener,
            config,
            local_addr: _,
            transport,
            client_handler,
        } = self;
        if node.id != config.node_id {
            transport.shutdown();
            return Err(Error::InvalidConfig {
                field: "node_id",
                reason: "differs from the id in the node's configuration",
            });
        }
        let mut server_config = config;
        server_config.request_timeout_ms = server_config
            .request_timeout_ms
            .max(node.membership_timeout_ms + SERVER_TIMEOUT_MARGIN_MS);
        let started = RaftNode::start_with_options(
            node,
            log,
            snapshots,
            transport.clone(),
            state_machine,
            initial_membership,
            options,
        )
        .await;
        let handle = match started {
            Ok(handle) => handle,
            Err(error) => {
                transport.shutdown();
                return Err(Error::Node(error));
            }
        };
        let client_handler = client_handler.map(|make| make(handle.clone()));
        let raft = Arc::new(handle.clone());
        // With TLS, a peer's certificate must name the host of its address in the book.
        let peer_addresses = transport.clone();
        let served = TcpServer::serve_with_peer_addresses(
            listener,
            server_config,
            raft,
            client_handler,
            peer_addresses,
        );
        let server = match served {
            Ok(server) => server,
            Err(error) => {
                handle.shutdown().await;
                transport.shutdown();
                return Err(error);
            }
        };
        info!(node = handle.id(), addr = %server.local_addr(), "node running on TCP");
        Ok(TcpNode {
            handle,
            server: Some(server),
            transport,
        })
    }
}

/// A node running on TCP: the node, the server its peers and clients connect to, and the
/// transport it sends with. Started by [`TcpEndpoint::start`].
///
/// [`TcpNode::shutdown`] stops them in order. Dropping a `TcpNode` without it stops
/// everything at once, like [`TcpNode::kill`].
#[derive(Debug)]
#[must_use = "dropping a TcpNode kills the node; call shutdown for an orderly stop"]
pub struct TcpNode {
    handle: RaftHandle,
    /// `None` once stopped.
    server: Option<TcpServer>,
    transport: Arc<TcpTransport>,
}

impl TcpNode {
    /// The node's handle: propose, read, change the membership, watch the status.
    pub fn handle(&self) -> &RaftHandle {
        &self.handle
    }

    /// The address the node serves peers and clients on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server().local_addr()
    }

    /// The node's transport (its per-peer counters).
    pub fn transport(&self) -> &Arc<TcpTransport> {
        &self.transport
    }

    /// The server's counters.
    pub fn server_stats(&self) -> ServerStats {
        self.server().stats()
    }

    fn server(&self) -> &TcpServer {
        self.server
            .as_ref()
            .expect("the server exists until the node is stopped, which consumes it")
    }

    /// Stops the node and everything around it, in this order:
    ///
    /// 1. The server stops accepting connections and client requests, and finishes the
    ///    client requests it already read ([`TcpServer::drain_clients`]). Peers are still
    ///    heard meanwhile: a leader needs their acknowledgements to commit those requests.
    /// 2. The node shuts down ([`RaftHandle::shutdown`]): it finishes its write in flight and
    ///    answers whatever still waits.
    /// 3. The server closes the peers' connections ([`TcpServer::shutdown`]).
    /// 4. The transport closes the connections to the peers.
    pub async fn shutdown(mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        server.drain_clients().await;
        self.handle.shutdown().await;
        server.shutdown().await;
        self.transport.shutdown();
        info!(node = self.handle.id(), "node stopped");
    }

    /// Stops everything at once, as a crash of the process would: the node's tasks
    /// ([`RaftHandle::kill`]: nothing finishes, nothing is answered), every connection of the
    /// server, and the transport. For tests, demonstrations and simulations of crashes.
    pub fn kill(mut self) {
        self.stop_at_once();
    }

    fn stop_at_once(&mut self) {
        if let Some(server) = self.server.take() {
            self.handle.kill();
            // Dropping the server aborts its tasks and closes its sockets.
            drop(server);
            self.transport.shutdown();
        }
    }
}

impl Drop for TcpNode {
    fn drop(&mut self) {
        self.stop_at_once();
    }
}

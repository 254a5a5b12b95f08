//! `raft node`: wires the log store, the snapshot store, the TCP transport and server, the
//! key-value state machine, the optional Redis and metrics endpoints and the join request
//! together, and shuts them down in order on SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use raft_core::node::{LogStore, NodeState, RaftHandle, RaftNode};
use raft_net_tcp::tls::TlsConfig;
use raft_net_tcp::{TcpConfig, TcpServer, TcpTransport};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::client::{ClusterClient, ADMIN_REQUEST_TIMEOUT_MS};
use crate::config::NodeSettings;
use crate::join::StickyTransport;
use crate::kv::Kv;
use crate::metrics::{Exporter, MetricsServer, MetricsSources};
use crate::proto::Request;
use crate::redis::RedisServer;
use crate::service::{NativeHandler, Service};
use crate::snapshots;

/// Added to the membership timeout for the server's request timeout, so the node's own
/// answer (success or timeout) always beats the transport's.
const SERVER_TIMEOUT_MARGIN_MS: u64 = 5_000;
/// Pause between attempts to join a cluster.
const JOIN_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Runs a node until a signal or a fatal error.
pub async fn run(settings: NodeSettings) -> anyhow::Result<()> {
    let data_dir = &settings.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    // Held until the node has stopped: a second process on the same data directory would
    // write the same log and snapshots (the error names the directory and the holder's pid).
    let _data_dir_lock = raft_log::DirLock::acquire(data_dir)
        .with_context(|| format!("locking data directory {}", data_dir.display()))?;
    let log_options = raft_log::Options {
        segment_bytes: settings.log_segment_bytes,
        direct_io: settings.log_direct_io,
    };
    let log = raft_log::RaftLogStore::open(data_dir.join("log"), log_options)
        .with_context(|| format!("opening the log in {}", data_dir.display()))?;
    let log = Arc::new(log);
    let snapshot_store = snapshots::open_with(
        &data_dir.join("snapshots"),
        settings.snapshot_write_bytes_per_sec_max,
    )?;

    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let redis_listener = bind_optional(settings.redis_listen.as_deref(), "redis").await?;
    let metrics_listener = bind_optional(settings.metrics_listen.as_deref(), "metrics").await?;
    let tls = settings.tls_config()?;
    let mut tcp_config = TcpConfig::new(settings.cluster_id, settings.id);
    tcp_config.tls = tls.clone();
    let transport = Arc::new(TcpTransport::new(tcp_config.clone())?);
    let seeds = match &settings.join {
        Some(via) if log.state().await?.last.index == 0 => {
            join_seeds(&settings, via, tls.clone()).await?
        }
        _ => BTreeMap::new(),
    };
    let seeded = Arc::new(StickyTransport::new(transport.clone(), seeds));
    let kv = Kv::new();
    let db = kv.db();
    let node_config = settings.node_config()?;
    // Snapshots travel with raft-snapshot's windowed, resumable sender.
    let sender = raft_snapshot::SnapshotSender::new(
        snapshot_store.clone(),
        seeded.clone(),
        raft_snapshot::SenderConfig {
            chunk_bytes: node_config.snapshot_chunk_bytes,
            ..raft_snapshot::SenderConfig::default()
        },
    )
    .context("configuring the snapshot sender")?;
    let handle = RaftNode::start_with_transfer(
        node_config,
        log.clone(),
        snapshot_store.clone(),
        seeded,
        kv,
        settings.initial_membership()?,
        Arc::new(sender),
    )
    .await
    .context("starting the node")?;
    let service = Service::new(
        handle.clone(),
        db,
        snapshot_store,
        settings.advertised().to_string(),
        settings.cluster_id,
        settings.reply_bytes_max,
    );
    let service = Arc::new(service.with_forwarding_tls(tls.clone()));
    // The server bounds each client request by its request timeout: membership changes wait
    // for a new server to catch up, so they get the node's membership timeout and a margin.
    let mut server_config = tcp_config;
    server_config.request_timeout_ms = settings.membership_timeout_ms + SERVER_TIMEOUT_MARGIN_MS;
    // With TLS, a peer's certificate must name the host of its address in the transport's
    // address book.
    let server = TcpServer::serve_with_peer_addresses(
        listener,
        server_config,
        Arc::new(handle.clone()),
        Some(Arc::new(NativeHandler(service.clone()))),
        transport.clone(),
    )?;
    let redis_tls = match &tls {
        Some(tls) if settings.redis_tls => tls.server_config(settings.tls_client_certs.into())?,
        _ => None,
    };
    let redis_tls_on = redis_tls.is_some();
    let redis = redis_listener
        .map(|l| RedisServer::start(l, service.clone(), settings.redis_limits(), redis_tls));
    let metrics = match metrics_listener {
        Some(listener) => {
            let sources = MetricsSources {
                handle: handle.clone(),
                log: log.clone(),
                transport: transport.clone(),
                server: server.stats_handle(),
                service: service.clone(),
            };
            let exporter = Arc::new(Exporter::new(sources));
            Some(MetricsServer::start(listener, exporter)?)
        }
        None => None,
    };
    let (stop_expiry, expiry_stopped) = tokio::sync::watch::channel(false);
    let expiry = tokio::spawn(crate::expiry::run(service.clone(), expiry_stopped));
    info!(
        id = settings.id,
        listen = %settings.listen,
        tls = tls.is_some(),
        redis = ?settings.redis_listen,
        metrics = ?settings.metrics_listen,
        redis_tls = redis_tls_on,
        data_dir = %settings.data_dir.display(),
        durable_snapshots = snapshots::DURABLE,
        "node running"
    );
    let join = settings.join.clone().map(|addr| {
        let joining = join_cluster(handle.clone(), settings.clone(), addr, tls.clone());
        tokio::spawn(joining)
    });

    let outcome = wait_for_stop(&handle).await;
    if let Some(join) = join {
        join.abort();
    }
    info!("shutting down");
    // Probes first: a node that is going away is neither healthy nor ready. Then clients
    // (Redis, then the native port), while peers are still heard: a leader needs its
    // followers' acknowledgements to finish the writes it already took.
    if let Some(metrics) = metrics {
        metrics.shutdown().await;
    }
    if let Some(redis) = redis {
        redis.shutdown().await;
    }
    let _ = stop_expiry.send(true);
    let _ = expiry.await;
    server.drain_clients().await;
    handle.shutdown().await;
    server.shutdown().await;
    transport.shutdown();
    info!("stopped");
    outcome
}

/// Binds `addr` for the endpoint named `what`, if an address is given.
async fn bind_optional(addr: Option<&str>, what: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} endpoint {addr}"))?;
    Ok(Some(listener))
}

/// Resolves on SIGINT/SIGTERM (Ok) or when the node fails (Err).
async fn wait_for_stop(handle: &RaftHandle) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => Ok(()),
        _ = terminate.recv() => Ok(()),
        state = handle.wait_stopped() => {
            match state {
                NodeState::Failed(why) => {
                    error!(reason = %why, "the node failed");
                    bail!("the node failed: {why}")
                }
                _ => Ok(()),
            }
        }
    }
}

/// The member addresses of the cluster reached through `via`, retried until it answers or a
/// signal arrives.
async fn join_seeds(
    settings: &NodeSettings,
    via: &str,
    tls: Option<TlsConfig>,
) -> anyhow::Result<BTreeMap<u64, String>> {
    let client = ClusterClient::new(vec![via.to_string()], settings.cluster_id).with_tls(tls);
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        match client.leader_status().await {
            Ok(status) => return Ok(status.members.into_iter().map(|m| (m.id, m.addr)).collect()),
            Err(e) => warn!(via = %via, error = %e, "cannot reach the cluster to join; retrying"),
        }
        tokio::select! {
            _ = interrupt.recv() => bail!("interrupted while joining"),
            _ = terminate.recv() => bail!("terminated while joining"),
            _ = tokio::time::sleep(JOIN_RETRY_PAUSE) => {}
        }
    }
}

/// Asks the cluster to add this node as a voter until it is a member. The leader catches it
/// up as a learner first and promotes it; a restarted node that is already a member skips
/// this.
async fn join_cluster(
    handle: RaftHandle,
    settings: NodeSettings,
    via: String,
    tls: Option<TlsConfig>,
) {
    let client = ClusterClient::new(vec![via.clone()], settings.cluster_id)
        .with_tls(tls)
        .with_request_timeout_ms(ADMIN_REQUEST_TIMEOUT_MS);
    let request = Request::AddVoter {
        id: settings.id,
        addr: settings.advertised().to_string(),
    };
    loop {
        if handle.status().membership.is_voter(settings.id) {
            info!(via = %via, "this node is a voter of the cluster");
            return;
        }
        match client.call(&request).await {
            Ok(_) => {
                info!(via = %via, "joined the cluster");
                return;
            }
            Err(e) => warn!(via = %via, error = %e, "join failed; retrying"),
        }
        tokio::time::sleep(JOIN_RETRY_PAUSE).await;
    }
}

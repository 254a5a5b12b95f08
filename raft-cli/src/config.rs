//! The settings of `raft node`: a TOML file (`--config`) with every field optional, flags
//! overriding it, and the conversion into raft-core's and raft-net-tcp's configurations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use raft_core::node::NodeConfig;
use raft_core::{Membership, NodeId};
use raft_net_tcp::tls::TlsConfig;
use serde::{Deserialize, Serialize};

use crate::redis::RedisLimits;
use crate::service::{REPLY_BYTES_MAX_LIMIT, REPLY_BYTES_MAX_MIN};
use crate::snapshots;
use crate::tls::TlsClientCerts;

/// Default cluster id: every handshake carries it; nodes and clients must agree.
pub const CLUSTER_ID_DEFAULT: u64 = 1;
/// Largest configuration file read, in bytes: a real one is a few hundred bytes.
const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;
/// A node runs on one thread by default. Measured with three nodes and the load generator
/// on two cores (`raft bench --clients 64`): a multi-threaded runtime per node spent 37-46
/// us of CPU per write across the nodes, a single thread 33-38 us, with as much or more
/// throughput; the extra threads mostly added cross-thread wake-ups (work stealing,
/// waking a parked worker) on a machine whose cores the other nodes already use.
pub const WORKER_THREADS_DEFAULT: usize = 1;
/// Log appends go through the page cache by default, as raft-log's do. Direct I/O
/// (`log_direct_io`) made no difference beyond the noise with three nodes on two cores
/// (`raft bench --clients 64`, 8 s runs alternating: 48.2-56.9 thousand writes/s direct,
/// median 53.9; 49.8-55.8 through the page cache, median 50.6): the nodes are CPU-bound there.
/// Through the page cache, a restarted node finds its log still cached.
pub const LOG_DIRECT_IO_DEFAULT: bool = false;

/// Everything a node needs to run. Field names are the keys of the TOML file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// This server's id (1 or more).
    pub id: NodeId,
    /// Address for Raft and native client traffic.
    pub listen: String,
    /// Address other members and clients use to reach this node (default: `listen`).
    pub advertise: Option<String>,
    /// Directory of the log and snapshots.
    pub data_dir: PathBuf,
    /// Initial voters `ID=HOST:PORT,...`, used only when the data directory is new.
    pub peers: Option<String>,
    /// Join an existing cluster through this member's address.
    pub join: Option<String>,
    /// Address of the Redis-protocol endpoint (none: no Redis endpoint).
    pub redis_listen: Option<String>,
    /// Address of the HTTP endpoint serving `/metrics` (Prometheus), `/health` and `/ready`
    /// (none: no such endpoint).
    pub metrics_listen: Option<String>,
    /// Cluster id checked in every handshake.
    pub cluster_id: u64,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive).
    pub log_level: String,
    /// Milliseconds per engine tick; every time below is rounded up to whole ticks.
    pub tick_ms: u64,
    /// Lower bound of the randomized election timeout, in milliseconds.
    pub election_timeout_ms_min: u64,
    /// Upper bound of the randomized election timeout, in milliseconds.
    pub election_timeout_ms_max: u64,
    /// Interval between a leader's heartbeats, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Build a snapshot when this many entries were applied since the last one (0: never).
    pub snapshot_distance: u64,
    /// Entries kept in the log below a snapshot for slow followers.
    pub snapshot_trailing_entries: u64,
    /// Bytes per snapshot chunk sent to a follower.
    pub snapshot_chunk_bytes: u32,
    /// Entries per AppendEntries message, at most.
    pub entries_per_message_max: usize,
    /// Payload bytes per AppendEntries message, at most.
    pub message_bytes_max: u64,
    /// AppendEntries messages in flight to one peer, at most.
    pub inflight_messages_max: usize,
    /// Uncommitted entries the leader accepts before refusing proposals (back-pressure).
    pub uncommitted_entries_max: u64,
    /// Build a snapshot once the entries applied since the last one hold this many bytes (0: never by size).
    pub snapshot_log_bytes: u64,
    /// A snapshot called for by distance or bytes waits until the log since the last one holds
    /// this percentage of its size (0: no wait; at most 10 times either threshold).
    pub snapshot_log_ratio_percent: u64,
    /// Payload bytes of AppendEntries in flight to one peer, at most.
    pub inflight_bytes_max: u64,
    /// Bytes of uncommitted entries a leader accepts, at most (back-pressure).
    pub uncommitted_bytes_max: u64,
    /// Bytes of entries in memory not yet applied by the state machine, at most.
    pub unapplied_bytes_max: u64,
    /// Bytes handed to the state machine and not yet applied, at most.
    pub apply_queue_bytes_max: u64,
    /// Payload bytes of applied entries kept in memory for followers (older ones are read back from the log).
    pub log_cache_bytes_max: u64,
    /// A snapshot built here is written at most this fast, in bytes per second (0: no limit).
    pub snapshot_write_bytes_per_sec_max: u64,
    /// Payload bytes of one entry (one write), at most.
    pub entry_bytes_max: u64,
    /// A client request gives up after this long, in milliseconds.
    pub request_timeout_ms: u64,
    /// A membership change gives up after this long, in milliseconds.
    pub membership_timeout_ms: u64,
    /// Run a pre-vote round before an election.
    pub pre_vote: bool,
    /// Leaders step down without a quorum; followers ignore disruptive candidates.
    pub check_quorum: bool,
    /// Serve reads from a leader lease instead of a heartbeat round.
    pub lease_read: bool,
    /// Size of each log segment file, in bytes.
    pub log_segment_bytes: u64,
    /// Write log appends with direct I/O, around the page cache (raft-log's
    /// `Options::direct_io`): the node never reads back what it appends, except once on
    /// restart.
    pub log_direct_io: bool,
    /// Redis connections served at once, at most.
    pub redis_connections_max: u32,
    /// A Redis connection that sends nothing between requests, or reads none of its
    /// replies, for this long is closed, in milliseconds.
    pub redis_idle_timeout_ms: u64,
    /// A Redis request must arrive whole within this long of its first byte, in
    /// milliseconds.
    pub redis_request_read_timeout_ms: u64,
    /// Bytes a read may answer with, at most, on the Redis and the native port; a larger
    /// reply is refused with an error before it is built.
    pub reply_bytes_max: usize,
    /// Threads of the async runtime: 1 runs the node on one thread (log syncs still go
    /// to tokio's blocking pool); 0 means one per CPU core.
    pub worker_threads: usize,
    /// This node's certificate (PEM, chain leaf first): with `tls_key` and `tls_ca`, turns
    /// TLS on for the peer and native client port (and the Redis port, see `redis_tls`). It
    /// should name the host of the advertised address, for server and client use.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate(s) (PEM): peers and clients must present certificates
    /// it signed.
    pub tls_ca: Option<PathBuf>,
    /// Whether clients (native and Redis) must present a certificate signed by the CA
    /// (`required`, the default) or may connect without one (`optional`).
    pub tls_client_certs: TlsClientCerts,
    /// With TLS on, serve the Redis port with TLS too (the default); `false` keeps it
    /// plaintext, e.g. behind a proxy on the same host.
    pub redis_tls: bool,
}

impl Default for NodeSettings {
    fn default() -> Self {
        let engine = raft_core::engine::Config::default();
        let node = NodeConfig::new(1);
        NodeSettings {
            id: 1,
            listen: "127.0.0.1:7001".into(),
            advertise: None,
            data_dir: PathBuf::from("raft-data"),
            peers: None,
            join: None,
            redis_listen: None,
            metrics_listen: None,
            cluster_id: CLUSTER_ID_DEFAULT,
            log_level: "info".into(),
            tick_ms: node.tick_ms,
            election_timeout_ms_min: engine.election_ticks_min * node.tick_ms,
            election_timeout_ms_max: engine.election_ticks_max * node.tick_ms,
            heartbeat_interval_ms: engine.heartbeat_ticks * node.tick_ms,
            snapshot_distance: snapshots::SNAPSHOT_DISTANCE_DEFAULT,
            snapshot_trailing_entries: snapshots::SNAPSHOT_TRAILING_ENTRIES_DEFAULT,
            snapshot_chunk_bytes: node.snapshot_chunk_bytes,
            entries_per_message_max: engine.entries_per_message_max,
            message_bytes_max: engine.message_bytes_max,
            inflight_messages_max: engine.inflight_messages_max,
            uncommitted_entries_max: engine.uncommitted_entries_max,
            snapshot_log_bytes: engine.snapshot_log_bytes,
            snapshot_log_ratio_percent: engine.snapshot_log_ratio_percent,
            inflight_bytes_max: engine.inflight_bytes_max,
            uncommitted_bytes_max: engine.uncommitted_bytes_max,
            unapplied_bytes_max: engine.unapplied_bytes_max,
            apply_queue_bytes_max: engine.apply_queue_bytes_max,
            log_cache_bytes_max: engine.log_cache_bytes_max,
            snapshot_write_bytes_per_sec_max: 0,
            entry_bytes_max: engine.entry_bytes_max,
            request_timeout_ms: node.request_timeout_ms,
            membership_timeout_ms: node.membership_timeout_ms,
            pre_vote: engine.pre_vote,
            check_quorum: engine.check_quorum,
            lease_read: engine.lease_read,
            log_segment_bytes: raft_log::SEGMENT_BYTES_DEFAULT,
            log_direct_io: LOG_DIRECT_IO_DEFAULT,
            redis_connections_max: crate::redis::CONNECTIONS_MAX_DEFAULT,
            redis_idle_timeout_ms: crate::redis::IDLE_TIMEOUT_MS_DEFAULT,
            redis_request_read_timeout_ms: crate::redis::REQUEST_READ_TIMEOUT_MS_DEFAULT,
            reply_bytes_max: crate::service::REPLY_BYTES_MAX_DEFAULT,
            worker_threads: WORKER_THREADS_DEFAULT,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_certs: TlsClientCerts::default(),
            redis_tls: true,
        }
    }
}

/// The flags of `raft node`; each overrides the same key of the configuration file.
#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// TOML file with any of the settings below (keys in snake_case, e.g. `data_dir`).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// This server's id (1 or more).
    #[arg(long)]
    pub id: Option<NodeId>,
    /// Address for Raft and native client traffic.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address others use to reach this node (default: --listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Directory of the log and snapshots.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Initial voters, used only when the data directory is new.
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,
    /// Join an existing cluster through any member (caught up as a learner, then promoted).
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// Serve the Redis protocol (RESP2) on this address.
    #[arg(long, value_name = "HOST:PORT")]
    pub redis_listen: Option<String>,
    /// Serve GET /metrics (Prometheus text format), /health and /ready over HTTP on this
    /// address.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Cluster id checked in every handshake.
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// Log filter: error, warn, info, debug, trace or a tracing directive.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Milliseconds per engine tick.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Lower bound of the randomized election timeout (ms).
    #[arg(long)]
    pub election_timeout_ms_min: Option<u64>,
    /// Upper bound of the randomized election timeout (ms).
    #[arg(long)]
    pub election_timeout_ms_max: Option<u64>,
    /// Leader heartbeat interval (ms).
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Snapshot after this many applied entries (0: never automatically).
    #[arg(long)]
    pub snapshot_distance: Option<u64>,
    /// Entries kept in the log below a snapshot.
    #[arg(long)]
    pub snapshot_trailing_entries: Option<u64>,
    /// Bytes per snapshot chunk.
    #[arg(long)]
    pub snapshot_chunk_bytes: Option<u32>,
    /// Entries per AppendEntries message, at most.
    #[arg(long)]
    pub entries_per_message_max: Option<usize>,
    /// Payload bytes per AppendEntries message, at most.
    #[arg(long)]
    pub message_bytes_max: Option<u64>,
    /// AppendEntries messages in flight per peer, at most.
    #[arg(long)]
    pub inflight_messages_max: Option<usize>,
    /// Uncommitted entries before proposals are refused.
    #[arg(long)]
    pub uncommitted_entries_max: Option<u64>,
    /// Snapshot after this many bytes of applied entries (0: never by size).
    #[arg(long)]
    pub snapshot_log_bytes: Option<u64>,
    /// An automatic snapshot waits until the log holds this percentage of the last snapshot's
    /// size (0: no wait).
    #[arg(long)]
    pub snapshot_log_ratio_percent: Option<u64>,
    /// Payload bytes in flight per peer, at most.
    #[arg(long)]
    pub inflight_bytes_max: Option<u64>,
    /// Leader back-pressure in bytes of uncommitted entries.
    #[arg(long)]
    pub uncommitted_bytes_max: Option<u64>,
    /// Bytes of entries not yet applied, at most.
    #[arg(long)]
    pub unapplied_bytes_max: Option<u64>,
    /// Bytes in the apply queue, at most.
    #[arg(long)]
    pub apply_queue_bytes_max: Option<u64>,
    /// Payload bytes of the log kept in memory.
    #[arg(long)]
    pub log_cache_bytes_max: Option<u64>,
    /// Write rate limit of local snapshots, bytes per second (0: none).
    #[arg(long)]
    pub snapshot_write_bytes_per_sec_max: Option<u64>,
    /// Bytes of one entry, at most.
    #[arg(long)]
    pub entry_bytes_max: Option<u64>,
    /// Client request timeout (ms).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Membership change timeout (ms).
    #[arg(long)]
    pub membership_timeout_ms: Option<u64>,
    /// Pre-vote before elections (true/false).
    #[arg(long)]
    pub pre_vote: Option<bool>,
    /// Check quorum (true/false).
    #[arg(long)]
    pub check_quorum: Option<bool>,
    /// Lease reads (true/false; requires check quorum).
    #[arg(long)]
    pub lease_read: Option<bool>,
    /// Log segment size in bytes.
    #[arg(long)]
    pub log_segment_bytes: Option<u64>,
    /// Write log appends with direct I/O, around the page cache (true/false).
    #[arg(long)]
    pub log_direct_io: Option<bool>,
    /// Redis connections served at once, at most.
    #[arg(long)]
    pub redis_connections_max: Option<u32>,
    /// Close a Redis connection idle (or not reading its replies) for this long (ms).
    #[arg(long)]
    pub redis_idle_timeout_ms: Option<u64>,
    /// Close a Redis connection whose request has not arrived whole this long after its
    /// first byte (ms).
    #[arg(long)]
    pub redis_request_read_timeout_ms: Option<u64>,
    /// Largest reply to a read, in bytes, on the Redis and the native port (at most
    /// 15 MiB).
    #[arg(long)]
    pub reply_bytes_max: Option<usize>,
    /// Threads of the async runtime (1, the default: a single-threaded runtime; 0: one per
    /// CPU core).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// This node's TLS certificate (PEM); with --tls-key and --tls-ca turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers and clients need certificates it signed.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Whether clients must present a certificate signed by the CA.
    #[arg(long, value_enum)]
    pub tls_client_certs: Option<TlsClientCerts>,
    /// With TLS on, serve the Redis port with TLS too (true/false; default true).
    #[arg(long)]
    pub redis_tls: Option<bool>,
}

macro_rules! override_fields {
    ($settings:ident, $args:ident; $($plain:ident),*; $($optional:ident),*) => {
        $(if let Some(value) = $args.$plain.take() { $settings.$plain = value; })*
        $(if let Some(value) = $args.$optional.take() { $settings.$optional = Some(value); })*
    };
}

impl NodeArgs {
    /// The settings: defaults, then the file, then the flags.
    pub fn resolve(mut self) -> anyhow::Result<NodeSettings> {
        let mut settings = match &self.config {
            Some(path) => load_file(path)?,
            None => NodeSettings::default(),
        };
        let args = &mut self;
        override_fields!(settings, args;
            id, listen, data_dir, cluster_id, log_level, tick_ms, election_timeout_ms_min,
            election_timeout_ms_max, heartbeat_interval_ms, snapshot_distance,
            snapshot_trailing_entries, snapshot_chunk_bytes, entries_per_message_max,
            message_bytes_max, inflight_messages_max, uncommitted_entries_max, entry_bytes_max,
            snapshot_log_bytes, snapshot_log_ratio_percent, inflight_bytes_max, uncommitted_bytes_max, unapplied_bytes_max,
            apply_queue_bytes_max, log_cache_bytes_max, snapshot_write_bytes_per_sec_max,
            request_timeout_ms, membership_timeout_ms, pre_vote, check_quorum, lease_read,
            log_segment_bytes, log_direct_io, redis_connections_max, redis_idle_timeout_ms,
            redis_request_read_timeout_ms, reply_bytes_max, worker_threads, tls_client_certs,
            redis_tls;
            advertise, peers, join, redis_listen, metrics_listen, tls_cert, tls_key, tls_ca);
        settings.validate()?;
        Ok(settings)
    }
}

/// Reads a settings file.
pub fn load_file(path: &Path) -> anyhow::Result<NodeSettings> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > CONFIG_FILE_BYTES_MAX {
        bail!(
            "{} is {len} bytes, more than {CONFIG_FILE_BYTES_MAX}",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses `ID=HOST:PORT,ID=HOST:PORT,...`.
pub fn parse_peers(text: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((id, addr)) = item.split_once('=') else {
            bail!("peer {item:?} is not ID=HOST:PORT");
        };
        let id: NodeId = id
            .trim()
            .parse()
            .with_context(|| format!("peer id in {item:?}"))?;
        if id == 0 {
            bail!("node id 0 is reserved");
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            bail!("node {id} is listed twice in --peers");
        }
    }
    Ok(peers)
}

/// A seed that differs between runs, for the engine's election timeouts (the engine also mixes
/// in the node id).
fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn ticks(ms: u64, tick_ms: u64) -> u64 {
    ms.div_ceil(tick_ms).max(1)
}

impl NodeSettings {
    /// The address others reach this node at.
    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// Checks what raft-core would refuse, with messages in terms of these settings.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.id == 0 {
            bail!("--id must be 1 or more");
        }
        if self.tick_ms == 0 {
            bail!("tick_ms must be at least 1");
        }
        if self.redis_idle_timeout_ms == 0 || self.redis_request_read_timeout_ms == 0 {
            bail!("redis_idle_timeout_ms and redis_request_read_timeout_ms must be at least 1");
        }
        let replies = REPLY_BYTES_MAX_MIN..=REPLY_BYTES_MAX_LIMIT;
        if !replies.contains(&self.reply_bytes_max) {
            bail!(
                "reply_bytes_max must be within {REPLY_BYTES_MAX_MIN}..={REPLY_BYTES_MAX_LIMIT} \
                 (a native reply must fit in one frame)"
            );
        }
        let tls_files = [&self.tls_cert, &self.tls_key, &self.tls_ca];
        if tls_files.iter().any(|f| f.is_some()) && !tls_files.iter().all(|f| f.is_some()) {
            bail!("--tls-cert, --tls-key and --tls-ca go together (tls_cert, tls_key, tls_ca)");
        }
        if self.peers.is_some() && self.join.is_some() {
            bail!("--peers and --join exclude each other");
        }
        if let Some(peers) = &self.peers {
            let peers = parse_peers(peers)?;
            if !peers.contains_key(&self.id) {
                bail!("--peers must list this node ({})", self.id);
            }
        }
        self.node_config()?;
        Ok(())
    }

    /// The node's TLS configuration, loaded from the files; `None` without TLS.
    pub fn tls_config(&self) -> anyhow::Result<Option<TlsConfig>> {
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca)
        else {
            return Ok(None);
        };
        let client_certs = self.tls_client_certs.into();
        let config = TlsConfig::node_from_files(cert, key, ca, client_certs)
            .context("loading the TLS certificate, key and CA")?;
        Ok(Some(config))
    }

    /// The limits of the Redis endpoint.
    pub fn redis_limits(&self) -> RedisLimits {
        RedisLimits {
            connections_max: self.redis_connections_max,
            idle_timeout_ms: self.redis_idle_timeout_ms,
            request_read_timeout_ms: self.redis_request_read_timeout_ms,
        }
    }

    /// raft-core's node configuration.
    pub fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let mut config = NodeConfig::new(self.id);
        config.tick_ms = self.tick_ms;
        config.snapshot_chunk_bytes = self.snapshot_chunk_bytes;
        config.request_timeout_ms = self.request_timeout_ms;
        config.membership_timeout_ms = self.membership_timeout_ms;
        let engine = &mut config.engine;
        engine.election_ticks_min = ticks(self.election_timeout_ms_min, self.tick_ms);
        engine.election_ticks_max = ticks(self.election_timeout_ms_max, self.tick_ms);
        engine.heartbeat_ticks = ticks(self.heartbeat_interval_ms, self.tick_ms);
        engine.snapshot_distance = self.snapshot_distance;
        engine.snapshot_trailing_entries = self.snapshot_trailing_entries;
        engine.entries_per_message_max = self.entries_per_message_max;
        engine.message_bytes_max = self.message_bytes_max;
        engine.inflight_messages_max = self.inflight_messages_max;
        engine.uncommitted_entries_max = self.uncommitted_entries_max;
        engine.snapshot_log_bytes = self.snapshot_log_bytes;
        engine.snapshot_log_ratio_percent = self.snapshot_log_ratio_percent;
        engine.inflight_bytes_max = self.inflight_bytes_max;
        engine.uncommitted_bytes_max = self.uncommitted_bytes_max;
        engine.unapplied_bytes_max = self.unapplied_bytes_max;
        engine.apply_queue_bytes_max = self.apply_queue_bytes_max;
        engine.log_cache_bytes_max = self.log_cache_bytes_max;
        engine.entry_bytes_max = self.entry_bytes_max;
        engine.pre_vote = self.pre_vote;
        engine.check_quorum = self.check_quorum;
        engine.lease_read = self.lease_read;
        engine.random_seed ^= seed_from_clock();
        engine
            .validate()
            .map_err(|e| anyhow::anyhow!("{e} (check the timeouts: election_timeout_ms_min must exceed heartbeat_interval_ms, max must exceed min, in whole ticks of tick_ms)"))?;
        Ok(config)
    }

    /// The configuration a brand-new data directory starts from: the `--peers` voters, an
    /// empty one for a node that joins, or this node alone.
    pub fn initial_membership(&self) -> anyhow::Result<Membership> {
        if self.join.is_some() {
            return Ok(Membership::default());
        }
        let addresses = match &self.peers {
            Some(peers) => parse_peers(peers)?,
            None => BTreeMap::from([(self.id, self.advertised().to_string())]),
        };
        let mut membership = Membership::new_voters(addresses.keys().copied());
        membership.addresses = addresses;
        Ok(membership)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_ms_become_ticks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 2\nlisten = \"127.0.0.1:9002\"\ntick_ms = 5\nelection_timeout_ms_min = 100\n\
             election_timeout_ms_max = 201\npeers = \"1=a:1,2=b:2\"\n\
             metrics_listen = \"127.0.0.1:9102\"\n",
        )
        .unwrap();
        let args = NodeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:9999".into()),
            ..NodeArgs::default()
        };
        let settings = args.resolve().unwrap();
        assert_eq!(settings.id, 2);
        assert_eq!(settings.listen, "127.0.0.1:9999");
        assert_eq!(settings.metrics_listen.as_deref(), Some("127.0.0.1:9102"));
        let config = settings.node_config().unwrap();
        assert_eq!(config.engine.election_ticks_min, 20);
        assert_eq!(config.engine.election_ticks_max, 41);
        let membership = settings.initial_membership().unwrap();
        assert_eq!(membership.voters.len(), 2);
        assert_eq!(membership.addresses[&1], "a:1");
    }

    #[test]
    fn tls_settings_come_from_the_file_or_flags_and_its_files_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "tls_cert = \"n.pem\"\ntls_key = \"n.key\"\ntls_ca = \"ca.pem\"\n\
             tls_client_certs = \"optional\"\nredis_tls = false\n",
        )
        .unwrap();
        let settings = NodeArgs {
            config: Some(path.clone()),
            ..NodeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(settings.tls_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(settings.tls_client_certs, TlsClientCerts::Optional);
        assert!(!settings.redis_tls);
        // The files are read when the node starts: missing ones are an error then.
        assert!(settings.tls_config().is_err());
        let flags = NodeArgs {
            config: Some(path),
            tls_client_certs: Some(TlsClientCerts::Required),
            ..NodeArgs::default()
        };
        assert_eq!(
            flags.resolve().unwrap().tls_client_certs,
            TlsClientCerts::Required
        );
        let half = NodeSettings {
            tls_cert: Some("n.pem".into()),
            ..NodeSettings::default()
        };
        assert!(half.validate().is_err());
        assert!(NodeSettings::default().tls_config().unwrap().is_none());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("0=a:1").is_err());
        let settings = NodeSettings {
            heartbeat_interval_ms: 1_000,
            ..NodeSettings::default()
        };
        assert!(settings.validate().is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        assert!(load_file(&path).is_err());
    }
}

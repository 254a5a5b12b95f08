//! [`Exporter`]: reads the numbers of raft-core, raft-log, raft-net-tcp and the client
//! endpoints at each scrape and writes them in the Prometheus text format (version 0.0.4)
//! with `prometheus-client`, whose encoder adds the unit (`_seconds`, `_bytes`) and the
//! `_total` of counters to the names below. Also answers the health and readiness probes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use raft_core::engine::Role;
use raft_core::metrics::{Histogram, HISTOGRAM_BUCKETS};
use raft_core::node::{NodeState, NodeStatus, RaftHandle, SnapshotActivity};
use raft_log::RaftLogStore;
use raft_net_tcp::{ServerStatsHandle, TcpTransport};

use super::http::{Endpoints, Probe};
use crate::service::Service;

/// How long `/ready` waits for the state machine to apply up to the commit index the node
/// knew when the probe arrived, in milliseconds. A node under load always has a few
/// committed entries on their way to the state machine, so "applied equals committed" at
/// one instant would flap; a healthy node applies them within milliseconds, and one that is
/// catching up does not within this wait. Well under the 1 s that orchestrators give a probe
/// by default.
pub const READY_APPLY_WAIT_MS: u64 = 250;
/// Microseconds per second, to export durations in seconds.
const MICROS_PER_SEC: f64 = 1e6;

/// What the exporter reads.
#[derive(Debug)]
pub struct MetricsSources {
    /// The node.
    pub handle: RaftHandle,
    /// Its log store.
    pub log: Arc<RaftLogStore>,
    /// The transport to its peers.
    pub transport: Arc<TcpTransport>,
    /// The counters of its peer and native client port.
    pub server: ServerStatsHandle,
    /// The service behind its client endpoints (request counters).
    pub service: Arc<Service>,
}

/// Writes every metric of a node, and answers its probes.
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
    sources: Arc<MetricsSources>,
}

impl Exporter {
    /// An exporter of `sources`.
    pub fn new(sources: MetricsSources) -> Exporter {
        let sources = Arc::new(sources);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(NodeCollector(sources.clone())));
        Exporter { registry, sources }
    }
}

#[async_trait]
impl Endpoints for Exporter {
    fn metrics(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; the collector reports no error of its own.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// Healthy while the node runs (a node that failed stops the process soon after).
    fn health(&self) -> Probe {
        match self.sources.handle.status().state {
            NodeState::Running => Probe::pass("ok"),
            state => Probe::fail(format!("the node is not running: {state:?}")),
        }
    }

    /// Ready when a leader is known and the state machine has applied everything the node
    /// knew committed when the probe arrived (waiting up to [`READY_APPLY_WAIT_MS`]).
    async fn ready(&self) -> Probe {
        let status = self.sources.handle.status();
        if status.state != NodeState::Running {
            return Probe::fail(format!(
                "not ready: the node is not running: {:?}",
                status.state
            ));
        }
        let Some(leader) = status.leader else {
            return Probe::fail("not ready: no leader known");
        };
        let commit = status.commit_index;
        let mut watch = self.sources.handle.watch_status();
        let wait = Duration::from_millis(READY_APPLY_WAIT_MS);
        let caught_up = tokio::time::timeout(wait, watch.wait_for(|s| s.applied_index >= commit))
            .await
            .is_ok_and(|applied| applied.is_ok());
        if caught_up {
            return Probe::pass(format!("ready: leader {leader}, applied {commit}"));
        }
        let applied = self.sources.handle.status().applied_index;
        Probe::fail(format!(
            "not ready: applied {applied} of {commit} committed entries"
        ))
    }
}

/// Reads every source at each scrape.
#[derive(Debug)]
struct NodeCollector(Arc<MetricsSources>);

impl Collector for NodeCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sources = &self.0;
        let status = sources.handle.status();
        let mut out = Out(encoder);
        encode_state(&mut out, &status)?;
        encode_node_metrics(&mut out, &status)?;
        encode_log(&mut out, sources)?;
        encode_peers(&mut out, sources, &status)?;
        encode_clients(&mut out, sources)
    }
}

/// The role's name as the `role` label has it (a learner is a follower that cannot vote).
fn role_name(status: &NodeStatus) -> &'static str {
    match status.role {
        Role::Leader => "leader",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre_candidate",
        Role::Follower if status.membership.is_learner(status.id) => "learner",
        Role::Follower => "follower",
    }
}

/// Every value of the `role` label.
const ROLES: [&str; 5] = [
    "leader",
    "candidate",
    "pre_candidate",
    "follower",
    "learner",
];

fn encode_state(out: &mut Out<'_>, status: &NodeStatus) -> std::fmt::Result {
    let role = role_name(status);
    out.gauges(
        "raft_role",
        "1 for this node's role, 0 for the others",
        None,
        "role",
        ROLES.map(|r| (r, u64::from(r == role))),
    )?;
    out.gauge("raft_term", "Current term", None, status.term)?;
    let leader = status.leader.unwrap_or(0);
    out.gauge(
        "raft_leader_id",
        "The leader this node knows (0: none)",
        None,
        leader,
    )?;
    let indexes = [
        (
            "raft_commit_index",
            "Highest log index known committed",
            status.commit_index,
        ),
        (
            "raft_applied_index",
            "Highest log index the state machine applied",
            status.applied_index,
        ),
        (
            "raft_last_log_index",
            "Index of the last log entry",
            status.last_log_id.index,
        ),
        (
            "raft_first_log_index",
            "Index of the first entry still in the log",
            status.first_index,
        ),
        (
            "raft_snapshot_index",
            "Last index covered by the latest snapshot",
            status.snapshot.index,
        ),
    ];
    for (name, help, value) in indexes {
        out.gauge(name, help, None, value)?;
    }
    let waiting = "Proposals waiting for their entry to be applied here";
    out.gauge(
        "raft_proposals_waiting",
        waiting,
        None,
        status.proposals_waiting,
    )?;
    let reads = "Linearizable reads waiting for their read index or the state machine";
    out.gauge("raft_reads_waiting", reads, None, status.reads_waiting)?;
    let cached = "Payload bytes of log entries held in memory";
    out.gauge(
        "raft_log_cached",
        cached,
        Some(Unit::Bytes),
        status.log_cached_bytes,
    )
}

fn encode_node_metrics(out: &mut Out<'_>, status: &NodeStatus) -> std::fmt::Result {
    let m = &status.metrics;
    let changes = "Leaderships this node saw begin (a leader for a term it had not seen led)";
    out.counter("raft_leader_changes", changes, None, m.leader_changes)?;
    let pre_votes = "Pre-vote rounds this node started";
    out.counter(
        "raft_pre_votes_started",
        pre_votes,
        None,
        m.campaigns.pre_votes,
    )?;
    let elections = "Elections this node started (terms raised to stand as a candidate)";
    out.counter(
        "raft_elections_started",
        elections,
        None,
        m.campaigns.elections,
    )?;
    let accepted = "Proposals appended to this leader's log";
    out.counter(
        "raft_proposals_accepted",
        accepted,
        None,
        m.proposals_accepted,
    )?;
    out.counters(
        "raft_proposals_refused",
        "Proposals refused, by reason",
        None,
        "reason",
        m.proposals_refused.by_reason(),
    )?;
    out.histogram_seconds(
        "raft_proposal_apply_duration",
        "From a proposal's acceptance to its entry applied by this node's state machine",
        &m.proposal_apply_us,
    )?;
    let applied = "Entries the state machine applied";
    out.counter("raft_entries_applied", applied, None, m.entries_applied)?;
    out.histogram(
        "raft_log_write_batch_entries",
        "Entries appended per log write (the group-commit batch of the write pipeline)",
        &m.log_write_entries,
    )?;
    let appended = "Payload bytes of the entries appended to the log";
    out.counter(
        "raft_log_appended",
        appended,
        Some(Unit::Bytes),
        m.log_appended_bytes,
    )?;
    out.histogram_seconds(
        "raft_log_write_duration",
        "Log writes from their start until durable (truncate, purge, hard state, append)",
        &m.log_write_us,
    )?;
    let snapshots = [
        ("built", &m.snapshots_built),
        ("sent", &m.snapshots_sent),
        ("installed", &m.snapshots_installed),
    ];
    encode_snapshots(out, &snapshots)?;
    out.histogram_seconds(
        "raft_event_loop_lag",
        "How late the event loop's ticks fired (late ticks mean late heartbeats)",
        &m.event_loop_lag_us,
    )
}

fn encode_snapshots(out: &mut Out<'_>, kinds: &[(&str, &SnapshotActivity); 3]) -> std::fmt::Result {
    let count = |get: fn(&SnapshotActivity) -> u64| kinds.map(|(kind, a)| (kind, get(a)));
    out.counters(
        "raft_snapshots",
        "Snapshots completed: built here, sent to followers, installed from a leader",
        None,
        "kind",
        count(|a| a.completed),
    )?;
    out.counters(
        "raft_snapshot_failures",
        "Snapshot builds and transfers that failed (retried later)",
        None,
        "kind",
        count(|a| a.failed),
    )?;
    out.counters(
        "raft_snapshot",
        "Bytes of the snapshots completed",
        Some(Unit::Bytes),
        "kind",
        count(|a| a.bytes),
    )?;
    let durations = kinds.map(|(kind, a)| (kind, &a.duration_us));
    out.histograms_seconds(
        "raft_snapshot_duration",
        "Duration of each completed snapshot build, transfer and install",
        "kind",
        &durations,
    )
}

fn encode_log(out: &mut Out<'_>, sources: &MetricsSources) -> std::fmt::Result {
    let stats = sources.log.stats();
    let written = "Bytes of log records written into segments (headers, payloads, padding)";
    out.counter(
        "raft_log_written",
        written,
        Some(Unit::Bytes),
        stats.bytes_written,
    )?;
    out.histogram_seconds(
        "raft_log_fdatasync_duration",
        "fdatasync calls that made appended log records durable",
        &stats.sync_us,
    )
}

fn encode_peers(
    out: &mut Out<'_>,
    sources: &MetricsSources,
    status: &NodeStatus,
) -> std::fmt::Result {
    let last = status.last_log_id.index;
    let progress = |get: fn(&raft_core::node::PeerStatus) -> u64| {
        status.peers.iter().map(move |p| (p.id, get(p)))
    };
    out.gauges(
        "raft_peer_match_index",
        "Highest index known replicated on the peer (leader only)",
        None,
        "peer",
        progress(|p| p.match_index),
    )?;
    out.gauges(
        "raft_peer_lag_entries",
        "Entries of the leader's log not known replicated on the peer (leader only)",
        None,
        "peer",
        status
            .peers
            .iter()
            .map(|p| (p.id, last.saturating_sub(p.match_index))),
    )?;
    out.gauges(
        "raft_peer_inflight_messages",
        "AppendEntries sent to the peer and not acknowledged yet (leader only)",
        None,
        "peer",
        progress(|p| p.inflight_messages),
    )?;
    let members: Vec<_> = status
        .membership
        .all_members()
        .filter(|id| *id != status.id)
        .filter_map(|id| Some((id, sources.transport.peer_stats(id)?)))
        .collect();
    out.counters(
        "raft_peer_connections",
        "Connections established to the peer for Raft messages; each after the first is a reconnect",
        None,
        "peer",
        members.iter().map(|(id, s)| (*id, s.connections)),
    )?;
    out.counters(
        "raft_peer_messages_sent",
        "Raft messages written to the peer's connection",
        None,
        "peer",
        members.iter().map(|(id, s)| (*id, s.sent_messages)),
    )?;
    let dropped = members.iter().flat_map(|(id, s)| {
        [
            ((*id, "queue_full"), s.dropped_queue_full),
            ((*id, "unreachable"), s.dropped_unreachable),
            ((*id, "too_large"), s.dropped_too_large),
        ]
    });
    out.counters2(
        "raft_peer_messages_dropped",
        "Raft messages to the peer dropped, by reason (Raft resends what still matters)",
        ("peer", "reason"),
        dropped,
    )
}

fn encode_clients(out: &mut Out<'_>, sources: &MetricsSources) -> std::fmt::Result {
    let clients = sources.service.client_metrics();
    let protocols = [
        ("native", "native client", &clients.native),
        ("redis", "Redis", &clients.redis),
    ];
    for (protocol, port, counters) in protocols {
        let help = format!("Requests on the {port} port, by command");
        let name = format!("raft_{protocol}_requests");
        out.counters(&name, &help, None, "command", counters.requests())?;
        let help = format!("Failed requests on the {port} port, by kind of error");
        let name = format!("raft_{protocol}_request_errors");
        out.counters(&name, &help, None, "kind", counters.errors())?;
    }
    let native_open = sources.server.stats().client_connections_open;
    let help = "Client connections open on the native port";
    out.gauge("raft_native_connections_open", help, None, native_open)?;
    let help = "Connections open on the Redis port";
    out.gauge(
        "raft_redis_connections_open",
        help,
        None,
        clients.redis_connections_open(),
    )?;
    let help = "Redis connections refused because redis_connections_max were open";
    out.counter(
        "raft_redis_connections_refused",
        help,
        None,
        clients.redis_connections_refused(),
    )
}

/// Writes metrics through `prometheus-client`'s encoder.
struct Out<'a>(DescriptorEncoder<'a>);

impl Out<'_> {
    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        value: u64,
    ) -> std::fmt::Result {
        let unit = unit.as_ref();
        let mut metric = self
            .0
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        metric.encode_gauge(&value)
    }

    fn counter(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        value: u64,
    ) -> std::fmt::Result {
        let unit = unit.as_ref();
        let mut metric = self
            .0
            .encode_descriptor(name, help, unit, MetricType::Counter)?;
        metric.encode_counter::<NoLabelSet, _, u64>(&value, None)
    }

    fn gauges<V: prometheus_client::encoding::EncodeLabelValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        label: &str,
        values: impl IntoIterator<Item = (V, u64)>,
    ) -> std::fmt::Result {
        let unit = unit.as_ref();
        let mut metric = self
            .0
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for (value, gauge) in values {
            let labels = [(label, value)];
            metric.encode_family(&labels)?.encode_gauge(&gauge)?;
        }
        Ok(())
    }

    fn counters<V: prometheus_client::encoding::EncodeLabelValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        label: &str,
        values: impl IntoIterator<Item = (V, u64)>,
    ) -> std::fmt::Result {
        let unit = unit.as_ref();
        let mut metric = self
            .0
            .encode_descriptor(name, help, unit, MetricType::Counter)?;
        for (value, count) in values {
            let labels = [(label, value)];
            encode_counter(&mut metric, &labels, count)?;
        }
        Ok(())
    }

    /// Counters with two labels.
    fn counters2<A, B>(
        &mut self,
        name: &str,
        help: &str,
        (first, second): (&str, &str),
        values: impl IntoIterator<Item = ((A, B), u64)>,
    ) -> std::fmt::Result
    where
        A: prometheus_client::encoding::EncodeLabelValue,
        B: prometheus_client::encoding::EncodeLabelValue,
    {
        let mut metric = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for ((a, b), count) in values {
            let labels = ([(first, a)], [(second, b)]);
            encode_counter(&mut metric, &labels, count)?;
        }
        Ok(())
    }

    /// A histogram of counts (no unit).
    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> std::fmt::Result {
        let mut metric = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        encode_histogram(&mut metric, histogram, 1.0)
    }

    /// A histogram of microseconds, exported in seconds.
    fn histogram_seconds(
        &mut self,
        name: &str,
        help: &str,
        histogram: &Histogram,
    ) -> std::fmt::Result {
        let unit = Some(&Unit::Seconds);
        let mut metric = self
            .0
            .encode_descriptor(name, help, unit, MetricType::Histogram)?;
        encode_histogram(&mut metric, histogram, MICROS_PER_SEC)
    }

    /// Histograms of microseconds with a label, exported in seconds.
    fn histograms_seconds(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        histograms: &[(&str, &Histogram)],
    ) -> std::fmt::Result {
        let unit = Some(&Unit::Seconds);
        let mut metric = self
            .0
            .encode_descriptor(name, help, unit, MetricType::Histogram)?;
        for (value, histogram) in histograms {
            let labels = [(label, *value)];
            let mut family = metric.encode_family(&labels)?;
            encode_histogram(&mut family, histogram, MICROS_PER_SEC)?;
        }
        Ok(())
    }
}

fn encode_counter(
    metric: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    count: u64,
) -> std::fmt::Result {
    metric
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&count, None)
}

/// Writes `histogram`'s buckets with their bounds divided by `scale` (microseconds to
/// seconds: 1e6). The last bucket is `+Inf`.
fn encode_histogram(
    metric: &mut prometheus_client::encoding::MetricEncoder<'_>,
    histogram: &Histogram,
    scale: f64,
) -> std::fmt::Result {
    let mut buckets = [(0.0, 0); HISTOGRAM_BUCKETS];
    for (i, (bucket, count)) in buckets.iter_mut().zip(histogram.counts()).enumerate() {
        let bound = histogram
            .bound(i)
            .map_or(f64::INFINITY, |b| b as f64 / scale);
        *bucket = (bound, *count);
    }
    let sum = histogram.sum() as f64 / scale;
    metric.encode_histogram::<NoLabelSet>(sum, histogram.count(), &buckets, None)
}

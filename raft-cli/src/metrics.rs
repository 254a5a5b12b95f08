//! The node's HTTP endpoint for operators (`raft node --metrics-listen HOST:PORT`):
//! `GET /metrics` in the Prometheus text format, `GET /health` and `GET /ready` for load
//! balancers and orchestrators.
//!
//! Where the numbers come from: raft-core counts what the node does in its event loop
//! ([`raft_core::node::NodeMetrics`], published with the status every tick), raft-log what it
//! writes and how long its syncs take ([`raft_log::LogStats`]), raft-net-tcp its connections
//! and messages per peer; this crate counts client requests ([`ClientMetrics`]). None of
//! those crates knows Prometheus: [`Exporter`] reads them all at each scrape and writes the
//! text with `prometheus-client`; [`MetricsServer`] is a minimal HTTP/1.1 server with strict
//! limits. Every metric is listed in the operator section of the crate's README.

mod exporter;
mod http;
mod requests;

pub use exporter::{Exporter, MetricsSources, READY_APPLY_WAIT_MS};
pub use http::{
    Endpoints, MetricsServer, Probe, CONNECTIONS_MAX, REQUEST_HEAD_BYTES_MAX, REQUEST_TIMEOUT_MS,
};
pub use requests::{ClientMetrics, RequestCounters};

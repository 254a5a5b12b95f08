//! Limits and timeouts of the transport, the server and the client, with their defaults.
//!
//! Every queue, buffer, frame and wait in this crate is bounded by one of the fields of
//! [`TcpConfig`]. The defaults are the `*_DEFAULT` constants below; each says why it has the
//! value it has.

use std::time::Duration;

use raft_core::NodeId;

use crate::error::{Error, Result};

/// Default largest frame body: 16 MiB. A snapshot chunk or a batch of entries must fit, and a
/// peer cannot make us buffer more than this for one frame.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 16 * 1024 * 1024;
/// Smallest accepted `frame_bytes_max`: a heartbeat or a handshake-sized frame must always fit.
pub const FRAME_BYTES_MAX_MIN: u32 = 1024;
/// Largest accepted `frame_bytes_max`: 1 GiB. Beyond that one connection could pin a large
/// part of the machine's memory.
pub const FRAME_BYTES_MAX_LIMIT: u32 = 1024 * 1024 * 1024;
/// Default connection limit of a server. Each connection may buffer up to one frame, so this
/// times `frame_bytes_max` bounds the memory a server spends on its connections.
pub const CONNECTIONS_MAX_DEFAULT: u32 = 256;
/// Default length of the outgoing Raft message queue of each peer. Raft sends at most a few
/// messages per peer per heartbeat interval; a queue this long only fills when the peer or the
/// network is stuck, and then dropping is the right thing to do (see [`crate::TcpTransport`]).
pub const QUEUE_LEN_MAX_DEFAULT: u32 = 1024;
/// Default for [`TcpConfig::queue_bytes_max`].
pub const QUEUE_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// Default number of requests one connection may have in flight (client side: waiting for an
/// answer; server side: being handled).
pub const INFLIGHT_REQUESTS_MAX_DEFAULT: u32 = 1024;
/// Default time a request (snapshot chunk, client request) may wait for its answer.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default time to establish a TCP connection.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// Default time for the whole handshake: with TLS its handshake (a TLS 1.3 handshake is one
/// round trip and a few signature checks, milliseconds on loopback), then the hello in both
/// directions. A peer that stalls in either is cut off after this long.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Default time a server waits for the first byte of the next frame before it closes an idle
/// connection. Much longer than any heartbeat interval, so live peers are never cut off.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Default time between the first and the last byte of one frame. A 16 MiB frame at 10 MB/s
/// takes under 2 s, so 30 s only ever cuts off peers that trickle bytes on purpose or are stuck.
pub const FRAME_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default time one write to a socket may take before the connection is considered dead.
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default first reconnect delay after a failed connection attempt.
pub const RECONNECT_BACKOFF_MS_MIN_DEFAULT: u64 = 50;
/// Default longest reconnect delay: a restarted peer is found again within about 2 s.
pub const RECONNECT_BACKOFF_MS_MAX_DEFAULT: u64 = 2_000;
/// Default time a graceful server shutdown waits for in-flight requests before it aborts them.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 5_000;

/// Identity, limits and timeouts shared by [`crate::TcpTransport`], [`crate::TcpServer`] and
/// [`crate::TcpClient`].
///
/// Build one with [`TcpConfig::new`] and change the fields you need; constructors call
/// [`TcpConfig::validate`].
///
/// `#[non_exhaustive]`: the `tls` feature adds a field, so a struct literal written
/// elsewhere would break when another crate in the build turns the feature on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpConfig {
    /// The cluster this process belongs to. A handshake with any other cluster id is refused.
    pub cluster_id: u64,
    /// This server's node id, sent in every handshake. `0` means "not a node" and is only valid
    /// for a [`crate::TcpClient`].
    pub node_id: NodeId,
    /// Largest frame body in bytes, checked before any allocation on receive and while
    /// encoding on send.
    pub frame_bytes_max: u32,
    /// Most connections a server serves at once; further connections wait in the listen backlog.
    pub connections_max: u32,
    /// Most Raft messages queued for one peer; see [`crate::TcpTransport`] for what happens
    /// when the queue is full.
    pub queue_len_max: u32,
    /// Most bytes of Raft messages queued for one peer (their entries' payloads, see
    /// `raft_core::Message::size_bytes`); a message that would go past it is dropped like
    /// one arriving at a full queue (one message is always taken into an empty queue).
    pub queue_bytes_max: u64,
    /// Most requests one connection may have in flight.
    pub inflight_requests_max: u32,
    /// Time a request may wait for its answer, in milliseconds.
    pub request_timeout_ms: u64,
    /// Time to establish a TCP connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time for the whole handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Time a server waits for the next frame before closing the connection, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Time between the first and the last byte of one frame, in milliseconds.
    pub frame_timeout_ms: u64,
    /// Time one socket write may take, in milliseconds.
    pub write_timeout_ms: u64,
    /// First reconnect delay, in milliseconds; doubles per failed attempt.
    pub reconnect_backoff_ms_min: u64,
    /// Longest reconnect delay, in milliseconds.
    pub reconnect_backoff_ms_max: u64,
    /// Time a graceful server shutdown waits for in-flight requests, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// TLS for every connection, with certificates checked as [`crate::tls`] describes;
    /// `None` (the default) is plaintext. A transport or server needs a configuration with
    /// the node's own certificate ([`crate::tls::TlsConfig::node`]).
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl TcpConfig {
    /// A configuration with every limit at its default.
    pub fn new(cluster_id: u64, node_id: NodeId) -> TcpConfig {
        TcpConfig {
            cluster_id,
            node_id,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            queue_len_max: QUEUE_LEN_MAX_DEFAULT,
            queue_bytes_max: QUEUE_BYTES_MAX_DEFAULT,
            inflight_requests_max: INFLIGHT_REQUESTS_MAX_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_timeout_ms: FRAME_TIMEOUT_MS_DEFAULT,
            write_timeout_ms: WRITE_TIMEOUT_MS_DEFAULT,
            reconnect_backoff_ms_min: RECONNECT_BACKOFF_MS_MIN_DEFAULT,
            reconnect_backoff_ms_max: RECONNECT_BACKOFF_MS_MAX_DEFAULT,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Whether connections use TLS.
    pub fn tls_enabled(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        return false;
    }

    /// Checks that every limit is usable: frame limit within
    /// [`FRAME_BYTES_MAX_MIN`]..=[`FRAME_BYTES_MAX_LIMIT`], counts and timeouts non-zero,
    /// backoff minimum not above its maximum.
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |field: &'static str, reason: &'static str| Err(Error::InvalidConfig { field, reason });
        if self.frame_bytes_max < FRAME_BYTES_MAX_MIN {
            return invalid("frame_bytes_max", "below FRAME_BYTES_MAX_MIN");
        }
        if self.frame_bytes_max > FRAME_BYTES_MAX_LIMIT {
            return invalid("frame_bytes_max", "above FRAME_BYTES_MAX_LIMIT");
        }
        let counts = [
            ("connections_max", self.connections_max),
            ("queue_len_max", self.queue_len_max),
            ("inflight_requests_max", self.inflight_requests_max),
        ];
        for (field, value) in counts {
            if value == 0 {
                return invalid(field, "must be at least 1");
            }
        }
        if self.queue_bytes_max == 0 {
            return invalid("queue_bytes_max", "must be at least 1");
        }
        let durations = [
            ("request_timeout_ms", self.request_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("frame_timeout_ms", self.frame_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("reconnect_backoff_ms_min", self.reconnect_backoff_ms_min),
            ("shutdown_grace_ms", self.shutdown_grace_ms),
        ];
        for (field, value) in durations {
            if value == 0 {
                return invalid(field, "must be at least 1 ms");
            }
        }
        if self.reconnect_backoff_ms_max < self.reconnect_backoff_ms_min {
            return invalid("reconnect_backoff_ms_max", "below reconnect_backoff_ms_min");
        }
        Ok(())
    }

    /// Checks [`TcpConfig::validate`] and that `node_id` is a real node (not 0), as a
    /// transport or a server needs.
    pub(crate) fn validate_node(&self) -> Result<()> {
        self.validate()?;
        if self.node_id == 0 {
            return Err(Error::InvalidConfig {
                field: "node_id",
                reason: "0 is not a node id",
            });
        }
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(|tls| !tls.has_identity()) {
            return Err(Error::InvalidConfig {
                field: "tls",
                reason: "a node needs its own certificate and key (TlsConfig::node)",
            });
        }
        Ok(())
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub(crate) fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_timeout_ms)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

impl Default for TcpConfig {
    /// Cluster 0, node 0 (a client identity) and every limit at its default.
    fn default() -> TcpConfig {
        TcpConfig::new(0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_limits_are_not() {
        let config = TcpConfig::new(7, 1);
        assert!(config.validate_node().is_ok());
        assert!(matches!(
            TcpConfig::default().validate_node(),
            Err(Error::InvalidConfig {
                field: "node_id",
                ..
            })
        ));
        let mut bad = config.clone();
        bad.queue_len_max = 0;
        assert!(matches!(
            bad.validate(),
            Err(Error::InvalidConfig {
                field: "queue_len_max",
                ..
            })
        ));
        let mut bad = config.clone();
        bad.frame_bytes_max = FRAME_BYTES_MAX_LIMIT + 1;
        assert!(matches!(bad.validate(), Err(Error::InvalidConfig { .. })));
        let mut bad = config;
        bad.reconnect_backoff_ms_max = bad.reconnect_backoff_ms_min - 1;
        assert!(matches!(bad.validate(), Err(Error::InvalidConfig { .. })));
    }
}

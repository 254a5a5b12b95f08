//! The Redis-protocol front end (RESP2, and RESP3 after `HELLO 3`): a connection loop over
//! [`crate::resp`] and the commands, executed through the [`Service`] (writes through the
//! log, forwarded to the leader when needed; reads after a read barrier).
//!
//! Commands: the string, key, expiry, hash, list and set commands of Redis 7 with their
//! replies and errors, MULTI/EXEC/DISCARD/WATCH/UNWATCH (a transaction is one log entry),
//! HELLO, CLIENT, SELECT 0, COMMAND, INFO, CONFIG GET and what `redis-cli` and
//! `redis-benchmark` send at start-up (raft-cli/README.md lists them all, and how they
//! differ from Redis). Each is a type of its own in `redis/cmd/`, with its name, arity, key
//! positions and options in one place; a connection's state (protocol, transaction, watched
//! keys) is in `redis/session.rs`.
//!
//! Requests of one connection run one at a time, in order; replies to pipelined requests are
//! written together. Every connection is bounded: in number ([`RedisLimits::connections_max`]),
//! in the time a request may take to arrive ([`RedisLimits::request_read_timeout_ms`]), in
//! the time it may sit idle or leave its replies unread ([`RedisLimits::idle_timeout_ms`]),
//! and in the size of a reply (the service's `reply_bytes_max`). A graceful shutdown stops
//! reading at a request boundary: every request already received is answered, then the
//! connection closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_net_tcp::tls::rustls::ServerConfig;
use raft_net_tcp::tls::tokio_rustls::TlsAcceptor;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::service::Service;

mod cmd;
mod connection;
mod session;

pub(crate) use cmd::{COMMAND_NAMES, INVALID_COMMAND};

/// Default number of Redis connections served at once; more are told so and closed, as
/// Redis does with `maxclients`.
pub const CONNECTIONS_MAX_DEFAULT: u32 = 1024;
/// Default time a connection may go without sending a byte (between requests) or without
/// reading any of its replies, in milliseconds: 5 minutes. Redis never closes idle clients
/// by default; here they hold one of the `connections_max` places, so a crowd of idle
/// connections would lock everyone else out for good.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// Default time between the first and the last byte of one request, in milliseconds. A
/// request of the largest size (16 MiB) at 1 MB/s takes 16 s, so 30 s only cuts off clients
/// that stopped in the middle of a request or trickle it on purpose.
pub const REQUEST_READ_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Time a graceful shutdown waits for connections to answer the requests they have received,
/// in milliseconds: a little more than a write's own timeout (5 s), so a write waiting for
/// its commit gets its answer.
const SHUTDOWN_GRACE_MS: u64 = 6_000;
/// Time a connection has for its TLS handshake, in milliseconds: a handshake is one or two
/// round trips and a few signature checks; a client that stalls in it holds one of the
/// `connections_max` places at most this long.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Pause after a failed accept (say, out of file descriptors) before the next one.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The kinds failed requests are counted under in the metrics: the code word of the error
/// reply (`ERR`, `NOLEADER`, `UNKNOWN`, `TRYAGAIN`), in lowercase; `protocol` for a request
/// that was not valid RESP (answered with `ERR` and closed); `other` for any other code.
pub(crate) const ERROR_KINDS: &[&str] = &[
    "err", "noleader", "unknown", "tryagain", "protocol", "other",
];

/// The kind an error reply's text (`CODE message`) is counted under: its code in lowercase
/// if [`ERROR_KINDS`] has it, else `other`.
pub(crate) fn error_kind(reply: &str) -> &'static str {
    let code = reply.split(' ').next().unwrap_or_default();
    ERROR_KINDS
        .iter()
        .find(|kind| code.eq_ignore_ascii_case(kind) && **kind != "protocol")
        .copied()
        .unwrap_or("other")
}

/// The limits of a Redis endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisLimits {
    /// Connections served at once, at most.
    pub connections_max: u32,
    /// A connection that sends nothing between requests, or reads none of its replies, for
    /// this long is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// A request must arrive whole within this long of its first byte, or the connection is
    /// closed, in milliseconds.
    pub request_read_timeout_ms: u64,
}

impl Default for RedisLimits {
    fn default() -> Self {
        RedisLimits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            request_read_timeout_ms: REQUEST_READ_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// A running Redis endpoint.
#[derive(Debug)]
pub struct RedisServer {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RedisServer {
    /// Serves `listener` until [`RedisServer::shutdown`]; with `tls`, every connection
    /// starts with a TLS handshake (within [`TLS_HANDSHAKE_TIMEOUT_MS`]), as
    /// `redis-cli --tls` does.
    pub fn start(
        listener: TcpListener,
        service: Arc<Service>,
        limits: RedisLimits,
        tls: Option<Arc<ServerConfig>>,
    ) -> RedisServer {
        let (shutdown, rx) = watch::channel(false);
        let tls = tls.map(TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, service, limits, tls, rx));
        RedisServer { shutdown, task }
    }

    /// Stops accepting, lets every connection answer the requests it has received (for up
    /// to 6 s), and closes them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// The connection's socket: TLS after its handshake when `tls` is given; `None` (logged) if
/// the handshake fails or does not finish within [`TLS_HANDSHAKE_TIMEOUT_MS`].
async fn secure(
    socket: TcpStream,
    tls: Option<&TlsAcceptor>,
    peer: SocketAddr,
) -> Option<connection::Socket> {
    let Some(acceptor) = tls else {
        return Some(connection::Socket::Tcp(socket));
    };
    let handshake = Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS);
    match tokio::time::timeout(handshake, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => Some(connection::Socket::Tls(Box::new(stream))),
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "redis TLS handshake failed; connection closed");
            None
        }
        Err(_) => {
            warn!(%peer, timeout_ms = TLS_HANDSHAKE_TIMEOUT_MS,
                "redis TLS handshake did not finish in time; connection closed");
            None
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    service: Arc<Service>,
    limits: RedisLimits,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.connections_max.max(1) as usize));
    let clients = Arc::new(session::Clients::default());
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (mut socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "redis accept failed");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            service.client_metrics().redis_connection_refused();
            // A TLS client could not read a plaintext error: it is just closed.
            if tls.is_none() {
                let _ = socket
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            }
            continue;
        };
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        let clients = clients.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _open = service.client_metrics().redis_connection_opened();
            debug!(%peer, "redis connection");
            let Some(socket) = secure(socket, tls.as_ref(), peer).await else {
                return;
            };
            match connection::serve(socket, &service, clients, limits, shutdown).await {
                Ok(end) => debug!(%peer, ?end, "redis connection closed"),
                Err(e) => debug!(%peer, error = %e, "redis connection failed"),
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = connections.len();
    let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open,
            left = connections.len(),
            "redis connections still busy after the shutdown grace period; closing them"
        );
        connections.shutdown().await;
    }
    info!("redis endpoint shut down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_counted_by_their_code() {
        assert_eq!(error_kind("ERR wrong number of arguments"), "err");
        assert_eq!(error_kind("NOLEADER no leader: retry later"), "noleader");
        assert_eq!(
            error_kind("UNKNOWN the write's outcome is unknown"),
            "unknown"
        );
        assert_eq!(
            error_kind("TRYAGAIN too many uncommitted entries"),
            "tryagain"
        );
        assert_eq!(error_kind("WRONGTYPE not a string"), "other");
        assert_eq!(
            error_kind("protocol error"),
            "other",
            "only the connection says so"
        );
        assert_eq!(error_kind(""), "other");
    }
}

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

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::service::Service;

mod cmd;
mod connection;
mod session;

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
/// Pause after a failed accept (say, out of file descriptors) before the next one.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

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
    /// Serves `listener` until [`RedisServer::shutdown`].
    pub fn start(listener: TcpListener, service: Arc<Service>, limits: RedisLimits) -> RedisServer {
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, service, limits, rx));
        RedisServer { shutdown, task }
    }

    /// Stops accepting, lets every connection answer the requests it has received (for up
    /// to 6 s), and closes them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    service: Arc<Service>,
    limits: RedisLimits,
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
            let _ = socket
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            continue;
        };
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        let clients = clients.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            debug!(%peer, "redis connection");
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

//! [`ClusterClient`]: the native client protocol against a whole cluster. It finds the leader
//! itself, follows redirects, and retries only what is safe to retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep, Instant};
use tracing::debug;

use crate::client::TcpClient;
use crate::config::TcpConfig;
use crate::error::Result;
use crate::frame::ClientResponse;

/// Default time a request keeps looking for a member that executes it (an election takes a
/// few hundred milliseconds; a restart of the leader's process a few seconds).
pub const LEADER_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time one attempt waits for its answer: more than a node's own request timeout
/// (raft-core's `NodeConfig::request_timeout_ms`, 5 s by default), so that the node's answer,
/// even "outcome unknown", arrives before the client gives up on the connection.
pub const CLUSTER_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 7_000;
/// Pause between attempts once no member could execute the request.
const RETRY_PAUSE: Duration = Duration::from_millis(25);
/// Redirects followed in a row without a pause. One leads from any member to the leader;
/// more mean the members disagree about who leads (an election is going on), and asking
/// again at once would only spin.
const REDIRECTS_WITHOUT_PAUSE_MAX: u32 = 2;
/// Servers the client keeps a connection to, at most: the members it was given and the
/// leaders they named. A cluster has few members; the bound only matters if the servers keep
/// naming new addresses.
const CONNECTIONS_MAX: usize = 64;

/// Whether executing a request twice is harmless. It decides what the client may retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// Executing it twice would do it twice (an increment, an append): it is retried only
    /// when it provably was not executed (it never reached a server, or a server answered
    /// that it did not execute it). Otherwise the caller gets
    /// [`ClusterError::OutcomeUnknown`].
    NotIdempotent,
    /// Executing it twice is harmless (a read, a status request, setting a value to a
    /// constant): it is retried after any failure until [`ClusterClient`]'s time limit.
    Idempotent,
}

/// What an application makes of a response's payload, for
/// [`ClusterClient::request_with`]. An application that carries its own errors inside
/// [`ClientResponse::Ok`] tells the client which of them mean "go elsewhere" or "retry".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// The request was executed (or failed for good): hand `T` to the caller.
    Done(T),
    /// Not executed: the server is not the leader; the leader's address, if it named one.
    NotLeader(Option<String>),
    /// Not executed; retrying, later or elsewhere, may help. Says why.
    Unavailable(String),
    /// May or may not have been executed. Says why.
    OutcomeUnknown(String),
}

/// Why a [`ClusterClient`] request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The request may or may not have been executed: the connection broke after it was sent,
    /// no answer came in time, or the server said so. Never report it as done.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// No member executed the request within the client's time limit (no leader, or every
    /// member unreachable or busy). A request that is not idempotent was not executed.
    #[error("no member executed the request within {timeout_ms} ms (last: {last})")]
    Unavailable {
        /// The time limit.
        timeout_ms: u64,
        /// The last failure seen.
        last: String,
    },
    /// A server refused the request for good ([`ClientResponse::Error`]).
    #[error("refused: {0}")]
    Refused(String),
}

/// A client of a whole cluster over the native client protocol.
///
/// It sends each request to the leader it last learnt of (or, knowing none, to the members in
/// turn), follows "not the leader" answers, and retries what is safe to retry (see
/// [`Idempotency`]) until `leader_timeout_ms` (default [`LEADER_TIMEOUT_MS_DEFAULT`]) has
/// passed, pausing briefly between rounds. Each attempt waits at most the configuration's
/// `request_timeout_ms` (default [`CLUSTER_REQUEST_TIMEOUT_MS_DEFAULT`]).
///
/// Requests take `&self`: share one client (in an `Arc`) among tasks; requests to one server
/// share one pipelined connection ([`TcpClient`]).
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use raft_net_tcp::{ClusterClient, Idempotency};
///
/// let client = ClusterClient::new(["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"], 42);
/// let answer = client
///     .request(Bytes::from_static(b"incr"), Idempotency::NotIdempotent)
///     .await?;
/// # let _ = answer;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ClusterClient {
    addrs: Vec<String>,
    config: TcpConfig,
    leader_timeout_ms: u64,
    clients: Mutex<HashMap<String, Arc<TcpClient>>>,
    leader: Mutex<Option<String>>,
}

/// What one attempt at one server ended in.
enum Step<T> {
    Done(T),
    Redirect(String),
    Retry(String),
    Fail(ClusterError),
}

impl ClusterClient {
    /// A client of cluster `cluster_id` whose members include `addrs` (`host:port` each),
    /// with the default time limits.
    pub fn new(addrs: impl IntoIterator<Item = impl ToString>, cluster_id: u64) -> ClusterClient {
        let mut config = TcpConfig::new(cluster_id, 0);
        config.request_timeout_ms = CLUSTER_REQUEST_TIMEOUT_MS_DEFAULT;
        ClusterClient {
            addrs: addrs.into_iter().map(|addr| addr.to_string()).collect(),
            config,
            leader_timeout_ms: LEADER_TIMEOUT_MS_DEFAULT,
            clients: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
        }
    }

    /// A client with the limits of `config` (its `cluster_id` must be the cluster's; its
    /// `node_id` is sent in handshakes, 0 for a plain client).
    pub fn with_config(
        addrs: impl IntoIterator<Item = impl ToString>,
        config: TcpConfig,
    ) -> Result<ClusterClient> {
        config.validate()?;
        let mut client = ClusterClient::new(addrs, config.cluster_id);
        client.config = config;
        Ok(client)
    }

    /// Connects with TLS ([`crate::TcpConfig::tls`]): `tls` holds the CA the servers'
    /// certificates must chain to and, for servers that require one, the client's own.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: crate::tls::TlsConfig) -> ClusterClient {
        self.config.tls = Some(tls);
        // Connections opened so far are plaintext.
        self.lock_clients().clear();
        self
    }

    /// Changes how long a request keeps looking for a member that executes it.
    pub fn with_leader_timeout_ms(mut self, timeout_ms: u64) -> ClusterClient {
        self.leader_timeout_ms = timeout_ms;
        self
    }

    /// Changes how long one attempt waits for its answer (at least 1 ms). Requests that take
    /// long on the server, such as membership changes, need more than the default.
    pub fn with_request_timeout_ms(mut self, timeout_ms: u64) -> ClusterClient {
        self.config.request_timeout_ms = timeout_ms.max(1);
        // Connections opened so far carry the old timeout.
        self.lock_clients().clear();
        self
    }

    /// The member addresses the client was given.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The leader's address as the client last learnt it, if any.
    pub fn leader(&self) -> Option<String> {
        lock(&self.leader).clone()
    }

    /// Tells the client where the leader is (found some other way, e.g. by a status request),
    /// or with `None` makes it forget.
    pub fn set_leader(&self, addr: Option<String>) {
        *lock(&self.leader) = addr;
    }

    /// Sends `payload` to the leader and returns the payload of its [`ClientResponse::Ok`].
    /// Answers other than `Ok` are handled as [`ClusterClient::request_with`] describes.
    pub async fn request(
        &self,
        payload: Bytes,
        idempotency: Idempotency,
    ) -> Result<Bytes, ClusterError> {
        self.request_with(payload, idempotency, Decoded::Done).await
    }

    /// Sends `payload` to the leader, following redirects and retrying what is safe, and
    /// returns what `decode` makes of the executing server's [`ClientResponse::Ok`] payload.
    ///
    /// - `NotLeader` (or `decode` saying so): asks the leader it names next, or the next
    ///   member.
    /// - `Unavailable`, or a failure that proves the request never reached the server
    ///   ([`crate::Error::never_sent`]): the next member, after a short pause.
    /// - `OutcomeUnknown`, or a failure after the request may have reached the server:
    ///   retried if the request is [`Idempotency::Idempotent`], else
    ///   [`ClusterError::OutcomeUnknown`].
    /// - `Error`: [`ClusterError::Refused`].
    ///
    /// After `leader_timeout_ms` without success: [`ClusterError::Unavailable`].
    pub async fn request_with<T>(
        &self,
        payload: Bytes,
        idempotency: Idempotency,
        decode: impl Fn(Bytes) -> Decoded<T>,
    ) -> Result<T, ClusterError> {
        if self.addrs.is_empty() {
            return Err(ClusterError::Unavailable {
                timeout_ms: 0,
                last: "the client knows no member address".into(),
            });
        }
        let deadline = Instant::now() + Duration::from_millis(self.leader_timeout_ms);
        let mut next_member = 0usize;
        let mut redirects = 0u32;
        loop {
            let addr = self.leader().unwrap_or_else(|| {
                let member = self.addrs[next_member % self.addrs.len()].clone();
                next_member += 1;
                member
            });
            let step = self
                .attempt(&addr, payload.clone(), idempotency, &decode)
                .await;
            let last = match step {
                Step::Done(value) => {
                    // Only the leader executes what is not idempotent, in any sane protocol;
                    // an idempotent request may have been served by any member.
                    if idempotency == Idempotency::NotIdempotent {
                        self.set_leader(Some(addr));
                    }
                    return Ok(value);
                }
                Step::Fail(error) => {
                    if matches!(error, ClusterError::OutcomeUnknown(_)) {
                        // The server died or lost its leadership: ask around next time.
                        self.set_leader(None);
                    }
                    return Err(error);
                }
                Step::Redirect(leader) => {
                    debug!(from = %addr, to = %leader, "redirected to the leader");
                    self.set_leader(Some(leader));
                    redirects += 1;
                    if redirects <= REDIRECTS_WITHOUT_PAUSE_MAX && Instant::now() < deadline {
                        continue;
                    }
                    format!("{addr} named a leader that did not take the request")
                }
                Step::Retry(why) => {
                    debug!(%addr, why, "request not executed; trying another member");
                    self.set_leader(None);
                    why
                }
            };
            redirects = 0;
            if Instant::now() >= deadline {
                return Err(ClusterError::Unavailable {
                    timeout_ms: self.leader_timeout_ms,
                    last,
                });
            }
            sleep(RETRY_PAUSE).await;
        }
    }

    /// Sends `payload` to the server at `addr` only: no redirects, no retries.
    pub async fn request_at(&self, addr: &str, payload: Bytes) -> Result<ClientResponse> {
        self.client(addr).request(payload).await
    }

    async fn attempt<T>(
        &self,
        addr: &str,
        payload: Bytes,
        idempotency: Idempotency,
        decode: &impl Fn(Bytes) -> Decoded<T>,
    ) -> Step<T> {
        let idempotent = idempotency == Idempotency::Idempotent;
        let response = match self.request_at(addr, payload).await {
            Ok(response) => response,
            Err(error) if error.never_sent() || idempotent => {
                return Step::Retry(format!("{addr}: {error}"))
            }
            Err(error) => {
                return Step::Fail(ClusterError::OutcomeUnknown(format!(
                    "{addr}: {error}, after the request may have reached the server"
                )))
            }
        };
        let decoded = match response {
            ClientResponse::Ok(bytes) => decode(bytes),
            ClientResponse::NotLeader { leader_addr, .. } => Decoded::NotLeader(leader_addr),
            ClientResponse::Unavailable(why) => Decoded::Unavailable(why),
            ClientResponse::OutcomeUnknown(why) => Decoded::OutcomeUnknown(why),
            ClientResponse::Error(reason) => return Step::Fail(ClusterError::Refused(reason)),
        };
        match decoded {
            Decoded::Done(value) => Step::Done(value),
            Decoded::NotLeader(Some(leader)) if leader != addr => Step::Redirect(leader),
            Decoded::NotLeader(_) => Step::Retry(format!("{addr} knows no leader")),
            Decoded::Unavailable(why) => Step::Retry(format!("{addr}: {why}")),
            Decoded::OutcomeUnknown(why) if idempotent => Step::Retry(format!("{addr}: {why}")),
            Decoded::OutcomeUnknown(why) => Step::Fail(ClusterError::OutcomeUnknown(why)),
        }
    }

    /// The client of `addr`, opened on first use.
    fn client(&self, addr: &str) -> Arc<TcpClient> {
        let mut clients = self.lock_clients();
        if let Some(client) = clients.get(addr) {
            return client.clone();
        }
        if clients.len() >= CONNECTIONS_MAX {
            clients.clear();
        }
        let client = Arc::new(TcpClient::with_checked_config(addr, self.config.clone()));
        clients.insert(addr.to_owned(), client.clone());
        client
    }

    fn lock_clients(&self) -> MutexGuard<'_, HashMap<String, Arc<TcpClient>>> {
        lock(&self.clients)
    }
}

/// Every critical section here is one lookup, insert or assignment: a panic cannot leave the
/// value half-updated, so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

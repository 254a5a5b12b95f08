//! [`ClusterClient`]: the key-value client of a whole cluster, a thin layer over
//! raft-net-tcp's leader-following [`raft_net_tcp::ClusterClient`].
//!
//! That client remembers the last leader, follows "not the leader" redirects, and retries on
//! other members what is safe to retry: any request that provably did not reach a server, and
//! idempotent requests (reads, status, admin) after any failure. A write whose outcome is
//! unknown is returned as [`ClientError::OutcomeUnknown`], never retried. This layer encodes
//! the requests and tells it which of the service's answers mean "go elsewhere" or "retry".

use std::time::Duration;

use bytes::Bytes;
use raft_net_tcp::tls::TlsConfig;
use raft_net_tcp::{ClientResponse, ClusterError, Decoded, Idempotency};
use tokio::time::{sleep, Instant};

use crate::kv::{KvCommand, KvResponse, SetCondition};
use crate::proto::{decode_outcome_bytes, Outcome, Reply, Request, ServiceError, StatusReport};

/// Default time a request keeps looking for a leader before it gives up.
pub const FIND_LEADER_TIMEOUT_MS_DEFAULT: u64 = raft_net_tcp::LEADER_TIMEOUT_MS_DEFAULT;
/// Default time one request waits for its answer: a little more than a node's own request
/// timeout (5 s), so the node's answer (even "outcome unknown") arrives first.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = raft_net_tcp::CLUSTER_REQUEST_TIMEOUT_MS_DEFAULT;
/// Time an admin request (membership change, snapshot) waits: longer than a node's
/// membership timeout (60 s), since catching a new server up can take that long.
pub const ADMIN_REQUEST_TIMEOUT_MS: u64 = 70_000;
/// Pause between rounds of status requests when no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The write may or may not have been applied.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// No leader answered within the timeout.
    #[error("no leader found within {timeout_ms} ms (last error: {last})")]
    NoLeader {
        /// The timeout.
        timeout_ms: u64,
        /// The last failure seen.
        last: String,
    },
    /// The server refused the request for good.
    #[error("{0}")]
    Refused(ServiceError),
    /// A server answered with something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<ClusterError> for ClientError {
    fn from(error: ClusterError) -> ClientError {
        match error {
            ClusterError::OutcomeUnknown(why) => ClientError::OutcomeUnknown(why),
            ClusterError::Unavailable { timeout_ms, last } => {
                ClientError::NoLeader { timeout_ms, last }
            }
            ClusterError::Refused(reason) => ClientError::Protocol(reason),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// A client of a whole cluster.
#[derive(Debug)]
pub struct ClusterClient {
    inner: raft_net_tcp::ClusterClient,
    timeout_ms: u64,
}

impl ClusterClient {
    /// A client of the cluster whose members include `addrs` (`host:port` each).
    pub fn new(addrs: Vec<String>, cluster_id: u64) -> ClusterClient {
        ClusterClient {
            inner: raft_net_tcp::ClusterClient::new(addrs, cluster_id),
            timeout_ms: FIND_LEADER_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Connects with TLS: `tls` holds the CA the members' certificates must chain to and,
    /// for clusters that require one, this client's certificate (`None`: plaintext).
    pub fn with_tls(self, tls: Option<TlsConfig>) -> ClusterClient {
        match tls {
            Some(tls) => ClusterClient {
                inner: self.inner.with_tls(tls),
                ..self
            },
            None => self,
        }
    }

    /// Changes how long a request looks for a leader.
    pub fn with_timeout_ms(self, timeout_ms: u64) -> ClusterClient {
        ClusterClient {
            inner: self.inner.with_leader_timeout_ms(timeout_ms),
            timeout_ms,
        }
    }

    /// Changes how long one request waits for its answer (use
    /// [`ADMIN_REQUEST_TIMEOUT_MS`] for membership changes).
    pub fn with_request_timeout_ms(self, timeout_ms: u64) -> ClusterClient {
        ClusterClient {
            inner: self.inner.with_request_timeout_ms(timeout_ms),
            ..self
        }
    }

    /// The known members' addresses.
    pub fn addrs(&self) -> &[String] {
        self.inner.addrs()
    }

    /// Sends `request` to the server at `addr` only, no redirects or retries.
    pub async fn call_at(&self, addr: &str, request: &Request) -> Result<Reply, ClientError> {
        let idempotent = request.is_idempotent();
        let not_done = |last: String| ClientError::NoLeader {
            timeout_ms: 0,
            last,
        };
        let decoded = match self.inner.request_at(addr, request.encode()).await {
            Ok(ClientResponse::Ok(payload)) => match decode_outcome_bytes(&payload) {
                Ok(outcome) => classify(outcome, idempotent),
                Err(e) => return Err(ClientError::Protocol(e)),
            },
            Ok(ClientResponse::NotLeader { leader_addr, .. }) => Decoded::NotLeader(leader_addr),
            Ok(ClientResponse::Unavailable(why)) => Decoded::Unavailable(why),
            Ok(ClientResponse::OutcomeUnknown(why)) if idempotent => Decoded::OutcomeUnknown(why),
            Ok(ClientResponse::OutcomeUnknown(why)) => {
                return Err(ClientError::OutcomeUnknown(why))
            }
            Ok(ClientResponse::Error(reason)) => return Err(ClientError::Protocol(reason)),
            Err(e) if idempotent || e.never_sent() => return Err(not_done(format!("{addr}: {e}"))),
            Err(e) => {
                return Err(ClientError::OutcomeUnknown(format!(
                    "connection to {addr} failed after sending: {e}"
                )))
            }
        };
        match decoded {
            Decoded::Done(result) => result,
            Decoded::NotLeader(_) => Err(ClientError::Refused(ServiceError::NotLeader {
                leader: None,
                addr: None,
            })),
            Decoded::Unavailable(why) | Decoded::OutcomeUnknown(why) => Err(not_done(why)),
        }
    }

    /// Sends `request` to the leader (or to any member for requests any member serves),
    /// following redirects and retrying what is safe to retry.
    pub async fn call(&self, request: &Request) -> Result<Reply, ClientError> {
        let idempotent = request.is_idempotent();
        let idempotency = if idempotent {
            Idempotency::Idempotent
        } else {
            Idempotency::NotIdempotent
        };
        let decode = |payload: Bytes| match decode_outcome_bytes(&payload) {
            Ok(outcome) => classify(outcome, idempotent),
            Err(e) => Decoded::Done(Err(ClientError::Protocol(e))),
        };
        self.inner
            .request_with(request.encode(), idempotency, decode)
            .await?
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<(), ClientError> {
        self.write(KvCommand::Set {
            key,
            value,
            condition: SetCondition::Always,
            return_previous: false,
        })
        .await
        .map(|_| ())
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: if it is absent); returns whether
    /// it wrote and the value before.
    pub async fn cas(
        &self,
        key: Bytes,
        expected: Option<Bytes>,
        new: Bytes,
    ) -> Result<(bool, Option<Bytes>), ClientError> {
        let condition = match expected {
            Some(value) => SetCondition::IfEqual(value),
            None => SetCondition::IfAbsent,
        };
        match self
            .write(KvCommand::Set {
                key,
                value: new,
                condition,
                return_previous: true,
            })
            .await?
        {
            KvResponse::Set { written, previous } => Ok((written, previous)),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: Bytes) -> Result<bool, ClientError> {
        match self.write(KvCommand::Delete { keys: vec![key] }).await? {
            KvResponse::Deleted(n) => Ok(n > 0),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Runs a write command.
    pub async fn write(&self, command: KvCommand) -> Result<KvResponse, ClientError> {
        match self.call(&Request::Write(command)).await? {
            Reply::Write(response) => Ok(response),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: Bytes) -> Result<Option<Bytes>, ClientError> {
        let mut values = self.get_many(vec![key]).await?;
        Ok(values.pop().flatten())
    }

    /// Linearizable read of several keys.
    pub async fn get_many(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Bytes>>, ClientError> {
        let count = keys.len();
        match self.call(&Request::Get { keys }).await? {
            Reply::Values(values) if values.len() == count => Ok(values),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// The status of the server at `addr`.
    pub async fn status_at(&self, addr: &str) -> Result<StatusReport, ClientError> {
        match self.call_at(addr, &Request::Status).await? {
            Reply::Status(status) => Ok(*status),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// The status of the current leader, found by asking the members.
    pub async fn leader_status(&self) -> Result<StatusReport, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(self.timeout_ms);
        let mut last = String::from("no member answered");
        loop {
            let mut candidates = self.addrs().to_vec();
            if let Some(leader) = self.inner.leader() {
                candidates.insert(0, leader);
            }
            for addr in &candidates {
                match self.status_at(addr).await {
                    Ok(status) if status.role == "leader" => {
                        self.inner.set_leader(Some(addr.clone()));
                        return Ok(status);
                    }
                    Ok(status) => {
                        let leader = status
                            .leader
                            .and_then(|l| status.members.iter().find(|m| m.id == l));
                        if let Some(member) = leader {
                            if let Ok(s) = self.status_at(&member.addr).await {
                                if s.role == "leader" {
                                    self.inner.set_leader(Some(member.addr.clone()));
                                    return Ok(s);
                                }
                            }
                        }
                        last = format!("{addr} is {} and knows no leader", status.role);
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::NoLeader {
                    timeout_ms: self.timeout_ms,
                    last,
                });
            }
            sleep(RETRY_PAUSE).await;
        }
    }
}

/// What the service's answer means for the cluster client: its errors that say "not
/// executed" are redirects or retries; an unknown outcome is retried only for an idempotent
/// request; anything else goes to the caller.
fn classify(outcome: Outcome, idempotent: bool) -> Decoded<Result<Reply, ClientError>> {
    match outcome {
        Ok(reply) => Decoded::Done(Ok(reply)),
        Err(ServiceError::NotLeader { addr, .. }) => Decoded::NotLeader(addr),
        Err(ServiceError::NoLeader) => Decoded::NotLeader(None),
        Err(ServiceError::Unavailable(why)) => Decoded::Unavailable(why),
        // A server shutting down: another member may serve.
        Err(ServiceError::Failed(why)) => Decoded::Unavailable(why),
        Err(ServiceError::OutcomeUnknown(why)) if idempotent => Decoded::OutcomeUnknown(why),
        Err(ServiceError::OutcomeUnknown(why)) => {
            Decoded::Done(Err(ClientError::OutcomeUnknown(why)))
        }
        Err(e) => Decoded::Done(Err(ClientError::Refused(e))),
    }
}

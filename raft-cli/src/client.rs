//! [`ClusterClient`]: a native-protocol client that finds the leader itself.
//!
//! It remembers the last leader, follows "not the leader" redirects, and retries on other
//! members what is safe to retry: any request that provably did not reach a server, and
//! idempotent requests (reads, status, admin) after any failure. A write whose outcome is
//! unknown is returned as [`ClientError::OutcomeUnknown`], never retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft_net_tcp::{ClientResponse, TcpClient, TcpConfig};
use tokio::time::{sleep, Instant};

use crate::kv::{KvCommand, KvResponse, SetCondition};
use crate::proto::{decode_outcome_bytes, Reply, Request, ServiceError, StatusReport};
use crate::service::was_sent;

/// Default time a request keeps looking for a leader before it gives up.
pub const FIND_LEADER_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time one request waits for its answer: a little more than a node's own request
/// timeout (5 s), so the node's answer (even "outcome unknown") arrives first.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 7_000;
/// Time an admin request (membership change, snapshot) waits: longer than a node's
/// membership timeout (60 s), since catching a new server up can take that long.
pub const ADMIN_REQUEST_TIMEOUT_MS: u64 = 70_000;
/// Pause between attempts when no leader is known (an election takes a few hundred ms).
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

/// A client of a whole cluster.
#[derive(Debug)]
pub struct ClusterClient {
    addrs: Vec<String>,
    config: TcpConfig,
    clients: Mutex<HashMap<String, Arc<TcpClient>>>,
    leader: Mutex<Option<String>>,
    timeout_ms: u64,
}

enum Attempt {
    Done(Reply),
    Redirect(Option<String>),
    Retry(String),
    Fail(ClientError),
}

impl ClusterClient {
    /// A client of the cluster whose members include `addrs` (`host:port` each).
    pub fn new(addrs: Vec<String>, cluster_id: u64) -> ClusterClient {
        let mut config = TcpConfig::new(cluster_id, 0);
        config.request_timeout_ms = REQUEST_TIMEOUT_MS_DEFAULT;
        ClusterClient {
            addrs,
            config,
            clients: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
            timeout_ms: FIND_LEADER_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Changes how long a request looks for a leader.
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> ClusterClient {
        self.timeout_ms = timeout_ms;
        self
    }

    /// Changes how long one request waits for its answer (use
    /// [`ADMIN_REQUEST_TIMEOUT_MS`] for membership changes).
    pub fn with_request_timeout_ms(mut self, timeout_ms: u64) -> ClusterClient {
        self.config.request_timeout_ms = timeout_ms.max(1);
        self
    }

    /// The known members' addresses.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    fn client(&self, addr: &str) -> Result<Arc<TcpClient>, ClientError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(addr) {
            return Ok(client.clone());
        }
        let client = TcpClient::new(addr, self.config.clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let client = Arc::new(client);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// Sends `request` to the server at `addr` only, no redirects or retries.
    pub async fn call_at(&self, addr: &str, request: &Request) -> Result<Reply, ClientError> {
        match self.attempt(addr, request, request.encode()).await {
            Attempt::Done(reply) => Ok(reply),
            Attempt::Redirect(_) => Err(ClientError::Refused(ServiceError::NotLeader {
                leader: None,
                addr: None,
            })),
            Attempt::Retry(why) => Err(ClientError::NoLeader {
                timeout_ms: 0,
                last: why,
            }),
            Attempt::Fail(e) => Err(e),
        }
    }

    /// Sends `request` to the leader (or to any member for requests any member serves),
    /// following redirects and retrying what is safe to retry.
    pub async fn call(&self, request: &Request) -> Result<Reply, ClientError> {
        if self.addrs.is_empty() {
            return Err(ClientError::NoLeader {
                timeout_ms: 0,
                last: "the client knows no member address".into(),
            });
        }
        let payload = request.encode();
        let deadline = Instant::now() + Duration::from_millis(self.timeout_ms);
        let mut next = 0usize;
        let mut last;
        loop {
            let known = self
                .leader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let addr = match known {
                Some(addr) => addr,
                None => {
                    next += 1;
                    self.addrs[next % self.addrs.len()].clone()
                }
            };
            match self.attempt(&addr, request, payload.clone()).await {
                Attempt::Done(reply) => {
                    if request.needs_leader() {
                        self.set_leader(Some(addr));
                    }
                    return Ok(reply);
                }
                Attempt::Redirect(Some(leader)) if leader != addr => {
                    self.set_leader(Some(leader));
                    continue;
                }
                Attempt::Redirect(_) => {
                    last = format!("{addr} knows no leader");
                    self.set_leader(None);
                }
                Attempt::Retry(why) => {
                    last = why;
                    self.set_leader(None);
                }
                Attempt::Fail(e) => return Err(e),
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

    fn set_leader(&self, addr: Option<String>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    async fn attempt(&self, addr: &str, request: &Request, payload: Bytes) -> Attempt {
        let client = match self.client(addr) {
            Ok(client) => client,
            Err(e) => return Attempt::Fail(e),
        };
        let response = match client.request(payload).await {
            Ok(response) => response,
            Err(e) if request.is_idempotent() || !was_sent(&e) => {
                return Attempt::Retry(format!("{addr}: {e}"))
            }
            Err(e) => {
                return Attempt::Fail(ClientError::OutcomeUnknown(format!(
                    "connection to {addr} failed after sending: {e}"
                )))
            }
        };
        let outcome = match response {
            ClientResponse::Ok(bytes) => match decode_outcome_bytes(&bytes) {
                Ok(outcome) => outcome,
                Err(e) => return Attempt::Fail(ClientError::Protocol(e)),
            },
            ClientResponse::NotLeader { leader_addr, .. } => return Attempt::Redirect(leader_addr),
            ClientResponse::Error(reason) => return Attempt::Fail(ClientError::Protocol(reason)),
        };
        match outcome {
            Ok(reply) => Attempt::Done(reply),
            Err(ServiceError::NotLeader { addr, .. }) => Attempt::Redirect(addr),
            Err(ServiceError::NoLeader) => Attempt::Redirect(None),
            Err(ServiceError::Unavailable(why)) => Attempt::Retry(format!("{addr}: {why}")),
            Err(ServiceError::OutcomeUnknown(why)) if !request.is_idempotent() => {
                Attempt::Fail(ClientError::OutcomeUnknown(why))
            }
            Err(ServiceError::OutcomeUnknown(why)) => Attempt::Retry(why),
            // A server shutting down: another member may serve.
            Err(ServiceError::Failed(why)) => Attempt::Retry(format!("{addr}: {why}")),
            Err(e) => Attempt::Fail(ClientError::Refused(e)),
        }
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
            let mut candidates = self.addrs.clone();
            if let Some(leader) = self
                .leader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                candidates.insert(0, leader);
            }
            for addr in &candidates {
                match self.status_at(addr).await {
                    Ok(status) if status.role == "leader" => {
                        self.set_leader(Some(addr.clone()));
                        return Ok(status);
                    }
                    Ok(status) => {
                        let leader = status
                            .leader
                            .and_then(|l| status.members.iter().find(|m| m.id == l));
                        if let Some(member) = leader {
                            if let Ok(s) = self.status_at(&member.addr).await {
                                if s.role == "leader" {
                                    self.set_leader(Some(member.addr.clone()));
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

//! The Redis-protocol (RESP2) front end: a connection loop over [`crate::resp`] and the
//! commands, executed through the [`Service`] (writes through the log, reads after a read
//! barrier, forwarded to the leader when needed).
//!
//! Commands: PING, ECHO, GET, SET (NX, XX, GET, IFEQ as in Valkey 8.1), DEL, EXISTS, INCR,
//! MGET, DBSIZE, INFO, and harmless answers to what `redis-cli` and `redis-benchmark` send at
//! start-up (COMMAND, CONFIG GET, CLIENT, SELECT 0). Requests of one connection run one at a
//! time, in order; replies to pipelined requests are written together.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::kv::{KvCommand, KvResponse, SetCondition};
use crate::proto::{Reply, Request, ServiceError};
use crate::resp::{parse_request, Value};
use crate::service::Service;

/// Default number of Redis connections served at once; more are told so and closed, as
/// Redis does with `maxclients`.
pub const CONNECTIONS_MAX_DEFAULT: u32 = 1024;
/// Bytes read from a socket per call.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Replies buffered before they are written even if more pipelined requests are waiting.
const REPLY_BUFFER_BYTES_MAX: usize = 1 << 20;

/// A running Redis endpoint.
#[derive(Debug)]
pub struct RedisServer {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RedisServer {
    /// Serves `listener` until [`RedisServer::shutdown`].
    pub fn start(
        listener: TcpListener,
        service: Arc<Service>,
        connections_max: u32,
    ) -> RedisServer {
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, service, connections_max, rx));
        RedisServer { shutdown, task }
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    service: Arc<Service>,
    connections_max: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(connections_max.max(1) as usize));
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
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
        connections.spawn(async move {
            debug!(%peer, "redis connection");
            if let Err(e) = serve_connection(socket, &service).await {
                debug!(%peer, error = %e, "redis connection closed");
            }
            drop(permit);
        });
    }
    info!("redis endpoint shut down");
    connections.shutdown().await;
}

async fn serve_connection(mut socket: TcpStream, service: &Service) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut output = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        loop {
            match parse_request(&mut input) {
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => {
                    let quit = args[0].eq_ignore_ascii_case(b"QUIT");
                    execute(service, args).await.encode(&mut output);
                    if quit {
                        socket.write_all(&output).await?;
                        return Ok(());
                    }
                    if output.len() >= REPLY_BUFFER_BYTES_MAX {
                        socket.write_all(&output).await?;
                        output.clear();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Value::error("ERR", e).encode(&mut output);
                    socket.write_all(&output).await?;
                    return Ok(());
                }
            }
        }
        if !output.is_empty() {
            socket.write_all(&output).await?;
            output.clear();
        }
        input.reserve(READ_CHUNK_BYTES);
        if socket.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

fn wrong_args(name: &str) -> Value {
    Value::error(
        "ERR",
        format!(
            "wrong number of arguments for '{}' command",
            name.to_lowercase()
        ),
    )
}

fn service_error(e: ServiceError) -> Value {
    match e {
        ServiceError::NoLeader | ServiceError::NotLeader { .. } => Value::error(
            "NOLEADER",
            "no leader: the cluster has no leader right now; retry later",
        ),
        ServiceError::OutcomeUnknown(why) => Value::error(
            "UNKNOWN",
            format!("the write's outcome is unknown ({why}); it may or may not have been applied"),
        ),
        ServiceError::Unavailable(why) => Value::error("TRYAGAIN", why),
        ServiceError::Invalid(why) => Value::error("ERR", why),
        ServiceError::Failed(why) => Value::error("ERR", format!("server failed: {why}")),
    }
}

/// Executes one command and returns its reply.
pub async fn execute(service: &Service, args: Vec<Bytes>) -> Value {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let argc = args.len();
    match name.as_str() {
        "PING" => match argc {
            1 => Value::Simple("PONG"),
            2 => Value::Bulk(args[1].clone()),
            _ => wrong_args(&name),
        },
        "ECHO" if argc == 2 => Value::Bulk(args[1].clone()),
        "GET" if argc == 2 => match read_values(service, vec![args[1].clone()]).await {
            Ok(mut values) => values.pop().unwrap_or(Value::Nil),
            Err(e) => e,
        },
        "MGET" if argc >= 2 => match read_values(service, args[1..].to_vec()).await {
            Ok(values) => Value::Array(values),
            Err(e) => e,
        },
        "SET" if argc >= 3 => set(service, args).await,
        "DEL" if argc >= 2 => {
            let keys = args[1..].to_vec();
            match write(service, KvCommand::Delete { keys }).await {
                Ok(KvResponse::Deleted(n)) => Value::Integer(n as i64),
                Ok(other) => unexpected(other),
                Err(e) => e,
            }
        }
        "INCR" if argc == 2 => {
            let command = KvCommand::Incr {
                key: args[1].clone(),
                delta: 1,
            };
            match write(service, command).await {
                Ok(KvResponse::Integer(n)) => Value::Integer(n),
                Ok(other) => unexpected(other),
                Err(e) => e,
            }
        }
        "EXISTS" if argc >= 2 => {
            count(
                service,
                Request::Exists {
                    keys: args[1..].to_vec(),
                },
            )
            .await
        }
        "DBSIZE" if argc == 1 => count(service, Request::DbSize).await,
        "INFO" => Value::Bulk(Bytes::from(info(service))),
        "COMMAND" => Value::Array(Vec::new()),
        "CONFIG" => config(&args),
        "CLIENT" | "READONLY" | "READWRITE" => Value::Simple("OK"),
        "SELECT" if argc == 2 => match &args[1][..] {
            b"0" => Value::Simple("OK"),
            _ => Value::error("ERR", "DB index is out of range"),
        },
        "QUIT" => Value::Simple("OK"),
        "ECHO" | "GET" | "MGET" | "SET" | "DEL" | "INCR" | "EXISTS" | "DBSIZE" | "SELECT" => {
            wrong_args(&name)
        }
        _ => {
            let shown: String = name.chars().take(64).collect();
            Value::error("ERR", format!("unknown command '{shown}'"))
        }
    }
}

fn unexpected(response: KvResponse) -> Value {
    match response {
        KvResponse::Error(why) => Value::error("ERR", why),
        other => Value::error("ERR", format!("unexpected state machine answer {other:?}")),
    }
}

async fn write(service: &Service, command: KvCommand) -> Result<KvResponse, Value> {
    match service.execute_or_forward(Request::Write(command)).await {
        Ok(Reply::Write(response)) => Ok(response),
        Ok(other) => Err(Value::error("ERR", format!("unexpected reply {other:?}"))),
        Err(e) => Err(service_error(e)),
    }
}

async fn read_values(service: &Service, keys: Vec<Bytes>) -> Result<Vec<Value>, Value> {
    match service.execute_or_forward(Request::Get { keys }).await {
        Ok(Reply::Values(values)) => Ok(values
            .into_iter()
            .map(|v| v.map_or(Value::Nil, Value::Bulk))
            .collect()),
        Ok(other) => Err(Value::error("ERR", format!("unexpected reply {other:?}"))),
        Err(e) => Err(service_error(e)),
    }
}

async fn count(service: &Service, request: Request) -> Value {
    match service.execute_or_forward(request).await {
        Ok(Reply::Count(n)) => Value::Integer(n as i64),
        Ok(other) => Value::error("ERR", format!("unexpected reply {other:?}")),
        Err(e) => service_error(e),
    }
}

/// `SET key value [NX | XX | IFEQ comparison] [GET] [KEEPTTL]`.
async fn set(service: &Service, args: Vec<Bytes>) -> Value {
    let mut condition = SetCondition::Always;
    let mut get = false;
    let mut i = 3;
    while i < args.len() {
        let option = args[i].to_ascii_uppercase();
        let exclusive = condition == SetCondition::Always;
        match &option[..] {
            b"NX" if exclusive => condition = SetCondition::IfAbsent,
            b"XX" if exclusive => condition = SetCondition::IfPresent,
            b"IFEQ" if exclusive && i + 1 < args.len() => {
                i += 1;
                condition = SetCondition::IfEqual(args[i].clone());
            }
            b"GET" if !get => get = true,
            b"KEEPTTL" => {}
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                return Value::error("ERR", "expiration options are not supported")
            }
            _ => return Value::error("ERR", "syntax error"),
        }
        i += 1;
    }
    let command = KvCommand::Set {
        key: args[1].clone(),
        value: args[2].clone(),
        condition,
        return_previous: get,
    };
    match write(service, command).await {
        Ok(KvResponse::Set { previous, .. }) if get => previous.map_or(Value::Nil, Value::Bulk),
        Ok(KvResponse::Set { written: true, .. }) => Value::Simple("OK"),
        Ok(KvResponse::Set { written: false, .. }) => Value::Nil,
        Ok(other) => unexpected(other),
        Err(e) => e,
    }
}

/// `CONFIG GET name...`: what redis-benchmark asks for, with harmless values.
fn config(args: &[Bytes]) -> Value {
    if args.len() < 3 || !args[1].eq_ignore_ascii_case(b"GET") {
        return Value::error("ERR", "only CONFIG GET is supported");
    }
    let mut pairs = Vec::new();
    for name in &args[2..] {
        let value: &'static [u8] = match &name.to_ascii_lowercase()[..] {
            b"save" => b"",
            b"appendonly" => b"no",
            b"databases" => b"1",
            _ => continue,
        };
        pairs.push(Value::Bulk(name.clone()));
        pairs.push(Value::Bulk(Bytes::from_static(value)));
    }
    Value::Array(pairs)
}

/// The INFO text: a `# Server` section for tools and the `# Raft` section.
pub fn info(service: &Service) -> String {
    let status = service.status();
    let members: Vec<String> = status
        .members
        .iter()
        .map(|m| {
            let kind = if m.voter { "voter" } else { "learner" };
            format!("{}@{}:{kind}", m.id, m.addr)
        })
        .collect();
    let leader = status
        .leader
        .map_or(String::from("none"), |l| l.to_string());
    format!(
        "# Server\r\nredis_version:7.2.0\r\nraft_cli_version:{}\r\n\r\n# Raft\r\n\
         raft_role:{}\r\nraft_node_id:{}\r\nraft_leader_id:{}\r\nraft_term:{}\r\n\
         raft_commit_index:{}\r\nraft_applied_index:{}\r\nraft_members:{}\r\n\r\n\
         # Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n",
        env!("CARGO_PKG_VERSION"),
        status.role,
        status.id,
        leader,
        status.term,
        status.commit_index,
        status.applied_index,
        members.join(","),
        status.keys,
    )
}

//! The leader-following `ClusterClient` against scripted servers: it follows redirects and
//! remembers the leader, retries a request on another member only when that is safe (the
//! request never reached a server, a server said it did not execute it, or the request is
//! idempotent), and reports an unknown outcome otherwise.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use raft_net_tcp::handshake::{Channel, Hello, HELLO_BYTES};
use raft_net_tcp::{
    ClientHandler, ClientRequest, ClientResponse, ClusterClient, ClusterError, Decoded,
    Idempotency, TcpConfig, TcpServer,
};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};

/// Answers with the scripted responses in turn, then repeats the last one; counts requests.
struct Scripted {
    script: Mutex<VecDeque<ClientResponse>>,
    requests: AtomicU64,
}

#[async_trait]
impl ClientHandler for Scripted {
    async fn handle(&self, _request: ClientRequest) -> ClientResponse {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut script = self.script.lock().unwrap();
        if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script.front().cloned().expect("a scripted answer")
        }
    }
}

struct Member {
    server: TcpServer,
    handler: Arc<Scripted>,
}

impl Member {
    fn addr(&self) -> String {
        self.server.local_addr().to_string()
    }

    fn requests(&self) -> u64 {
        self.handler.requests.load(Ordering::SeqCst)
    }

    fn answer(&self, responses: impl IntoIterator<Item = ClientResponse>) {
        *self.handler.script.lock().unwrap() = responses.into_iter().collect();
    }
}

async fn member(id: u64, responses: impl IntoIterator<Item = ClientResponse>) -> Member {
    let handler = Arc::new(Scripted {
        script: Mutex::new(responses.into_iter().collect()),
        requests: AtomicU64::new(0),
    });
    let (node, _messages) = Recorder::new(Duration::ZERO);
    let server = TcpServer::bind("127.0.0.1:0", config(id), node, Some(handler.clone()))
        .await
        .expect("server starts");
    Member { server, handler }
}

fn ok(payload: &'static [u8]) -> ClientResponse {
    ClientResponse::Ok(Bytes::from_static(payload))
}

fn not_leader(addr: Option<String>) -> ClientResponse {
    ClientResponse::NotLeader {
        leader_id: None,
        leader_addr: addr,
    }
}

fn client(addrs: &[String]) -> ClusterClient {
    ClusterClient::with_config(addrs, config(0))
        .unwrap()
        .with_leader_timeout_ms(2_000)
}

/// An address where connections are refused: a socket bound but not listening, which keeps
/// the port from being handed to another test's server meanwhile.
fn dead_addr() -> (String, TcpSocket) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap().to_string(), socket)
}

const WRITE: Idempotency = Idempotency::NotIdempotent;
const READ: Idempotency = Idempotency::Idempotent;

#[tokio::test]
async fn redirects_are_followed_and_the_leader_is_remembered() {
    let leader = member(2, [ok(b"done")]).await;
    let follower = member(1, [not_leader(Some(leader.addr()))]).await;
    let client = client(&[follower.addr()]);
    let payload = Bytes::from_static(b"incr");
    assert_eq!(
        client.request(payload.clone(), WRITE).await.unwrap(),
        "done"
    );
    assert_eq!(client.leader(), Some(leader.addr()));
    assert_eq!(client.request(payload, WRITE).await.unwrap(), "done");
    assert_eq!(
        follower.requests(),
        1,
        "the second request went straight to the leader"
    );
    assert_eq!(leader.requests(), 2);
}

#[tokio::test]
async fn a_write_goes_to_another_member_when_the_first_cannot_be_reached() {
    let live = member(2, [ok(b"done")]).await;
    let (dead, _bound) = dead_addr();
    let client = client(&[dead.clone(), live.addr()]);
    for _ in 0..4 {
        // The leader it knows of died: connecting there is refused.
        client.set_leader(Some(dead.clone()));
        let answer = client.request(Bytes::from_static(b"incr"), WRITE).await;
        assert_eq!(answer.unwrap(), "done");
    }
    assert_eq!(live.requests(), 4, "each write executed once");
}

#[tokio::test]
async fn answers_that_say_nothing_was_done_are_retried_and_a_write_executes_once() {
    let busy = ClientResponse::Unavailable("backpressure".into());
    let leader = member(1, [busy.clone(), not_leader(None), busy, ok(b"done")]).await;
    let client = client(&[leader.addr()]);
    let answer = client.request(Bytes::from_static(b"incr"), WRITE).await;
    assert_eq!(answer.unwrap(), "done");
    assert_eq!(leader.requests(), 4);
}

#[tokio::test]
async fn an_unknown_outcome_is_reported_for_a_write_and_retried_for_a_read() {
    let unknown = ClientResponse::OutcomeUnknown("leader changed".into());
    let leader = member(1, [unknown.clone(), ok(b"done")]).await;
    let client = client(&[leader.addr()]);
    let write = client.request(Bytes::from_static(b"incr"), WRITE).await;
    assert!(
        matches!(&write, Err(ClusterError::OutcomeUnknown(why)) if why == "leader changed"),
        "{write:?}"
    );
    assert_eq!(
        leader.requests(),
        1,
        "a write of unknown outcome is not sent again"
    );

    leader.answer([unknown, ok(b"value")]);
    let read = client.request(Bytes::from_static(b"get"), READ).await;
    assert_eq!(read.unwrap(), "value");
    assert_eq!(leader.requests(), 3);
}

#[tokio::test]
async fn a_refusal_is_final() {
    let leader = member(1, [ClientResponse::Error("malformed".into()), ok(b"done")]).await;
    let client = client(&[leader.addr()]);
    let refused = client.request(Bytes::from_static(b"??"), WRITE).await;
    assert!(
        matches!(&refused, Err(ClusterError::Refused(why)) if why == "malformed"),
        "{refused:?}"
    );
    assert_eq!(leader.requests(), 1);
}

/// Accepts client connections, reads one request on each and closes without answering: the
/// request reached the server, which may have executed it.
async fn lost_answers_server() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; HELLO_BYTES];
            stream.read_exact(&mut hello).await.unwrap();
            let request = Hello::decode(&hello);
            let accepted = Hello::reply(CLUSTER, 1, &request, &Ok(Channel::Client));
            stream.write_all(&accepted.encode()).await.unwrap();
            if read_frame(&mut stream).await.is_some() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (addr, requests)
}

#[tokio::test]
async fn a_write_whose_connection_breaks_after_sending_is_not_sent_again() {
    let (lossy, received) = lost_answers_server().await;
    let other = member(2, [ok(b"done")]).await;
    let client = client(&[other.addr()]);
    client.set_leader(Some(lossy.clone()));
    let write = client.request(Bytes::from_static(b"incr"), WRITE).await;
    assert!(
        matches!(&write, Err(ClusterError::OutcomeUnknown(why)) if why.contains(&lossy)),
        "{write:?}"
    );
    assert_eq!(received.load(Ordering::SeqCst), 1);
    assert_eq!(other.requests(), 0, "the write went nowhere else");
    assert_eq!(client.leader(), None, "the next request asks around again");

    // A read may be executed twice: it goes on to another member.
    client.set_leader(Some(lossy));
    let read = client.request(Bytes::from_static(b"get"), READ).await;
    assert_eq!(read.unwrap(), "done");
    assert_eq!(received.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_a_leader_the_client_gives_up_after_its_time_limit() {
    let a = member(1, [not_leader(None)]).await;
    let b = member(2, [not_leader(None)]).await;
    let client = client(&[a.addr(), b.addr()]).with_leader_timeout_ms(300);
    let error = client
        .request(Bytes::from_static(b"incr"), WRITE)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClusterError::Unavailable { timeout_ms: 300, last } if last.contains("knows no leader")),
        "{error:?}"
    );
    let asked = a.requests() + b.requests();
    assert!(asked >= 2, "both members were asked ({asked})");
}

#[tokio::test]
async fn members_that_name_each_other_do_not_make_the_client_spin() {
    let a = member(1, [ok(b"unused")]).await;
    let b = member(2, [not_leader(Some(a.addr()))]).await;
    a.answer([not_leader(Some(b.addr()))]);
    let client = client(&[a.addr()]).with_leader_timeout_ms(500);
    let error = client
        .request(Bytes::from_static(b"incr"), WRITE)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClusterError::Unavailable { .. }),
        "{error:?}"
    );
    // Three redirects, then a 25 ms pause: about 60 requests in 500 ms. Without the pause
    // the two servers answer thousands.
    let asked = a.requests() + b.requests();
    assert!(asked < 300, "{asked} requests in 500 ms");
}

#[tokio::test]
async fn an_application_can_say_which_of_its_answers_mean_retry() {
    // The application carries its errors inside Ok payloads: "busy" means not executed.
    let leader = member(1, [ok(b"busy"), ok(b"busy"), ok(b"42")]).await;
    let client = client(&[leader.addr()]);
    let decode = |payload: Bytes| match &payload[..] {
        b"busy" => Decoded::Unavailable("busy".into()),
        digits => Decoded::Done(std::str::from_utf8(digits).unwrap().parse::<u64>().unwrap()),
    };
    let value = client
        .request_with(Bytes::from_static(b"incr"), WRITE, decode)
        .await
        .unwrap();
    assert_eq!(value, 42);
    assert_eq!(leader.requests(), 3);
}

#[tokio::test]
async fn a_client_without_addresses_fails_at_once() {
    let client = ClusterClient::new(Vec::<String>::new(), CLUSTER);
    let error = client
        .request(Bytes::from_static(b"incr"), WRITE)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        ClusterError::Unavailable { timeout_ms: 0, .. }
    ));
    let mut invalid = TcpConfig::new(CLUSTER, 0);
    invalid.request_timeout_ms = 0;
    assert!(ClusterClient::with_config(["127.0.0.1:1"], invalid).is_err());
}

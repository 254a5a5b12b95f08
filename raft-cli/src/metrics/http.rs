//! A minimal HTTP/1.1 server for the operator endpoints: `GET` (and `HEAD`) of `/metrics`,
//! `/health` and `/ready`, one request per connection, each answered with
//! `Connection: close`. Scrapers and probes open a connection per request anyway, and a
//! server that never keeps a connection needs no request framing beyond the head.
//!
//! Everything is bounded: [`CONNECTIONS_MAX`] connections at once (more are answered 503 at
//! once, without reading their request), a request head of at most [`REQUEST_HEAD_BYTES_MAX`] bytes (431 beyond), and
//! [`REQUEST_TIMEOUT_MS`] for the whole exchange from the accept to the last byte written
//! (408 when the request has not arrived whole by then). No header is interpreted and no
//! body is read: the request line says everything these endpoints need.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};

/// Connections served at once; more are answered 503 without reading their request. A
/// Prometheus server and a few probes need a handful.
pub const CONNECTIONS_MAX: usize = 16;
/// Bytes of a request head (request line and headers), at most: curl, Prometheus and probes
/// send a few hundred.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;
/// Milliseconds from the accept until the response is written, at most: the request must
/// arrive whole and the response be taken within it (Prometheus' default scrape timeout is
/// 10 s; a probe's, 1 s).
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Pause after a failed accept (say, out of file descriptors) before the next one.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 1024;
/// The content type of `/metrics`: the Prometheus text format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The content type of every other answer.
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// A probe's answer: 200 when it passes, 503 when not, with a line saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Whether it passes.
    pub pass: bool,
    /// Why (the response body).
    pub text: String,
}

impl Probe {
    /// A passing probe.
    pub fn pass(text: impl Into<String>) -> Probe {
        Probe {
            pass: true,
            text: text.into(),
        }
    }

    /// A failing probe.
    pub fn fail(text: impl Into<String>) -> Probe {
        Probe {
            pass: false,
            text: text.into(),
        }
    }
}

/// What the endpoints answer.
#[async_trait]
pub trait Endpoints: Send + Sync + 'static {
    /// The body of `/metrics`, in the Prometheus text format (version 0.0.4).
    fn metrics(&self) -> String;
    /// `/health`: whether the process serves (liveness).
    fn health(&self) -> Probe;
    /// `/ready`: whether the node should receive traffic (readiness).
    async fn ready(&self) -> Probe;
}

/// A running HTTP endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Serves `listener` until [`MetricsServer::shutdown`]. Must be called inside a tokio
    /// runtime.
    pub fn start(
        listener: TcpListener,
        endpoints: Arc<dyn Endpoints>,
    ) -> io::Result<MetricsServer> {
        let local_addr = listener.local_addr()?;
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, endpoints, stop));
        Ok(MetricsServer {
            local_addr,
            shutdown,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes the connections in progress (a scrape cut short is
    /// retried at the next interval).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    endpoints: Arc<dyn Endpoints>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Without waiting: a client that does not read cannot hold up the accept loop.
            let busy = Response::text(Status::Unavailable, "too many connections\n");
            let _ = socket.try_write(&busy.encode(false));
            continue;
        };
        let endpoints = endpoints.clone();
        connections.spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS);
            if let Err(e) = serve(socket, endpoints.as_ref(), deadline).await {
                debug!(%peer, error = %e, "metrics endpoint: connection failed");
            }
            drop(permit);
        });
    }
    connections.shutdown().await;
}

/// Reads one request, answers it and closes the connection, all before `deadline`.
async fn serve(
    mut socket: TcpStream,
    endpoints: &dyn Endpoints,
    deadline: Instant,
) -> io::Result<()> {
    let head = match timeout_at(deadline, read_head(&mut socket)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return Ok(()), // Closed before a whole request: nobody to answer.
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            // Time is up: a short answer if the socket takes it at once, and done.
            let late = Response::error(Status::RequestTimeout);
            let _ = socket.try_write(&late.encode(false));
            return Ok(());
        }
    };
    let (response, head_only) = match head.and_then(|head| parse_request(&head)) {
        Ok(request) => (
            route(&request, endpoints).await,
            request.method == Method::Head,
        ),
        Err(status) => (Response::error(status), false),
    };
    let bytes = response.encode(head_only);
    match timeout_at(deadline, socket.write_all(&bytes)).await {
        Ok(written) => written?,
        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
    }
    socket.shutdown().await?;
    // Closing a socket with unread bytes (the rest of a refused head) makes the kernel reset
    // the connection, and a reset can destroy the answer before the client reads it: read
    // until the client closes, or the time is up.
    let _ = timeout_at(deadline, drain(&mut socket)).await;
    Ok(())
}

/// Reads and drops whatever the client still sends, until it closes.
async fn drain(socket: &mut TcpStream) -> io::Result<()> {
    let mut scratch = [0u8; READ_CHUNK_BYTES];
    while socket.read(&mut scratch).await? > 0 {}
    Ok(())
}

/// Reads until the blank line that ends a request head; `Ok(None)` if the client closed
/// first, `Err(431)` (as the outer `Ok`) when the head grows past the limit.
async fn read_head(socket: &mut TcpStream) -> io::Result<Option<Result<Vec<u8>, Status>>> {
    let mut head = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        let read = socket.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        let searched_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = find(&head[searched_from..], b"\r\n\r\n") {
            head.truncate(searched_from + end);
            return Ok(Some(Ok(head)));
        }
        if head.len() >= REQUEST_HEAD_BYTES_MAX {
            return Ok(Some(Err(Status::HeadTooLarge)));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
}

/// What the endpoints need of a request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: Method,
    /// The path, without the query.
    path: String,
}

/// Parses a request head (without its final blank line): the request line must be
/// `METHOD SP /path[?query] SP HTTP/1.x` in ASCII; the headers are not looked at.
fn parse_request(head: &[u8]) -> Result<Request, Status> {
    let line_end = find(head, b"\r\n").unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| Status::BadRequest)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Err(Status::VersionNotSupported),
        _ => return Err(Status::BadRequest),
    }
    if !target.starts_with('/') || !target.is_ascii() {
        return Err(Status::BadRequest);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            return Err(Status::MethodNotAllowed)
        }
        _ => return Err(Status::BadRequest),
    };
    let path = target.split('?').next().unwrap_or(target);
    Ok(Request {
        method,
        path: path.to_string(),
    })
}

async fn route(request: &Request, endpoints: &dyn Endpoints) -> Response {
    match request.path.as_str() {
        "/metrics" => Response {
            status: Status::Ok,
            content_type: METRICS_CONTENT_TYPE,
            body: endpoints.metrics().into_bytes(),
        },
        "/health" => Response::probe(endpoints.health()),
        "/ready" => Response::probe(endpoints.ready().await),
        _ => Response::text(
            Status::NotFound,
            "not found: try /metrics, /health or /ready\n",
        ),
    }
}

/// The statuses this server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadTooLarge,
    Unavailable,
    VersionNotSupported,
}

impl Status {
    fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::HeadTooLarge => 431,
            Status::Unavailable => 503,
            Status::VersionNotSupported => 505,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::HeadTooLarge => "Request Header Fields Too Large",
            Status::Unavailable => "Service Unavailable",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

struct Response {
    status: Status,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: Status, body: &str) -> Response {
        Response {
            status,
            content_type: TEXT_CONTENT_TYPE,
            body: body.as_bytes().to_vec(),
        }
    }

    /// An error answer whose body is the status's reason.
    fn error(status: Status) -> Response {
        Response::text(status, &format!("{}\n", status.reason()))
    }

    fn probe(probe: Probe) -> Response {
        let status = if probe.pass {
            Status::Ok
        } else {
            Status::Unavailable
        };
        Response::text(status, &format!("{}\n", probe.text))
    }

    /// The response's bytes; without the body (its length still announced) for `HEAD`.
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let allow = match self.status {
            Status::MethodNotAllowed => "Allow: GET, HEAD\r\n",
            _ => "",
        };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
             Connection: close\r\n\r\n",
            self.status.code(),
            self.status.reason(),
            self.content_type,
            self.body.len(),
        );
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        ready: bool,
    }

    #[async_trait]
    impl Endpoints for Fixed {
        fn metrics(&self) -> String {
            "# TYPE up gauge\nup 1\n".into()
        }

        fn health(&self) -> Probe {
            Probe::pass("ok")
        }

        async fn ready(&self) -> Probe {
            if self.ready {
                Probe::pass("ready")
            } else {
                Probe::fail("not ready: no leader known")
            }
        }
    }

    async fn server(ready: bool) -> MetricsServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        MetricsServer::start(listener, Arc::new(Fixed { ready })).unwrap()
    }

    /// Sends `request` and reads the whole answer (the server closes after it).
    async fn exchange(server: &MetricsServer, request: &[u8]) -> String {
        let mut socket = TcpStream::connect(server.local_addr()).await.unwrap();
        socket.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    fn status_line(answer: &str) -> &str {
        answer.split("\r\n").next().unwrap()
    }

    #[tokio::test]
    async fn the_endpoints_answer_get_and_head() {
        let server = server(false).await;
        let metrics = exchange(&server, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(metrics.contains("Content-Length: 21\r\nConnection: close\r\n\r\n"));
        assert!(
            metrics.ends_with("\r\n\r\n# TYPE up gauge\nup 1\n"),
            "{metrics}"
        );
        let health = exchange(&server, b"HEAD /health HTTP/1.0\r\n\r\n").await;
        assert_eq!(
            health,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\n",
            "a HEAD answer announces the body it leaves out"
        );
        let ready = exchange(&server, b"GET /ready HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&ready), "HTTP/1.1 503 Service Unavailable");
        assert!(ready.ends_with("not ready: no leader known\n"));
        let ready = exchange(&self::server(true).await, b"GET /ready HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&ready), "HTTP/1.1 200 OK");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn bad_requests_get_the_status_that_says_why() {
        let server = server(true).await;
        let cases: [(&[u8], &str); 8] = [
            (b"GET /nope HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (
                b"GET /metrics HTTP/2.0\r\n\r\n",
                "HTTP/1.1 505 HTTP Version Not Supported",
            ),
            (
                b"GET  /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
            (b"GET metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"get /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (
                b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
        ];
        for (request, expected) in cases {
            let answer = exchange(&server, request).await;
            assert_eq!(status_line(&answer), expected, "{request:?}");
        }
        let not_allowed = exchange(&server, b"DELETE /ready HTTP/1.1\r\n\r\n").await;
        assert!(
            not_allowed.contains("\r\nAllow: GET, HEAD\r\n"),
            "{not_allowed}"
        );
    }

    #[tokio::test]
    async fn a_request_head_over_the_limit_is_refused_without_reading_further() {
        let server = server(true).await;
        let mut request = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
        request.resize(REQUEST_HEAD_BYTES_MAX, b'a');
        let mut socket = TcpStream::connect(server.local_addr()).await.unwrap();
        socket.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert_eq!(
            status_line(&answer),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
    }

    /// A request that never ends is answered 408 once the exchange's time is up (the
    /// clock is paused: tokio moves it on while every task waits).
    #[tokio::test(start_paused = true)]
    async fn a_request_that_never_ends_is_answered_408_after_the_timeout() {
        let server = server(true).await;
        let started = Instant::now();
        let answer = exchange(&server, b"GET /metrics HTTP/1.1\r\nHost: a\r\n").await;
        assert_eq!(status_line(&answer), "HTTP/1.1 408 Request Timeout");
        assert!(started.elapsed() >= Duration::from_millis(REQUEST_TIMEOUT_MS));
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_answered_503_at_once() {
        let server = server(true).await;
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS_MAX {
            held.push(TcpStream::connect(server.local_addr()).await.unwrap());
        }
        // Nothing is sent: the refused connection's request would not be read.
        let answer = exchange(&server, b"").await;
        assert_eq!(status_line(&answer), "HTTP/1.1 503 Service Unavailable");
        assert!(answer.ends_with("too many connections\n"));
        drop(held);
        // The places are free again once those connections close.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = exchange(&server, b"GET /health HTTP/1.1\r\n\r\n").await;
            if status_line(&answer) == "HTTP/1.1 200 OK" {
                break;
            }
            assert!(Instant::now() < deadline, "{answer}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

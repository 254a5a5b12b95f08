//! One Redis connection: reads requests into a buffer that a [`RequestParser`] works through
//! as they arrive, executes them one at a time, and writes the replies, with a deadline on
//! every wait.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use raft_net_tcp::tls::tokio_rustls::server::TlsStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant, Sleep};

use super::cmd::{command_label, respond, Context};
use super::session::{Clients, Session};
use super::{error_kind, RedisLimits};
use crate::resp::{ReplyBuffer, RequestParser, Value};
use crate::service::Service;

/// Bytes of buffer room made for each read from the socket.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Replies buffered before they are written even if more pipelined requests are waiting.
const REPLY_BUFFER_BYTES_MAX: usize = 1 << 20;
/// Buffer memory a connection keeps while it waits for the next request, at most: a buffer
/// that grew past it for a large request or reply is freed once empty, so a thousand idle
/// connections that each once moved megabytes do not hold them.
const RETAINED_BUFFER_BYTES_MAX: usize = 64 * 1024;

/// Why a connection ended (without an I/O error).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The client closed it.
    Closed,
    /// QUIT.
    Quit,
    /// The request was not valid RESP; the client got a protocol error.
    ProtocolError,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// A request did not arrive whole within the request read timeout.
    RequestTooSlow,
    /// The replies were not read for the idle timeout.
    RepliesUnread,
    /// The endpoint shut down (at a request boundary).
    Shutdown,
}

/// Serves one connection until it ends; requests it received are answered first.
pub(super) async fn serve(
    socket: Socket,
    service: &Service,
    clients: std::sync::Arc<Clients>,
    limits: RedisLimits,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<End> {
    let mut session = Session::open(clients, socket.peer_addr()?, socket.local_addr()?);
    let mut connection = Connection::new(socket, limits);
    let mut cx = Context {
        service,
        session: &mut session,
    };
    let served = async {
        loop {
            if let Some(end) = connection.answer_received(&mut cx).await? {
                return Ok(end);
            }
            if *shutdown.borrow() {
                return Ok(End::Shutdown);
            }
            if let Some(end) = connection.read(&mut shutdown).await? {
                return Ok(end);
            }
        }
    };
    let ended: io::Result<End> = served.await;
    match ended {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(End::RepliesUnread),
        ended => ended,
    }
}

/// What a connection's wait for bytes ended with.
enum Wait {
    /// A read from the socket.
    Read(io::Result<usize>),
    /// The endpoint shuts down.
    Shutdown,
    /// The timer fired (the deadline may have moved since it was set).
    Timer,
}

/// A connection's socket: plain TCP, or TLS over TCP (boxed: a TLS session is large, and
/// only TLS connections pay for the box).
pub(crate) enum Socket {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    /// The TCP connection under the socket.
    fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Tcp(socket) => socket,
            Socket::Tls(socket) => socket.get_ref().0,
        }
    }

    /// The client's address.
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp().peer_addr()
    }

    /// This end's address.
    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp().local_addr()
    }

    /// Waits for bytes and reads them into `input`. A TCP connection without a buffer (new,
    /// or its buffer was just freed) waits until bytes are there before it makes one, so an
    /// idle connection holds no buffer; one with a buffer reads straight into it. A TLS
    /// session keeps buffers of its own anyway, so its reads always make room first.
    /// Cancel safe: bytes are only ever taken into `input`.
    async fn read_into(&mut self, input: &mut BytesMut) -> io::Result<usize> {
        match self {
            Socket::Tcp(socket) if input.capacity() == 0 => {
                socket.readable().await?;
                input.reserve(READ_CHUNK_BYTES);
                socket.try_read_buf(input)
            }
            Socket::Tcp(socket) => {
                input.reserve(READ_CHUNK_BYTES);
                socket.read_buf(input).await
            }
            Socket::Tls(socket) => {
                input.reserve(READ_CHUNK_BYTES);
                match socket.read_buf(input).await {
                    // A client that closes without TLS's close_notify has closed, as far as
                    // RESP is concerned: a request cut short is still only partly parsed.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    read => read,
                }
            }
        }
    }

    /// Writes some of `bytes`; a `TimedOut` error if the client reads nothing for `patience`.
    async fn write_some(&mut self, bytes: &[u8], patience: Duration) -> io::Result<usize> {
        let timed_out = |_| io::Error::from(io::ErrorKind::TimedOut);
        match self {
            Socket::Tcp(socket) => loop {
                match socket.try_write(bytes) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        timeout(patience, socket.writable())
                            .await
                            .map_err(timed_out)??;
                    }
                    written => return written,
                }
            },
            Socket::Tls(socket) => timeout(patience, socket.write(bytes))
                .await
                .map_err(timed_out)?,
        }
    }

    /// Sends what TLS still holds (TCP holds nothing); `TimedOut` as in [`Socket::write_some`].
    async fn flush(&mut self, patience: Duration) -> io::Result<()> {
        match self {
            Socket::Tcp(_) => Ok(()),
            Socket::Tls(socket) => timeout(patience, socket.flush())
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?,
        }
    }
}

struct Connection {
    socket: Socket,
    input: BytesMut,
    /// The most bytes `input` held since its allocation was made.
    input_bytes_max: usize,
    parser: RequestParser,
    output: ReplyBuffer,
    idle_timeout: Duration,
    request_read_timeout: Duration,
    /// When bytes last arrived (or the connection opened).
    last_read_at: Instant,
    /// When the first bytes of the request not yet complete arrived.
    request_started_at: Option<Instant>,
    /// Fires at or before the connection's deadline (see [`Connection::deadline`]); moved
    /// only when the deadline comes earlier or when it fires early, not on every read.
    timer: Pin<Box<Sleep>>,
    timer_deadline: Instant,
}

impl Connection {
    fn new(socket: Socket, limits: RedisLimits) -> Connection {
        let now = Instant::now();
        let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
        Connection {
            socket,
            input: BytesMut::new(),
            input_bytes_max: 0,
            parser: RequestParser::default(),
            output: ReplyBuffer::default(),
            idle_timeout,
            request_read_timeout: Duration::from_millis(limits.request_read_timeout_ms),
            last_read_at: now,
            request_started_at: None,
            timer: Box::pin(sleep_until(now + idle_timeout)),
            timer_deadline: now + idle_timeout,
        }
    }

    /// Executes every complete request in the input buffer and writes the replies; the end
    /// of the connection if a request ended it.
    async fn answer_received(&mut self, cx: &mut Context<'_>) -> io::Result<Option<End>> {
        loop {
            let words = match self.parser.parse(&mut self.input) {
                Ok(Some(words)) if words.is_empty() => continue,
                Ok(Some(words)) => words,
                Ok(None) => break,
                Err(e) => {
                    cx.service.client_metrics().redis.error("protocol");
                    self.output.push(Value::error("ERR", e));
                    self.write_replies().await?;
                    return Ok(Some(End::ProtocolError));
                }
            };
            self.request_started_at = None;
            let counters = &cx.service.client_metrics().redis;
            counters.request(command_label(&words[0]));
            let (reply, quit) = respond(words, cx).await;
            if let Value::Error(text) = &reply {
                counters.error(error_kind(text));
            }
            // HELLO's own reply is in the protocol it switches to.
            self.output.set_protocol(cx.session.protocol);
            self.output.push(reply);
            if quit {
                self.write_replies().await?;
                return Ok(Some(End::Quit));
            }
            if self.output.len() >= REPLY_BUFFER_BYTES_MAX {
                self.write_replies().await?;
            }
        }
        if self.parser.is_mid_request(&self.input) && self.request_started_at.is_none() {
            // Its first bytes came with the last read.
            self.request_started_at = Some(self.last_read_at);
        }
        self.write_replies().await?;
        self.release_memory();
        Ok(None)
    }

    /// Frees buffers that grew large, once they are empty (see
    /// [`RETAINED_BUFFER_BYTES_MAX`]).
    fn release_memory(&mut self) {
        self.output.release_memory(RETAINED_BUFFER_BYTES_MAX);
        if self.input.is_empty() && self.input_bytes_max > RETAINED_BUFFER_BYTES_MAX {
            self.input = BytesMut::new();
            self.input_bytes_max = 0;
        }
    }

    /// Writes the buffered replies; a `TimedOut` error if the client reads none of them for
    /// the idle timeout.
    async fn write_replies(&mut self) -> io::Result<()> {
        while let Some(part) = self.output.front() {
            match self.socket.write_some(part, self.idle_timeout).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                written => self.output.consume(written),
            }
        }
        self.socket.flush(self.idle_timeout).await
    }

    /// When the connection is closed if nothing more arrives: the request read timeout after
    /// the first byte of an incomplete request, the idle timeout after the last byte read.
    fn deadline(&self) -> Instant {
        match self.request_started_at {
            Some(started) => started + self.request_read_timeout,
            None => self.last_read_at + self.idle_timeout,
        }
    }

    /// Reads what the socket has; the end of the connection if it closed, timed out or the
    /// endpoint shuts down first.
    async fn read(&mut self, shutdown: &mut watch::Receiver<bool>) -> io::Result<Option<End>> {
        loop {
            let deadline = self.deadline();
            // Checked here, not only when the timer fires: a client whose next byte is always
            // there when it is looked for would never let the timer's branch run.
            if self.request_started_at.is_some() && Instant::now() >= deadline {
                return Ok(Some(End::RequestTooSlow));
            }
            if deadline < self.timer_deadline {
                self.timer.as_mut().reset(deadline);
                self.timer_deadline = deadline;
            }
            // The branches are tried in order, without the random order (and its random
            // number) of an unbiased select: bytes that are there come first.
            let read = tokio::select! {
                biased;
                read = self.socket.read_into(&mut self.input) => Wait::Read(read),
                _ = shutdown.wait_for(|stop| *stop) => Wait::Shutdown,
                () = &mut self.timer => Wait::Timer,
            };
            match read {
                Wait::Read(Ok(0)) => return Ok(Some(End::Closed)),
                Wait::Read(Ok(_)) => {
                    self.last_read_at = Instant::now();
                    self.input_bytes_max = self.input_bytes_max.max(self.input.len());
                    return Ok(None);
                }
                Wait::Read(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Wait::Read(Err(e)) => return Err(e),
                Wait::Shutdown => return Ok(Some(End::Shutdown)),
                Wait::Timer if Instant::now() >= deadline => {
                    return Ok(Some(match self.request_started_at {
                        Some(_) => End::RequestTooSlow,
                        None => End::Idle,
                    }));
                }
                Wait::Timer => {
                    self.timer.as_mut().reset(deadline);
                    self.timer_deadline = deadline;
                }
            }
        }
    }
}

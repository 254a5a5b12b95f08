//! One Redis connection: reads requests into a buffer that a [`RequestParser`] works through
//! as they arrive, executes them one at a time, and writes the replies, with a deadline on
//! every wait.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant, Sleep};

use super::cmd::{respond, Context};
use super::session::{Clients, Session};
use super::RedisLimits;
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
    socket: TcpStream,
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

struct Connection {
    socket: TcpStream,
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
    fn new(socket: TcpStream, limits: RedisLimits) -> Connection {
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
                    self.output.push(Value::error("ERR", e));
                    self.write_replies().await?;
                    return Ok(Some(End::ProtocolError));
                }
            };
            self.request_started_at = None;
            let (reply, quit) = respond(words, cx).await;
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
            match self.socket.try_write(part) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.output.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::timeout(self.idle_timeout, self.socket.writable())
                        .await
                        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
        use tokio::io::AsyncReadExt;
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
            // A connection without a buffer (new, or its buffer was just freed) waits until
            // bytes are there before it makes one, so an idle connection holds no buffer; one
            // with a buffer reads straight into it. The branches are tried in order, without
            // the random order (and its random number) of an unbiased select: bytes that are
            // there come first.
            let has_buffer = self.input.capacity() > 0;
            if has_buffer {
                self.input.reserve(READ_CHUNK_BYTES);
            }
            let read = if has_buffer {
                tokio::select! {
                    biased;
                    read = self.socket.read_buf(&mut self.input) => Wait::Read(read),
                    _ = shutdown.wait_for(|stop| *stop) => Wait::Shutdown,
                    () = &mut self.timer => Wait::Timer,
                }
            } else {
                tokio::select! {
                    biased;
                    ready = self.socket.readable() => match ready {
                        Ok(()) => {
                            self.input.reserve(READ_CHUNK_BYTES);
                            Wait::Read(self.socket.try_read_buf(&mut self.input))
                        }
                        Err(e) => Wait::Read(Err(e)),
                    },
                    _ = shutdown.wait_for(|stop| *stop) => Wait::Shutdown,
                    () = &mut self.timer => Wait::Timer,
                }
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

//! A connection's two halves: a frame reader with idle and partial-frame timeouts, a frame
//! writer with a write timeout, and the handshake of both sides.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use raft_core::NodeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::codec;
use crate::config::TcpConfig;
use crate::error::{Error, Result};
use crate::frame::Frame;
#[cfg(feature = "tls")]
use crate::handshake::MAGIC;
use crate::handshake::{Channel, Hello, Rejection, HELLO_BYTES};
use crate::server::PeerAddresses;

/// Bytes reserved per socket read; small, so an idle connection costs little memory.
const READ_CHUNK_BYTES: usize = 8 * 1024;
/// A buffer that grew beyond this for one large frame is released once it is empty again, so a
/// past snapshot chunk does not pin megabytes per connection.
const BUFFER_KEEP_BYTES: usize = 64 * 1024;
/// A wait with no deadline still needs an instant; a day is far beyond any real wait.
const FAR_FUTURE: Duration = Duration::from_secs(24 * 60 * 60);

/// Reads frames from a socket half.
///
/// `read_frame` is cancel safe (its progress lives in `self`), so it can race other futures in
/// `tokio::select!`.
#[derive(Debug)]
pub(crate) struct FrameReader<R = ReadHalf> {
    reader: R,
    buffer: BytesMut,
    frame_bytes_max: u32,
    idle_timeout: Option<Duration>,
    frame_timeout: Duration,
    /// When the first byte of the frame being received arrived.
    frame_started: Option<Instant>,
    /// When the wait for the next frame started (for the idle timeout).
    idle_since: Instant,
    /// While set, the idle timeout does not apply (the connection has requests in flight).
    idle_paused: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader; `idle_timeout` None means a connection may stay quiet forever.
    pub(crate) fn new(reader: R, config: &TcpConfig, idle_timeout: Option<Duration>) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::new(),
            frame_bytes_max: config.frame_bytes_max,
            idle_timeout,
            frame_timeout: config.frame_timeout(),
            frame_started: None,
            idle_since: Instant::now(),
            idle_paused: false,
        }
    }

    /// Restarts the idle timer: the connection just did something (e.g. sent an answer), so
    /// the quiet time before the next frame counts from now, not from the previous frame.
    pub(crate) fn touch(&mut self) {
        self.idle_since = Instant::now();
    }

    /// Suspends the idle timeout while `busy` (requests in flight); it restarts from now when
    /// the connection stops being busy.
    pub(crate) fn set_busy(&mut self, busy: bool) {
        if self.idle_paused && !busy {
            self.touch();
        }
        self.idle_paused = busy;
    }

    /// The next frame; `Ok(None)` when the peer closed the connection between frames.
    pub(crate) async fn read_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = codec::decode_frame(&mut self.buffer, self.frame_bytes_max)? {
                self.frame_started = if self.buffer.is_empty() {
                    None
                } else {
                    Some(Instant::now())
                };
                self.idle_since = Instant::now();
                if self.buffer.is_empty() && self.buffer.capacity() > BUFFER_KEEP_BYTES {
                    self.buffer = BytesMut::new();
                }
                return Ok(Some(frame));
            }
            let (deadline, on_timeout) = match self.frame_started {
                Some(started) => (
                    started + self.frame_timeout,
                    Error::FrameTimeout {
                        timeout_ms: self.frame_timeout.as_millis() as u64,
                    },
                ),
                None => match self.idle_timeout.filter(|_| !self.idle_paused) {
                    Some(idle) => (
                        self.idle_since + idle,
                        Error::IdleTimeout {
                            timeout_ms: idle.as_millis() as u64,
                        },
                    ),
                    None => (
                        Instant::now() + FAR_FUTURE,
                        Error::IdleTimeout { timeout_ms: 0 },
                    ),
                },
            };
            // The length prefix was checked by decode_frame, so the buffer grows only as bytes
            // actually arrive and never beyond one frame.
            self.buffer.reserve(READ_CHUNK_BYTES);
            let read = match timeout_at(deadline, self.reader.read_buf(&mut self.buffer)).await {
                // A TLS peer that closes without TLS's close_notify (a client process that
                // exits, say) is a close like any other: frames delimit themselves, so a
                // cut in the middle of one is still caught below.
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Ok(read) => read?,
                Err(_) => return Err(on_timeout),
            };
            if read == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(Error::UnexpectedEof {
                    buffered_bytes: self.buffer.len() as u64,
                });
            }
            if self.frame_started.is_none() {
                self.frame_started = Some(Instant::now());
            }
        }
    }
}

/// Encodes frames into a buffer and writes them out in batches.
#[derive(Debug)]
pub(crate) struct FrameWriter<W = WriteHalf> {
    writer: W,
    buffer: BytesMut,
    frame_bytes_max: u32,
    write_timeout: Duration,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub(crate) fn new(writer: W, config: &TcpConfig) -> Self {
        FrameWriter {
            writer,
            buffer: BytesMut::new(),
            frame_bytes_max: config.frame_bytes_max,
            write_timeout: config.write_timeout(),
        }
    }

    /// Appends a frame to the batch. An error (frame too large) concerns this frame only.
    pub(crate) fn queue(&mut self, frame: &Frame) -> Result<()> {
        codec::encode_frame(frame, self.frame_bytes_max, &mut self.buffer)
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Writes the batch out. An error means the connection is unusable.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let write = async {
            self.writer.write_all(&self.buffer).await?;
            // TLS keeps what it could not write yet in its session; TCP's flush does nothing.
            self.writer.flush().await
        };
        let written = timeout(self.write_timeout, write).await;
        match written {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::WriteTimeout {
                    timeout_ms: self.write_timeout.as_millis() as u64,
                })
            }
        }
        self.buffer.clear();
        if self.buffer.capacity() > BUFFER_KEEP_BYTES {
            self.buffer = BytesMut::new();
        }
        Ok(())
    }

    /// Queues and writes one frame.
    pub(crate) async fn send(&mut self, frame: &Frame) -> Result<()> {
        self.queue(frame)?;
        self.flush().await
    }
}

/// Connects to `addr`, performs the handshake for `channel` (the TLS handshake first, with
/// [`TcpConfig::tls`]) and checks that the node reached is `expected_node` (when given).
/// Returns the stream and the other side's hello.
pub(crate) async fn connect(
    addr: &str,
    config: &TcpConfig,
    channel: Channel,
    expected_node: Option<NodeId>,
) -> Result<(Stream, Hello)> {
    let connecting = timeout(config.connect_timeout(), TcpStream::connect(addr)).await;
    let stream = match connecting {
        Ok(stream) => stream?,
        Err(_) => {
            return Err(Error::ConnectTimeout {
                addr: addr.to_owned(),
                timeout_ms: config.connect_timeout_ms,
            })
        }
    };
    stream.set_nodelay(true)?;
    let ours = Hello::request(config.cluster_id, config.node_id, channel);
    // One deadline for the TLS handshake and the hello.
    let exchange = async {
        let mut stream = Stream::connected(stream, addr, config).await?;
        let reply = stream
            .exchange_hello(&ours)
            .await
            .map_err(|e| stream.error(e))?;
        Ok::<_, Error>((stream, reply))
    };
    let (stream, reply) = match timeout(config.handshake_timeout(), exchange).await {
        Ok(exchanged) => exchanged?,
        Err(_) => {
            return Err(Error::HandshakeTimeout {
                timeout_ms: config.handshake_timeout_ms,
            })
        }
    };
    let reply = Hello::decode(&reply);
    reply.check_reply(&ours, expected_node)?;
    Ok((stream, reply))
}

/// What the accepting side of a handshake needs to judge a hello besides the configuration.
#[derive(Clone, Copy)]
pub(crate) struct AcceptPolicy<'a> {
    /// Whether this server has a client handler (serves the client channel).
    pub(crate) client_served: bool,
    /// The members' addresses, to check that a peer's certificate names its node's host
    /// (read only with TLS).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) peer_addresses: Option<&'a dyn PeerAddresses>,
}

/// The accepting side of the handshake (the TLS handshake first, with [`TcpConfig::tls`]):
/// reads the hello, judges it, replies, and returns the stream, the other side's hello and
/// channel, or why the connection must be closed.
pub(crate) async fn accept(
    stream: TcpStream,
    config: &TcpConfig,
    policy: AcceptPolicy<'_>,
) -> Result<(Stream, Hello, Channel)> {
    stream.set_nodelay(true)?;
    // One deadline for the TLS handshake and the hello.
    let exchange = async {
        let mut stream = Stream::accepted(stream, config).await?;
        let mut request = [0u8; HELLO_BYTES];
        let read = stream.read_exact(&mut request).await;
        read.map_err(|e| stream.error(e))?;
        let theirs = Hello::decode(&request);
        let verdict = theirs
            .check_request(config.cluster_id, policy.client_served)
            .and_then(|channel| stream.judge_certificate(config, channel, &theirs, policy));
        let reply = Hello::reply(config.cluster_id, config.node_id, &theirs, &verdict);
        let written = stream.write_hello(&reply).await;
        written.map_err(|e| stream.error(e))?;
        Ok::<_, Error>((stream, theirs, verdict))
    };
    let (stream, theirs, verdict) = match timeout(config.handshake_timeout(), exchange).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::HandshakeTimeout {
                timeout_ms: config.handshake_timeout_ms,
            })
        }
    };
    let channel = verdict.map_err(Error::Handshake)?;
    Ok((stream, theirs, channel))
}

/// A connection's socket: plain TCP, or TLS over TCP (boxed: a TLS session is large, and
/// only its connections pay for the box).
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The connecting side's stream: TLS (after its handshake) when configured.
    async fn connected(stream: TcpStream, addr: &str, config: &TcpConfig) -> Result<Stream> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &config.tls {
            let stream = tls.connect(stream, addr).await?;
            return Ok(Stream::Tls(Box::new(stream.into())));
        }
        let _ = (addr, config);
        Ok(Stream::Tcp(stream))
    }

    /// The accepting side's stream: TLS (after its handshake) when configured. A plaintext
    /// hello sent to a TLS server is answered in plaintext with `TlsRequired`, so the other
    /// side learns why.
    async fn accepted(stream: TcpStream, config: &TcpConfig) -> Result<Stream> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &config.tls {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await? == 1 && first[0] == MAGIC[0] {
                return Err(refuse_plaintext(stream, config).await);
            }
            let stream = tls.accept(stream).await?;
            return Ok(Stream::Tls(Box::new(stream.into())));
        }
        let _ = config;
        Ok(Stream::Tcp(stream))
    }

    /// Sends our hello and reads the reply.
    async fn exchange_hello(&mut self, ours: &Hello) -> std::io::Result<[u8; HELLO_BYTES]> {
        self.write_hello(ours).await?;
        let mut reply = [0u8; HELLO_BYTES];
        self.read_exact(&mut reply).await?;
        Ok(reply)
    }

    async fn write_hello(&mut self, hello: &Hello) -> std::io::Result<()> {
        self.write_all(&hello.encode()).await?;
        // TLS holds written bytes in its session until flushed; TCP's flush does nothing.
        self.flush().await
    }

    /// An I/O error of the handshake phase; on TLS, one that TLS caused (such as the other
    /// side's refusal of our certificate, which TLS 1.3 reports only on the first read after
    /// the handshake) is explained.
    fn error(&self, error: std::io::Error) -> Error {
        match self {
            #[cfg(feature = "tls")]
            Stream::Tls(_) if crate::tls::is_tls_error(&error) => {
                crate::tls::handshake_error(&error)
            }
            _ => Error::Io(error),
        }
    }

    /// On TLS, whether the certificate the connecting side presented is acceptable for
    /// `channel` and the node of its hello (see [`crate::tls`]).
    fn judge_certificate(
        &self,
        config: &TcpConfig,
        channel: Channel,
        theirs: &Hello,
        policy: AcceptPolicy<'_>,
    ) -> std::result::Result<Channel, Rejection> {
        match self {
            #[cfg(feature = "tls")]
            Stream::Tls(stream) => {
                if let Some(tls) = &config.tls {
                    let certificates = stream.get_ref().1.peer_certificates();
                    tls.judge_certificate(
                        certificates,
                        channel,
                        theirs.node_id,
                        policy.peer_addresses,
                    )?;
                }
                Ok(channel)
            }
            _ => {
                let _ = (config, theirs, policy);
                Ok(channel)
            }
        }
    }
}

/// Reads a plaintext hello from a connection to a TLS server, answers it with
/// `TlsRequired` and returns the error to log.
#[cfg(feature = "tls")]
async fn refuse_plaintext(mut stream: TcpStream, config: &TcpConfig) -> Error {
    let mut request = [0u8; HELLO_BYTES];
    if let Err(error) = stream.read_exact(&mut request).await {
        return Error::Io(error);
    }
    let theirs = Hello::decode(&request);
    let verdict = Err(Rejection::TlsRequired);
    let reply = Hello::reply(config.cluster_id, config.node_id, &theirs, &verdict);
    // The connection is closed either way; the reply only tells the other side why.
    let _ = stream.write_all(&reply.encode()).await;
    Error::Handshake(Rejection::TlsRequired)
}

macro_rules! delegate_stream {
    ($self:ident, $stream:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Tcp($stream) => $call,
            #[cfg(feature = "tls")]
            Stream::Tls($stream) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate_stream!(self, stream => Pin::new(stream).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate_stream!(self, stream => Pin::new(stream).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate_stream!(self, stream => Pin::new(stream).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate_stream!(self, stream => Pin::new(stream).poll_shutdown(cx))
    }
}

/// The read half of a connection. An enum, not a box: the plaintext path pays one branch
/// per read, no allocation and no copy.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Tcp(OwnedReadHalf),
    #[cfg(feature = "tls")]
    Tls(tokio::io::ReadHalf<Box<tokio_rustls::TlsStream<TcpStream>>>),
}

/// The write half of a connection (see [`ReadHalf`]).
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Tcp(OwnedWriteHalf),
    #[cfg(feature = "tls")]
    Tls(tokio::io::WriteHalf<Box<tokio_rustls::TlsStream<TcpStream>>>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(half) => Pin::new(half).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(half) => Pin::new(half).poll_read(cx, buf),
        }
    }
}

macro_rules! delegate_write_half {
    ($self:ident, $half:ident => $call:expr) => {
        match $self.get_mut() {
            WriteHalf::Tcp($half) => $call,
            #[cfg(feature = "tls")]
            WriteHalf::Tls($half) => $call,
        }
    };
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate_write_half!(self, half => Pin::new(half).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate_write_half!(self, half => Pin::new(half).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate_write_half!(self, half => Pin::new(half).poll_shutdown(cx))
    }
}

/// Splits a connected stream into a frame reader and a frame writer.
pub(crate) fn split(
    stream: Stream,
    config: &TcpConfig,
    idle_timeout: Option<Duration>,
) -> (FrameReader, FrameWriter) {
    let (read_half, write_half) = match stream {
        Stream::Tcp(stream) => {
            let (read_half, write_half) = stream.into_split();
            (ReadHalf::Tcp(read_half), WriteHalf::Tcp(write_half))
        }
        #[cfg(feature = "tls")]
        Stream::Tls(stream) => {
            let (read_half, write_half) = tokio::io::split(stream);
            (ReadHalf::Tls(read_half), WriteHalf::Tls(write_half))
        }
    };
    (
        FrameReader::new(read_half, config, idle_timeout),
        FrameWriter::new(write_half, config),
    )
}

#[cfg(test)]
mod tests {
    use raft_core::{LogId, Message, MessageBody};
    use tokio::io::{duplex, AsyncWriteExt};
    use tokio::time::sleep;

    use super::*;

    fn heartbeat_bytes() -> Vec<u8> {
        let message = Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::ZERO,
                entries: Vec::new(),
                leader_commit: 0,
                round: 1,
            },
        };
        codec::encode_frame_to_vec(&Frame::Raft(message), 1 << 20).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn one_byte_per_second_is_cut_off_by_the_frame_timeout() {
        let config = TcpConfig::new(1, 1); // default 30 s frame timeout
        let (client, server) = duplex(1024);
        let mut reader = FrameReader::new(server, &config, Some(config.idle_timeout()));
        // A frame announcing a 64-byte body: at one byte per second it would need 68 s.
        let mut frame_padded = 64u32.to_be_bytes().to_vec();
        frame_padded.resize(4 + 64, 0x90);
        let trickle = tokio::spawn(async move {
            let mut client = client;
            for byte in frame_padded {
                if client.write_all(&[byte]).await.is_err() {
                    return;
                }
                sleep(Duration::from_secs(1)).await;
            }
        });
        let started = Instant::now();
        let result = reader.read_frame().await;
        assert!(
            matches!(result, Err(Error::FrameTimeout { timeout_ms: 30_000 })),
            "{result:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{waited:?}"
        );
        trickle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_hits_the_idle_timeout_between_frames() {
        let config = TcpConfig::new(1, 1);
        let (mut client, server) = duplex(1024);
        let mut reader = FrameReader::new(server, &config, Some(Duration::from_secs(60)));
        client.write_all(&heartbeat_bytes()).await.unwrap();
        assert!(matches!(
            reader.read_frame().await,
            Ok(Some(Frame::Raft(_)))
        ));
        let started = Instant::now();
        let result = reader.read_frame().await;
        assert!(
            matches!(result, Err(Error::IdleTimeout { timeout_ms: 60_000 })),
            "{result:?}"
        );
        assert_eq!(started.elapsed().as_secs(), 60);
        // Without an idle timeout the same wait ends only when the peer closes.
        let (client, server) = duplex(1024);
        let mut reader = FrameReader::new(server, &config, None);
        let closer = tokio::spawn(async move {
            sleep(Duration::from_secs(3_600)).await;
            drop(client);
        });
        assert!(matches!(reader.read_frame().await, Ok(None)));
        closer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn eof_in_the_middle_of_a_frame_is_an_error() {
        let config = TcpConfig::new(1, 1);
        let (mut client, server) = duplex(1024);
        let mut reader = FrameReader::new(server, &config, None);
        let frame = heartbeat_bytes();
        client.write_all(&frame[..frame.len() - 3]).await.unwrap();
        drop(client);
        let result = reader.read_frame().await;
        let expected = (frame.len() - 3) as u64;
        assert!(
            matches!(result, Err(Error::UnexpectedEof { buffered_bytes }) if buffered_bytes == expected),
            "{result:?}"
        );
    }
}

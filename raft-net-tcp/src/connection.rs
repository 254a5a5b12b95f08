//! A connection's two halves: a frame reader with idle and partial-frame timeouts, a frame
//! writer with a write timeout, and the handshake of both sides.

use std::time::Duration;

use bytes::BytesMut;
use raft_core::NodeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::codec;
use crate::config::TcpConfig;
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::handshake::{Channel, Hello, HELLO_BYTES};

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
pub(crate) struct FrameReader<R = OwnedReadHalf> {
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
pub(crate) struct FrameWriter<W = OwnedWriteHalf> {
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
        let written = timeout(self.write_timeout, self.writer.write_all(&self.buffer)).await;
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

/// Connects to `addr`, performs the handshake for `channel` and checks that the node reached is
/// `expected_node` (when given). Returns the stream and the other side's hello.
pub(crate) async fn connect(
    addr: &str,
    config: &TcpConfig,
    channel: Channel,
    expected_node: Option<NodeId>,
) -> Result<(TcpStream, Hello)> {
    let connecting = timeout(config.connect_timeout(), TcpStream::connect(addr)).await;
    let mut stream = match connecting {
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
    let exchange = async {
        stream.write_all(&ours.encode()).await?;
        let mut reply = [0u8; HELLO_BYTES];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = match timeout(config.handshake_timeout(), exchange).await {
        Ok(reply) => Hello::decode(&reply?),
        Err(_) => {
            return Err(Error::HandshakeTimeout {
                timeout_ms: config.handshake_timeout_ms,
            })
        }
    };
    reply.check_reply(&ours, expected_node)?;
    Ok((stream, reply))
}

/// The accepting side of the handshake: reads the hello, judges it, replies, and returns the
/// other side's hello and channel, or why the connection must be closed.
pub(crate) async fn accept(
    stream: &mut TcpStream,
    config: &TcpConfig,
    client_served: bool,
) -> Result<(Hello, Channel)> {
    stream.set_nodelay(true)?;
    let exchange = async {
        let mut request = [0u8; HELLO_BYTES];
        stream.read_exact(&mut request).await?;
        let theirs = Hello::decode(&request);
        let verdict = theirs.check_request(config.cluster_id, client_served);
        let reply = Hello::reply(config.cluster_id, config.node_id, &theirs, &verdict);
        stream.write_all(&reply.encode()).await?;
        Ok::<_, std::io::Error>((theirs, verdict))
    };
    let (theirs, verdict) = match timeout(config.handshake_timeout(), exchange).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::HandshakeTimeout {
                timeout_ms: config.handshake_timeout_ms,
            })
        }
    };
    let channel = verdict.map_err(Error::Handshake)?;
    Ok((theirs, channel))
}

/// Splits a connected stream into a frame reader and a frame writer.
pub(crate) fn split(
    stream: TcpStream,
    config: &TcpConfig,
    idle_timeout: Option<Duration>,
) -> (FrameReader, FrameWriter) {
    let (read_half, write_half) = stream.into_split();
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

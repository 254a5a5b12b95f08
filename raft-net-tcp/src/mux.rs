//! A request/response connection: many requests in flight, answers matched by request id in
//! whatever order they arrive. Used for snapshot chunks and by the native client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use raft_core::NodeId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::config::TcpConfig;
use crate::connection::{self, FrameReader, FrameWriter};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::handshake::Channel;

/// A writer batches queued frames up to this many bytes per socket write.
pub(crate) const WRITE_BATCH_BYTES: usize = 256 * 1024;

type Waiter = oneshot::Sender<Result<Frame>>;

#[derive(Debug, Default)]
struct Pending {
    /// Requests waiting for their answer, at most `inflight_requests_max`.
    waiters: HashMap<u64, Waiter>,
    /// Set once the reader or the writer stopped; the connection takes no more requests.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the map inconsistent (every operation
        // is a single insert or remove), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answer(&self, id: u64, result: Result<Frame>) {
        let waiter = self.pending().waiters.remove(&id);
        match waiter {
            Some(waiter) => {
                // The requester may have timed out and gone: nothing to do then.
                let _ = waiter.send(result);
            }
            None => debug!(id, "answer for a request nobody waits for (timed out?)"),
        }
    }

    /// Marks the connection closed; every waiter's sender is dropped, so they see
    /// `ConnectionClosed`.
    fn close(&self) {
        let mut pending = self.pending();
        pending.closed = true;
        pending.waiters.clear();
    }
}

/// Removes a request's waiter when the request ends, however it ends (answer, timeout, or the
/// caller dropping the future).
struct WaiterGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending().waiters.remove(&self.id);
    }
}

/// One multiplexed connection with its reader and writer tasks.
#[derive(Debug)]
pub(crate) struct MuxConn {
    frames: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    request_timeout: Duration,
    inflight_requests_max: u32,
    reader_task: JoinHandle<()>,
    writer_task: JoinHandle<()>,
}

impl Drop for MuxConn {
    fn drop(&mut self) {
        self.reader_task.abort();
        self.writer_task.abort();
    }
}

impl MuxConn {
    /// Connects and handshakes; see [`connection::connect`].
    pub(crate) async fn open(
        addr: &str,
        config: &TcpConfig,
        channel: Channel,
        expected_node: Option<NodeId>,
    ) -> Result<MuxConn> {
        let (stream, hello) = connection::connect(addr, config, channel, expected_node).await?;
        debug!(addr, node = hello.node_id, %channel, "connected");
        let (reader, writer) = connection::split(stream, config, None);
        let inflight_requests_max = config.inflight_requests_max;
        let (frames, queued) = mpsc::channel(inflight_requests_max as usize);
        let shared = Arc::new(Shared::default());
        let reader_task = tokio::spawn(read_answers(reader, shared.clone(), addr.to_owned()));
        let writer_task = tokio::spawn(write_requests(writer, queued, shared.clone()));
        Ok(MuxConn {
            frames,
            shared,
            next_id: AtomicU64::new(1),
            request_timeout: config.request_timeout(),
            inflight_requests_max,
            reader_task,
            writer_task,
        })
    }

    /// Whether the connection broke; a closed connection fails every request at once.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.pending().closed
    }

    /// Sends the frame `make(id)` and waits for the frame answering `id`, at most
    /// `request_timeout_ms`. An error frame from the other side becomes [`Error::Remote`].
    pub(crate) async fn call(&self, make: impl FnOnce(u64) -> Frame) -> Result<Frame> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        {
            let mut pending = self.shared.pending();
            if pending.closed {
                return Err(Error::ConnectionClosed);
            }
            if pending.waiters.len() >= self.inflight_requests_max as usize {
                return Err(Error::TooManyInFlight {
                    max: self.inflight_requests_max,
                });
            }
            pending.waiters.insert(id, waiter);
        }
        let _guard = WaiterGuard {
            shared: &self.shared,
            id,
        };
        let frame = make(id);
        let exchange = async {
            self.frames
                .send(frame)
                .await
                .map_err(|_| Error::ConnectionClosed)?;
            answer.await.map_err(|_| Error::ConnectionClosed)?
        };
        match timeout(self.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::RequestTimeout {
                timeout_ms: self.request_timeout.as_millis() as u64,
            }),
        }
    }
}

async fn read_answers(mut reader: FrameReader, shared: Arc<Shared>, addr: String) {
    loop {
        match reader.read_frame().await {
            Ok(Some(Frame::Error { id: 0, reason })) => {
                warn!(addr, reason, "the other side reported an error");
            }
            Ok(Some(Frame::Error { id, reason })) => {
                shared.answer(id, Err(Error::Remote { reason }))
            }
            Ok(Some(frame @ Frame::Unknown { .. })) => {
                warn!(
                    addr,
                    kind = frame.kind(),
                    "unknown frame kind from the other side; ignored"
                );
            }
            Ok(Some(frame)) => shared.answer(frame.id(), Ok(frame)),
            Ok(None) => {
                debug!(addr, "connection closed by the other side");
                break;
            }
            Err(error) => {
                // Every request waiting on it fails with ConnectionClosed, which is how the
                // caller learns of it; a peer that was killed or restarted is routine for a
                // client, so this is no warning.
                debug!(addr, %error, "connection failed");
                break;
            }
        }
    }
    shared.close();
}

async fn write_requests(
    mut writer: FrameWriter,
    mut queued: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
) {
    while let Some(frame) = queued.recv().await {
        if queued.is_empty() && shared.pending().waiters.len() > 1 {
            // Other requests share this connection: let the tasks that were woken together
            // with the sender of this one (say, by one batch of answers) queue theirs too,
            // so that they leave in one write; on loopback each write also costs a wake-up
            // of the server. A connection with one request at a time never waits here.
            tokio::task::yield_now().await;
        }
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if let Err(error) = writer.queue(&frame) {
                // Only this request fails (e.g. a chunk larger than frame_bytes_max).
                shared.answer(frame.id(), Err(error));
            }
            if writer.queued_bytes() < WRITE_BATCH_BYTES {
                next = queued.try_recv().ok();
            }
        }
        if let Err(error) = writer.flush().await {
            debug!(%error, "write failed; closing connection");
            break;
        }
    }
    shared.close();
}

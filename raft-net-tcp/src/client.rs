//! [`TcpClient`]: the native client protocol's client.

use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::Mutex;

use crate::config::TcpConfig;
use crate::error::Error;
use crate::error::Result;
use crate::frame::{ClientRequest, ClientResponse, Frame};
use crate::handshake::Channel;
use crate::mux::MuxConn;

/// Sends requests to one server over one connection, opened on the first request and reopened
/// on the next request after it broke.
///
/// `request` takes `&self`: share the client (e.g. in an `Arc`) and call it from many tasks to
/// pipeline requests; each carries its own id, answers may come back in any order, and each
/// request fails on its own after `request_timeout_ms`. At most `inflight_requests_max`
/// requests may wait at once. A request is never retried by the client: after a timeout or a
/// broken connection it may or may not have been executed.
#[derive(Debug)]
pub struct TcpClient {
    addr: String,
    config: TcpConfig,
    connection: Mutex<Option<Arc<MuxConn>>>,
}

impl TcpClient {
    /// A client for the server at `addr` (`host:port`). `config.cluster_id` must be the
    /// server's; `config.node_id` is sent in the handshake (0 for a plain client).
    pub fn new(addr: impl Into<String>, config: TcpConfig) -> Result<TcpClient> {
        config.validate()?;
        Ok(TcpClient::with_checked_config(addr, config))
    }

    /// Like [`TcpClient::new`] with a configuration that already passed
    /// [`TcpConfig::validate`].
    pub(crate) fn with_checked_config(addr: impl Into<String>, config: TcpConfig) -> TcpClient {
        TcpClient {
            addr: addr.into(),
            config,
            connection: Mutex::new(None),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and waits for its response.
    ///
    /// Which errors prove the request was never executed ([`Error::never_sent`]): every
    /// error from opening the connection ([`Error::Io`], [`Error::ConnectTimeout`],
    /// [`Error::HandshakeTimeout`], [`Error::Handshake`]), and [`Error::TooManyInFlight`],
    /// [`Error::FrameTooLarge`] and [`Error::Encode`] (refused before sending). After
    /// [`Error::ConnectionClosed`], [`Error::RequestTimeout`] or [`Error::Remote`] it may or
    /// may not have been executed.
    pub async fn request(&self, payload: Bytes) -> Result<ClientResponse> {
        let connection = self.connection().await?;
        let answer = connection
            .call(|id| Frame::ClientRequest(ClientRequest { id, payload }))
            .await?;
        match answer {
            Frame::ClientResponse { response, .. } => Ok(response),
            frame => Err(Error::UnexpectedFrame { kind: frame.name() }),
        }
    }

    async fn connection(&self) -> Result<Arc<MuxConn>> {
        let mut connection = self.connection.lock().await;
        if let Some(open) = connection.as_ref() {
            if !open.is_closed() {
                return Ok(open.clone());
            }
        }
        let opened =
            Arc::new(MuxConn::open(&self.addr, &self.config, Channel::Client, None).await?);
        *connection = Some(opened.clone());
        Ok(opened)
    }
}

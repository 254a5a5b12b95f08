//! An in-process transport for tests and examples: a router that connects the nodes of one
//! process and can cut links to simulate partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::transport::{MessageHandler, Transport, TransportError};
use crate::message::Message;
use crate::types::{NodeId, SnapshotChunk, SnapshotChunkAck};

#[derive(Default)]
struct Inner {
    handlers: BTreeMap<NodeId, Arc<dyn MessageHandler>>,
    /// Directed links that drop everything: (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
}

/// Connects in-process nodes. Cloning shares the router.
#[derive(Clone, Default)]
pub struct MemRouter {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemRouter")
            .field("nodes", &inner.handlers.keys().collect::<Vec<_>>())
            .field("blocked", &inner.blocked)
            .finish()
    }
}

impl MemRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport node `id` sends through.
    pub fn transport(&self, id: NodeId) -> MemTransport {
        MemTransport {
            id,
            router: self.clone(),
        }
    }

    /// Registers where messages to `id` are delivered (the node's handle).
    pub fn register(&self, id: NodeId, handler: Arc<dyn MessageHandler>) {
        self.lock().handlers.insert(id, handler);
    }

    /// Removes a node (it crashed or shut down).
    pub fn unregister(&self, id: NodeId) {
        self.lock().handlers.remove(&id);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&self, a: NodeId, b: NodeId) {
        let mut inner = self.lock();
        inner.blocked.insert((a, b));
        inner.blocked.insert((b, a));
    }

    /// Cuts the direction from `from` to `to` only (what `from` sends is lost).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.insert((from, to));
    }

    /// Cuts `node` off from everyone.
    pub fn isolate(&self, node: NodeId) {
        let ids: Vec<NodeId> = self.lock().handlers.keys().copied().collect();
        for other in ids {
            if other != node {
                self.partition(node, other);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    fn route(&self, from: NodeId, to: NodeId) -> Option<Arc<dyn MessageHandler>> {
        let inner = self.lock();
        if inner.blocked.contains(&(from, to)) {
            return None;
        }
        inner.handlers.get(&to).cloned()
    }
}

/// The sending half for one node. See [`MemRouter`].
#[derive(Clone, Debug)]
pub struct MemTransport {
    id: NodeId,
    router: MemRouter,
}

#[async_trait]
impl Transport for MemTransport {
    fn send(&self, msg: Message) {
        if let Some(handler) = self.router.route(self.id, msg.to) {
            handler.deliver(msg);
        }
    }

    async fn send_snapshot_chunk(
        &self,
        chunk: SnapshotChunk,
    ) -> Result<SnapshotChunkAck, TransportError> {
        let to = chunk.to;
        match self.router.route(self.id, to) {
            Some(handler) => Ok(handler.deliver_snapshot_chunk(chunk).await),
            None => Err(TransportError::Unreachable {
                node: to,
                reason: "link cut".into(),
            }),
        }
    }

    fn set_peers(&self, _addresses: &BTreeMap<NodeId, String>) {}
}

//! Joining a running cluster.
//!
//! A joining node starts with an empty configuration, so its node publishes no peer
//! addresses to the transport, and its answers to the leader (which it needs to send to be
//! caught up) would be dropped for want of an address. [`SeededTransport`] therefore adds the
//! cluster's member addresses, learned from the member it joins through, to whatever the node
//! publishes, until the node's own configuration lists this node (from then on the log's
//! configuration has every address).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use raft_core::node::{Transport, TransportError};
use raft_core::{Message, NodeId, SnapshotChunk, SnapshotChunkAck};

/// A transport that adds seed addresses to the ones the node publishes.
#[derive(Debug)]
pub struct SeededTransport<T> {
    inner: Arc<T>,
    own_id: NodeId,
    state: Mutex<Seeds>,
}

#[derive(Debug, Default)]
struct Seeds {
    seeds: BTreeMap<NodeId, String>,
    published: BTreeMap<NodeId, String>,
}

impl<T: Transport> SeededTransport<T> {
    /// Wraps `inner`; `seeds` are used until the published configuration lists `own_id`.
    pub fn new(inner: Arc<T>, own_id: NodeId, seeds: BTreeMap<NodeId, String>) -> Self {
        let transport = SeededTransport {
            inner,
            own_id,
            state: Mutex::new(Seeds {
                seeds,
                published: BTreeMap::new(),
            }),
        };
        transport.publish();
        transport
    }

    fn publish(&self) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut merged = state.seeds.clone();
        merged.extend(state.published.clone());
        self.inner.set_peers(&merged);
    }
}

#[async_trait]
impl<T: Transport> Transport for SeededTransport<T> {
    fn send(&self, msg: Message) {
        self.inner.send(msg);
    }

    async fn send_snapshot_chunk(
        &self,
        chunk: SnapshotChunk,
    ) -> Result<SnapshotChunkAck, TransportError> {
        self.inner.send_snapshot_chunk(chunk).await
    }

    fn set_peers(&self, addresses: &BTreeMap<NodeId, String>) {
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.published = addresses.clone();
            if addresses.contains_key(&self.own_id) {
                state.seeds.clear();
            }
        }
        self.publish();
    }
}

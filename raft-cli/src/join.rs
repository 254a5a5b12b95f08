//! The address book the node's transport gets: sticky, and seeded when joining.
//!
//! raft-core publishes the addresses of the current configuration and the transport drops
//! messages to anyone else. Two moments need more:
//! - A joining node starts with an empty configuration, so its answers to the leader that is
//!   catching it up would be dropped for want of the leader's address. The member addresses
//!   learned from the member it joins through are added as seeds.
//! - When a configuration without some member is appended, the remaining members stop
//!   knowing its address, yet a removed leader must still hear their answers to learn that its
//!   own removal committed (else it times out and the client never learns the outcome).
//!
//! [`StickyTransport`] therefore passes the transport every address it has ever been given
//! (the newest address of each id wins), bounded by [`KNOWN_PEERS_MAX`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use raft_core::node::{Transport, TransportError};
use raft_core::{Message, NodeId, SnapshotChunk, SnapshotChunkAck};

/// Addresses remembered at most; beyond that, those not in the current configuration are
/// forgotten. raft-core allows at most 1024 members in one configuration.
pub const KNOWN_PEERS_MAX: usize = 1024;

/// A transport wrapper whose address book only grows (up to [`KNOWN_PEERS_MAX`]).
#[derive(Debug)]
pub struct StickyTransport<T> {
    inner: Arc<T>,
    known: Mutex<BTreeMap<NodeId, String>>,
}

impl<T: Transport> StickyTransport<T> {
    /// Wraps `inner`, starting from the `seeds` addresses.
    pub fn new(inner: Arc<T>, seeds: BTreeMap<NodeId, String>) -> Self {
        inner.set_peers(&seeds);
        StickyTransport {
            inner,
            known: Mutex::new(seeds),
        }
    }
}

#[async_trait]
impl<T: Transport> Transport for StickyTransport<T> {
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
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(addresses.iter().map(|(id, addr)| (*id, addr.clone())));
        if known.len() > KNOWN_PEERS_MAX {
            known.retain(|id, _| addresses.contains_key(id));
        }
        self.inner.set_peers(&known);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Book(Mutex<BTreeMap<NodeId, String>>);

    #[async_trait]
    impl Transport for Book {
        fn send(&self, _msg: Message) {}
        async fn send_snapshot_chunk(
            &self,
            chunk: SnapshotChunk,
        ) -> Result<SnapshotChunkAck, TransportError> {
            Err(TransportError::UnknownPeer(chunk.to))
        }
        fn set_peers(&self, addresses: &BTreeMap<NodeId, String>) {
            *self.0.lock().unwrap() = addresses.clone();
        }
    }

    #[test]
    fn addresses_stick_and_seeds_are_kept() {
        let book = Arc::new(Book::default());
        let seeds = BTreeMap::from([(1, "a".to_string())]);
        let sticky = StickyTransport::new(book.clone(), seeds);
        assert_eq!(book.0.lock().unwrap().len(), 1);
        sticky.set_peers(&BTreeMap::new());
        assert_eq!(book.0.lock().unwrap()[&1], "a");
        sticky.set_peers(&BTreeMap::from([
            (1, "b".to_string()),
            (2, "c".to_string()),
        ]));
        sticky.set_peers(&BTreeMap::from([(2, "c".to_string())]));
        let now = book.0.lock().unwrap().clone();
        assert_eq!(now, BTreeMap::from([(1, "b".into()), (2, "c".into())]));
    }
}

//! Reading entries back from the log store for a lagging follower, once their payloads have
//! left memory (see `log.rs`). The engine asks with [`super::Ready::fetches`]; the caller reads
//! and answers with [`Engine::on_entries_fetched`]. One read per follower at a time.

use tracing::{debug, warn};

use super::log::Evicted;
use super::{Engine, EntryFetch, Role};
use crate::types::{Entry, NodeId};

impl Engine {
    /// Leader: `peer` needs entries whose payloads are no longer in memory.
    pub(super) fn fetch_for(&mut self, peer: NodeId, evicted: Evicted) {
        let count_max = self.config.entries_per_message_max as u64;
        let fetch = EntryFetch {
            peer,
            term: self.term,
            low: evicted.low,
            high: evicted.high.min(evicted.low + count_max),
            bytes_max: self.config.message_bytes_max,
        };
        let progress = self.leading_mut().peer_mut(peer);
        if progress.fetching {
            return;
        }
        progress.fetching = true;
        debug!(
            id = self.id,
            peer,
            low = fetch.low,
            high = fetch.high,
            "reading entries back"
        );
        self.ready.fetches.push(fetch);
    }

    /// Takes the reads asked for since the last `Ready`, for runtimes that keep working while
    /// a write is in flight (like [`Engine::take_messages`]).
    pub fn take_fetches(&mut self) -> Vec<EntryFetch> {
        std::mem::take(&mut self.ready.fetches)
    }

    /// Reports the result of a [`EntryFetch`]: the entries read (`None` if the read failed).
    /// Entries that still belong to this leader's log go to the follower; anything else
    /// (a failed read, a purged range, a later term, a follower that moved on) is dropped and
    /// the follower is probed again, which sends a snapshot if the log was compacted.
    pub fn on_entries_fetched(&mut self, fetch: EntryFetch, entries: Option<Vec<Entry>>) {
        if self.role != Role::Leader || self.term != fetch.term {
            return;
        }
        let offset = self.log.offset().index;
        let leading = self.leading.as_mut().expect("leading");
        let round = leading.reads.round();
        let Some(progress) = leading.progress.get_mut(&fetch.peer) else {
            return;
        };
        if !progress.fetching {
            return; // Stale: the follower's state changed meanwhile.
        }
        progress.fetching = false;
        if progress.next_index != fetch.low {
            // Acknowledgements moved the follower on meanwhile: send from where it is now.
            self.send_append(fetch.peer, false);
            return;
        }
        let usable = entries.filter(|entries| {
            fetch.low > offset
                && entries.first().is_some_and(|e| e.index == fetch.low)
                && entries.iter().all(|e| self.log.matches(e.log_id()))
        });
        match usable {
            Some(entries) => {
                self.send_entries(fetch.peer, fetch.low, entries, round);
                // Keep the pipeline full: the next batch may be in memory or need a read.
                self.send_append(fetch.peer, false);
            }
            None => {
                warn!(
                    id = self.id,
                    peer = fetch.peer,
                    low = fetch.low,
                    "entries could not be read back; probing the follower again"
                );
                self.leading_mut().peer_mut(fetch.peer).become_probe();
            }
        }
    }
}

//! The table of the key-value state machine: typed values, deadlines, and what WATCH and
//! SCAN need, kept so that every replica holds exactly the same state at every log index.
//!
//! * **Values** are strings, hashes, lists or sets ([`Data`]). Each is reference-counted, so
//!   a snapshot captures the table by cloning references; a write to a collection a capture
//!   still holds copies it first (`Arc::make_mut`).
//! * **Deadlines** are absolute times in milliseconds since the Unix epoch, stamped by the
//!   leader (see the module documentation of [`crate::kv`]). A key whose deadline is at or
//!   before "now" is absent for every command; `now` is the entry's stamp when applying and
//!   the node's clock when reading. Keys with a deadline are also kept in a deadline-ordered
//!   index ([`Db::due`]), so the leader finds the expired ones without scanning the table.
//! * **Modification indexes**: every key records the log index of the last command that
//!   changed it, and deleted keys leave a bounded record of when they went ([`Tombstones`]).
//!   Together they give every key a version that WATCH reads and EXEC compares at apply time.
//! * **Shards**: the table is split into [`SHARDS`] hash maps by a fixed hash of the key, the
//!   key's *position* ([`position`]); each map hashes its keys with a random key of this
//!   process, as a single map did, so crafted keys cannot make look-ups slow. SCAN walks positions in increasing order, so its cursor
//!   (a position) means the same on every replica, across writes and leader changes.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

/// Shards of the table. SCAN visits them in order; an empty one costs a length check. More
/// shards would make a SCAN call sort fewer keys, but every look-up would touch a header
/// less likely to be cached: applying a plain SET took 267 ns with 256 shards and 347 ns
/// with 4,096 (235 ns before the table was sharded).
pub const SHARDS: usize = 256;
/// Bits of a position that choose its shard (the top ones).
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

/// Deleted keys whose deletion index is remembered for WATCH, at most. Past it the oldest
/// records go, and a transaction watching an absent key from before them aborts (a
/// conservative answer: EXEC may fail, never succeed wrongly).
pub const TOMBSTONES_MAX: usize = 65_536;
/// Bytes of key remembered in tombstones, at most (see [`TOMBSTONES_MAX`]).
pub const TOMBSTONE_BYTES_MAX: usize = 4 << 20;

/// A stored string. An `Arc<[u8]>` rather than `Bytes`: a snapshot captures the table by
/// cloning every value, and the first clone of a `Bytes` made from a `Vec` allocates its
/// shared header, which made each capture of 100,000 freshly written values a 30 ms stall
/// of the node; cloning an `Arc` only bumps its count.
pub type Value = Arc<[u8]>;

/// The value of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// A string.
    Str(Value),
    /// A hash: field to value.
    Hash(Arc<HashMap<Bytes, Bytes>>),
    /// A list.
    List(Arc<VecDeque<Bytes>>),
    /// A set.
    Set(Arc<HashSet<Bytes>>),
}

impl Data {
    /// The type's name, as TYPE answers it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::Str(_) => "string",
            Data::Hash(_) => "hash",
            Data::List(_) => "list",
            Data::Set(_) => "set",
        }
    }
}

/// One key's value and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The value.
    pub data: Data,
    /// When the key expires, in milliseconds since the Unix epoch; 0: never.
    pub deadline_ms: u64,
    /// Log index of the last command that changed the key (0: unknown, restored from a
    /// snapshot of format 1).
    pub modified: u64,
}

impl Slot {
    /// A slot holding `data`, changed at `index`, without a deadline.
    pub fn new(data: Data, index: u64) -> Slot {
        Slot {
            data,
            deadline_ms: 0,
            modified: index,
        }
    }

    /// Whether the key is expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline_ms != 0 && self.deadline_ms <= now_ms
    }
}

/// A key's version as WATCH saw it, compared again when EXEC is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Version {
    /// Whether the key existed.
    pub existed: bool,
    /// When it existed, the index of its last change; otherwise the index applied when it
    /// was read (any later change of the key is at a higher index).
    pub index: u64,
}

/// When keys were deleted, for WATCH: the last deletion index of recently deleted keys, in
/// the order recorded, and a floor at or above the index of every record dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tombstones {
    by_key: HashMap<Bytes, u64>,
    order: VecDeque<(u64, Bytes)>,
    key_bytes: usize,
    floor: u64,
}

impl Tombstones {
    /// Records that `key` was deleted at `index` (or, for an expired key, last changed at
    /// `index`), dropping the oldest records past the limits.
    pub fn record(&mut self, key: &Bytes, index: u64) {
        let at = self.by_key.entry(key.clone()).or_insert(index);
        *at = (*at).max(index);
        self.order.push_back((index, key.clone()));
        self.key_bytes += key.len();
        while self.order.len() > TOMBSTONES_MAX || self.key_bytes > TOMBSTONE_BYTES_MAX {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        let Some((index, key)) = self.order.pop_front() else {
            return;
        };
        self.key_bytes -= key.len();
        if self.by_key.get(&key) == Some(&index) {
            self.by_key.remove(&key);
        }
        self.floor = self.floor.max(index);
    }

    /// Forgets every record; deletions before `index` are then only known as "before
    /// `index`".
    pub fn forget_all(&mut self, index: u64) {
        self.by_key.clear();
        self.order.clear();
        self.key_bytes = 0;
        self.floor = self.floor.max(index);
    }

    /// Whether `key` may have been deleted after `index`.
    fn deleted_after(&self, key: &[u8], index: u64) -> bool {
        match self.by_key.get(key) {
            Some(at) => *at > index,
            None => self.floor > index,
        }
    }

    /// The records, oldest first, and the floor: what a snapshot stores.
    pub fn parts(&self) -> (u64, &VecDeque<(u64, Bytes)>) {
        (self.floor, &self.order)
    }

    /// Rebuilds the records from a snapshot's parts.
    pub fn from_parts(floor: u64, order: Vec<(u64, Bytes)>) -> Tombstones {
        let mut tombstones = Tombstones {
            floor,
            ..Tombstones::default()
        };
        for (index, key) in order {
            tombstones.record(&key, index);
        }
        tombstones
    }
}

/// One shard of the table.
pub type Shard = HashMap<Bytes, Slot>;

/// The state of the key-value state machine.
#[derive(Debug)]
pub struct Db {
    /// Each shard behind its own reference count: a snapshot's capture shares them all
    /// (`Db::shards`), and the first change to a shard after it copies that shard alone
    /// (`Arc::make_mut`), so neither the capture nor any one write costs more than a shard.
    shards: Box<[Arc<Shard>]>,
    len: usize,
    /// Keys with a deadline, by deadline.
    deadlines: BTreeSet<(u64, Bytes)>,
    tombstones: Tombstones,
    /// The latest clock stamp applied, in milliseconds since the Unix epoch: "now" for
    /// commands that carry no stamp of their own, and never behind any stamp applied.
    clock_ms: u64,
    /// The index of the last entry applied.
    applied_index: u64,
}

impl Default for Db {
    fn default() -> Db {
        Db {
            shards: (0..SHARDS).map(|_| Arc::new(Shard::new())).collect(),
            len: 0,
            deadlines: BTreeSet::new(),
            tombstones: Tombstones::default(),
            clock_ms: 0,
            applied_index: 0,
        }
    }
}

impl PartialEq for Db {
    /// Same keys, values and metadata, tombstones and clock (the applied index aside, which
    /// a restore takes from the snapshot's label).
    fn eq(&self, other: &Db) -> bool {
        self.len == other.len
            && self.clock_ms == other.clock_ms
            && self.tombstones == other.tombstones
            && self.iter().all(|(key, slot)| other.slot(key) == Some(slot))
    }
}

/// A key's position: a fixed 64-bit hash of its bytes, the same on every replica and in
/// every version of this program (SCAN cursors are positions). Eight bytes at a time, each
/// word mixed in with a multiply and folded; the last, partial word is read as the key's
/// last eight bytes (or assembled, for a key under eight), never copied through memory;
/// then MurmurHash3's 64-bit finalizer, so every input bit reaches the top bits that choose
/// the shard.
pub fn position(key: &[u8]) -> u64 {
    const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    const MULTIPLIER: u64 = 0xbf58_476d_1ce4_e5b9;
    let word_at = |at: usize| {
        let bytes: [u8; 8] = key[at..at + 8].try_into().expect("eight bytes");
        u64::from_le_bytes(bytes)
    };
    let mut hash = SEED ^ (key.len() as u64).wrapping_mul(MULTIPLIER);
    let mut mix = |word: u64| {
        hash = (hash ^ word).wrapping_mul(MULTIPLIER);
        hash ^= hash >> 31;
    };
    let whole = key.len() / 8;
    for i in 0..whole {
        mix(word_at(i * 8));
    }
    if key.len() % 8 != 0 {
        let last = match key.len() {
            len if len >= 8 => word_at(len - 8),
            _ => key
                .iter()
                .rev()
                .fold(0, |word, b| (word << 8) | u64::from(*b)),
        };
        mix(last);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The shard holding positions starting with `position`'s top bits.
fn shard_of(position: u64) -> usize {
    (position >> (64 - SHARD_BITS)) as usize
}

impl Db {
    /// An empty table.
    pub fn new() -> Db {
        Db::default()
    }

    /// Keys stored, expired ones not yet deleted included (as Redis's DBSIZE counts them).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys stored with a deadline.
    pub fn expiring_len(&self) -> usize {
        self.deadlines.len()
    }

    /// The latest clock stamp applied, in milliseconds since the Unix epoch.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Moves the clock to `stamp_ms` if it is ahead; returns the clock: "now" for the entry
    /// that carried the stamp. The clock never goes back, whichever leader stamped.
    pub fn advance_clock(&mut self, stamp_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(stamp_ms);
        self.clock_ms
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Records that the entry at `index` is being applied.
    pub fn set_applied_index(&mut self, index: u64) {
        self.applied_index = index;
    }

    /// The shard of `key`, to change: copied first if a snapshot's capture still shares it.
    fn shard_mut(&mut self, key: &[u8]) -> &mut Shard {
        Arc::make_mut(&mut self.shards[shard_of(position(key))])
    }

    /// Every shard, shared: what a snapshot captures, in O(shards) whatever the number of
    /// keys. Changes made afterwards copy the shard they touch and leave these as they are.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards.to_vec()
    }

    /// The slot of `key`, expired or not.
    pub fn slot(&self, key: &[u8]) -> Option<&Slot> {
        self.shards[shard_of(position(key))].get(key)
    }

    /// The slot of `key` unless it is absent or expired at `now_ms`.
    pub fn live(&self, key: &[u8], now_ms: u64) -> Option<&Slot> {
        self.slot(key).filter(|slot| !slot.is_expired(now_ms))
    }

    /// The slot of `key` to change in place. Its deadline must be changed through
    /// [`Db::set_deadline`], which keeps the deadline index.
    pub fn slot_mut(&mut self, key: &[u8]) -> Option<&mut Slot> {
        self.shard_mut(key).get_mut(key)
    }

    /// Stores `slot` at `key`; returns the slot it replaced.
    pub fn insert(&mut self, key: Bytes, slot: Slot) -> Option<Slot> {
        use std::collections::hash_map::Entry;
        let deadline_ms = slot.deadline_ms;
        match Arc::make_mut(&mut self.shards[shard_of(position(&key))]).entry(key) {
            Entry::Occupied(mut entry) => {
                let old = entry.insert(slot);
                if old.deadline_ms != deadline_ms {
                    if old.deadline_ms != 0 {
                        self.deadlines
                            .remove(&(old.deadline_ms, entry.key().clone()));
                    }
                    if deadline_ms != 0 {
                        self.deadlines.insert((deadline_ms, entry.key().clone()));
                    }
                }
                Some(old)
            }
            Entry::Vacant(entry) => {
                if deadline_ms != 0 {
                    self.deadlines.insert((deadline_ms, entry.key().clone()));
                }
                entry.insert(slot);
                self.len += 1;
                None
            }
        }
    }

    /// Stores `data` at `key`, changed at `index`; an existing key keeps its deadline.
    pub fn update(&mut self, key: Bytes, data: Data, index: u64) {
        match self.slot_mut(&key) {
            Some(slot) => {
                slot.data = data;
                slot.modified = index;
            }
            None => {
                self.insert(key, Slot::new(data, index));
            }
        }
    }

    /// Sets `key` to the string `value` without a deadline, changed at `index`: a plain SET,
    /// the hot path. One look-up; the key is copied only when it is new.
    pub fn put_string(&mut self, key: &[u8], value: Value, index: u64) {
        let shard = Arc::make_mut(&mut self.shards[shard_of(position(key))]);
        match shard.get_mut(key) {
            Some(slot) => {
                if slot.deadline_ms != 0 {
                    self.deadlines
                        .remove(&(slot.deadline_ms, Bytes::copy_from_slice(key)));
                }
                *slot = Slot::new(Data::Str(value), index);
            }
            None => {
                shard.insert(
                    Bytes::copy_from_slice(key),
                    Slot::new(Data::Str(value), index),
                );
                self.len += 1;
            }
        }
    }

    /// Removes `key` without recording a deletion (the caller records one).
    fn take(&mut self, key: &[u8]) -> Option<(Bytes, Slot)> {
        let (key, slot) = self.shard_mut(key).remove_entry(key)?;
        self.len -= 1;
        if slot.deadline_ms != 0 {
            self.deadlines.remove(&(slot.deadline_ms, key.clone()));
        }
        Some((key, slot))
    }

    /// Deletes `key` by a command applied at `index`; the slot it held.
    pub fn delete(&mut self, key: &[u8], index: u64) -> Option<Slot> {
        let (key, slot) = self.take(key)?;
        self.tombstones.record(&key, index);
        Some(slot)
    }

    /// Records that `key` was deleted by a command applied at `index`, whether or not it
    /// existed (a SET whose deadline is already past: Redis counts it as a change of the
    /// key for WATCH either way).
    pub fn mark_deleted(&mut self, key: &Bytes, index: u64) {
        self.take(key);
        self.tombstones.record(key, index);
    }

    /// Removes `key`, which no client saw (a collection created empty by a command that then
    /// added nothing to it): no deletion is recorded.
    pub fn discard(&mut self, key: &[u8]) {
        self.take(key);
    }

    /// Deletes `key` if it is expired at `now_ms`: a deletion that changes nothing a client
    /// can see, so its record carries the key's last change, not `now`'s entry. Whether it
    /// was deleted.
    pub fn expire_if_due(&mut self, key: &[u8], now_ms: u64) -> bool {
        if !self.slot(key).is_some_and(|slot| slot.is_expired(now_ms)) {
            return false;
        }
        if let Some((key, slot)) = self.take(key) {
            self.tombstones.record(&key, slot.modified);
        }
        true
    }

    /// Sets the deadline of `key` (0: none), keeping the deadline index.
    pub fn set_deadline(&mut self, key: &[u8], deadline_ms: u64) {
        let shard = shard_of(position(key));
        let Some((stored, slot)) = self.shards[shard].get_key_value(key) else {
            return;
        };
        let (stored, old) = (stored.clone(), slot.deadline_ms);
        if old == deadline_ms {
            return;
        }
        if old != 0 {
            self.deadlines.remove(&(old, stored.clone()));
        }
        if deadline_ms != 0 {
            self.deadlines.insert((deadline_ms, stored));
        }
        if let Some(slot) = Arc::make_mut(&mut self.shards[shard]).get_mut(key) {
            slot.deadline_ms = deadline_ms;
        }
    }

    /// Deletes every key by a command applied at `index`.
    pub fn flush(&mut self, index: u64) {
        if self.len > TOMBSTONES_MAX {
            self.tombstones.forget_all(index);
        } else {
            let keys: Vec<Bytes> = self.iter().map(|(key, _)| key.clone()).collect();
            for key in keys {
                self.tombstones.record(&key, index);
            }
        }
        for shard in self.shards.iter_mut() {
            *shard = Arc::new(Shard::new());
        }
        self.deadlines.clear();
        self.len = 0;
    }

    /// Up to `max` keys whose deadline is at or before `now_ms`, earliest first.
    pub fn due(&self, now_ms: u64, max: usize) -> Vec<Bytes> {
        self.deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(max)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Every key and slot, expired ones included, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Slot)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    /// The keys of the shard holding `position`, with their positions, from `position` on,
    /// in increasing position order.
    pub fn shard_from(&self, position_from: u64) -> Vec<(u64, &Bytes, &Slot)> {
        let mut keys: Vec<(u64, &Bytes, &Slot)> = self.shards[shard_of(position_from)]
            .iter()
            .map(|(key, slot)| (position(key), key, slot))
            .filter(|(at, _, _)| *at >= position_from)
            .collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        keys
    }

    /// The first position of the shard after the one holding `position`; `None` after the
    /// last shard.
    pub fn next_shard_start(position: u64) -> Option<u64> {
        let next = shard_of(position) + 1;
        (next < SHARDS).then_some((next as u64) << (64 - SHARD_BITS))
    }

    /// The version of `key` at `now_ms`, for WATCH.
    pub fn version(&self, key: &[u8], now_ms: u64) -> Version {
        match self.live(key, now_ms) {
            Some(slot) => Version {
                existed: true,
                index: slot.modified,
            },
            None => Version {
                existed: false,
                index: self.applied_index,
            },
        }
    }

    /// Whether `key` is unchanged since WATCH read `version` (at `now_ms`, EXEC's time): a
    /// key that existed still does, with the same last change; one that did not still does
    /// not, and was neither written nor deleted since (an expired key deleted since counts
    /// as unchanged only if it was already expired when watched, as in Redis).
    pub fn unchanged_since(&self, key: &[u8], version: Version, now_ms: u64) -> bool {
        if version.existed {
            return self
                .live(key, now_ms)
                .is_some_and(|slot| slot.modified == version.index);
        }
        match self.slot(key) {
            Some(slot) if !slot.is_expired(now_ms) => false,
            Some(slot) => slot.modified <= version.index,
            None => !self.tombstones.deleted_after(key, version.index),
        }
    }

    /// The deletion records (for snapshots).
    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// Replaces the deletion records and the clock (restoring a snapshot).
    pub fn restore_metadata(&mut self, tombstones: Tombstones, clock_ms: u64) {
        self.tombstones = tombstones;
        self.clock_ms = clock_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SCAN cursors handed to clients are positions, and every node must compute the same
    /// ones: the function is fixed (these values must never change), and it spreads keys
    /// evenly over the shards.
    #[test]
    fn positions_are_fixed_and_spread_keys_over_the_shards() {
        assert_eq!(position(b""), 11_286_133_854_226_296_554);
        assert_eq!(position(b"k"), 12_582_989_721_200_030_412);
        assert_eq!(position(b"key:00000001"), 8_778_763_022_698_912_958);
        assert_eq!(
            position(b"a longer key of 24 bytes"),
            8_400_951_569_426_430_308
        );
        let keys = 100_000;
        let mut counts = vec![0usize; SHARDS];
        for i in 0..keys {
            counts[shard_of(position(format!("key:{i}").as_bytes()))] += 1;
        }
        let even = keys / SHARDS;
        let worst = counts.iter().map(|c| c.abs_diff(even)).max().unwrap_or(0);
        assert!(worst < even / 5, "a shard is {worst} keys off {even}");
    }
}

//! Snapshots of the key-value state machine: written in format 2, read in format 2 or 1.
//!
//! ```text
//! format 2 (little-endian integers; "bytes" is a u32 length, then the bytes)
//! offset  size  field
//! 0       4     magic b"RKV2"
//! 4       8     clock_ms: the latest clock stamp applied
//! 12      8     number of keys N
//! 20      ...   N times: type (u8: 0 string, 1 hash, 2 list, 3 set), deadline_ms (u64, 0:
//!               none), modified (u64), key (bytes), then the value:
//!                 string: bytes
//!                 hash:   count (u32), count times field (bytes), value (bytes)
//!                 list:   count (u32), count times element (bytes), head first
//!                 set:    count (u32), count times member (bytes)
//! ...     8     tombstone floor (u64)
//! ...     8     number of tombstones T (at most TOMBSTONES_MAX)
//! ...     ...   T times: index (u64), key (bytes), oldest first
//!
//! format 1 (strings only; what nodes before format 2 wrote)
//! 0       4     magic b"RKV1"
//! 4       8     number of pairs N
//! 12      ...   N times: key (bytes), value (bytes)
//! ```
//!
//! Keys are in no particular order. The snapshot store checks the CRC32 of the whole
//! stream; the reader bounds every length and count it reads before allocating.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use raft_core::node::StateMachineError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::db::{Data, Db, Shard, Slot, Tombstones, Value, TOMBSTONES_MAX};
use super::KV_ITEM_BYTES_MAX;

/// The first bytes of a snapshot in the current format (2).
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"RKV2";
/// The first bytes of a snapshot in format 1 (strings only), still read.
pub const SNAPSHOT_MAGIC_V1: [u8; 4] = *b"RKV1";

/// Keys (or elements of one value) a reader makes room for before reading them: the count
/// comes from the snapshot, so the room is bounded; the table grows past it as keys arrive.
const PREALLOCATED_ITEMS_MAX: u64 = 1 << 20;

/// Buffer size of the snapshot writer and reader: large enough that small items do not cost
/// one system call each.
const BUFFER_BYTES: usize = 256 << 10;

const TYPE_STRING: u8 = 0;
const TYPE_HASH: u8 = 1;
const TYPE_LIST: u8 = 2;
const TYPE_SET: u8 = 3;

/// The state of a [`Db`] at one moment, to be written as a snapshot: its shards, shared,
/// not copied.
#[derive(Debug)]
pub struct Capture {
    clock_ms: u64,
    len: usize,
    shards: Vec<Arc<Shard>>,
    tombstone_floor: u64,
    tombstones: Vec<(u64, Bytes)>,
}

impl Capture {
    /// Shares the table's shards (a reference count each, whatever the number of keys: the
    /// state machine stops applying for microseconds, where cloning 9 million pairs stopped
    /// it for seconds) and copies its deletion records.
    pub fn of(db: &Db) -> Capture {
        let (tombstone_floor, tombstones) = db.tombstones().parts();
        Capture {
            clock_ms: db.clock_ms(),
            len: db.len(),
            shards: db.shards(),
            tombstone_floor,
            tombstones: tombstones.iter().cloned().collect(),
        }
    }

    /// Writes format 2.
    pub async fn write_to(
        self,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let mut out = Out {
            writer,
            chunk: Vec::with_capacity(BUFFER_BYTES),
        };
        out.put(&SNAPSHOT_MAGIC);
        out.put_u64(self.clock_ms);
        out.put_u64(self.len as u64);
        for (key, slot) in self.shards.iter().flat_map(|shard| shard.iter()) {
            out.put_slot(key, slot).await?;
        }
        out.put_u64(self.tombstone_floor);
        out.put_u64(self.tombstones.len() as u64);
        for (index, key) in &self.tombstones {
            out.put_u64(*index);
            out.put_bytes(key);
            out.flush_if_full().await?;
        }
        out.finish().await
    }
}

/// A snapshot being written: items are laid out into a plain buffer and written a buffer at
/// a time, one await per buffer rather than several per item.
struct Out<'a> {
    writer: &'a mut (dyn AsyncWrite + Send + Unpin),
    chunk: Vec<u8>,
}

fn write_error(e: std::io::Error) -> StateMachineError {
    StateMachineError(format!("snapshot write: {e}"))
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.chunk.extend_from_slice(bytes);
    }

    fn put_u64(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }

    fn put_u32(&mut self, value: usize) {
        // Keys, values and element counts are far below 4 Gi: items are bounded by
        // KV_ITEM_BYTES_MAX and collections by memory.
        let value = u32::try_from(value).expect("a length or count under 4 Gi");
        self.put(&value.to_le_bytes());
    }

    fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_u32(bytes.len());
        self.put(bytes);
    }

    async fn flush_if_full(&mut self) -> Result<(), StateMachineError> {
        if self.chunk.len() >= BUFFER_BYTES {
            self.writer
                .write_all(&self.chunk)
                .await
                .map_err(write_error)?;
            self.chunk.clear();
        }
        Ok(())
    }

    async fn put_slot(&mut self, key: &[u8], slot: &Slot) -> Result<(), StateMachineError> {
        let kind = match &slot.data {
            Data::Str(_) => TYPE_STRING,
            Data::Hash(_) => TYPE_HASH,
            Data::List(_) => TYPE_LIST,
            Data::Set(_) => TYPE_SET,
        };
        self.put(&[kind]);
        self.put_u64(slot.deadline_ms);
        self.put_u64(slot.modified);
        self.put_bytes(key);
        match &slot.data {
            Data::Str(value) => self.put_bytes(value),
            Data::Hash(hash) => {
                self.put_u32(hash.len());
                for (field, value) in hash.iter() {
                    self.put_bytes(field);
                    self.put_bytes(value);
                    self.flush_if_full().await?;
                }
            }
            Data::List(list) => self.put_elements(list.len(), list.iter()).await?,
            Data::Set(set) => self.put_elements(set.len(), set.iter()).await?,
        }
        self.flush_if_full().await
    }

    async fn put_elements(
        &mut self,
        count: usize,
        elements: impl Iterator<Item = &Bytes>,
    ) -> Result<(), StateMachineError> {
        self.put_u32(count);
        for element in elements {
            self.put_bytes(element);
            self.flush_if_full().await?;
        }
        Ok(())
    }

    async fn finish(self) -> Result<(), StateMachineError> {
        self.writer
            .write_all(&self.chunk)
            .await
            .map_err(write_error)?;
        self.writer.flush().await.map_err(write_error)
    }
}

/// A snapshot being read.
struct In<R> {
    input: R,
}

fn read_error(e: std::io::Error) -> StateMachineError {
    StateMachineError(format!("snapshot read: {e}"))
}

impl<R: AsyncRead + Unpin> In<R> {
    async fn u8(&mut self) -> Result<u8, StateMachineError> {
        self.input.read_u8().await.map_err(read_error)
    }

    async fn u64(&mut self) -> Result<u64, StateMachineError> {
        self.input.read_u64_le().await.map_err(read_error)
    }

    async fn u32(&mut self) -> Result<u32, StateMachineError> {
        self.input.read_u32_le().await.map_err(read_error)
    }

    /// One length-prefixed item, its length bounded before anything is allocated.
    async fn bytes(&mut self) -> Result<Bytes, StateMachineError> {
        let len = self.u32().await? as usize;
        if len > KV_ITEM_BYTES_MAX {
            return Err(StateMachineError(format!(
                "snapshot item of {len} bytes exceeds {KV_ITEM_BYTES_MAX}"
            )));
        }
        let mut buf = vec![0; len];
        self.input.read_exact(&mut buf).await.map_err(read_error)?;
        Ok(Bytes::from(buf))
    }

    async fn value(&mut self) -> Result<Value, StateMachineError> {
        Ok(Value::from(&self.bytes().await?[..]))
    }

    /// A count of elements and room for at most [`PREALLOCATED_ITEMS_MAX`] of them.
    async fn count(&mut self) -> Result<(u32, usize), StateMachineError> {
        let count = self.u32().await?;
        Ok((count, u64::from(count).min(PREALLOCATED_ITEMS_MAX) as usize))
    }

    async fn data(&mut self, kind: u8) -> Result<Data, StateMachineError> {
        Ok(match kind {
            TYPE_STRING => Data::Str(self.value().await?),
            TYPE_HASH => {
                let (count, room) = self.count().await?;
                let mut hash = HashMap::with_capacity(room);
                for _ in 0..count {
                    let field = self.bytes().await?;
                    hash.insert(field, self.bytes().await?);
                }
                Data::Hash(Arc::new(hash))
            }
            TYPE_LIST => {
                let (count, room) = self.count().await?;
                let mut list = VecDeque::with_capacity(room);
                for _ in 0..count {
                    list.push_back(self.bytes().await?);
                }
                Data::List(Arc::new(list))
            }
            TYPE_SET => {
                let (count, room) = self.count().await?;
                let mut set = HashSet::with_capacity(room);
                for _ in 0..count {
                    set.insert(self.bytes().await?);
                }
                Data::Set(Arc::new(set))
            }
            other => {
                return Err(StateMachineError(format!(
                    "snapshot holds a value of unknown type {other}"
                )))
            }
        })
    }

    async fn end(&mut self) -> Result<(), StateMachineError> {
        let mut rest = [0u8; 1];
        match self.input.read(&mut rest).await.map_err(read_error)? {
            0 => Ok(()),
            _ => Err(StateMachineError("snapshot has trailing bytes".into())),
        }
    }
}

/// Reads a snapshot of either format.
pub async fn read_snapshot(
    reader: &mut (dyn AsyncRead + Send + Unpin),
) -> Result<Db, StateMachineError> {
    let mut input = In {
        input: BufReader::with_capacity(BUFFER_BYTES, reader),
    };
    let mut magic = [0u8; 4];
    input
        .input
        .read_exact(&mut magic)
        .await
        .map_err(read_error)?;
    let db = match magic {
        SNAPSHOT_MAGIC => read_v2(&mut input).await?,
        SNAPSHOT_MAGIC_V1 => read_v1(&mut input).await?,
        _ => {
            return Err(StateMachineError(format!(
                "not a key-value snapshot (magic {magic:?})"
            )))
        }
    };
    input.end().await?;
    Ok(db)
}

async fn read_v2<R: AsyncRead + Unpin>(input: &mut In<R>) -> Result<Db, StateMachineError> {
    let clock_ms = input.u64().await?;
    let count = input.u64().await?;
    let mut db = Db::new();
    for _ in 0..count {
        let kind = input.u8().await?;
        let deadline_ms = input.u64().await?;
        let modified = input.u64().await?;
        let key = input.bytes().await?;
        let data = input.data(kind).await?;
        let slot = Slot {
            data,
            deadline_ms,
            modified,
        };
        if db.insert(key, slot).is_some() {
            return Err(StateMachineError("snapshot holds a key twice".into()));
        }
    }
    let floor = input.u64().await?;
    let tombstone_count = input.u64().await?;
    if tombstone_count > TOMBSTONES_MAX as u64 {
        return Err(StateMachineError(format!(
            "snapshot holds {tombstone_count} tombstones, more than {TOMBSTONES_MAX}"
        )));
    }
    let mut order = Vec::with_capacity(tombstone_count as usize);
    for _ in 0..tombstone_count {
        let index = input.u64().await?;
        order.push((index, input.bytes().await?));
    }
    db.restore_metadata(Tombstones::from_parts(floor, order), clock_ms);
    Ok(db)
}

async fn read_v1<R: AsyncRead + Unpin>(input: &mut In<R>) -> Result<Db, StateMachineError> {
    let count = input.u64().await?;
    let mut db = Db::new();
    for _ in 0..count {
        let key = input.bytes().await?;
        let value = input.value().await?;
        db.insert(key, Slot::new(Data::Str(value), 0));
    }
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Db {
        let mut db = Db::new();
        db.advance_clock(1_700_000_000_000);
        for i in 0..50u64 {
            let key = Bytes::from(format!("s{i}"));
            let mut slot = Slot::new(Data::Str(Value::from(vec![i as u8; i as usize])), i);
            slot.deadline_ms = if i % 3 == 0 { 1_800_000_000_000 + i } else { 0 };
            db.insert(key, slot);
        }
        let hash: HashMap<Bytes, Bytes> = (0..5)
            .map(|i| (Bytes::from(format!("f{i}")), Bytes::from(format!("v{i}"))))
            .collect();
        db.insert(Bytes::from("h"), Slot::new(Data::Hash(Arc::new(hash)), 7));
        let list: VecDeque<Bytes> = ["a", "b", "a"].into_iter().map(Bytes::from).collect();
        db.insert(Bytes::from("l"), Slot::new(Data::List(Arc::new(list)), 8));
        let set: HashSet<Bytes> = ["x", "y"].into_iter().map(Bytes::from).collect();
        db.insert(Bytes::from("set"), Slot::new(Data::Set(Arc::new(set)), 9));
        for i in 0..10u64 {
            db.mark_deleted(&Bytes::from(format!("gone{i}")), 100 + i);
        }
        db
    }

    async fn round_trip(db: &Db) -> Db {
        let mut buf = Vec::new();
        Capture::of(db).write_to(&mut buf).await.unwrap();
        read_snapshot(&mut &buf[..]).await.unwrap()
    }

    #[tokio::test]
    async fn every_type_deadlines_modifications_and_tombstones_round_trip() {
        let db = sample();
        let back = round_trip(&db).await;
        assert_eq!(back, db);
        assert_eq!(back.expiring_len(), db.expiring_len());
        assert_eq!(back.due(u64::MAX, 100), db.due(u64::MAX, 100));
    }

    /// A capture shares the shards and holds the state of its moment: every kind of change
    /// made afterwards (a plain SET, an insert, a deadline, a delete, a flush) copies the
    /// shard it touches and leaves the capture as it was.
    #[tokio::test]
    async fn a_capture_is_not_changed_by_later_writes() {
        let mut db = sample();
        let before = round_trip(&db).await;
        let capture = Capture::of(&db);
        db.put_string(b"s1", Value::from(b"changed".to_vec()), 200);
        db.put_string(b"brand-new", Value::from(b"x".to_vec()), 201);
        db.insert(
            Bytes::from("s2"),
            Slot::new(Data::Str(Value::from(b"y".to_vec())), 202),
        );
        db.set_deadline(b"s4", 1_900_000_000_000);
        db.delete(b"s5", 203);
        let mut buf = Vec::new();
        capture.write_to(&mut buf).await.unwrap();
        assert_eq!(read_snapshot(&mut &buf[..]).await.unwrap(), before);
        let capture = Capture::of(&db);
        db.flush(204);
        let mut buf = Vec::new();
        capture.write_to(&mut buf).await.unwrap();
        let flushed_after = read_snapshot(&mut &buf[..]).await.unwrap();
        assert_eq!(
            flushed_after.len(),
            before.len(),
            "one key added, one deleted"
        );
        assert!(flushed_after.slot(b"brand-new").is_some());
        assert!(flushed_after.slot(b"s5").is_none());
    }

    /// A snapshot written by a node of the previous version (format 1: strings only) is
    /// read: every pair comes back as a string without deadline.
    #[tokio::test]
    async fn a_snapshot_in_the_previous_format_is_read() {
        let mut v1 = SNAPSHOT_MAGIC_V1.to_vec();
        v1.extend_from_slice(&2u64.to_le_bytes());
        for (key, value) in [(&b"greeting"[..], &b"hello"[..]), (b"n", b"42")] {
            for item in [key, value] {
                v1.extend_from_slice(&(item.len() as u32).to_le_bytes());
                v1.extend_from_slice(item);
            }
        }
        let db = read_snapshot(&mut &v1[..]).await.unwrap();
        assert_eq!(db.len(), 2);
        let slot = db.slot(b"greeting").unwrap();
        assert_eq!(slot.data, Data::Str(Value::from(&b"hello"[..])));
        assert_eq!((slot.deadline_ms, slot.modified), (0, 0));
        assert_eq!(db.expiring_len(), 0);
        // And written back in the current format.
        assert_eq!(round_trip(&db).await, db);
    }

    #[tokio::test]
    async fn damaged_snapshots_are_refused_without_large_allocations() {
        let mut buf = Vec::new();
        Capture::of(&sample()).write_to(&mut buf).await.unwrap();
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(read_snapshot(&mut &bad[..]).await.is_err());
        assert!(read_snapshot(&mut &buf[..buf.len() - 1]).await.is_err());
        let mut longer = buf.clone();
        longer.push(0);
        assert!(read_snapshot(&mut &longer[..]).await.is_err());
        // A key of 4 GiB announced.
        let mut huge = SNAPSHOT_MAGIC.to_vec();
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.extend_from_slice(&1u64.to_le_bytes());
        huge.push(TYPE_STRING);
        huge.extend_from_slice(&[0; 16]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_snapshot(&mut &huge[..]).await.is_err());
        // A hash of 4 Gi fields announced, then nothing.
        let mut many = SNAPSHOT_MAGIC.to_vec();
        many.extend_from_slice(&0u64.to_le_bytes());
        many.extend_from_slice(&1u64.to_le_bytes());
        many.push(TYPE_HASH);
        many.extend_from_slice(&[0; 16]);
        many.extend_from_slice(&1u32.to_le_bytes());
        many.push(b'h');
        many.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_snapshot(&mut &many[..]).await.is_err());
        // An unknown type.
        let mut unknown = SNAPSHOT_MAGIC.to_vec();
        unknown.extend_from_slice(&0u64.to_le_bytes());
        unknown.extend_from_slice(&1u64.to_le_bytes());
        unknown.push(9);
        assert!(read_snapshot(&mut &unknown[..]).await.is_err());
    }
}

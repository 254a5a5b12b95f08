//! The Redis data commands as the state machine executes them: typed operations
//! ([`ReadOp`], [`WriteOp`]), the answers they give ([`Answer`]), and the reply budget
//! ([`Budget`]).
//!
//! A write is applied by every replica from its log entry, so everything here is a pure
//! function of the table, the operation, the entry's index and its clock stamp: no other
//! clock, no randomness, no iteration order that differs between replicas may change the
//! table. Reads run on one node after a read barrier, on the table as it stands; they never
//! change it (a key past its deadline is only treated as absent).
//!
//! Answers are what Redis answers, error texts included; the Redis front end turns them into
//! RESP. Arguments are validated when the command is parsed (in `redis/cmd/`), except what
//! depends on the data or on the clock.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::db::{Data, Db, Slot, Version};
use super::{hashes, keys, lists, sets, strings};

/// Bytes a reply spends on one item besides the item itself, counted against the budget: a
/// RESP bulk header and CRLF take at most 14, a MessagePack one at most 6.
pub const REPLY_ITEM_OVERHEAD_BYTES: usize = 16;

/// Redis's error for a command on a key of another type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// An answer to a data command, as Redis gives it. `Map` and `Set` are flat lists (a map's
/// keys and values alternate) that RESP3 marks as such and RESP2 sends as arrays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// `+OK`.
    Ok,
    /// A status word (`+string` from TYPE).
    Status(String),
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// A nil bulk string.
    Nil,
    /// A nil array (EXEC whose watched keys changed, a pop with a count on no key).
    NilArray,
    /// An array.
    Array(Vec<Answer>),
    /// A map, as alternating keys and values.
    Map(Vec<Answer>),
    /// A set.
    Set(Vec<Answer>),
    /// An error, its code word first (`ERR ...`, `WRONGTYPE ...`).
    Error(String),
}

impl Answer {
    /// `ERR message`.
    pub fn err(message: impl std::fmt::Display) -> Answer {
        Answer::Error(format!("ERR {message}"))
    }

    /// The WRONGTYPE error.
    pub fn wrong_type() -> Answer {
        Answer::Error(WRONGTYPE.to_string())
    }

    /// A bulk string sharing `bytes`.
    pub fn bulk(bytes: &Bytes) -> Answer {
        Answer::Bulk(bytes.clone())
    }
}

/// The most bytes a reply may hold (`reply_bytes_max`), and what the reply built so far
/// holds. An item is counted before it is added, so a reply past the budget is never built
/// whole: the command answers with [`Budget::refusal`] instead.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    used: usize,
    max: usize,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Budget {
        Budget { used: 0, max }
    }

    /// Counts an item of `bytes` (plus [`REPLY_ITEM_OVERHEAD_BYTES`]); whether the reply is
    /// still within the budget.
    pub fn charge(&mut self, bytes: usize) -> bool {
        self.used = self.used.saturating_add(bytes + REPLY_ITEM_OVERHEAD_BYTES);
        self.used <= self.max
    }

    /// Whether the reply went past the budget.
    pub fn exceeded(&self) -> bool {
        self.used > self.max
    }

    /// The error for a reply past the budget.
    pub fn refusal(&self) -> Answer {
        Answer::err(format!(
            "reply of {} bytes exceeds the limit of {} (reply_bytes_max); ask for fewer \
             keys or elements at a time",
            self.used, self.max
        ))
    }

    /// Collects the items of a reply, counting each; the refusal if they do not fit (counting
    /// goes on past the budget, without building, so the error says how large the reply
    /// would have been).
    pub fn collect(&mut self, items: impl Iterator<Item = Bytes>) -> Result<Vec<Answer>, Answer> {
        let mut answers = Vec::new();
        for item in items {
            if self.charge(item.len()) {
                answers.push(Answer::Bulk(item));
            }
        }
        if self.exceeded() {
            return Err(self.refusal());
        }
        Ok(answers)
    }
}

/// When a SET writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Always.
    Always,
    /// Only when the key is absent (NX).
    IfAbsent,
    /// Only when the key is present (XX).
    IfPresent,
    /// Only when the key holds exactly this string (Valkey's IFEQ).
    IfEqual(Bytes),
}

/// The command whose expiry argument is checked, named in its error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireCommand {
    /// SET
    Set,
    /// SETEX
    Setex,
    /// PSETEX
    Psetex,
    /// EXPIRE
    Expire,
    /// PEXPIRE
    Pexpire,
    /// EXPIREAT
    Expireat,
    /// PEXPIREAT
    Pexpireat,
}

impl ExpireCommand {
    /// The command's name as its errors show it.
    pub fn name(self) -> &'static str {
        match self {
            ExpireCommand::Set => "set",
            ExpireCommand::Setex => "setex",
            ExpireCommand::Psetex => "psetex",
            ExpireCommand::Expire => "expire",
            ExpireCommand::Pexpire => "pexpire",
            ExpireCommand::Expireat => "expireat",
            ExpireCommand::Pexpireat => "pexpireat",
        }
    }

    /// `ERR invalid expire time in '<name>' command`.
    pub fn invalid(self) -> Answer {
        Answer::err(format!("invalid expire time in '{}' command", self.name()))
    }
}

/// A deadline as a command gives it: from now or absolute, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    /// This many milliseconds after the entry's clock stamp.
    In(i64),
    /// At this time, in milliseconds since the Unix epoch.
    At(i64),
}

impl When {
    /// The absolute deadline at `now_ms`; `None` if adding overflows (Redis's "invalid expire
    /// time").
    pub fn deadline(self, now_ms: u64) -> Option<i64> {
        match self {
            When::In(ms) => ms.checked_add(i64::try_from(now_ms).ok()?),
            When::At(ms) => Some(ms),
        }
    }
}

/// What a SET does with the key's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetExpiry {
    /// Removes it (plain SET).
    Clear,
    /// Keeps it (KEEPTTL).
    Keep,
    /// Sets it (EX, PX, EXAT, PXAT, SETEX, PSETEX).
    Set(When, ExpireCommand),
}

/// EXPIRE's NX, XX, GT and LT options (XX may go with GT or LT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireCondition {
    /// NX: only when the key has no deadline.
    pub nx: bool,
    /// XX: only when it has one.
    pub xx: bool,
    /// GT: only when the new deadline is later (a key without one never qualifies).
    pub gt: bool,
    /// LT: only when the new deadline is earlier (a key without one always does).
    pub lt: bool,
}

impl ExpireCondition {
    /// Whether the condition refuses `deadline_ms` for a key whose deadline is
    /// `current_ms` (0: none).
    pub fn refuses(self, current_ms: u64, deadline_ms: i64) -> bool {
        let current = current_ms as i64;
        (self.nx && current_ms != 0)
            || (self.xx && current_ms == 0)
            || (self.gt && (current_ms == 0 || deadline_ms <= current))
            || (self.lt && current_ms != 0 && deadline_ms >= current)
    }
}

/// What a hash write answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashSetReply {
    /// HSET: the number of new fields.
    Added,
    /// HMSET: OK.
    Ok,
    /// HSETNX: 1 if the field was set, 0 if it existed (and nothing changed).
    IfAbsent,
}

/// A command that reads the table. Each variant is the Redis command of its name; the
/// fields are its arguments, named as Redis's documentation names them.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOp {
    /// GET
    Get { key: Bytes },
    /// MGET (nil for keys that are not strings)
    MGet { keys: Vec<Bytes> },
    /// STRLEN
    StrLen { key: Bytes },
    /// GETRANGE
    GetRange { key: Bytes, start: i64, end: i64 },
    /// EXISTS
    Exists { keys: Vec<Bytes> },
    /// TYPE
    Type { key: Bytes },
    /// KEYS
    Keys { pattern: Bytes },
    /// SCAN
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: u64,
        type_name: Option<Bytes>,
    },
    /// DBSIZE
    DbSize,
    /// TTL (seconds) and PTTL (milliseconds)
    Ttl { key: Bytes, millis: bool },
    /// HGET
    HGet { key: Bytes, field: Bytes },
    /// HMGET
    HMGet { key: Bytes, fields: Vec<Bytes> },
    /// HGETALL
    HGetAll { key: Bytes },
    /// HEXISTS
    HExists { key: Bytes, field: Bytes },
    /// HLEN
    HLen { key: Bytes },
    /// HKEYS
    HKeys { key: Bytes },
    /// HVALS
    HVals { key: Bytes },
    /// LRANGE
    LRange { key: Bytes, start: i64, stop: i64 },
    /// LLEN
    LLen { key: Bytes },
    /// LINDEX (the index is read after the key is looked up, as Redis reads it)
    LIndex { key: Bytes, index: Bytes },
    /// SMEMBERS
    SMembers { key: Bytes },
    /// SISMEMBER
    SIsMember { key: Bytes, member: Bytes },
    /// SCARD
    SCard { key: Bytes },
}

/// A command that may change the table. Each variant is the Redis command of its name; the
/// fields are its arguments, named as Redis's documentation names them.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// SET with its options; GETSET; SETEX; PSETEX
    Set {
        key: Bytes,
        value: Bytes,
        condition: Condition,
        get: bool,
        expiry: SetExpiry,
    },
    /// SETNX
    SetNx { key: Bytes, value: Bytes },
    /// MSET, MSETNX (`only_if_none_exist`)
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
        only_if_none_exist: bool,
    },
    /// INCR, INCRBY, DECR, DECRBY
    IncrBy { key: Bytes, delta: i64 },
    /// INCRBYFLOAT (the increment is read after the key's type and value are checked, as
    /// Redis reads it)
    IncrByFloat { key: Bytes, delta: Bytes },
    /// APPEND
    Append { key: Bytes, value: Bytes },
    /// SETRANGE (the offset is checked non-negative when parsed)
    SetRange {
        key: Bytes,
        offset: u64,
        value: Bytes,
    },
    /// GETDEL
    GetDel { key: Bytes },
    /// DEL, UNLINK
    Del { keys: Vec<Bytes> },
    /// RENAME, RENAMENX
    Rename {
        from: Bytes,
        to: Bytes,
        only_if_absent: bool,
    },
    /// FLUSHDB, FLUSHALL
    Flush,
    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT
    Expire {
        key: Bytes,
        when: When,
        condition: ExpireCondition,
        command: ExpireCommand,
    },
    /// PERSIST
    Persist { key: Bytes },
    /// Deletes the keys that are expired at the entry's clock (proposed by the leader).
    Reap { keys: Vec<Bytes> },
    /// HSET, HMSET, HSETNX
    HSet {
        key: Bytes,
        pairs: Vec<(Bytes, Bytes)>,
        reply: HashSetReply,
    },
    /// HDEL
    HDel { key: Bytes, fields: Vec<Bytes> },
    /// HINCRBY
    HIncrBy {
        key: Bytes,
        field: Bytes,
        delta: i64,
    },
    /// LPUSH, RPUSH
    Push {
        key: Bytes,
        values: Vec<Bytes>,
        left: bool,
    },
    /// LPOP, RPOP
    Pop {
        key: Bytes,
        left: bool,
        count: Option<u64>,
    },
    /// SADD
    SAdd { key: Bytes, members: Vec<Bytes> },
    /// SREM
    SRem { key: Bytes, members: Vec<Bytes> },
}

impl WriteOp {
    /// Bytes of keys and values the operation carries (to size its encoding).
    pub fn payload_bytes(&self) -> usize {
        let pairs = |pairs: &[(Bytes, Bytes)]| -> usize {
            pairs.iter().map(|(a, b)| a.len() + b.len() + 16).sum()
        };
        let list = |items: &[Bytes]| -> usize { items.iter().map(|i| i.len() + 8).sum() };
        match self {
            WriteOp::Set { key, value, .. } | WriteOp::SetNx { key, value } => {
                key.len() + value.len() + 64
            }
            WriteOp::MSet { pairs: p, .. } => pairs(p),
            WriteOp::Append { key, value } | WriteOp::SetRange { key, value, .. } => {
                key.len() + value.len() + 16
            }
            WriteOp::Rename { from, to, .. } => from.len() + to.len() + 16,
            WriteOp::Del { keys } | WriteOp::Reap { keys } => list(keys),
            WriteOp::HSet { key, pairs: p, .. } => key.len() + pairs(p),
            WriteOp::HDel { key, fields } => key.len() + list(fields),
            WriteOp::Push { key, values, .. } => key.len() + list(values),
            WriteOp::SAdd { key, members } | WriteOp::SRem { key, members } => {
                key.len() + list(members)
            }
            WriteOp::HIncrBy { key, field, .. } => key.len() + field.len() + 16,
            WriteOp::IncrByFloat { key, delta } => key.len() + delta.len() + 16,
            WriteOp::IncrBy { key, .. }
            | WriteOp::GetDel { key }
            | WriteOp::Expire { key, .. }
            | WriteOp::Persist { key }
            | WriteOp::Pop { key, .. } => key.len() + 16,
            WriteOp::Flush => 0,
        }
    }
}

/// A data command: a read or a write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Reads only.
    Read(ReadOp),
    /// May write.
    Write(WriteOp),
}

/// Data commands applied as one log entry, atomically: one command, or the commands of a
/// MULTI/EXEC transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The commands, in order.
    pub ops: Vec<Op>,
    /// Keys watched (WATCH) with the versions read then: if any changed, nothing runs and
    /// the answer is a nil array (EXEC's answer when a watched key changed).
    pub watched: Vec<(Bytes, Version)>,
    /// Answer with an array of every command's answer (EXEC), rather than the one
    /// command's.
    pub transaction: bool,
    /// The reply budget of the node that took the request, in bytes: the same on every
    /// replica, so a command refused for it is refused everywhere.
    pub reply_bytes_max: u64,
}

impl Batch {
    /// One write, outside a transaction.
    pub fn single(op: WriteOp, reply_bytes_max: usize) -> Batch {
        Batch {
            ops: vec![Op::Write(op)],
            watched: Vec::new(),
            transaction: false,
            reply_bytes_max: reply_bytes_max as u64,
        }
    }

    /// Bytes of keys and values the batch carries.
    pub fn payload_bytes(&self) -> usize {
        let ops: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Write(op) => op.payload_bytes(),
                Op::Read(_) => 256,
            })
            .sum();
        ops + self
            .watched
            .iter()
            .map(|(k, _)| k.len() + 16)
            .sum::<usize>()
    }
}

/// Runs `change` on the collection at `key` (`project` finds it in the key's value; `make`
/// wraps a new one), creating an empty one for a missing key. `change` answers and says
/// whether it changed the collection; a change is recorded at the entry's index, and a
/// collection left empty deletes the key (one that was created empty just now was never
/// visible, so its removal is no change). The WRONGTYPE error for a key of another type.
pub(super) fn change_collection<C: Clone + Default, T>(
    db: &mut Db,
    key: Bytes,
    at: At,
    project: fn(&mut Data) -> Option<&mut Arc<C>>,
    make: impl FnOnce(Arc<C>) -> Data,
    is_empty: impl Fn(&C) -> bool,
    change: impl FnOnce(&mut C) -> (T, bool),
) -> Result<T, Answer> {
    db.expire_if_due(&key, at.now_ms);
    let created = db.slot(&key).is_none();
    if created {
        db.insert(key.clone(), Slot::new(make(Arc::default()), at.index));
    }
    let Some(slot) = db.slot_mut(&key) else {
        unreachable!("the key was just found or inserted");
    };
    let Some(collection) = project(&mut slot.data) else {
        return Err(Answer::wrong_type());
    };
    let collection = Arc::make_mut(collection);
    let (answer, changed) = change(collection);
    let empty = is_empty(collection);
    if changed {
        slot.modified = at.index;
    }
    if empty && changed {
        db.delete(&key, at.index);
    } else if empty {
        db.discard(&key);
    }
    Ok(answer)
}

/// Executes a read at `now_ms`.
pub fn read(db: &Db, op: &ReadOp, now_ms: u64, budget: &mut Budget) -> Answer {
    match op {
        ReadOp::Get { key } => strings::get(db, key, now_ms, budget),
        ReadOp::MGet { keys } => strings::mget(db, keys, now_ms, budget),
        ReadOp::StrLen { key } => strings::strlen(db, key, now_ms),
        ReadOp::GetRange { key, start, end } => {
            strings::getrange(db, key, *start, *end, now_ms, budget)
        }
        ReadOp::Exists { keys } => keys::exists(db, keys, now_ms),
        ReadOp::Type { key } => keys::type_of(db, key, now_ms),
        ReadOp::Keys { pattern } => keys::keys(db, pattern, now_ms, budget),
        ReadOp::Scan {
            cursor,
            pattern,
            count,
            type_name,
        } => keys::scan(
            db,
            keys::ScanArgs {
                cursor: *cursor,
                pattern: pattern.as_deref(),
                count: *count,
                type_name: type_name.as_deref(),
            },
            now_ms,
            budget,
        ),
        ReadOp::DbSize => Answer::Integer(db.len() as i64),
        ReadOp::Ttl { key, millis } => keys::ttl(db, key, *millis, now_ms),
        ReadOp::HGet { key, field } => hashes::hget(db, key, field, now_ms, budget),
        ReadOp::HMGet { key, fields } => hashes::hmget(db, key, fields, now_ms, budget),
        ReadOp::HGetAll { key } => hashes::hgetall(db, key, now_ms, budget),
        ReadOp::HExists { key, field } => hashes::hexists(db, key, field, now_ms),
        ReadOp::HLen { key } => hashes::hlen(db, key, now_ms),
        ReadOp::HKeys { key } => hashes::hkeys(db, key, now_ms, budget),
        ReadOp::HVals { key } => hashes::hvals(db, key, now_ms, budget),
        ReadOp::LRange { key, start, stop } => {
            lists::lrange(db, key, *start, *stop, now_ms, budget)
        }
        ReadOp::LLen { key } => lists::llen(db, key, now_ms),
        ReadOp::LIndex { key, index } => lists::lindex(db, key, index, now_ms, budget),
        ReadOp::SMembers { key } => sets::smembers(db, key, now_ms, budget),
        ReadOp::SIsMember { key, member } => sets::sismember(db, key, member, now_ms),
        ReadOp::SCard { key } => sets::scard(db, key, now_ms),
    }
}

/// The clock and position of the entry a write is applied from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    /// "Now", in milliseconds since the Unix epoch: the entry's clock stamp.
    pub now_ms: u64,
    /// The entry's log index: the key's new modification index.
    pub index: u64,
}

/// Applies a write.
pub fn write(db: &mut Db, op: WriteOp, at: At, budget: &mut Budget) -> Answer {
    match op {
        WriteOp::Set {
            key,
            value,
            condition,
            get,
            expiry,
        } => strings::set(
            db,
            strings::SetArgs {
                key,
                value,
                condition,
                get,
                expiry,
            },
            at,
            budget,
        ),
        WriteOp::SetNx { key, value } => strings::setnx(db, key, value, at),
        WriteOp::MSet {
            pairs,
            only_if_none_exist,
        } => strings::mset(db, pairs, only_if_none_exist, at),
        WriteOp::IncrBy { key, delta } => strings::incrby(db, key, delta, at),
        WriteOp::IncrByFloat { key, delta } => strings::incrbyfloat(db, key, &delta, at),
        WriteOp::Append { key, value } => strings::append(db, key, &value, at),
        WriteOp::SetRange { key, offset, value } => strings::setrange(db, key, offset, &value, at),
        WriteOp::GetDel { key } => strings::getdel(db, &key, at, budget),
        WriteOp::Del { keys } => keys::del(db, &keys, at),
        WriteOp::Rename {
            from,
            to,
            only_if_absent,
        } => keys::rename(db, &from, to, only_if_absent, at),
        WriteOp::Flush => {
            db.flush(at.index);
            Answer::Ok
        }
        WriteOp::Expire {
            key,
            when,
            condition,
            command,
        } => keys::expire(db, &key, when, condition, command, at),
        WriteOp::Persist { key } => keys::persist(db, &key, at),
        WriteOp::Reap { keys } => keys::reap(db, &keys, at),
        WriteOp::HSet { key, pairs, reply } => hashes::hset(db, key, pairs, reply, at),
        WriteOp::HDel { key, fields } => hashes::hdel(db, &key, &fields, at),
        WriteOp::HIncrBy { key, field, delta } => hashes::hincrby(db, key, field, delta, at),
        WriteOp::Push { key, values, left } => lists::push(db, key, values, left, at),
        WriteOp::Pop { key, left, count } => lists::pop(db, &key, left, count, at, budget),
        WriteOp::SAdd { key, members } => sets::sadd(db, key, members, at),
        WriteOp::SRem { key, members } => sets::srem(db, &key, &members, at),
    }
}

/// Applies a batch: nothing if a watched key changed (a nil array), otherwise every command
/// in order, each answer within the batch's budget.
pub fn apply_batch(db: &mut Db, batch: Batch, at: At) -> Answer {
    let unchanged = batch
        .watched
        .iter()
        .all(|(key, version)| db.unchanged_since(key, *version, at.now_ms));
    if !unchanged {
        return Answer::NilArray;
    }
    let mut budget = Budget::new(usize::try_from(batch.reply_bytes_max).unwrap_or(usize::MAX));
    let mut answers: Vec<Answer> = batch
        .ops
        .into_iter()
        .map(|op| match op {
            Op::Read(op) => read(db, &op, at.now_ms, &mut budget),
            Op::Write(op) => write(db, op, at, &mut budget),
        })
        .collect();
    match (batch.transaction, answers.len()) {
        (true, _) => Answer::Array(answers),
        (false, 1) => answers.pop().unwrap_or(Answer::Nil),
        (false, n) => Answer::err(format!("a batch of {n} commands outside a transaction")),
    }
}

/// Executes reads at `now_ms` as one transaction would (EXEC of reads only, which needs no
/// log entry): a nil array if a watched key changed, otherwise every answer.
pub fn read_batch(
    db: &Db,
    ops: &[ReadOp],
    watched: &[(Bytes, Version)],
    now_ms: u64,
    budget: &mut Budget,
) -> Answer {
    if !watched
        .iter()
        .all(|(key, version)| db.unchanged_since(key, *version, now_ms))
    {
        return Answer::NilArray;
    }
    Answer::Array(ops.iter().map(|op| read(db, op, now_ms, budget)).collect())
}

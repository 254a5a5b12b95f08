//! Commands on keys of any type, and expiry.

use bytes::Bytes;

use super::db::Db;
use super::glob;
use super::ops::{Answer, At, Budget, ExpireCommand, ExpireCondition, When};

/// EXISTS: a key named twice counts twice.
pub fn exists(db: &Db, keys: &[Bytes], now_ms: u64) -> Answer {
    let count = keys.iter().filter(|k| db.live(k, now_ms).is_some()).count();
    Answer::Integer(count as i64)
}

/// TYPE
pub fn type_of(db: &Db, key: &[u8], now_ms: u64) -> Answer {
    let name = db
        .live(key, now_ms)
        .map_or("none", |slot| slot.data.type_name());
    Answer::Status(name.to_string())
}

/// KEYS: every key matching `pattern`, in no particular order, within the budget.
pub fn keys(db: &Db, pattern: &[u8], now_ms: u64, budget: &mut Budget) -> Answer {
    let every = pattern == b"*";
    let matching = db
        .iter()
        .filter(|(key, slot)| !slot.is_expired(now_ms) && (every || glob::matches(pattern, key)))
        .map(|(key, _)| key.clone());
    match budget.collect(matching) {
        Ok(keys) => Answer::Array(keys),
        Err(refusal) => refusal,
    }
}

/// SCAN's arguments.
#[derive(Clone, Copy, Debug)]
pub struct ScanArgs<'a> {
    /// Where to go on: the position of the next key to examine (0: from the start).
    pub cursor: u64,
    /// MATCH
    pub pattern: Option<&'a [u8]>,
    /// COUNT: keys to examine, at least (keys sharing the last one's position are examined
    /// with it).
    pub count: u64,
    /// TYPE
    pub type_name: Option<&'a [u8]>,
}

/// SCAN: examines keys in increasing position (a fixed hash of the key, the same on every
/// node), from the cursor on, until COUNT keys were examined; answers the next cursor (0
/// when every position was visited) and the examined keys that are live and match. A key
/// present for a whole iteration is returned exactly once, however the table changed and
/// whichever node answered each call.
pub fn scan(db: &Db, args: ScanArgs<'_>, now_ms: u64, budget: &mut Budget) -> Answer {
    let count = args.count.max(1);
    let mut cursor = args.cursor;
    let mut examined = 0u64;
    let mut found = Vec::new();
    let next_cursor = 'shards: loop {
        let mut last = None;
        for (at, key, slot) in db.shard_from(cursor) {
            if examined >= count && last != Some(at) {
                break 'shards at;
            }
            examined += 1;
            last = Some(at);
            let wanted = !slot.is_expired(now_ms)
                && args
                    .pattern
                    .is_none_or(|pattern| glob::matches(pattern, key))
                && args
                    .type_name
                    .is_none_or(|name| name.eq_ignore_ascii_case(slot.data.type_name().as_bytes()));
            if wanted && budget.charge(key.len()) {
                found.push(Answer::bulk(key));
            }
        }
        match Db::next_shard_start(cursor) {
            Some(start) if examined < count => cursor = start,
            Some(start) => break start,
            None => break 0,
        }
    };
    if budget.exceeded() {
        return budget.refusal();
    }
    Answer::Array(vec![
        Answer::Bulk(Bytes::from(next_cursor.to_string())),
        Answer::Array(found),
    ])
}

/// TTL (seconds, rounded) and PTTL: -2 for no key, -1 for no deadline.
pub fn ttl(db: &Db, key: &[u8], millis: bool, now_ms: u64) -> Answer {
    let Some(slot) = db.live(key, now_ms) else {
        return Answer::Integer(-2);
    };
    if slot.deadline_ms == 0 {
        return Answer::Integer(-1);
    }
    let left_ms = slot.deadline_ms.saturating_sub(now_ms) as i64;
    Answer::Integer(if millis {
        left_ms
    } else {
        (left_ms + 500) / 1000
    })
}

/// DEL and UNLINK: how many keys existed.
pub fn del(db: &mut Db, keys: &[Bytes], at: At) -> Answer {
    let mut deleted = 0;
    for key in keys {
        db.expire_if_due(key, at.now_ms);
        if db.delete(key, at.index).is_some() {
            deleted += 1;
        }
    }
    Answer::Integer(deleted)
}

/// RENAME (OK) and RENAMENX (1, or 0 when the new name exists): the value moves with its
/// deadline.
pub fn rename(db: &mut Db, from: &[u8], to: Bytes, only_if_absent: bool, at: At) -> Answer {
    db.expire_if_due(from, at.now_ms);
    db.expire_if_due(&to, at.now_ms);
    if db.slot(from).is_none() {
        return Answer::err("no such key");
    }
    let answer = if only_if_absent {
        Answer::Integer(1)
    } else {
        Answer::Ok
    };
    if from == &to[..] {
        return if only_if_absent {
            Answer::Integer(0)
        } else {
            answer
        };
    }
    if only_if_absent && db.slot(&to).is_some() {
        return Answer::Integer(0);
    }
    if let Some(mut slot) = db.delete(from, at.index) {
        slot.modified = at.index;
        db.insert(to, slot);
    }
    answer
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: 1 if the deadline was set (or the key deleted, its
/// deadline being past), 0 if there is no key or the condition failed.
pub fn expire(
    db: &mut Db,
    key: &[u8],
    when: When,
    condition: ExpireCondition,
    command: ExpireCommand,
    at: At,
) -> Answer {
    let Some(deadline) = when.deadline(at.now_ms) else {
        return command.invalid();
    };
    db.expire_if_due(key, at.now_ms);
    let Some(slot) = db.slot(key) else {
        return Answer::Integer(0);
    };
    if condition.refuses(slot.deadline_ms, deadline) {
        return Answer::Integer(0);
    }
    if deadline <= at.now_ms as i64 {
        db.delete(key, at.index);
        return Answer::Integer(1);
    }
    db.set_deadline(key, deadline as u64);
    if let Some(slot) = db.slot_mut(key) {
        slot.modified = at.index;
    }
    Answer::Integer(1)
}

/// PERSIST: 1 if a deadline was removed.
pub fn persist(db: &mut Db, key: &[u8], at: At) -> Answer {
    db.expire_if_due(key, at.now_ms);
    match db.slot_mut(key) {
        Some(slot) if slot.deadline_ms != 0 => {
            slot.modified = at.index;
            db.set_deadline(key, 0);
            Answer::Integer(1)
        }
        _ => Answer::Integer(0),
    }
}

/// Deletes those of `keys` that are expired at the entry's clock (the leader's expiry
/// deletions); how many it deleted. A key given a later deadline, or none, or written
/// since the leader looked, stays.
pub fn reap(db: &mut Db, keys: &[Bytes], at: At) -> Answer {
    let deleted = keys
        .iter()
        .filter(|key| db.expire_if_due(key, at.now_ms))
        .count();
    Answer::Integer(deleted as i64)
}

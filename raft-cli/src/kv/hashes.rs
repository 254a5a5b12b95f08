//! Hash commands. A hash that loses its last field is deleted.

use std::collections::HashMap;

use std::sync::Arc;

use bytes::Bytes;

use super::db::{Data, Db};
use super::number::parse_i64;
use super::ops::{change_collection, Answer, At, Budget, HashSetReply};

type Hash = HashMap<Bytes, Bytes>;

/// The hash at `key` (`None`: no key), or the WRONGTYPE error.
fn hash_of<'a>(db: &'a Db, key: &[u8], now_ms: u64) -> Result<Option<&'a Hash>, Answer> {
    match db.live(key, now_ms).map(|slot| &slot.data) {
        None => Ok(None),
        Some(Data::Hash(hash)) => Ok(Some(hash)),
        Some(_) => Err(Answer::wrong_type()),
    }
}

/// Runs `change` on the hash at `key` (see [`change_collection`]).
fn change_hash<T>(
    db: &mut Db,
    key: Bytes,
    at: At,
    change: impl FnOnce(&mut Hash) -> (T, bool),
) -> Result<T, Answer> {
    change_collection(db, key, at, project, Data::Hash, Hash::is_empty, change)
}

/// The hash in a value, if it is one.
fn project(data: &mut Data) -> Option<&mut Arc<Hash>> {
    match data {
        Data::Hash(value) => Some(value),
        _ => None,
    }
}

/// HSET (new fields), HMSET (OK), HSETNX (1 if set, 0 if the field existed).
pub fn hset(
    db: &mut Db,
    key: Bytes,
    pairs: Vec<(Bytes, Bytes)>,
    reply: HashSetReply,
    at: At,
) -> Answer {
    let changed = change_hash(db, key, at, |hash| {
        if reply == HashSetReply::IfAbsent {
            let Some((field, value)) = pairs.into_iter().next() else {
                return (Answer::Integer(0), false);
            };
            if hash.contains_key(&field) {
                return (Answer::Integer(0), false);
            }
            hash.insert(field, value);
            return (Answer::Integer(1), true);
        }
        let mut added = 0;
        for (field, value) in pairs {
            added += i64::from(hash.insert(field, value).is_none());
        }
        let answer = match reply {
            HashSetReply::Ok => Answer::Ok,
            _ => Answer::Integer(added),
        };
        (answer, true)
    });
    changed.unwrap_or_else(|wrong| wrong)
}

/// HDEL: how many fields were removed.
pub fn hdel(db: &mut Db, key: &Bytes, fields: &[Bytes], at: At) -> Answer {
    db.expire_if_due(key, at.now_ms);
    match db.slot(key).map(|slot| &slot.data) {
        None => return Answer::Integer(0),
        Some(Data::Hash(_)) => {}
        Some(_) => return Answer::wrong_type(),
    }
    let removed = change_hash(db, key.clone(), at, |hash| {
        let removed = fields.iter().filter(|f| hash.remove(*f).is_some()).count();
        (removed, removed > 0)
    });
    match removed {
        Ok(removed) => Answer::Integer(removed as i64),
        Err(wrong) => wrong,
    }
}

/// HINCRBY: the value after.
pub fn hincrby(db: &mut Db, key: Bytes, field: Bytes, delta: i64, at: At) -> Answer {
    let answer = change_hash(db, key, at, |hash| {
        let current = match hash.get(&field) {
            None => 0,
            Some(value) => match parse_i64(value) {
                Some(n) => n,
                None => return (Answer::err("hash value is not an integer"), false),
            },
        };
        match current.checked_add(delta) {
            Some(next) => {
                hash.insert(field, Bytes::from(next.to_string()));
                (Answer::Integer(next), true)
            }
            None => (Answer::err("increment or decrement would overflow"), false),
        }
    });
    answer.unwrap_or_else(|wrong| wrong)
}

/// HGET
pub fn hget(db: &Db, key: &[u8], field: &[u8], now_ms: u64, budget: &mut Budget) -> Answer {
    match hash_of(db, key, now_ms) {
        Ok(hash) => match hash.and_then(|h| h.get(field)) {
            None => Answer::Nil,
            Some(value) if budget.charge(value.len()) => Answer::bulk(value),
            Some(_) => budget.refusal(),
        },
        Err(wrong) => wrong,
    }
}

/// HMGET
pub fn hmget(db: &Db, key: &[u8], fields: &[Bytes], now_ms: u64, budget: &mut Budget) -> Answer {
    let hash = match hash_of(db, key, now_ms) {
        Ok(hash) => hash,
        Err(wrong) => return wrong,
    };
    let mut answers = Vec::with_capacity(fields.len());
    for field in fields {
        let value = hash.and_then(|h| h.get(field));
        if budget.charge(value.map_or(0, Bytes::len)) {
            answers.push(value.map_or(Answer::Nil, Answer::bulk));
        }
    }
    if budget.exceeded() {
        return budget.refusal();
    }
    Answer::Array(answers)
}

/// HGETALL: fields and values, in no particular order.
pub fn hgetall(db: &Db, key: &[u8], now_ms: u64, budget: &mut Budget) -> Answer {
    match hash_of(db, key, now_ms) {
        Ok(hash) => {
            let items = hash
                .into_iter()
                .flatten()
                .flat_map(|(field, value)| [field.clone(), value.clone()]);
            budget.collect(items).map_or_else(|e| e, Answer::Map)
        }
        Err(wrong) => wrong,
    }
}

/// HKEYS
pub fn hkeys(db: &Db, key: &[u8], now_ms: u64, budget: &mut Budget) -> Answer {
    match hash_of(db, key, now_ms) {
        Ok(hash) => {
            let fields = hash.into_iter().flat_map(|h| h.keys().cloned());
            budget.collect(fields).map_or_else(|e| e, Answer::Array)
        }
        Err(wrong) => wrong,
    }
}

/// HVALS
pub fn hvals(db: &Db, key: &[u8], now_ms: u64, budget: &mut Budget) -> Answer {
    match hash_of(db, key, now_ms) {
        Ok(hash) => {
            let values = hash.into_iter().flat_map(|h| h.values().cloned());
            budget.collect(values).map_or_else(|e| e, Answer::Array)
        }
        Err(wrong) => wrong,
    }
}

/// HEXISTS
pub fn hexists(db: &Db, key: &[u8], field: &[u8], now_ms: u64) -> Answer {
    match hash_of(db, key, now_ms) {
        Ok(hash) => Answer::Integer(i64::from(hash.is_some_and(|h| h.contains_key(field)))),
        Err(wrong) => wrong,
    }
}

/// HLEN
pub fn hlen(db: &Db, key: &[u8], now_ms: u64) -> Answer {
    match hash_of(db, key, now_ms) {
        Ok(hash) => Answer::Integer(hash.map_or(0, |h| h.len() as i64)),
        Err(wrong) => wrong,
    }
}

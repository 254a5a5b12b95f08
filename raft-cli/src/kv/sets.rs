//! Set commands. A set that loses its last member is deleted.

use std::collections::HashSet;

use std::sync::Arc;

use bytes::Bytes;

use super::db::{Data, Db};
use super::ops::{change_collection, Answer, At, Budget};

type Set = HashSet<Bytes>;

/// The set at `key` (`None`: no key), or the WRONGTYPE error.
fn set_of<'a>(db: &'a Db, key: &[u8], now_ms: u64) -> Result<Option<&'a Set>, Answer> {
    match db.live(key, now_ms).map(|slot| &slot.data) {
        None => Ok(None),
        Some(Data::Set(set)) => Ok(Some(set)),
        Some(_) => Err(Answer::wrong_type()),
    }
}

/// Runs `change` on the set at `key` (see [`change_collection`]).
fn change_set<T>(
    db: &mut Db,
    key: Bytes,
    at: At,
    change: impl FnOnce(&mut Set) -> (T, bool),
) -> Result<T, Answer> {
    change_collection(db, key, at, project, Data::Set, Set::is_empty, change)
}

/// The set in a value, if it is one.
fn project(data: &mut Data) -> Option<&mut Arc<Set>> {
    match data {
        Data::Set(value) => Some(value),
        _ => None,
    }
}

/// SADD: how many members were new.
pub fn sadd(db: &mut Db, key: Bytes, members: Vec<Bytes>, at: At) -> Answer {
    let added = change_set(db, key, at, |set| {
        let added = members
            .into_iter()
            .filter(|m| set.insert(m.clone()))
            .count();
        (added, added > 0)
    });
    added.map_or_else(|wrong| wrong, |n| Answer::Integer(n as i64))
}

/// SREM: how many members were removed.
pub fn srem(db: &mut Db, key: &Bytes, members: &[Bytes], at: At) -> Answer {
    match set_of(db, key, at.now_ms) {
        Ok(None) => return Answer::Integer(0),
        Ok(Some(_)) => {}
        Err(wrong) => return wrong,
    }
    let removed = change_set(db, key.clone(), at, |set| {
        let removed = members.iter().filter(|m| set.remove(*m)).count();
        (removed, removed > 0)
    });
    removed.map_or_else(|wrong| wrong, |n| Answer::Integer(n as i64))
}

/// SMEMBERS: in no particular order.
pub fn smembers(db: &Db, key: &[u8], now_ms: u64, budget: &mut Budget) -> Answer {
    match set_of(db, key, now_ms) {
        Ok(set) => {
            let members = set.into_iter().flat_map(|s| s.iter().cloned());
            budget.collect(members).map_or_else(|e| e, Answer::Set)
        }
        Err(wrong) => wrong,
    }
}

/// SISMEMBER
pub fn sismember(db: &Db, key: &[u8], member: &[u8], now_ms: u64) -> Answer {
    match set_of(db, key, now_ms) {
        Ok(set) => Answer::Integer(i64::from(set.is_some_and(|s| s.contains(member)))),
        Err(wrong) => wrong,
    }
}

/// SCARD
pub fn scard(db: &Db, key: &[u8], now_ms: u64) -> Answer {
    match set_of(db, key, now_ms) {
        Ok(set) => Answer::Integer(set.map_or(0, |s| s.len() as i64)),
        Err(wrong) => wrong,
    }
}

//! List commands. A list that loses its last element is deleted.

use std::collections::VecDeque;

use std::sync::Arc;

use bytes::Bytes;

use super::db::{Data, Db};
use super::number::parse_i64;
use super::ops::{change_collection, Answer, At, Budget};

type List = VecDeque<Bytes>;

/// The list at `key` (`None`: no key), or the WRONGTYPE error.
fn list_of<'a>(db: &'a Db, key: &[u8], now_ms: u64) -> Result<Option<&'a List>, Answer> {
    match db.live(key, now_ms).map(|slot| &slot.data) {
        None => Ok(None),
        Some(Data::List(list)) => Ok(Some(list)),
        Some(_) => Err(Answer::wrong_type()),
    }
}

/// Runs `change` on the list at `key` (see [`change_collection`]).
fn change_list<T>(
    db: &mut Db,
    key: Bytes,
    at: At,
    change: impl FnOnce(&mut List) -> (T, bool),
) -> Result<T, Answer> {
    change_collection(db, key, at, project, Data::List, List::is_empty, change)
}

/// The list in a value, if it is one.
fn project(data: &mut Data) -> Option<&mut Arc<List>> {
    match data {
        Data::List(value) => Some(value),
        _ => None,
    }
}

/// LPUSH and RPUSH: the length after.
pub fn push(db: &mut Db, key: Bytes, values: Vec<Bytes>, left: bool, at: At) -> Answer {
    let len = change_list(db, key, at, |list| {
        for value in values {
            if left {
                list.push_front(value);
            } else {
                list.push_back(value);
            }
        }
        (list.len(), true)
    });
    len.map_or_else(|wrong| wrong, |len| Answer::Integer(len as i64))
}

/// LPOP and RPOP: one element (or nil), or with a count an array of up to that many (a nil
/// array for no key). Refused, popping nothing, when the elements would not fit the reply
/// budget.
pub fn pop(
    db: &mut Db,
    key: &Bytes,
    left: bool,
    count: Option<u64>,
    at: At,
    budget: &mut Budget,
) -> Answer {
    db.expire_if_due(key, at.now_ms);
    let taken = match list_of(db, key, at.now_ms) {
        Ok(None) => return count.map_or(Answer::Nil, |_| Answer::NilArray),
        Ok(Some(list)) => {
            let taken = usize::try_from(count.unwrap_or(1)).unwrap_or(usize::MAX);
            let taken = taken.min(list.len());
            let ends: Box<dyn Iterator<Item = &Bytes>> = match left {
                true => Box::new(list.iter()),
                false => Box::new(list.iter().rev()),
            };
            let mut check = *budget;
            for item in ends.take(taken) {
                check.charge(item.len());
            }
            if check.exceeded() {
                return check.refusal();
            }
            *budget = check;
            taken
        }
        Err(wrong) => return wrong,
    };
    let popped = change_list(db, key.clone(), at, |list| {
        let popped: Vec<Bytes> = (0..taken)
            .filter_map(|_| {
                if left {
                    list.pop_front()
                } else {
                    list.pop_back()
                }
            })
            .collect();
        let changed = !popped.is_empty();
        (popped, changed)
    });
    match (popped, count) {
        (Err(wrong), _) => wrong,
        (Ok(mut popped), None) => popped.pop().map_or(Answer::Nil, Answer::Bulk),
        (Ok(popped), Some(_)) => Answer::Array(popped.into_iter().map(Answer::Bulk).collect()),
    }
}

/// LRANGE: inclusive, negative indexes from the end.
pub fn lrange(
    db: &Db,
    key: &[u8],
    start: i64,
    stop: i64,
    now_ms: u64,
    budget: &mut Budget,
) -> Answer {
    let list = match list_of(db, key, now_ms) {
        Ok(None) => return Answer::Array(Vec::new()),
        Ok(Some(list)) => list,
        Err(wrong) => return wrong,
    };
    // As Redis reads them: negative from the end; a start before the head is the head, but
    // a stop before it leaves the range empty.
    let len = list.len() as i64;
    let from_end = |at: i64| if at < 0 { len + at } else { at };
    let (start, stop) = (from_end(start).max(0), from_end(stop).min(len - 1));
    if start > stop || start >= len {
        return Answer::Array(Vec::new());
    }
    let items = list.range(start as usize..=stop as usize).cloned();
    budget.collect(items).map_or_else(|e| e, Answer::Array)
}

/// LLEN
pub fn llen(db: &Db, key: &[u8], now_ms: u64) -> Answer {
    match list_of(db, key, now_ms) {
        Ok(list) => Answer::Integer(list.map_or(0, |l| l.len() as i64)),
        Err(wrong) => wrong,
    }
}

/// LINDEX: negative indexes from the end; nil out of range. The key is looked up before
/// the index is read, in Redis's order.
pub fn lindex(db: &Db, key: &[u8], index: &[u8], now_ms: u64, budget: &mut Budget) -> Answer {
    let list = match list_of(db, key, now_ms) {
        Ok(None) => return Answer::Nil,
        Ok(Some(list)) => list,
        Err(wrong) => return wrong,
    };
    let Some(index) = parse_i64(index) else {
        return Answer::err("value is not an integer or out of range");
    };
    let at = if index < 0 {
        index.checked_add(list.len() as i64)
    } else {
        Some(index)
    };
    match at
        .and_then(|at| usize::try_from(at).ok())
        .and_then(|at| list.get(at))
    {
        None => Answer::Nil,
        Some(item) if budget.charge(item.len()) => Answer::bulk(item),
        Some(_) => budget.refusal(),
    }
}

//! String commands.

use bytes::Bytes;

use super::db::{Data, Db, Slot, Value};
use super::number::{format_f64, parse_f64, parse_i64};
use super::ops::{Answer, At, Budget, Condition, SetExpiry};
use super::KV_ITEM_BYTES_MAX;

/// Bytes of a string, at most: APPEND and SETRANGE refuse to grow one past it (Redis's
/// `proto-max-bulk-len` is 512 MiB). A snapshot reads back any item up to this size.
pub const STRING_BYTES_MAX: usize = KV_ITEM_BYTES_MAX;

/// The string a slot holds, or the WRONGTYPE error.
pub(super) fn string_of(slot: &Slot) -> Result<&Value, Answer> {
    match &slot.data {
        Data::Str(value) => Ok(value),
        _ => Err(Answer::wrong_type()),
    }
}

/// A stored string as a reply item, sharing its bytes.
pub(super) fn shared(value: &Value) -> Bytes {
    Bytes::from_owner(value.clone())
}

fn too_long() -> Answer {
    Answer::err("string exceeds maximum allowed size (proto-max-bulk-len)")
}

/// GET
pub fn get(db: &Db, key: &[u8], now_ms: u64, budget: &mut Budget) -> Answer {
    let Some(slot) = db.live(key, now_ms) else {
        return Answer::Nil;
    };
    match string_of(slot) {
        Ok(value) if budget.charge(value.len()) => Answer::Bulk(shared(value)),
        Ok(_) => budget.refusal(),
        Err(wrong) => wrong,
    }
}

/// MGET: nil for a key that is absent or not a string.
pub fn mget(db: &Db, keys: &[Bytes], now_ms: u64, budget: &mut Budget) -> Answer {
    let mut answers = Vec::with_capacity(keys.len());
    for key in keys {
        let value = db.live(key, now_ms).and_then(|slot| string_of(slot).ok());
        // Past the budget only the sizes are added up, for the error message.
        if budget.charge(value.map_or(0, |v| v.len())) {
            answers.push(value.map_or(Answer::Nil, |v| Answer::Bulk(shared(v))));
        }
    }
    if budget.exceeded() {
        return budget.refusal();
    }
    Answer::Array(answers)
}

/// STRLEN
pub fn strlen(db: &Db, key: &[u8], now_ms: u64) -> Answer {
    match db.live(key, now_ms).map(string_of) {
        None => Answer::Integer(0),
        Some(Ok(value)) => Answer::Integer(value.len() as i64),
        Some(Err(wrong)) => wrong,
    }
}

/// GETRANGE: inclusive offsets, negative ones from the end, clamped as Redis 7.0 clamps
/// them (a range entirely before the start still yields the first byte, unless both ends
/// are negative and reversed).
pub fn getrange(
    db: &Db,
    key: &[u8],
    start: i64,
    end: i64,
    now_ms: u64,
    budget: &mut Budget,
) -> Answer {
    let value = match db.live(key, now_ms).map(string_of) {
        None => return Answer::Bulk(Bytes::new()),
        Some(Ok(value)) => value,
        Some(Err(wrong)) => return wrong,
    };
    if start < 0 && end < 0 && start > end {
        return Answer::Bulk(Bytes::new());
    }
    let len = value.len() as i64;
    let from_end = |at: i64| if at < 0 { (len + at).max(0) } else { at };
    let (start, end) = (from_end(start), from_end(end).min(len - 1));
    if len == 0 || start > end {
        return Answer::Bulk(Bytes::new());
    }
    let range = start as usize..=end as usize;
    if !budget.charge(range.end() - range.start() + 1) {
        return budget.refusal();
    }
    Answer::Bulk(shared(value).slice(range))
}

/// What a SET does.
#[derive(Debug)]
pub struct SetArgs {
    /// The key.
    pub key: Bytes,
    /// The new value.
    pub value: Bytes,
    /// When to write.
    pub condition: Condition,
    /// Answer with the value before (GET).
    pub get: bool,
    /// The deadline to give the key.
    pub expiry: SetExpiry,
}

/// SET with its options, GETSET, SETEX and PSETEX. A deadline already past when the entry
/// is applied deletes the key (as the key would be expired the moment it is set).
pub fn set(db: &mut Db, args: SetArgs, at: At, budget: &mut Budget) -> Answer {
    let deadline_ms = match args.expiry {
        SetExpiry::Set(when, command) => match when.deadline(at.now_ms) {
            Some(deadline) if deadline > 0 => Some(deadline as u64),
            _ => return command.invalid(),
        },
        SetExpiry::Clear | SetExpiry::Keep => None,
    };
    db.expire_if_due(&args.key, at.now_ms);
    let current = db.slot(&args.key);
    let previous = match (args.get, current) {
        (false, _) | (true, None) => None,
        (true, Some(slot)) => match string_of(slot) {
            Ok(value) if budget.charge(value.len()) => Some(shared(value)),
            Ok(_) => return budget.refusal(),
            Err(wrong) => return wrong,
        },
    };
    let written = match (&args.condition, current) {
        (Condition::Always, _) => true,
        (Condition::IfAbsent, current) => current.is_none(),
        (Condition::IfPresent, current) => current.is_some(),
        (Condition::IfEqual(_), None) => false,
        (Condition::IfEqual(expected), Some(slot)) => match string_of(slot) {
            Ok(value) => value[..] == expected[..],
            Err(wrong) => return wrong,
        },
    };
    let answer = match (args.get, written) {
        (true, _) => previous.map_or(Answer::Nil, Answer::Bulk),
        (false, true) => Answer::Ok,
        (false, false) => Answer::Nil,
    };
    if !written {
        return answer;
    }
    let kept_ms = match (args.expiry, current) {
        (SetExpiry::Keep, Some(slot)) => slot.deadline_ms,
        _ => 0,
    };
    let deadline_ms = deadline_ms.unwrap_or(kept_ms);
    if deadline_ms != 0 && deadline_ms <= at.now_ms {
        db.mark_deleted(&args.key, at.index);
        return answer;
    }
    let mut slot = Slot::new(Data::Str(Value::from(&args.value[..])), at.index);
    slot.deadline_ms = deadline_ms;
    db.insert(args.key, slot);
    answer
}

/// SETNX: 1 if the key was set, 0 if it existed.
pub fn setnx(db: &mut Db, key: Bytes, value: Bytes, at: At) -> Answer {
    db.expire_if_due(&key, at.now_ms);
    if db.slot(&key).is_some() {
        return Answer::Integer(0);
    }
    db.insert(key, Slot::new(Data::Str(Value::from(&value[..])), at.index));
    Answer::Integer(1)
}

/// MSET (OK) and MSETNX (1 if every key was absent and all were set, else 0 and nothing
/// set). Each key loses its deadline; a key named twice takes its last value.
pub fn mset(db: &mut Db, pairs: Vec<(Bytes, Bytes)>, only_if_none_exist: bool, at: At) -> Answer {
    for (key, _) in &pairs {
        db.expire_if_due(key, at.now_ms);
    }
    if only_if_none_exist && pairs.iter().any(|(key, _)| db.slot(key).is_some()) {
        return Answer::Integer(0);
    }
    for (key, value) in pairs {
        db.insert(key, Slot::new(Data::Str(Value::from(&value[..])), at.index));
    }
    match only_if_none_exist {
        true => Answer::Integer(1),
        false => Answer::Ok,
    }
}

/// The string at `key` for a read-modify-write (absent: `None`), after deleting it if it is
/// expired.
fn current_string(db: &mut Db, key: &[u8], now_ms: u64) -> Result<Option<Value>, Answer> {
    db.expire_if_due(key, now_ms);
    match db.slot(key) {
        None => Ok(None),
        Some(slot) => string_of(slot).cloned().map(Some),
    }
}

/// INCR, INCRBY, DECR, DECRBY: the key keeps its deadline.
pub fn incrby(db: &mut Db, key: Bytes, delta: i64, at: At) -> Answer {
    let current = match current_string(db, &key, at.now_ms) {
        Ok(None) => 0,
        Ok(Some(value)) => match parse_i64(&value) {
            Some(n) => n,
            None => return Answer::err("value is not an integer or out of range"),
        },
        Err(wrong) => return wrong,
    };
    let Some(next) = current.checked_add(delta) else {
        return Answer::err("increment or decrement would overflow");
    };
    let text = next.to_string();
    db.update(key, Data::Str(Value::from(text.as_bytes())), at.index);
    Answer::Integer(next)
}

/// INCRBYFLOAT: the key keeps its deadline. The key's type, then its value, then the
/// increment are checked, in Redis's order.
pub fn incrbyfloat(db: &mut Db, key: Bytes, delta: &[u8], at: At) -> Answer {
    let not_a_float = || Answer::err("value is not a valid float");
    let current = match current_string(db, &key, at.now_ms) {
        Ok(None) => 0.0,
        Ok(Some(value)) => match parse_f64(&value) {
            Some(n) => n,
            None => return not_a_float(),
        },
        Err(wrong) => return wrong,
    };
    let Some(delta) = parse_f64(delta) else {
        return not_a_float();
    };
    let next = current + delta;
    if !next.is_finite() {
        return Answer::err("increment would produce NaN or Infinity");
    }
    let text = format_f64(next);
    db.update(key, Data::Str(Value::from(text.as_bytes())), at.index);
    Answer::Bulk(Bytes::from(text))
}

/// APPEND: the length after; the key keeps its deadline.
pub fn append(db: &mut Db, key: Bytes, suffix: &[u8], at: At) -> Answer {
    let current = match current_string(db, &key, at.now_ms) {
        Ok(current) => current,
        Err(wrong) => return wrong,
    };
    let old: &[u8] = current.as_deref().unwrap_or_default();
    if old.len() + suffix.len() > STRING_BYTES_MAX {
        return too_long();
    }
    let mut next = Vec::with_capacity(old.len() + suffix.len());
    next.extend_from_slice(old);
    next.extend_from_slice(suffix);
    let len = next.len();
    db.update(key, Data::Str(Value::from(next)), at.index);
    Answer::Integer(len as i64)
}

/// SETRANGE: the length after. Nothing changes for an empty value (nor is a key created).
pub fn setrange(db: &mut Db, key: Bytes, offset: u64, patch: &[u8], at: At) -> Answer {
    let current = match current_string(db, &key, at.now_ms) {
        Ok(current) => current,
        Err(wrong) => return wrong,
    };
    let old: &[u8] = current.as_deref().unwrap_or_default();
    if patch.is_empty() {
        return Answer::Integer(old.len() as i64);
    }
    let end = usize::try_from(offset)
        .ok()
        .and_then(|offset| offset.checked_add(patch.len()))
        .filter(|end| *end <= STRING_BYTES_MAX);
    let Some(end) = end else {
        return too_long();
    };
    let mut next = old.to_vec();
    if next.len() < end {
        next.resize(end, 0);
    }
    next[end - patch.len()..end].copy_from_slice(patch);
    let len = next.len();
    db.update(key, Data::Str(Value::from(next)), at.index);
    Answer::Integer(len as i64)
}

/// GETDEL
pub fn getdel(db: &mut Db, key: &[u8], at: At, budget: &mut Budget) -> Answer {
    let value = match current_string(db, key, at.now_ms) {
        Ok(None) => return Answer::Nil,
        Ok(Some(value)) => value,
        Err(wrong) => return wrong,
    };
    if !budget.charge(value.len()) {
        return budget.refusal();
    }
    db.delete(key, at.index);
    Answer::Bulk(shared(&value))
}

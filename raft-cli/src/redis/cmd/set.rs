//! `SET key value [NX | XX | IFEQ comparison] [GET] [EX seconds | PX milliseconds |
//! EXAT unix-time-seconds | PXAT unix-time-milliseconds | KEEPTTL]`.

use bytes::Bytes;

use super::{integer, reply_of, syntax_error, Args, Command, Refusal, WriteCommand};
use crate::kv::{Condition, ExpireCommand, SetExpiry, When, WriteOp};
use crate::resp::Value;

/// Sets a string through the log, under a condition (Redis `NX`, `XX`; Valkey 8.1 `IFEQ`,
/// compare-and-set), optionally answering with the value before (`GET`), with a deadline
/// (`EX`, `PX`, `EXAT`, `PXAT`) or keeping the key's (`KEEPTTL`). Options are read as Redis
/// 7.0 reads them: a repeated option is accepted, conflicting ones are a syntax error.
pub(crate) struct Set {
    key: Bytes,
    value: Bytes,
    condition: Condition,
    get: bool,
    expiry: SetExpiry,
}

/// Which deadline option a SET carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ex,
    Px,
    Exat,
    Pxat,
}

impl Command for Set {
    const NAME: &'static str = "set";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let mut set = Set {
            key: args.required()?,
            value: args.required()?,
            condition: Condition::Always,
            get: false,
            expiry: SetExpiry::Clear,
        };
        let mut deadline: Option<(Unit, Bytes)> = None;
        let mut keep_ttl = false;
        let mut words = args.rest().into_iter().peekable();
        while let Some(option) = words.next() {
            let unit = deadline.as_ref().map(|(unit, _)| *unit);
            let other_unit = |this: Unit| unit.is_some_and(|u| u != this);
            let has_next = words.peek().is_some();
            let condition = &set.condition;
            match &option.to_ascii_uppercase()[..] {
                b"NX" if matches!(condition, Condition::Always | Condition::IfAbsent) => {
                    set.condition = Condition::IfAbsent
                }
                b"XX" if matches!(condition, Condition::Always | Condition::IfPresent) => {
                    set.condition = Condition::IfPresent
                }
                b"IFEQ" if *condition == Condition::Always && has_next => {
                    set.condition = Condition::IfEqual(words.next().unwrap_or_default())
                }
                b"GET" => set.get = true,
                b"KEEPTTL" if unit.is_none() => keep_ttl = true,
                b"EX" if !keep_ttl && !other_unit(Unit::Ex) && has_next => {
                    deadline = Some((Unit::Ex, words.next().unwrap_or_default()))
                }
                b"PX" if !keep_ttl && !other_unit(Unit::Px) && has_next => {
                    deadline = Some((Unit::Px, words.next().unwrap_or_default()))
                }
                b"EXAT" if !keep_ttl && !other_unit(Unit::Exat) && has_next => {
                    deadline = Some((Unit::Exat, words.next().unwrap_or_default()))
                }
                b"PXAT" if !keep_ttl && !other_unit(Unit::Pxat) && has_next => {
                    deadline = Some((Unit::Pxat, words.next().unwrap_or_default()))
                }
                _ => return Err(syntax_error().into()),
            }
        }
        set.expiry = match deadline {
            Some((unit, word)) => {
                let seconds = matches!(unit, Unit::Ex | Unit::Exat);
                let absolute = matches!(unit, Unit::Exat | Unit::Pxat);
                let when = deadline_arg(&word, seconds, absolute, ExpireCommand::Set)?;
                SetExpiry::Set(when, ExpireCommand::Set)
            }
            None if keep_ttl => SetExpiry::Keep,
            None => SetExpiry::Clear,
        };
        Ok(set)
    }
}

impl WriteCommand for Set {
    fn op(self) -> WriteOp {
        WriteOp::Set {
            key: self.key,
            value: self.value,
            condition: self.condition,
            get: self.get,
            expiry: self.expiry,
        }
    }
}

/// Reads a deadline argument of SET, SETEX or PSETEX as Redis does: an integer above 0, in
/// seconds (not so large that it overflows in milliseconds) or milliseconds, from now or
/// absolute. Whether "now" plus it overflows is checked when the entry is applied.
pub(super) fn deadline_arg(
    word: &[u8],
    seconds: bool,
    absolute: bool,
    command: ExpireCommand,
) -> Result<When, Value> {
    let n = integer(word)?;
    if n <= 0 || (seconds && n > i64::MAX / 1000) {
        return Err(reply_of(command.invalid()));
    }
    let ms = if seconds { n * 1000 } else { n };
    Ok(if absolute { When::At(ms) } else { When::In(ms) })
}

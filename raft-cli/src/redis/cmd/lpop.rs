//! `LPOP key [count]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::{parse_i64, WriteOp};
use crate::resp::Value;

/// Removes and answers the head element of a list, or with a count, up to that many (an
/// array). Refused, removing nothing, when the elements would not fit the reply budget.
pub(crate) struct Lpop {
    key: Bytes,
    count: Option<u64>,
}

impl Command for Lpop {
    const NAME: &'static str = "lpop";
    const ARITY: i32 = -2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        let (key, count) = parse_pop(args)?;
        Ok(Lpop { key, count })
    }
}

impl WriteCommand for Lpop {
    fn op(self) -> WriteOp {
        WriteOp::Pop {
            key: self.key,
            left: true,
            count: self.count,
        }
    }
}

/// Parses LPOP's and RPOP's arguments: the key and an optional count, refused as Redis
/// refuses it when it is not a non-negative integer.
pub(super) fn parse_pop(mut args: Args) -> Result<(Bytes, Option<u64>), Refusal> {
    let key = args.required()?;
    let count = args.next_arg();
    // Too many words is the first error, before the count's.
    args.finish()?;
    let count = match count {
        None => None,
        Some(word) => {
            let refused = || Value::error("ERR", "value is out of range, must be positive");
            let count = parse_i64(&word).ok_or_else(refused)?;
            Some(u64::try_from(count).map_err(|_| refused())?)
        }
    };
    Ok((key, count))
}

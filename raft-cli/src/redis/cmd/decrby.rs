//! `DECRBY key decrement`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;
use crate::resp::Value;

/// Subtracts an integer from the decimal integer at a key (absent: 0).
pub(crate) struct Decrby {
    key: Bytes,
    delta: i64,
}

impl Command for Decrby {
    const NAME: &'static str = "decrby";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let key = args.required()?;
        let decrement = args.integer()?;
        // The one decrement whose negation is not an i64.
        let delta = decrement
            .checked_neg()
            .ok_or_else(|| Value::error("ERR", "decrement would overflow"))?;
        Ok(Decrby { key, delta })
    }
}

impl WriteCommand for Decrby {
    fn op(self) -> WriteOp {
        WriteOp::IncrBy {
            key: self.key,
            delta: self.delta,
        }
    }
}

//! `INCRBYFLOAT key increment`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Adds a float to the number at a key (absent: 0) and answers the sum as a string. The sum
/// is a 64-bit float (Redis: an 80-bit long double), so where the exact sum has more digits
/// than a double holds, the last digits may differ from Redis's.
pub(crate) struct Incrbyfloat {
    key: Bytes,
    /// Read when the command is applied, after the key's type and value, as Redis reads it.
    delta: Bytes,
}

impl Command for Incrbyfloat {
    const NAME: &'static str = "incrbyfloat";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Incrbyfloat {
            key: args.required()?,
            delta: args.required()?,
        })
    }
}

impl WriteCommand for Incrbyfloat {
    fn op(self) -> WriteOp {
        WriteOp::IncrByFloat {
            key: self.key,
            delta: self.delta,
        }
    }
}

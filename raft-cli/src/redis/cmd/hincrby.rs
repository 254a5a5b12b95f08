//! `HINCRBY key field increment`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Adds an integer to the decimal integer in a field of a hash (absent: 0).
pub(crate) struct Hincrby {
    key: Bytes,
    field: Bytes,
    delta: i64,
}

impl Command for Hincrby {
    const NAME: &'static str = "hincrby";
    const ARITY: i32 = 4;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hincrby {
            key: args.required()?,
            field: args.required()?,
            delta: args.integer()?,
        })
    }
}

impl WriteCommand for Hincrby {
    fn op(self) -> WriteOp {
        WriteOp::HIncrBy {
            key: self.key,
            field: self.field,
            delta: self.delta,
        }
    }
}

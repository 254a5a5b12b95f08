//! `INCRBY key increment`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Adds an integer to the decimal integer at a key (absent: 0).
pub(crate) struct Incrby {
    key: Bytes,
    delta: i64,
}

impl Command for Incrby {
    const NAME: &'static str = "incrby";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Incrby {
            key: args.required()?,
            delta: args.integer()?,
        })
    }
}

impl WriteCommand for Incrby {
    fn op(self) -> WriteOp {
        WriteOp::IncrBy {
            key: self.key,
            delta: self.delta,
        }
    }
}

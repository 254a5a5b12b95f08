//! `INCR key`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Adds one to the decimal integer at a key (absent: 0); the key keeps its deadline.
pub(crate) struct Incr {
    key: Bytes,
}

impl Command for Incr {
    const NAME: &'static str = "incr";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Incr {
            key: args.required()?,
        })
    }
}

impl WriteCommand for Incr {
    fn op(self) -> WriteOp {
        WriteOp::IncrBy {
            key: self.key,
            delta: 1,
        }
    }
}

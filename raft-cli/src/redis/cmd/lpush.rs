//! `LPUSH key element [element ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Pushes elements onto the head of a list, one after the other; answers the
/// length.
pub(crate) struct Lpush {
    key: Bytes,
    values: Vec<Bytes>,
}

impl Command for Lpush {
    const NAME: &'static str = "lpush";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Lpush {
            key: args.required()?,
            values: args.rest(),
        })
    }
}

impl WriteCommand for Lpush {
    fn op(self) -> WriteOp {
        WriteOp::Push {
            key: self.key,
            values: self.values,
            left: true,
        }
    }
}

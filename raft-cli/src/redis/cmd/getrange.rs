//! `GETRANGE key start end`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// Part of a string: inclusive offsets, negative ones counted from the end.
pub(crate) struct Getrange {
    key: Bytes,
    start: i64,
    end: i64,
}

impl Command for Getrange {
    const NAME: &'static str = "getrange";
    const ARITY: i32 = 4;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Getrange {
            key: args.required()?,
            start: args.integer()?,
            end: args.integer()?,
        })
    }
}

impl ReadCommand for Getrange {
    fn op(self) -> ReadOp {
        ReadOp::GetRange {
            key: self.key,
            start: self.start,
            end: self.end,
        }
    }
}

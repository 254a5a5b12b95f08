//! `LRANGE key start stop`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// Elements of a list: inclusive indexes, negative ones counted from the end.
pub(crate) struct Lrange {
    key: Bytes,
    start: i64,
    stop: i64,
}

impl Command for Lrange {
    const NAME: &'static str = "lrange";
    const ARITY: i32 = 4;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Lrange {
            key: args.required()?,
            start: args.integer()?,
            stop: args.integer()?,
        })
    }
}

impl ReadCommand for Lrange {
    fn op(self) -> ReadOp {
        ReadOp::LRange {
            key: self.key,
            start: self.start,
            stop: self.stop,
        }
    }
}

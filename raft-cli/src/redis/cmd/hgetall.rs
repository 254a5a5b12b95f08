//! `HGETALL key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// Every field and value of a hash, in no particular order.
pub(crate) struct Hgetall {
    key: Bytes,
}

impl Command for Hgetall {
    const NAME: &'static str = "hgetall";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hgetall {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Hgetall {
    fn op(self) -> ReadOp {
        ReadOp::HGetAll { key: self.key }
    }
}

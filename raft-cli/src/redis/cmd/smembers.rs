//! `SMEMBERS key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The members of a set, in no particular order.
pub(crate) struct Smembers {
    key: Bytes,
}

impl Command for Smembers {
    const NAME: &'static str = "smembers";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Smembers {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Smembers {
    fn op(self) -> ReadOp {
        ReadOp::SMembers { key: self.key }
    }
}

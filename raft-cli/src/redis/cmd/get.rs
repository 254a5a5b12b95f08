//! `GET key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// Reads one string (linearizable: after a read barrier on this node).
pub(crate) struct Get {
    key: Bytes,
}

impl Command for Get {
    const NAME: &'static str = "get";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Get {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Get {
    fn op(self) -> ReadOp {
        ReadOp::Get { key: self.key }
    }
}

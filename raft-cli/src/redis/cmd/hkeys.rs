//! `HKEYS key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The fields of a hash, in no particular order.
pub(crate) struct Hkeys {
    key: Bytes,
}

impl Command for Hkeys {
    const NAME: &'static str = "hkeys";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hkeys {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Hkeys {
    fn op(self) -> ReadOp {
        ReadOp::HKeys { key: self.key }
    }
}

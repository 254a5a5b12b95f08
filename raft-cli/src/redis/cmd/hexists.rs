//! `HEXISTS key field`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// Whether a hash has a field (1 or 0).
pub(crate) struct Hexists {
    key: Bytes,
    field: Bytes,
}

impl Command for Hexists {
    const NAME: &'static str = "hexists";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hexists {
            key: args.required()?,
            field: args.required()?,
        })
    }
}

impl ReadCommand for Hexists {
    fn op(self) -> ReadOp {
        ReadOp::HExists {
            key: self.key,
            field: self.field,
        }
    }
}

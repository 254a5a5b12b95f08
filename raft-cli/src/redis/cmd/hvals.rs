//! `HVALS key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The values of a hash, in no particular order.
pub(crate) struct Hvals {
    key: Bytes,
}

impl Command for Hvals {
    const NAME: &'static str = "hvals";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hvals {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Hvals {
    fn op(self) -> ReadOp {
        ReadOp::HVals { key: self.key }
    }
}

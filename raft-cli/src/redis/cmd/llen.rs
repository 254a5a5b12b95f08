//! `LLEN key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The length of a list.
pub(crate) struct Llen {
    key: Bytes,
}

impl Command for Llen {
    const NAME: &'static str = "llen";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Llen {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Llen {
    fn op(self) -> ReadOp {
        ReadOp::LLen { key: self.key }
    }
}

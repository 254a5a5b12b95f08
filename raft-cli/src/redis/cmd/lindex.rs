//! `LINDEX key index`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// One element of a list (negative indexes count from the end; nil out of range).
pub(crate) struct Lindex {
    key: Bytes,
    /// Read after the key is looked up, as Redis reads it.
    index: Bytes,
}

impl Command for Lindex {
    const NAME: &'static str = "lindex";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Lindex {
            key: args.required()?,
            index: args.required()?,
        })
    }
}

impl ReadCommand for Lindex {
    fn op(self) -> ReadOp {
        ReadOp::LIndex {
            key: self.key,
            index: self.index,
        }
    }
}

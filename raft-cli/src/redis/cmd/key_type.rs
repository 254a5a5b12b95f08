//! `TYPE key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The type of the value at a key (`none` for no key).
pub(crate) struct Type {
    key: Bytes,
}

impl Command for Type {
    const NAME: &'static str = "type";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Type {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Type {
    fn op(self) -> ReadOp {
        ReadOp::Type { key: self.key }
    }
}

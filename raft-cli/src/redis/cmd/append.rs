//! `APPEND key value`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Appends to a string (absent: empty) and answers its length.
pub(crate) struct Append {
    key: Bytes,
    value: Bytes,
}

impl Command for Append {
    const NAME: &'static str = "append";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Append {
            key: args.required()?,
            value: args.required()?,
        })
    }
}

impl WriteCommand for Append {
    fn op(self) -> WriteOp {
        WriteOp::Append {
            key: self.key,
            value: self.value,
        }
    }
}

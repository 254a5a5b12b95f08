//! `RPUSH key element [element ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Pushes elements onto the tail of a list; answers the length.
pub(crate) struct Rpush {
    key: Bytes,
    values: Vec<Bytes>,
}

impl Command for Rpush {
    const NAME: &'static str = "rpush";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Rpush {
            key: args.required()?,
            values: args.rest(),
        })
    }
}

impl WriteCommand for Rpush {
    fn op(self) -> WriteOp {
        WriteOp::Push {
            key: self.key,
            values: self.values,
            left: false,
        }
    }
}

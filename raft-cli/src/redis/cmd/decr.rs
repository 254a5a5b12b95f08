//! `DECR key`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Subtracts one from the decimal integer at a key (absent: 0).
pub(crate) struct Decr {
    key: Bytes,
}

impl Command for Decr {
    const NAME: &'static str = "decr";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Decr {
            key: args.required()?,
        })
    }
}

impl WriteCommand for Decr {
    fn op(self) -> WriteOp {
        WriteOp::IncrBy {
            key: self.key,
            delta: -1,
        }
    }
}

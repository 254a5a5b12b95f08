//! `SETNX key value`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Sets a string only if the key is absent: 1 if it was set, 0 otherwise.
pub(crate) struct Setnx {
    key: Bytes,
    value: Bytes,
}

impl Command for Setnx {
    const NAME: &'static str = "setnx";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Setnx {
            key: args.required()?,
            value: args.required()?,
        })
    }
}

impl WriteCommand for Setnx {
    fn op(self) -> WriteOp {
        WriteOp::SetNx {
            key: self.key,
            value: self.value,
        }
    }
}

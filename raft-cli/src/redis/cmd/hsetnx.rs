//! `HSETNX key field value`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::{HashSetReply, WriteOp};

/// Sets a field of a hash only if it is absent: 1 if set, 0 otherwise.
pub(crate) struct Hsetnx {
    key: Bytes,
    field: Bytes,
    value: Bytes,
}

impl Command for Hsetnx {
    const NAME: &'static str = "hsetnx";
    const ARITY: i32 = 4;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hsetnx {
            key: args.required()?,
            field: args.required()?,
            value: args.required()?,
        })
    }
}

impl WriteCommand for Hsetnx {
    fn op(self) -> WriteOp {
        WriteOp::HSet {
            key: self.key,
            pairs: vec![(self.field, self.value)],
            reply: HashSetReply::IfAbsent,
        }
    }
}

//! `GETSET key value`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::{Condition, SetExpiry, WriteOp};

/// Sets a string and answers with the value before (nil if none): `SET key value GET`.
pub(crate) struct Getset {
    key: Bytes,
    value: Bytes,
}

impl Command for Getset {
    const NAME: &'static str = "getset";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Getset {
            key: args.required()?,
            value: args.required()?,
        })
    }
}

impl WriteCommand for Getset {
    fn op(self) -> WriteOp {
        WriteOp::Set {
            key: self.key,
            value: self.value,
            condition: Condition::Always,
            get: true,
            expiry: SetExpiry::Clear,
        }
    }
}

//! `HGET key field`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The value of a field of a hash (nil if absent).
pub(crate) struct Hget {
    key: Bytes,
    field: Bytes,
}

impl Command for Hget {
    const NAME: &'static str = "hget";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hget {
            key: args.required()?,
            field: args.required()?,
        })
    }
}

impl ReadCommand for Hget {
    fn op(self) -> ReadOp {
        ReadOp::HGet {
            key: self.key,
            field: self.field,
        }
    }
}

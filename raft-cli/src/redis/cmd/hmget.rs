//! `HMGET key field [field ...]`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The values of fields of a hash (nil for each field that is absent).
pub(crate) struct Hmget {
    key: Bytes,
    fields: Vec<Bytes>,
}

impl Command for Hmget {
    const NAME: &'static str = "hmget";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hmget {
            key: args.required()?,
            fields: args.rest(),
        })
    }
}

impl ReadCommand for Hmget {
    fn op(self) -> ReadOp {
        ReadOp::HMGet {
            key: self.key,
            fields: self.fields,
        }
    }
}

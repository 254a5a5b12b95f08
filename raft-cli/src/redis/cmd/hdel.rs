//! `HDEL key field [field ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Removes fields of a hash; answers how many existed.
pub(crate) struct Hdel {
    key: Bytes,
    fields: Vec<Bytes>,
}

impl Command for Hdel {
    const NAME: &'static str = "hdel";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hdel {
            key: args.required()?,
            fields: args.rest(),
        })
    }
}

impl WriteCommand for Hdel {
    fn op(self) -> WriteOp {
        WriteOp::HDel {
            key: self.key,
            fields: self.fields,
        }
    }
}

//! `RENAMENX key newkey`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Renames a key only if the new name is free: 1 if renamed, 0 if not.
pub(crate) struct Renamenx {
    from: Bytes,
    to: Bytes,
}

impl Command for Renamenx {
    const NAME: &'static str = "renamenx";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 2, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Renamenx {
            from: args.required()?,
            to: args.required()?,
        })
    }
}

impl WriteCommand for Renamenx {
    fn op(self) -> WriteOp {
        WriteOp::Rename {
            from: self.from,
            to: self.to,
            only_if_absent: true,
        }
    }
}

//! `RENAME key newkey`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Renames a key (its deadline moves with it), replacing what the new name held.
pub(crate) struct Rename {
    from: Bytes,
    to: Bytes,
}

impl Command for Rename {
    const NAME: &'static str = "rename";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 2, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Rename {
            from: args.required()?,
            to: args.required()?,
        })
    }
}

impl WriteCommand for Rename {
    fn op(self) -> WriteOp {
        WriteOp::Rename {
            from: self.from,
            to: self.to,
            only_if_absent: false,
        }
    }
}

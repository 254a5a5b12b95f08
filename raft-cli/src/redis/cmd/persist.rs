//! `PERSIST key`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Removes a key's deadline: 1 if it had one, 0 otherwise.
pub(crate) struct Persist {
    key: Bytes,
}

impl Command for Persist {
    const NAME: &'static str = "persist";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Persist {
            key: args.required()?,
        })
    }
}

impl WriteCommand for Persist {
    fn op(self) -> WriteOp {
        WriteOp::Persist { key: self.key }
    }
}

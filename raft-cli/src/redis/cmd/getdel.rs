//! `GETDEL key`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Answers a string and deletes its key.
pub(crate) struct Getdel {
    key: Bytes,
}

impl Command for Getdel {
    const NAME: &'static str = "getdel";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Getdel {
            key: args.required()?,
        })
    }
}

impl WriteCommand for Getdel {
    fn op(self) -> WriteOp {
        WriteOp::GetDel { key: self.key }
    }
}

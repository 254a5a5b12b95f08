//! `SREM key member [member ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Removes members from a set; answers how many were there.
pub(crate) struct Srem {
    key: Bytes,
    members: Vec<Bytes>,
}

impl Command for Srem {
    const NAME: &'static str = "srem";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Srem {
            key: args.required()?,
            members: args.rest(),
        })
    }
}

impl WriteCommand for Srem {
    fn op(self) -> WriteOp {
        WriteOp::SRem {
            key: self.key,
            members: self.members,
        }
    }
}

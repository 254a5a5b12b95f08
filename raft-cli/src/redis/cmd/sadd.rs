//! `SADD key member [member ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Adds members to a set; answers how many were new.
pub(crate) struct Sadd {
    key: Bytes,
    members: Vec<Bytes>,
}

impl Command for Sadd {
    const NAME: &'static str = "sadd";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Sadd {
            key: args.required()?,
            members: args.rest(),
        })
    }
}

impl WriteCommand for Sadd {
    fn op(self) -> WriteOp {
        WriteOp::SAdd {
            key: self.key,
            members: self.members,
        }
    }
}

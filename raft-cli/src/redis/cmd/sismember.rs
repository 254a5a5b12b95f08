//! `SISMEMBER key member`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// Whether a set has a member (1 or 0).
pub(crate) struct Sismember {
    key: Bytes,
    member: Bytes,
}

impl Command for Sismember {
    const NAME: &'static str = "sismember";
    const ARITY: i32 = 3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Sismember {
            key: args.required()?,
            member: args.required()?,
        })
    }
}

impl ReadCommand for Sismember {
    fn op(self) -> ReadOp {
        ReadOp::SIsMember {
            key: self.key,
            member: self.member,
        }
    }
}

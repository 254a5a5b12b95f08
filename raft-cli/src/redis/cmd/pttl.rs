//! `PTTL key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The time left before a key expires, in milliseconds: -1 for a key without a deadline, -2 for
/// no key (by this node's clock).
pub(crate) struct Pttl {
    key: Bytes,
}

impl Command for Pttl {
    const NAME: &'static str = "pttl";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Pttl {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Pttl {
    fn op(self) -> ReadOp {
        ReadOp::Ttl {
            key: self.key,
            millis: true,
        }
    }
}

//! `TTL key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The time left before a key expires, in seconds, rounded: -1 for a key without a deadline, -2 for
/// no key (by this node's clock).
pub(crate) struct Ttl {
    key: Bytes,
}

impl Command for Ttl {
    const NAME: &'static str = "ttl";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Ttl {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Ttl {
    fn op(self) -> ReadOp {
        ReadOp::Ttl {
            key: self.key,
            millis: false,
        }
    }
}

//! `KEYS pattern`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The keys matching a glob-style pattern, in no particular order. Like any reply it is
/// bounded by the reply budget: over a large key space, use SCAN.
pub(crate) struct Keys {
    pattern: Bytes,
}

impl Command for Keys {
    const NAME: &'static str = "keys";
    const ARITY: i32 = 2;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Keys {
            pattern: args.required()?,
        })
    }
}

impl ReadCommand for Keys {
    fn op(self) -> ReadOp {
        ReadOp::Keys {
            pattern: self.pattern,
        }
    }
}

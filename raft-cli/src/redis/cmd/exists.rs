//! `EXISTS key [key ...]`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// Counts the keys present; a key named twice counts twice, as in Redis.
pub(crate) struct Exists {
    keys: Vec<Bytes>,
}

impl Command for Exists {
    const NAME: &'static str = "exists";
    const ARITY: i32 = -2;
    const KEYS: (i64, i64, i64) = (1, -1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        Ok(Exists { keys: args.rest() })
    }
}

impl ReadCommand for Exists {
    fn op(self) -> ReadOp {
        ReadOp::Exists { keys: self.keys }
    }
}

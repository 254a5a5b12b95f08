//! `MGET key [key ...]`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// Reads several strings at once (nil for a key that is absent or not a string). The reply
/// shares the stored values and is refused with an error, before it is built, when it would
/// exceed the reply budget: a large value asked for many times in one small request would
/// otherwise make a reply thousands of times the request's size.
pub(crate) struct Mget {
    keys: Vec<Bytes>,
}

impl Command for Mget {
    const NAME: &'static str = "mget";
    const ARITY: i32 = -2;
    const KEYS: (i64, i64, i64) = (1, -1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        Ok(Mget { keys: args.rest() })
    }
}

impl ReadCommand for Mget {
    fn op(self) -> ReadOp {
        ReadOp::MGet { keys: self.keys }
    }
}

//! `HLEN key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The number of fields of a hash.
pub(crate) struct Hlen {
    key: Bytes,
}

impl Command for Hlen {
    const NAME: &'static str = "hlen";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hlen {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Hlen {
    fn op(self) -> ReadOp {
        ReadOp::HLen { key: self.key }
    }
}

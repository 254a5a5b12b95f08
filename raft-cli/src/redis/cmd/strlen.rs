//! `STRLEN key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The length of a string (0 for no key).
pub(crate) struct Strlen {
    key: Bytes,
}

impl Command for Strlen {
    const NAME: &'static str = "strlen";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Strlen {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Strlen {
    fn op(self) -> ReadOp {
        ReadOp::StrLen { key: self.key }
    }
}

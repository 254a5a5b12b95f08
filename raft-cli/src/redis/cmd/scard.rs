//! `SCARD key`.

use bytes::Bytes;

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The number of members of a set.
pub(crate) struct Scard {
    key: Bytes,
}

impl Command for Scard {
    const NAME: &'static str = "scard";
    const ARITY: i32 = 2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Scard {
            key: args.required()?,
        })
    }
}

impl ReadCommand for Scard {
    fn op(self) -> ReadOp {
        ReadOp::SCard { key: self.key }
    }
}

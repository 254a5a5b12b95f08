//! `MSETNX key value [key value ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Sets several strings at once if none of the keys exists: 1 if set, 0 if
/// nothing was.
pub(crate) struct Msetnx {
    pairs: Vec<(Bytes, Bytes)>,
}

impl Command for Msetnx {
    const NAME: &'static str = "msetnx";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, -1, 2);

    fn parse(args: Args) -> Result<Self, Refusal> {
        Ok(Msetnx {
            pairs: args.pairs()?,
        })
    }
}

impl WriteCommand for Msetnx {
    fn op(self) -> WriteOp {
        WriteOp::MSet {
            pairs: self.pairs,
            only_if_none_exist: true,
        }
    }
}

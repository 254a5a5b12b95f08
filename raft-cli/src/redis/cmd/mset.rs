//! `MSET key value [key value ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Sets several strings at once (each loses its deadline).
pub(crate) struct Mset {
    pairs: Vec<(Bytes, Bytes)>,
}

impl Command for Mset {
    const NAME: &'static str = "mset";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, -1, 2);

    fn parse(args: Args) -> Result<Self, Refusal> {
        Ok(Mset {
            pairs: args.pairs()?,
        })
    }
}

impl WriteCommand for Mset {
    fn op(self) -> WriteOp {
        WriteOp::MSet {
            pairs: self.pairs,
            only_if_none_exist: false,
        }
    }
}

//! `HSET key field value [field value ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::{HashSetReply, WriteOp};

/// Sets fields of a hash; answers how many were new.
pub(crate) struct Hset {
    key: Bytes,
    pairs: Vec<(Bytes, Bytes)>,
}

impl Command for Hset {
    const NAME: &'static str = "hset";
    const ARITY: i32 = -4;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hset {
            key: args.required()?,
            pairs: args.pairs()?,
        })
    }
}

impl WriteCommand for Hset {
    fn op(self) -> WriteOp {
        WriteOp::HSet {
            key: self.key,
            pairs: self.pairs,
            reply: HashSetReply::Added,
        }
    }
}

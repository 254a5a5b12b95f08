//! `HMSET key field value [field value ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::{HashSetReply, WriteOp};

/// Sets fields of a hash; answers OK (the older form of HSET).
pub(crate) struct Hmset {
    key: Bytes,
    pairs: Vec<(Bytes, Bytes)>,
}

impl Command for Hmset {
    const NAME: &'static str = "hmset";
    const ARITY: i32 = -4;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Hmset {
            key: args.required()?,
            pairs: args.pairs()?,
        })
    }
}

impl WriteCommand for Hmset {
    fn op(self) -> WriteOp {
        WriteOp::HSet {
            key: self.key,
            pairs: self.pairs,
            reply: HashSetReply::Ok,
        }
    }
}

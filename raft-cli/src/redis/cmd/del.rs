//! `DEL key [key ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Deletes keys; answers how many existed.
pub(crate) struct Del {
    keys: Vec<Bytes>,
}

impl Command for Del {
    const NAME: &'static str = "del";
    const ARITY: i32 = -2;
    const KEYS: (i64, i64, i64) = (1, -1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        Ok(Del { keys: args.rest() })
    }
}

impl WriteCommand for Del {
    fn op(self) -> WriteOp {
        WriteOp::Del { keys: self.keys }
    }
}

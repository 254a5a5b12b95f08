//! `UNLINK key [key ...]`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Deletes keys, like DEL (memory is freed at once either way); answers how many
/// existed.
pub(crate) struct Unlink {
    keys: Vec<Bytes>,
}

impl Command for Unlink {
    const NAME: &'static str = "unlink";
    const ARITY: i32 = -2;
    const KEYS: (i64, i64, i64) = (1, -1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        Ok(Unlink { keys: args.rest() })
    }
}

impl WriteCommand for Unlink {
    fn op(self) -> WriteOp {
        WriteOp::Del { keys: self.keys }
    }
}

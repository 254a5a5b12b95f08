//! `RPOP key [count]`.

use bytes::Bytes;

use super::lpop::parse_pop;
use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Removes and answers the tail element of a list, or with a count, up to that many (an
/// array). Refused, removing nothing, when the elements would not fit the reply budget.
pub(crate) struct Rpop {
    key: Bytes,
    count: Option<u64>,
}

impl Command for Rpop {
    const NAME: &'static str = "rpop";
    const ARITY: i32 = -2;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        let (key, count) = parse_pop(args)?;
        Ok(Rpop { key, count })
    }
}

impl WriteCommand for Rpop {
    fn op(self) -> WriteOp {
        WriteOp::Pop {
            key: self.key,
            left: false,
            count: self.count,
        }
    }
}

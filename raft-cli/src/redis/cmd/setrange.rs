//! `SETRANGE key offset value`.

use bytes::Bytes;

use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;
use crate::resp::Value;

/// Overwrites part of a string from an offset, padding with zero bytes; answers the length.
pub(crate) struct Setrange {
    key: Bytes,
    offset: u64,
    value: Bytes,
}

impl Command for Setrange {
    const NAME: &'static str = "setrange";
    const ARITY: i32 = 4;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let key = args.required()?;
        let offset = args.integer()?;
        let offset =
            u64::try_from(offset).map_err(|_| Value::error("ERR", "offset is out of range"))?;
        Ok(Setrange {
            key,
            offset,
            value: args.required()?,
        })
    }
}

impl WriteCommand for Setrange {
    fn op(self) -> WriteOp {
        WriteOp::SetRange {
            key: self.key,
            offset: self.offset,
            value: self.value,
        }
    }
}

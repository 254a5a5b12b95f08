//! `SETEX key seconds value`.

use bytes::Bytes;

use super::set::deadline_arg;
use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::{Condition, ExpireCommand, SetExpiry, When, WriteOp};

/// Sets a string that expires after this many seconds.
pub(crate) struct Setex {
    key: Bytes,
    when: When,
    value: Bytes,
}

impl Command for Setex {
    const NAME: &'static str = "setex";
    const ARITY: i32 = 4;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let key = args.required()?;
        let when = args.required()?;
        Ok(Setex {
            key,
            when: deadline_arg(&when, true, false, ExpireCommand::Setex)?,
            value: args.required()?,
        })
    }
}

impl WriteCommand for Setex {
    fn op(self) -> WriteOp {
        WriteOp::Set {
            key: self.key,
            value: self.value,
            condition: Condition::Always,
            get: false,
            expiry: SetExpiry::Set(self.when, ExpireCommand::Setex),
        }
    }
}

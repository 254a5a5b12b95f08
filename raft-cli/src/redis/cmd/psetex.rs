//! `PSETEX key milliseconds value`.

use bytes::Bytes;

use super::set::deadline_arg;
use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::{Condition, ExpireCommand, SetExpiry, When, WriteOp};

/// Sets a string that expires after this many milliseconds.
pub(crate) struct Psetex {
    key: Bytes,
    when: When,
    value: Bytes,
}

impl Command for Psetex {
    const NAME: &'static str = "psetex";
    const ARITY: i32 = 4;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let key = args.required()?;
        let when = args.required()?;
        Ok(Psetex {
            key,
            when: deadline_arg(&when, false, false, ExpireCommand::Psetex)?,
            value: args.required()?,
        })
    }
}

impl WriteCommand for Psetex {
    fn op(self) -> WriteOp {
        WriteOp::Set {
            key: self.key,
            value: self.value,
            condition: Condition::Always,
            get: false,
            expiry: SetExpiry::Set(self.when, ExpireCommand::Psetex),
        }
    }
}

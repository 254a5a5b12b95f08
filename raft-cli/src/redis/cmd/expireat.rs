//! `EXPIREAT key unix-time-seconds [NX | XX | GT | LT]`.

use super::expire::parse_expire;
use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::{ExpireCommand, WriteOp};

/// Gives a key a deadline, a time in seconds since the Unix epoch: 1 if set (or the key deleted, the deadline being
/// past), 0 if there is no key or the condition (NX: no deadline yet, XX: one, GT: later
/// than it, LT: earlier) does not hold.
pub(crate) struct Expireat(WriteOp);

impl Command for Expireat {
    const NAME: &'static str = "expireat";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        parse_expire(args, true, true, ExpireCommand::Expireat).map(Expireat)
    }
}

impl WriteCommand for Expireat {
    fn op(self) -> WriteOp {
        self.0
    }
}

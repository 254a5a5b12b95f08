//! `PEXPIRE key milliseconds [NX | XX | GT | LT]`.

use super::expire::parse_expire;
use super::{Args, Command, Refusal, WriteCommand};
use crate::kv::{ExpireCommand, WriteOp};

/// Gives a key a deadline, a number of milliseconds from now: 1 if set (or the key deleted, the deadline being
/// past), 0 if there is no key or the condition (NX: no deadline yet, XX: one, GT: later
/// than it, LT: earlier) does not hold.
pub(crate) struct Pexpire(WriteOp);

impl Command for Pexpire {
    const NAME: &'static str = "pexpire";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        parse_expire(args, false, false, ExpireCommand::Pexpire).map(Pexpire)
    }
}

impl WriteCommand for Pexpire {
    fn op(self) -> WriteOp {
        self.0
    }
}

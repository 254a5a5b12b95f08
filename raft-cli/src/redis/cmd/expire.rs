//! `EXPIRE key seconds [NX | XX | GT | LT]`.

use super::{integer, reply_of, Args, Command, Refusal, WriteCommand};
use crate::kv::{ExpireCommand, ExpireCondition, When, WriteOp};
use crate::resp::Value;

/// Gives a key a deadline, a number of seconds from now: 1 if set (or the key deleted, the deadline being
/// past), 0 if there is no key or the condition (NX: no deadline yet, XX: one, GT: later
/// than it, LT: earlier) does not hold.
pub(crate) struct Expire(WriteOp);

impl Command for Expire {
    const NAME: &'static str = "expire";
    const ARITY: i32 = -3;
    const KEYS: (i64, i64, i64) = (1, 1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        parse_expire(args, true, false, ExpireCommand::Expire).map(Expire)
    }
}

impl WriteCommand for Expire {
    fn op(self) -> WriteOp {
        self.0
    }
}

/// Parses the arguments of EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT in Redis's order: the
/// options first, then the number, which may be negative or past (the key is then deleted)
/// but not overflow in milliseconds.
pub(super) fn parse_expire(
    mut args: Args,
    seconds: bool,
    absolute: bool,
    command: ExpireCommand,
) -> Result<WriteOp, Refusal> {
    let key = args.required()?;
    let number = args.required()?;
    let mut condition = ExpireCondition::default();
    for option in args.rest() {
        match &option.to_ascii_uppercase()[..] {
            b"NX" => condition.nx = true,
            b"XX" => condition.xx = true,
            b"GT" => condition.gt = true,
            b"LT" => condition.lt = true,
            _ => {
                let shown = String::from_utf8_lossy(&option);
                return Err(Value::error("ERR", format!("Unsupported option {shown}")).into());
            }
        }
    }
    if condition.nx && (condition.xx || condition.gt || condition.lt) {
        let message = "NX and XX, GT or LT options at the same time are not compatible";
        return Err(Value::error("ERR", message).into());
    }
    if condition.gt && condition.lt {
        let message = "GT and LT options at the same time are not compatible";
        return Err(Value::error("ERR", message).into());
    }
    let n = integer(&number)?;
    let ms = match seconds {
        true => n
            .checked_mul(1000)
            .ok_or_else(|| reply_of(command.invalid()))?,
        false => n,
    };
    let when = if absolute { When::At(ms) } else { When::In(ms) };
    Ok(WriteOp::Expire {
        key,
        when,
        condition,
        command,
    })
}

//! `SET key value [NX | XX | IFEQ comparison] [GET] [KEEPTTL]`.

use bytes::Bytes;

use super::{unexpected, write, Args, Command, Context};
use crate::kv::{KvCommand, KvResponse, SetCondition};
use crate::resp::Value;

/// Sets a key through the log, under a condition (Redis `NX`, `XX`; Valkey 8.1 `IFEQ`,
/// compare-and-set), optionally answering with the value before (`GET`). Keys do not
/// expire, so `KEEPTTL` changes nothing and the expiry options are refused.
pub(crate) struct Set {
    key: Bytes,
    value: Bytes,
    condition: SetCondition,
    get: bool,
}

impl Command for Set {
    const NAME: &'static str = "set";
    const ARITY: i32 = -3;

    fn parse(mut args: Args) -> Result<Self, Value> {
        let mut set = Set {
            key: args.required()?,
            value: args.required()?,
            condition: SetCondition::Always,
            get: false,
        };
        while let Some(option) = args.next_arg() {
            let exclusive = set.condition == SetCondition::Always;
            match &option.to_ascii_uppercase()[..] {
                b"NX" if exclusive => set.condition = SetCondition::IfAbsent,
                b"XX" if exclusive => set.condition = SetCondition::IfPresent,
                b"IFEQ" if exclusive => match args.next_arg() {
                    Some(expected) => set.condition = SetCondition::IfEqual(expected),
                    None => return Err(syntax_error()),
                },
                b"GET" if !set.get => set.get = true,
                b"KEEPTTL" => {}
                b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                    return Err(Value::error("ERR", "expiration options are not supported"))
                }
                _ => return Err(syntax_error()),
            }
        }
        Ok(set)
    }

    async fn execute(self, cx: &Context<'_>) -> Value {
        let command = KvCommand::Set {
            key: self.key,
            value: self.value,
            condition: self.condition,
            return_previous: self.get,
        };
        match write(cx.service, command).await {
            Ok(KvResponse::Set { previous, .. }) if self.get => {
                previous.map_or(Value::Nil, Value::Bulk)
            }
            Ok(KvResponse::Set { written: true, .. }) => Value::Simple("OK"),
            Ok(KvResponse::Set { written: false, .. }) => Value::Nil,
            Ok(other) => unexpected(other),
            Err(e) => e,
        }
    }
}

fn syntax_error() -> Value {
    Value::error("ERR", "syntax error")
}

//! `INCR key`.

use bytes::Bytes;

use super::{unexpected, write, Args, Command, Context};
use crate::kv::{KvCommand, KvResponse};
use crate::resp::Value;

/// Adds one to the decimal integer at the key, through the log.
pub(crate) struct Incr {
    key: Bytes,
}

impl Command for Incr {
    const NAME: &'static str = "incr";
    const ARITY: i32 = 2;

    fn parse(mut args: Args) -> Result<Self, Value> {
        Ok(Incr {
            key: args.required()?,
        })
    }

    async fn execute(self, cx: &Context<'_>) -> Value {
        let command = KvCommand::Incr {
            key: self.key,
            delta: 1,
        };
        match write(cx.service, command).await {
            Ok(KvResponse::Integer(n)) => Value::Integer(n),
            Ok(other) => unexpected(other),
            Err(e) => e,
        }
    }
}

//! `GET key`.

use bytes::Bytes;

use super::{read_values, Args, Command, Context};
use crate::resp::Value;

/// Reads one key (linearizable: after a read barrier on this node).
pub(crate) struct Get {
    key: Bytes,
}

impl Command for Get {
    const NAME: &'static str = "get";
    const ARITY: i32 = 2;

    fn parse(mut args: Args) -> Result<Self, Value> {
        Ok(Get {
            key: args.required()?,
        })
    }

    async fn execute(self, cx: &Context<'_>) -> Value {
        match read_values(cx.service, vec![self.key]).await {
            Ok(mut values) => values.pop().unwrap_or(Value::Nil),
            Err(e) => e,
        }
    }
}

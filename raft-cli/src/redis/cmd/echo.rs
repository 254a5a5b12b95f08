//! `ECHO message`.

use bytes::Bytes;

use super::{Args, Command, Context};
use crate::resp::Value;

/// Answers with the message.
pub(crate) struct Echo {
    message: Bytes,
}

impl Command for Echo {
    const NAME: &'static str = "echo";
    const ARITY: i32 = 2;

    fn parse(mut args: Args) -> Result<Self, Value> {
        Ok(Echo {
            message: args.required()?,
        })
    }

    async fn execute(self, _cx: &Context<'_>) -> Value {
        Value::Bulk(self.message)
    }
}

//! `ECHO message`.

use bytes::Bytes;

use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// Answers with the message.
pub(crate) struct Echo {
    message: Bytes,
}

impl Command for Echo {
    const NAME: &'static str = "echo";
    const ARITY: i32 = 2;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Echo {
            message: args.required()?,
        })
    }
}

impl LocalCommand for Echo {
    async fn execute(self, _cx: &mut Context<'_>) -> Value {
        Value::Bulk(self.message)
    }
}

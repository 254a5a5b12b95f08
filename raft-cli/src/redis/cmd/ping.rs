//! `PING [message]`.

use bytes::Bytes;

use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// Answers `PONG`, or echoes the message.
pub(crate) struct Ping {
    message: Option<Bytes>,
}

impl Command for Ping {
    const NAME: &'static str = "ping";
    const ARITY: i32 = -1;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let message = args.next_arg();
        // Redis declares PING as taking any number of words and refuses more than one.
        args.finish()?;
        Ok(Ping { message })
    }
}

impl LocalCommand for Ping {
    async fn execute(self, _cx: &mut Context<'_>) -> Value {
        match self.message {
            None => Value::Simple("PONG"),
            Some(message) => Value::Bulk(message),
        }
    }
}

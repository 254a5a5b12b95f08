//! `DEL key [key ...]`.

use bytes::Bytes;

use super::{unexpected, write, Args, Command, Context};
use crate::kv::{KvCommand, KvResponse};
use crate::resp::Value;

/// Deletes keys through the log; answers how many existed.
pub(crate) struct Del {
    keys: Vec<Bytes>,
}

impl Command for Del {
    const NAME: &'static str = "del";
    const ARITY: i32 = -2;

    fn parse(args: Args) -> Result<Self, Value> {
        Ok(Del { keys: args.rest() })
    }

    async fn execute(self, cx: &Context<'_>) -> Value {
        let command = KvCommand::Delete { keys: self.keys };
        match write(cx.service, command).await {
            Ok(KvResponse::Deleted(n)) => Value::Integer(n as i64),
            Ok(other) => unexpected(other),
            Err(e) => e,
        }
    }
}

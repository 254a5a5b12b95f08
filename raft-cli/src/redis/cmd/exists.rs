//! `EXISTS key [key ...]`.

use bytes::Bytes;

use super::{count, Args, Command, Context};
use crate::proto::Request;
use crate::resp::Value;

/// Counts the keys present (linearizable); a key named twice counts twice, as in Redis.
pub(crate) struct Exists {
    keys: Vec<Bytes>,
}

impl Command for Exists {
    const NAME: &'static str = "exists";
    const ARITY: i32 = -2;

    fn parse(args: Args) -> Result<Self, Value> {
        Ok(Exists { keys: args.rest() })
    }

    async fn execute(self, cx: &Context<'_>) -> Value {
        count(cx.service, Request::Exists { keys: self.keys }).await
    }
}

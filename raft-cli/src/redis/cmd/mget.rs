//! `MGET key [key ...]`.

use bytes::Bytes;

use super::{read_values, Args, Command, Context};
use crate::resp::Value;

/// Reads several keys at once (linearizable). The reply shares the stored values and is
/// refused with an error, before it is built, when it would exceed the reply budget: a
/// large value asked for many times in one small request would otherwise make a reply
/// thousands of times the request's size.
pub(crate) struct Mget {
    keys: Vec<Bytes>,
}

impl Command for Mget {
    const NAME: &'static str = "mget";
    const ARITY: i32 = -2;

    fn parse(args: Args) -> Result<Self, Value> {
        Ok(Mget { keys: args.rest() })
    }

    async fn execute(self, cx: &Context<'_>) -> Value {
        match read_values(cx.service, self.keys).await {
            Ok(values) => Value::Array(values),
            Err(e) => e,
        }
    }
}

//! `CLIENT subcommand [argument ...]`.

use super::{Args, Command, Context};
use crate::resp::Value;

/// Accepted and ignored (`CLIENT SETINFO` and the like, sent by client libraries).
pub(crate) struct Client;

impl Command for Client {
    const NAME: &'static str = "client";
    const ARITY: i32 = -2;

    fn parse(_args: Args) -> Result<Self, Value> {
        Ok(Client)
    }

    async fn execute(self, _cx: &Context<'_>) -> Value {
        Value::Simple("OK")
    }
}

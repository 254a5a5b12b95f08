//! `COMMAND [subcommand ...]`.

use super::{Args, Command, Context};
use crate::resp::Value;

/// An empty command table: what redis-cli asks for at start-up, answered harmlessly.
pub(crate) struct CommandList;

impl Command for CommandList {
    const NAME: &'static str = "command";
    const ARITY: i32 = -1;

    fn parse(_args: Args) -> Result<Self, Value> {
        Ok(CommandList)
    }

    async fn execute(self, _cx: &Context<'_>) -> Value {
        Value::Array(Vec::new())
    }
}

//! `SELECT index`.

use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// Selects database 0, the only one; any other index is out of range, as in a Redis
/// configured with `databases 1`.
pub(crate) struct Select {
    index: i64,
}

impl Command for Select {
    const NAME: &'static str = "select";
    const ARITY: i32 = 2;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        Ok(Select {
            index: args.integer()?,
        })
    }
}

impl LocalCommand for Select {
    async fn execute(self, _cx: &mut Context<'_>) -> Value {
        match self.index {
            0 => Value::Simple("OK"),
            _ => Value::error("ERR", "DB index is out of range"),
        }
    }
}

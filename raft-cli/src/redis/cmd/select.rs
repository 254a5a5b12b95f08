//! `SELECT index`.

use bytes::Bytes;

use super::{Args, Command, Context};
use crate::resp::Value;

/// Selects database 0, the only one.
pub(crate) struct Select {
    index: Bytes,
}

impl Command for Select {
    const NAME: &'static str = "select";
    const ARITY: i32 = 2;

    fn parse(mut args: Args) -> Result<Self, Value> {
        Ok(Select {
            index: args.required()?,
        })
    }

    async fn execute(self, _cx: &Context<'_>) -> Value {
        match &self.index[..] {
            b"0" => Value::Simple("OK"),
            _ => Value::error("ERR", "DB index is out of range"),
        }
    }
}

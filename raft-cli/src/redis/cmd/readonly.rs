//! `READONLY`.

use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// Accepted and ignored: every member serves linearizable reads anyway.
pub(crate) struct Readonly;

impl Command for Readonly {
    const NAME: &'static str = "readonly";
    const ARITY: i32 = 1;

    fn parse(_args: Args) -> Result<Self, Refusal> {
        Ok(Readonly)
    }
}

impl LocalCommand for Readonly {
    async fn execute(self, _cx: &mut Context<'_>) -> Value {
        Value::Simple("OK")
    }
}

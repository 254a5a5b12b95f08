//! `READWRITE`.

use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// Accepted and ignored: a member forwards writes to the leader anyway.
pub(crate) struct Readwrite;

impl Command for Readwrite {
    const NAME: &'static str = "readwrite";
    const ARITY: i32 = 1;

    fn parse(_args: Args) -> Result<Self, Refusal> {
        Ok(Readwrite)
    }
}

impl LocalCommand for Readwrite {
    async fn execute(self, _cx: &mut Context<'_>) -> Value {
        Value::Simple("OK")
    }
}

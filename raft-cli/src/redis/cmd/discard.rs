//! `DISCARD`.

use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// Drops the transaction being queued and forgets the watched keys.
pub(crate) struct Discard;

impl Command for Discard {
    const NAME: &'static str = "discard";
    const ARITY: i32 = 1;

    fn parse(_args: Args) -> Result<Self, Refusal> {
        Ok(Discard)
    }
}

impl LocalCommand for Discard {
    const RUNS_IN_TRANSACTION: bool = true;

    async fn execute(self, cx: &mut Context<'_>) -> Value {
        if cx.session.transaction.take().is_none() {
            return Value::error("ERR", "DISCARD without MULTI");
        }
        cx.session.unwatch();
        Value::Simple("OK")
    }
}

//! `MULTI`.

use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::redis::session::Transaction;
use crate::resp::Value;

/// Starts a transaction: the commands that follow are queued (each answered `QUEUED`) until
/// EXEC runs them as one log entry, or DISCARD drops them.
pub(crate) struct Multi;

impl Command for Multi {
    const NAME: &'static str = "multi";
    const ARITY: i32 = 1;

    fn parse(_args: Args) -> Result<Self, Refusal> {
        Ok(Multi)
    }
}

impl LocalCommand for Multi {
    const RUNS_IN_TRANSACTION: bool = true;

    async fn execute(self, cx: &mut Context<'_>) -> Value {
        if cx.session.transaction.is_some() {
            return Value::error("ERR", "MULTI calls can not be nested");
        }
        cx.session.transaction = Some(Transaction::default());
        Value::Simple("OK")
    }
}

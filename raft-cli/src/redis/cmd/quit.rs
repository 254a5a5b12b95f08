//! `QUIT`.

use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// Answers `OK`; the connection closes after the reply.
pub(crate) struct Quit;

impl Command for Quit {
    const NAME: &'static str = "quit";
    const ARITY: i32 = -1;

    fn parse(_args: Args) -> Result<Self, Refusal> {
        Ok(Quit)
    }
}

impl LocalCommand for Quit {
    const CLOSES_CONNECTION: bool = true;
    const RUNS_IN_TRANSACTION: bool = true;

    async fn execute(self, _cx: &mut Context<'_>) -> Value {
        Value::Simple("OK")
    }
}

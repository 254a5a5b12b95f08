//! `QUIT`.

use super::{Args, Command, Context};
use crate::resp::Value;

/// Answers `OK`; the connection closes after the reply.
pub(crate) struct Quit;

impl Command for Quit {
    const NAME: &'static str = "quit";
    const ARITY: i32 = -1;
    const CLOSES_CONNECTION: bool = true;

    fn parse(_args: Args) -> Result<Self, Value> {
        Ok(Quit)
    }

    async fn execute(self, _cx: &Context<'_>) -> Value {
        Value::Simple("OK")
    }
}

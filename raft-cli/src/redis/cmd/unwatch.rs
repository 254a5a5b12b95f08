//! `UNWATCH`.

use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// Forgets the watched keys.
pub(crate) struct Unwatch;

impl Command for Unwatch {
    const NAME: &'static str = "unwatch";
    const ARITY: i32 = 1;

    fn parse(_args: Args) -> Result<Self, Refusal> {
        Ok(Unwatch)
    }
}

impl LocalCommand for Unwatch {
    async fn execute(self, cx: &mut Context<'_>) -> Value {
        cx.session.unwatch();
        Value::Simple("OK")
    }
}

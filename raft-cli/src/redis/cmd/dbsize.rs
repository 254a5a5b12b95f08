//! `DBSIZE`.

use super::{count, Args, Command, Context};
use crate::proto::Request;
use crate::resp::Value;

/// The number of keys (linearizable).
pub(crate) struct Dbsize;

impl Command for Dbsize {
    const NAME: &'static str = "dbsize";
    const ARITY: i32 = 1;

    fn parse(_args: Args) -> Result<Self, Value> {
        Ok(Dbsize)
    }

    async fn execute(self, cx: &Context<'_>) -> Value {
        count(cx.service, Request::DbSize).await
    }
}

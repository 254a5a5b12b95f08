//! `WATCH key [key ...]`.

use bytes::Bytes;

use super::{service_error, Args, Command, Context, LocalCommand, Refusal};
use crate::redis::session::WATCHED_KEYS_MAX;
use crate::resp::Value;

/// Watches keys for the next EXEC: reads each key's version after a read barrier (so on any
/// node, linearizably); EXEC's log entry carries them, and every replica applying it runs
/// nothing (EXEC answers a nil array) if one of the keys changed since. A key watched twice
/// keeps its first version, as in Redis.
pub(crate) struct Watch {
    keys: Vec<Bytes>,
}

impl Command for Watch {
    const NAME: &'static str = "watch";
    const ARITY: i32 = -2;
    const KEYS: (i64, i64, i64) = (1, -1, 1);

    fn parse(args: Args) -> Result<Self, Refusal> {
        Ok(Watch { keys: args.rest() })
    }
}

impl LocalCommand for Watch {
    const RUNS_IN_TRANSACTION: bool = true;

    async fn execute(self, cx: &mut Context<'_>) -> Value {
        if cx.session.transaction.is_some() {
            return Value::error("ERR", "WATCH inside MULTI is not allowed");
        }
        let session = &mut *cx.session;
        let keys: Vec<Bytes> = self
            .keys
            .into_iter()
            .filter(|key| !session.watched.iter().any(|(watched, _)| watched == key))
            .collect();
        if session.watched.len() + keys.len() > WATCHED_KEYS_MAX {
            return Value::error(
                "ERR",
                format!("a connection may watch at most {WATCHED_KEYS_MAX} keys"),
            );
        }
        match cx.service.watch(&keys).await {
            Ok(versions) => {
                for (key, version) in versions {
                    // A key named twice in one WATCH keeps its first version.
                    if !session.watched.iter().any(|(watched, _)| *watched == key) {
                        session.watched.push((key, version));
                    }
                }
                Value::Simple("OK")
            }
            Err(e) => service_error(e),
        }
    }
}

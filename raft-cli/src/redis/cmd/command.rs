//! `COMMAND [COUNT | LIST | INFO [command-name ...] | DOCS [command-name ...]]`.

use bytes::Bytes;

use super::COMMAND_TABLE;
use super::{unknown_subcommand, Args, Command, CommandInfo, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// The command table, for clients that probe it: `COUNT`, `LIST`, `INFO` (name, arity,
/// flags `readonly`/`write`, key positions; no ACL categories, tips, key specs or
/// subcommands) and `DOCS` (an empty map: no documentation is served).
pub(crate) enum CommandList {
    All,
    Count,
    List,
    Info(Vec<Bytes>),
    Docs,
}

impl Command for CommandList {
    const NAME: &'static str = "command";
    const ARITY: i32 = -1;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let Some(subcommand) = args.next_arg() else {
            return Ok(CommandList::All);
        };
        Ok(match &subcommand.to_ascii_uppercase()[..] {
            b"COUNT" => CommandList::Count,
            b"LIST" => CommandList::List,
            b"INFO" => CommandList::Info(args.rest()),
            b"DOCS" => CommandList::Docs,
            _ => return Err(unknown_subcommand(&subcommand, "COMMAND")),
        })
    }
}

impl LocalCommand for CommandList {
    async fn execute(self, _cx: &mut Context<'_>) -> Value {
        match self {
            CommandList::All => Value::Array(COMMAND_TABLE.iter().map(describe).collect()),
            CommandList::Count => Value::Integer(COMMAND_TABLE.len() as i64),
            CommandList::List => Value::Array(
                COMMAND_TABLE
                    .iter()
                    .map(|c| Value::Bulk(Bytes::from_static(c.name.as_bytes())))
                    .collect(),
            ),
            CommandList::Info(names) if names.is_empty() => {
                Value::Array(COMMAND_TABLE.iter().map(describe).collect())
            }
            CommandList::Info(names) => Value::Array(
                names
                    .iter()
                    .map(|name| {
                        COMMAND_TABLE
                            .iter()
                            .find(|c| name.eq_ignore_ascii_case(c.name.as_bytes()))
                            .map_or(Value::Nil, describe)
                    })
                    .collect(),
            ),
            CommandList::Docs => Value::Map(Vec::new()),
        }
    }
}

/// A command as COMMAND INFO describes it (Redis 7's ten fields).
fn describe(info: &CommandInfo) -> Value {
    let (first, last, step) = info.keys;
    Value::Array(vec![
        Value::Bulk(Bytes::from_static(info.name.as_bytes())),
        Value::Integer(i64::from(info.arity)),
        Value::Set(info.flags.iter().map(|f| Value::Simple(f)).collect()),
        Value::Integer(first),
        Value::Integer(last),
        Value::Integer(step),
        Value::Set(Vec::new()),
        Value::Set(Vec::new()),
        Value::Array(Vec::new()),
        Value::Array(Vec::new()),
    ])
}

//! `CONFIG GET parameter [parameter ...]`.

use bytes::Bytes;

use super::{unknown_subcommand, Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// The parameters redis-benchmark and client libraries ask for, with harmless values; other
/// parameters are left out of the reply, as Redis leaves out unknown ones. Only `GET` is
/// supported.
pub(crate) struct Config {
    parameters: Vec<Bytes>,
}

impl Command for Config {
    const NAME: &'static str = "config";
    const ARITY: i32 = -2;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let subcommand = args.required()?;
        if !subcommand.eq_ignore_ascii_case(b"GET") {
            return Err(unknown_subcommand(&subcommand, "CONFIG"));
        }
        let parameters = args.rest();
        if parameters.is_empty() {
            return Err(Refusal::Syntax(super::wrong_arity("config|get")));
        }
        Ok(Config { parameters })
    }
}

impl LocalCommand for Config {
    async fn execute(self, _cx: &mut Context<'_>) -> Value {
        let mut pairs = Vec::new();
        for name in self.parameters {
            let value: &'static [u8] = match &name.to_ascii_lowercase()[..] {
                b"save" => b"",
                b"appendonly" => b"no",
                b"databases" => b"1",
                _ => continue,
            };
            pairs.push(Value::Bulk(name));
            pairs.push(Value::Bulk(Bytes::from_static(value)));
        }
        Value::Map(pairs)
    }
}

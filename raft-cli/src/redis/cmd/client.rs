//! `CLIENT subcommand [argument ...]`.

use bytes::Bytes;

use super::{unknown_subcommand, wrong_arity, Args, Command, Context, LocalCommand, Refusal};
use crate::resp::Value;

/// The subcommands client libraries use: `ID`, `SETNAME`, `GETNAME`, `INFO`, `LIST`
/// (this node's connections, with the fields Redis shows first), and `SETINFO`, `NO-EVICT`,
/// `NO-TOUCH`, `TRACKING off`, `REPLY ON`, accepted and ignored.
pub(crate) enum Client {
    Id,
    SetName(Bytes),
    GetName,
    Info,
    List,
    Ignored,
}

impl Command for Client {
    const NAME: &'static str = "client";
    const ARITY: i32 = -2;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let subcommand = args.required()?;
        let rest = args.len();
        let upper = subcommand.to_ascii_uppercase();
        let arity = |expected: usize, name: &str| -> Result<(), Refusal> {
            match rest == expected {
                true => Ok(()),
                false => Err(Refusal::Syntax(wrong_arity(&format!("client|{name}")))),
            }
        };
        let client = match &upper[..] {
            b"ID" => arity(0, "id").map(|()| Client::Id)?,
            b"GETNAME" => arity(0, "getname").map(|()| Client::GetName)?,
            b"INFO" => arity(0, "info").map(|()| Client::Info)?,
            b"LIST" => Client::List,
            b"SETNAME" => {
                arity(1, "setname")?;
                let name = args.required()?;
                if !valid_name(&name) {
                    return Err(invalid_name().into());
                }
                Client::SetName(name)
            }
            b"SETINFO" | b"NO-EVICT" | b"NO-TOUCH" | b"TRACKING" | b"REPLY" => Client::Ignored,
            _ => return Err(unknown_subcommand(&subcommand, "CLIENT")),
        };
        Ok(client)
    }
}

impl LocalCommand for Client {
    async fn execute(self, cx: &mut Context<'_>) -> Value {
        let session = &mut *cx.session;
        match self {
            Client::Id => Value::Integer(session.id as i64),
            Client::SetName(name) => {
                session.set_name(name);
                Value::Simple("OK")
            }
            Client::GetName => session.name().map_or(Value::Nil, Value::Bulk),
            Client::Info => {
                let line = session.clients().info_line(session.id).unwrap_or_default();
                Value::Verbatim(Bytes::from(line))
            }
            Client::List => Value::Verbatim(Bytes::from(session.clients().list())),
            Client::Ignored => Value::Simple("OK"),
        }
    }
}

/// Whether `name` may name a connection: printable ASCII without spaces, as Redis requires.
pub(super) fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// Redis's error for a name that may not name a connection.
pub(super) fn invalid_name() -> Value {
    Value::error(
        "ERR",
        "Client names cannot contain spaces, newlines or special characters.",
    )
}

//! `HELLO [protover [AUTH username password] [SETNAME clientname]]`.

use bytes::Bytes;

use super::client::valid_name;
use super::{Args, Command, Context, LocalCommand, Refusal};
use crate::resp::{Protocol, Value};

/// The version HELLO and INFO report: the Redis version whose commands and replies this
/// front end follows.
pub(crate) const REDIS_VERSION: &str = "7.2.0";

/// Switches the protocol (2: RESP2, 3: RESP3) and answers with the server's description.
/// There are no users or passwords: `AUTH default <anything>` is accepted, as by a Redis
/// whose default user has none, and any other user is refused.
pub(crate) struct Hello {
    protocol: Option<Protocol>,
    name: Option<Bytes>,
}

impl Command for Hello {
    const NAME: &'static str = "hello";
    const ARITY: i32 = -1;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let mut hello = Hello {
            protocol: None,
            name: None,
        };
        let Some(version) = args.next_arg() else {
            return Ok(hello);
        };
        hello.protocol = match super::integer(&version) {
            Ok(2) => Some(Protocol::Resp2),
            Ok(3) => Some(Protocol::Resp3),
            Ok(_) => return Err(Value::error("NOPROTO", "unsupported protocol version").into()),
            Err(_) => {
                let message = "Protocol version is not an integer or out of range";
                return Err(Value::error("ERR", message).into());
            }
        };
        while let Some(option) = args.next_arg() {
            let more = args.len();
            match &option.to_ascii_uppercase()[..] {
                b"AUTH" if more >= 2 => {
                    let user = args.required()?;
                    let _password = args.required()?;
                    if &user[..] != b"default" {
                        let message = "invalid username-password pair or user is disabled.";
                        return Err(Value::error("WRONGPASS", message).into());
                    }
                }
                b"SETNAME" if more >= 1 => {
                    let name = args.required()?;
                    if !valid_name(&name) {
                        return Err(super::client::invalid_name().into());
                    }
                    hello.name = Some(name);
                }
                _ => {
                    let shown = String::from_utf8_lossy(&option);
                    let message = format!("Syntax error in HELLO option '{shown}'");
                    return Err(Value::error("ERR", message).into());
                }
            }
        }
        Ok(hello)
    }
}

impl LocalCommand for Hello {
    async fn execute(self, cx: &mut Context<'_>) -> Value {
        if let Some(protocol) = self.protocol {
            cx.session.set_protocol(protocol);
        }
        if let Some(name) = self.name {
            cx.session.set_name(name);
        }
        let proto = match cx.session.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        let text = |s: &'static str| Value::Bulk(Bytes::from_static(s.as_bytes()));
        Value::Map(vec![
            text("server"),
            text("redis"),
            text("version"),
            text(REDIS_VERSION),
            text("proto"),
            Value::Integer(proto),
            text("id"),
            Value::Integer(cx.session.id as i64),
            text("mode"),
            text("standalone"),
            text("role"),
            text("master"),
            text("modules"),
            Value::Array(Vec::new()),
        ])
    }
}

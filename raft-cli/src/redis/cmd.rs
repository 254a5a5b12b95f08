//! The Redis commands as types, one file each, as mini-redis's `cmd/` has them: each type
//! holds a parsed request and implements [`Command`], which names it, states its arity,
//! parses its options and executes it. [`Parsed`] is the list of them.
//!
//! Adding a command: a file with its type and its `impl Command`, and one line in the list
//! given to `commands!` below. The name lookup, the arity check and the error replies for
//! unknown commands and wrong arities are the same for every command, and say what Redis
//! says.

use bytes::Bytes;

use crate::kv::{KvCommand, KvResponse};
use crate::proto::{Reply, Request, ServiceError};
use crate::resp::Value;
use crate::service::Service;

mod client;
mod command;
mod config;
mod dbsize;
mod del;
mod echo;
mod exists;
mod get;
mod incr;
mod info;
mod mget;
mod ping;
mod quit;
mod readonly;
mod readwrite;
mod select;
mod set;

/// Bytes of a name shown in an "unknown command" error, and of the arguments shown after
/// it, at most (as Redis shows them).
const UNKNOWN_SHOWN_BYTES_MAX: usize = 128;
/// The name requests are counted under in the metrics when they name no command, or name one
/// with the wrong arity or an option it refuses.
pub(crate) const INVALID_COMMAND: &str = "invalid";

/// What a command executes with.
pub(crate) struct Context<'a> {
    /// The node's service: writes through the log, reads after a read barrier.
    pub service: &'a Service,
}

/// One Redis command.
///
/// Contract:
/// 1. `NAME` is the command's name in lowercase, as Redis's error replies show it; a
///    request names the command in any case.
/// 2. `ARITY` counts the words of a request, the name included, as Redis's command table
///    does: `n > 0` exactly `n`, `n < 0` at least `-n`. The arity is checked before
///    [`Command::parse`] is called, so `parse` may take the words it guarantees.
/// 3. `parse` reads the arguments and options after the name, without I/O; it returns the
///    error reply for a request it refuses (a syntax error, an option it does not support).
/// 4. `execute` runs the command and returns its reply. A reply that could grow past the
///    reply budget (`reply_bytes_max`) with the data, not with the request, is checked
///    against it before it is built (see [`Service::read_values`]).
pub(crate) trait Command: Sized {
    /// The name, lowercase.
    const NAME: &'static str;
    /// The arity, as Redis states it.
    const ARITY: i32;
    /// Whether the connection closes after the reply (QUIT).
    const CLOSES_CONNECTION: bool = false;

    /// Parses the words after the name.
    fn parse(args: Args) -> Result<Self, Value>;

    /// Executes the command.
    async fn execute(self, cx: &Context<'_>) -> Value;
}

/// The words of a request after the command's name, taken in order.
pub(crate) struct Args {
    name: &'static str,
    words: std::vec::IntoIter<Bytes>,
}

impl Args {
    /// The next word, if any.
    pub fn next_arg(&mut self) -> Option<Bytes> {
        self.words.next()
    }

    /// The next word, which the command's arity guarantees; the arity error if it is missing
    /// (which only a command whose `ARITY` understates what it takes would see).
    pub fn required(&mut self) -> Result<Bytes, Value> {
        self.words.next().ok_or_else(|| wrong_arity(self.name))
    }

    /// The words not taken yet.
    pub fn rest(self) -> Vec<Bytes> {
        self.words.collect()
    }

    /// The arity error if words are left over.
    pub fn finish(self) -> Result<(), Value> {
        match self.words.len() {
            0 => Ok(()),
            _ => Err(wrong_arity(self.name)),
        }
    }
}

/// Lists the commands: each `Variant(Type)` becomes a variant of [`Parsed`], found by
/// `Type::NAME`.
macro_rules! commands {
    ($($variant:ident($command:ty)),* $(,)?) => {
        /// A request parsed into its command.
        pub(crate) enum Parsed {
            $(
                #[allow(missing_docs)]
                $variant($command),
            )*
        }

        /// Every command's name and arity, in lookup order.
        #[cfg(test)]
        const COMMAND_TABLE: &[(&str, i32)] = &[$((<$command>::NAME, <$command>::ARITY)),*];

        /// Every command's name, in lookup order (the request counters' labels).
        pub(crate) const COMMAND_NAMES: &[&str] = &[$(<$command>::NAME),*];

        impl Parsed {
            /// Finds the command `words[0]` names, checks the arity and parses the rest; the
            /// error reply Redis would give otherwise.
            ///
            /// # Panics
            ///
            /// If `words` is empty: the connection skips empty requests.
            pub fn parse(words: Vec<Bytes>) -> Result<Parsed, Value> {
                let name = &words[0];
                $(
                    if name.eq_ignore_ascii_case(<$command>::NAME.as_bytes()) {
                        return parse_as::<$command>(words).map(Parsed::$variant);
                    }
                )*
                Err(unknown_command(&words))
            }

            /// Executes the command.
            pub async fn execute(self, cx: &Context<'_>) -> Value {
                match self {
                    $(Parsed::$variant(command) => command.execute(cx).await,)*
                }
            }

            /// The command's name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Parsed::$variant(_) => <$command>::NAME,)*
                }
            }

            /// Whether the connection closes after the reply.
            pub fn closes_connection(&self) -> bool {
                match self {
                    $(Parsed::$variant(_) => <$command>::CLOSES_CONNECTION,)*
                }
            }
        }
    };
}

// The most frequent commands first: the name is looked up in this order.
commands! {
    Set(set::Set),
    Get(get::Get),
    Mget(mget::Mget),
    Incr(incr::Incr),
    Del(del::Del),
    Exists(exists::Exists),
    Ping(ping::Ping),
    Echo(echo::Echo),
    Dbsize(dbsize::Dbsize),
    Info(info::Info),
    Select(select::Select),
    Quit(quit::Quit),
    Command(command::CommandList),
    Config(config::Config),
    Client(client::Client),
    Readonly(readonly::Readonly),
    Readwrite(readwrite::Readwrite),
}

fn parse_as<C: Command>(words: Vec<Bytes>) -> Result<C, Value> {
    let count = words.len() as i64;
    let arity = i64::from(C::ARITY);
    if (arity > 0 && count != arity) || count < -arity {
        return Err(wrong_arity(C::NAME));
    }
    let mut words = words.into_iter();
    words.next();
    C::parse(Args {
        name: C::NAME,
        words,
    })
}

/// Redis's reply to a request with the wrong number of words.
pub(crate) fn wrong_arity(name: &str) -> Value {
    Value::error(
        "ERR",
        format!("wrong number of arguments for '{name}' command"),
    )
}

/// Redis's reply to an unknown command: the name as sent and the first arguments, quoted,
/// each cut where Redis cuts them.
fn unknown_command(words: &[Bytes]) -> Value {
    let mut shown = String::new();
    for word in &words[1..] {
        if shown.len() >= UNKNOWN_SHOWN_BYTES_MAX {
            break;
        }
        let room = UNKNOWN_SHOWN_BYTES_MAX - shown.len();
        shown.push_str(&format!("'{}' ", shown_text(word, room)));
    }
    let name = shown_text(&words[0], UNKNOWN_SHOWN_BYTES_MAX);
    Value::error(
        "ERR",
        format!("unknown command '{name}', with args beginning with: {shown}"),
    )
}

/// At most `bytes_max` bytes of `word`, up to its first NUL byte (Redis formats them as C
/// strings), as text.
fn shown_text(word: &[u8], bytes_max: usize) -> String {
    let word = &word[..word.len().min(bytes_max)];
    let end = word.iter().position(|b| *b == 0).unwrap_or(word.len());
    String::from_utf8_lossy(&word[..end]).into_owned()
}

/// The error reply for a failed request.
pub(crate) fn service_error(e: ServiceError) -> Value {
    match e {
        ServiceError::NoLeader | ServiceError::NotLeader { .. } => Value::error(
            "NOLEADER",
            "no leader: the cluster has no leader right now; retry later",
        ),
        ServiceError::OutcomeUnknown(why) => Value::error(
            "UNKNOWN",
            format!("the write's outcome is unknown ({why}); it may or may not have been applied"),
        ),
        ServiceError::Unavailable(why) => Value::error("TRYAGAIN", why),
        ServiceError::Invalid(why) => Value::error("ERR", why),
        ServiceError::Failed(why) => Value::error("ERR", format!("server failed: {why}")),
    }
}

/// The error reply for a state machine answer the command did not expect.
pub(crate) fn unexpected(response: KvResponse) -> Value {
    match response {
        KvResponse::Error(why) => Value::error("ERR", why),
        other => Value::error("ERR", format!("unexpected state machine answer {other:?}")),
    }
}

/// Runs a write through the log (at the leader, forwarded if need be).
pub(crate) async fn write(service: &Service, command: KvCommand) -> Result<KvResponse, Value> {
    match service.execute_or_forward(Request::Write(command)).await {
        Ok(Reply::Write(response)) => Ok(response),
        Ok(other) => Err(Value::error("ERR", format!("unexpected reply {other:?}"))),
        Err(e) => Err(service_error(e)),
    }
}

/// Reads the values of `keys` (linearizable, within the reply budget); nil for an absent key.
pub(crate) async fn read_values(service: &Service, keys: Vec<Bytes>) -> Result<Vec<Value>, Value> {
    match service.execute_or_forward(Request::Get { keys }).await {
        Ok(Reply::Values(values)) => Ok(values
            .into_iter()
            .map(|v| v.map_or(Value::Nil, Value::Bulk))
            .collect()),
        Ok(other) => Err(Value::error("ERR", format!("unexpected reply {other:?}"))),
        Err(e) => Err(service_error(e)),
    }
}

/// Runs a request answered with a count.
pub(crate) async fn count(service: &Service, request: Request) -> Value {
    match service.execute_or_forward(request).await {
        Ok(Reply::Count(n)) => Value::Integer(n as i64),
        Ok(other) => Value::error("ERR", format!("unexpected reply {other:?}")),
        Err(e) => service_error(e),
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    /// The reply to `words` if they do not parse into a command, as bytes on the wire.
    fn refusal(words: &[&[u8]]) -> Option<String> {
        let words = words.iter().map(|w| Bytes::copy_from_slice(w)).collect();
        let reply = Parsed::parse(words).err()?;
        let mut out = BytesMut::new();
        reply.encode(&mut out);
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// Replies of redis-server 7.0.15 to the same requests, byte for byte.
    #[test]
    fn wrong_arities_and_unknown_commands_are_answered_as_redis_answers_them() {
        let arity = |name: &str| format!("-ERR wrong number of arguments for '{name}' command\r\n");
        let x200 = [b'x'; 200];
        let a100 = [b'a'; 100];
        let b100 = [b'b'; 100];
        let cases: Vec<(Vec<&[u8]>, String)> = vec![
            (vec![b"GET"], arity("get")),
            (vec![b"get", b"a", b"b"], arity("get")),
            (vec![b"SET", b"k"], arity("set")),
            (vec![b"MGET"], arity("mget")),
            (vec![b"DEL"], arity("del")),
            (vec![b"EXISTS"], arity("exists")),
            (vec![b"INCR"], arity("incr")),
            (vec![b"INCR", b"a", b"b"], arity("incr")),
            (vec![b"ECHO"], arity("echo")),
            (vec![b"ECHO", b"a", b"b"], arity("echo")),
            (vec![b"DBSIZE", b"x"], arity("dbsize")),
            (vec![b"SELECT"], arity("select")),
            (vec![b"PING", b"a", b"b"], arity("ping")),
            (vec![b"CONFIG"], arity("config")),
            (vec![b"CLIENT"], arity("client")),
            (vec![b"READONLY", b"x"], arity("readonly")),
            (vec![b"ReadWrite", b"x"], arity("readwrite")),
            (
                vec![b"FLUSHALLX"],
                "-ERR unknown command 'FLUSHALLX', with args beginning with: \r\n".into(),
            ),
            (
                vec![b"FlushAllX", b"a", b"b\rc"],
                "-ERR unknown command 'FlushAllX', with args beginning with: 'a' 'b c' \r\n".into(),
            ),
            (
                vec![b"nope", &x200],
                format!(
                    "-ERR unknown command 'nope', with args beginning with: '{}' \r\n",
                    "x".repeat(128)
                ),
            ),
            (
                vec![b"nope", &a100, &b100, b"c"],
                format!(
                    "-ERR unknown command 'nope', with args beginning with: '{}' '{}' \r\n",
                    "a".repeat(100),
                    "b".repeat(25)
                ),
            ),
            (
                vec![b"n\0ope", b"a\0b"],
                "-ERR unknown command 'n', with args beginning with: 'a' \r\n".into(),
            ),
            (
                vec![&x200],
                format!(
                    "-ERR unknown command '{}', with args beginning with: \r\n",
                    "x".repeat(128)
                ),
            ),
        ];
        for (words, expected) in cases {
            assert_eq!(refusal(&words).as_deref(), Some(&expected[..]), "{words:?}");
        }
    }

    /// The registry: names are lowercase and distinct, each is found in any case, and the
    /// arity is enforced at both ends exactly as declared.
    #[test]
    fn every_command_is_found_by_name_and_checked_against_its_arity() {
        let mut names: Vec<&str> = COMMAND_TABLE.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMAND_TABLE.len(), "a name is listed twice");
        for &(name, arity) in COMMAND_TABLE {
            assert_eq!(name, name.to_lowercase());
            let wrong = format!("-ERR wrong number of arguments for '{name}' command\r\n");
            let minimum = arity.unsigned_abs() as usize;
            let upper = name.to_uppercase();
            let request = |count: usize| {
                let mut words = vec![upper.as_bytes()];
                words.extend(std::iter::repeat_n(&b"0"[..], count - 1));
                refusal(&words)
            };
            if minimum > 1 {
                assert_eq!(request(minimum - 1), Some(wrong.clone()), "{name}");
            }
            let at_minimum = request(minimum);
            assert_ne!(at_minimum, Some(wrong.clone()), "{name}");
            assert!(!at_minimum.is_some_and(|r| r.contains("unknown command")));
            if arity > 0 {
                assert_eq!(request(minimum + 1), Some(wrong), "{name}");
            }
        }
    }
}

//! The Redis commands as types, one file each, as mini-redis's `cmd/` has them: each type
//! holds a parsed request and implements [`Command`] (its name, arity and key positions, and
//! the parsing of its options) and one of:
//!
//! * [`ReadCommand`]: a data command that only reads; it becomes a [`ReadOp`] the node
//!   executes after a read barrier (or, in a transaction, the state machine at EXEC);
//! * [`WriteCommand`]: a data command that may write; it becomes a [`WriteOp`] that goes
//!   through the log (alone, or with the rest of a transaction);
//! * [`LocalCommand`]: a command the connection answers itself (PING, HELLO, CLIENT, MULTI,
//!   ...).
//!
//! Adding a command: a file with its type and its `impl`s, and one line in the list given to
//! `commands!` below. The name lookup, the arity check and the error replies for unknown
//! commands and wrong arities are the same for every command, and say what Redis says.

use bytes::Bytes;

use super::session::{Queued, Session, TRANSACTION_BYTES_MAX, TRANSACTION_COMMANDS_MAX};
use crate::kv::{
    parse_i64, Answer, Batch, Condition, KvCommand, KvResponse, Op, ReadOp, SetCondition,
    SetExpiry, WriteOp,
};
use crate::proto::{Reply, Request, ServiceError};
use crate::resp::Value;
use crate::service::Service;

mod append;
mod client;
mod command;
mod config;
mod dbsize;
mod decr;
mod decrby;
mod del;
mod discard;
mod echo;
mod exec;
mod exists;
mod expire;
mod expireat;
mod flushall;
mod flushdb;
mod get;
mod getdel;
mod getrange;
mod getset;
mod hdel;
mod hello;
mod hexists;
mod hget;
mod hgetall;
mod hincrby;
mod hkeys;
mod hlen;
mod hmget;
mod hmset;
mod hset;
mod hsetnx;
mod hvals;
mod incr;
mod incrby;
mod incrbyfloat;
mod info;
mod key_type;
mod keys;
mod lindex;
mod llen;
mod lpop;
mod lpush;
mod lrange;
mod mget;
mod mset;
mod msetnx;
mod multi;
mod persist;
mod pexpire;
mod pexpireat;
mod ping;
mod psetex;
mod pttl;
mod quit;
mod readonly;
mod readwrite;
mod rename;
mod renamenx;
mod rpop;
mod rpush;
mod sadd;
mod scan;
mod scard;
mod select;
mod set;
mod setex;
mod setnx;
mod setrange;
mod sismember;
mod smembers;
mod srem;
mod strlen;
mod ttl;
mod unlink;
mod unwatch;
mod watch;

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
    /// The connection's state.
    pub session: &'a mut Session,
}

/// Why a request was not parsed into a command.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// An unknown command or a wrong number of arguments: a transaction being queued is
    /// discarded at EXEC (EXECABORT), as in Redis.
    Syntax(Value),
    /// Arguments the command refuses (a syntax error in its options, a number that is not
    /// one): in a transaction, queued and answered with this error at EXEC, as Redis does.
    Invalid(Value),
}

impl Refusal {
    /// The error reply.
    pub fn reply(self) -> Value {
        match self {
            Refusal::Syntax(reply) | Refusal::Invalid(reply) => reply,
        }
    }
}

impl From<Value> for Refusal {
    fn from(reply: Value) -> Refusal {
        Refusal::Invalid(reply)
    }
}

/// One Redis command.
///
/// Contract:
/// 1. `NAME` is the command's name in lowercase, as Redis's error replies show it; a
///    request names the command in any case.
/// 2. `ARITY` counts the words of a request, the name included, as Redis's command table
///    does: `n > 0` exactly `n`, `n < 0` at least `-n`. The arity is checked before
///    [`Command::parse`] is called, so `parse` may take the words it guarantees.
/// 3. `KEYS` is where the keys are, as COMMAND INFO states it: the first and last key's
///    positions (negative from the end) and the step; `(0, 0, 0)` for none.
/// 4. `parse` reads the arguments and options after the name, without I/O; it returns the
///    error reply for a request it refuses (a syntax error, an option it does not support).
/// 5. The answer of a reply that could grow past the reply budget (`reply_bytes_max`) with
///    the data, not with the request, is checked against it before it is built.
pub(crate) trait Command: Sized {
    /// The name, lowercase.
    const NAME: &'static str;
    /// The arity, as Redis states it.
    const ARITY: i32;
    /// First key, last key, step.
    const KEYS: (i64, i64, i64) = (0, 0, 0);

    /// Parses the words after the name.
    fn parse(args: Args) -> Result<Self, Refusal>;
}

/// A data command that only reads.
pub(crate) trait ReadCommand: Command {
    /// The read the command asks for.
    fn op(self) -> ReadOp;
}

/// A data command that may write.
pub(crate) trait WriteCommand: Command {
    /// The write the command asks for.
    fn op(self) -> WriteOp;
}

/// A command the connection answers itself.
pub(crate) trait LocalCommand: Command {
    /// Whether the connection closes after the reply (QUIT).
    const CLOSES_CONNECTION: bool = false;
    /// Whether the command runs at once even in a transaction, rather than being queued
    /// (MULTI, EXEC, DISCARD, WATCH, QUIT, as in Redis).
    const RUNS_IN_TRANSACTION: bool = false;

    /// Executes the command.
    async fn execute(self, cx: &mut Context<'_>) -> Value;
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
    pub fn required(&mut self) -> Result<Bytes, Refusal> {
        self.words
            .next()
            .ok_or_else(|| Refusal::Invalid(wrong_arity(self.name)))
    }

    /// The next word as an integer; Redis's error if it is not one.
    pub fn integer(&mut self) -> Result<i64, Refusal> {
        let word = self.required()?;
        Ok(integer(&word)?)
    }

    /// The words not taken yet.
    pub fn rest(self) -> Vec<Bytes> {
        self.words.collect()
    }

    /// How many words are left.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// The words left, in pairs; the arity error if one is left over (which Redis finds
    /// when it runs the command, not when it queues it in a transaction).
    pub fn pairs(self) -> Result<Vec<(Bytes, Bytes)>, Refusal> {
        if self.words.len() % 2 != 0 {
            return Err(Refusal::Invalid(wrong_arity(self.name)));
        }
        let mut words = self.words;
        let mut pairs = Vec::with_capacity(words.len() / 2);
        while let (Some(a), Some(b)) = (words.next(), words.next()) {
            pairs.push((a, b));
        }
        Ok(pairs)
    }

    /// The arity error if words are left over (which Redis finds when it runs the
    /// command, not when it queues it in a transaction).
    pub fn finish(self) -> Result<(), Refusal> {
        match self.words.len() {
            0 => Ok(()),
            _ => Err(Refusal::Invalid(wrong_arity(self.name))),
        }
    }
}

/// `word` as an integer; Redis's error if it is not one.
pub(crate) fn integer(word: &[u8]) -> Result<i64, Value> {
    parse_i64(word).ok_or_else(not_an_integer)
}

/// `ERR value is not an integer or out of range`.
pub(crate) fn not_an_integer() -> Value {
    Value::error("ERR", "value is not an integer or out of range")
}

/// `ERR syntax error`.
pub(crate) fn syntax_error() -> Value {
    Value::error("ERR", "syntax error")
}

/// What a command is, for COMMAND.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CommandInfo {
    /// The name, lowercase.
    pub name: &'static str,
    /// The arity.
    pub arity: i32,
    /// COMMAND INFO's flags.
    pub flags: &'static [&'static str],
    /// First key, last key, step.
    pub keys: (i64, i64, i64),
}

impl CommandInfo {
    const fn of<C: Command>(flags: &'static [&'static str]) -> CommandInfo {
        CommandInfo {
            name: C::NAME,
            arity: C::ARITY,
            flags,
            keys: C::KEYS,
        }
    }
}

/// A request parsed into its command.
pub(crate) enum Parsed {
    /// A data command.
    Data(Op),
    /// A command the connection answers.
    Local(Local),
    /// EXEC, which runs the queued commands, local ones included (so it is not one of them).
    Exec(exec::Exec),
}

/// Lists the commands: each `Variant(Type)` is found by `Type::NAME`; the local ones become
/// variants of [`Local`].
macro_rules! commands {
    (
        reads { $($read:ty),* $(,)? }
        writes { $($write:ty),* $(,)? }
        local { $($variant:ident($local:ty)),* $(,)? }
    ) => {
        /// A command the connection answers itself.
        pub(crate) enum Local {
            $(
                #[allow(missing_docs)]
                $variant($local),
            )*
        }

        /// Every command's name, arity, flags and keys, in lookup order.
        pub(crate) const COMMAND_TABLE: &[CommandInfo] = &[
            $(CommandInfo::of::<$read>(&["readonly"]),)*
            $(CommandInfo::of::<$write>(&["write"]),)*
            $(CommandInfo::of::<$local>(&[]),)*
            CommandInfo::of::<exec::Exec>(&[]),
        ];

        /// Every command's name, in lookup order (the request counters' labels).
        pub(crate) const COMMAND_NAMES: &[&str] = &[
            $(<$read>::NAME,)*
            $(<$write>::NAME,)*
            $(<$local>::NAME,)*
            exec::Exec::NAME,
        ];

        impl Parsed {
            /// Finds the command `words[0]` names, checks the arity and parses the rest; the
            /// error reply Redis would give otherwise.
            ///
            /// # Panics
            ///
            /// If `words` is empty: the connection skips empty requests.
            pub fn parse(words: Vec<Bytes>) -> Result<Parsed, Refusal> {
                let name = &words[0];
                $(
                    if name.eq_ignore_ascii_case(<$write>::NAME.as_bytes()) {
                        let command = parse_as::<$write>(words)?;
                        return Ok(Parsed::Data(Op::Write(command.op())));
                    }
                )*
                $(
                    if name.eq_ignore_ascii_case(<$read>::NAME.as_bytes()) {
                        let command = parse_as::<$read>(words)?;
                        return Ok(Parsed::Data(Op::Read(command.op())));
                    }
                )*
                $(
                    if name.eq_ignore_ascii_case(<$local>::NAME.as_bytes()) {
                        return parse_as::<$local>(words).map(|c| Parsed::Local(Local::$variant(c)));
                    }
                )*
                if name.eq_ignore_ascii_case(exec::Exec::NAME.as_bytes()) {
                    return parse_as::<exec::Exec>(words).map(Parsed::Exec);
                }
                Err(Refusal::Syntax(unknown_command(&words)))
            }
        }

        impl Local {
            /// Executes the command.
            pub async fn execute(self, cx: &mut Context<'_>) -> Value {
                match self {
                    $(Local::$variant(command) => command.execute(cx).await,)*
                }
            }

            /// Whether the connection closes after the reply.
            pub fn closes_connection(&self) -> bool {
                match self {
                    $(Local::$variant(_) => <$local as LocalCommand>::CLOSES_CONNECTION,)*
                }
            }

            /// Whether the command runs at once in a transaction rather than being queued.
            pub fn runs_in_transaction(&self) -> bool {
                match self {
                    $(Local::$variant(_) => <$local as LocalCommand>::RUNS_IN_TRANSACTION,)*
                }
            }
        }
    };
}

// Writes are looked up first, then reads: SET and GET lead their lists.
commands! {
    reads {
        get::Get, mget::Mget, exists::Exists, strlen::Strlen, getrange::Getrange,
        key_type::Type, keys::Keys, scan::Scan, dbsize::Dbsize, ttl::Ttl, pttl::Pttl,
        hget::Hget, hmget::Hmget, hgetall::Hgetall, hexists::Hexists, hlen::Hlen,
        hkeys::Hkeys, hvals::Hvals, lrange::Lrange, llen::Llen, lindex::Lindex,
        smembers::Smembers, sismember::Sismember, scard::Scard,
    }
    writes {
        set::Set, incr::Incr, del::Del, incrby::Incrby, decr::Decr, decrby::Decrby,
        incrbyfloat::Incrbyfloat, append::Append, setrange::Setrange, getdel::Getdel,
        getset::Getset, mset::Mset, msetnx::Msetnx, setnx::Setnx, setex::Setex,
        psetex::Psetex, unlink::Unlink, rename::Rename, renamenx::Renamenx,
        flushdb::Flushdb, flushall::Flushall, expire::Expire, pexpire::Pexpire,
        expireat::Expireat, pexpireat::Pexpireat, persist::Persist, hset::Hset,
        hmset::Hmset, hsetnx::Hsetnx, hdel::Hdel, hincrby::Hincrby, lpush::Lpush,
        rpush::Rpush, lpop::Lpop, rpop::Rpop, sadd::Sadd, srem::Srem,
    }
    local {
        Ping(ping::Ping),
        Echo(echo::Echo),
        Multi(multi::Multi),
        Discard(discard::Discard),
        Watch(watch::Watch),
        Unwatch(unwatch::Unwatch),
        Hello(hello::Hello),
        Client(client::Client),
        Select(select::Select),
        Info(info::Info),
        Quit(quit::Quit),
        Command(command::CommandList),
        Config(config::Config),
        Readonly(readonly::Readonly),
        Readwrite(readwrite::Readwrite),
    }
}

fn parse_as<C: Command>(words: Vec<Bytes>) -> Result<C, Refusal> {
    let count = words.len() as i64;
    let arity = i64::from(C::ARITY);
    if (arity > 0 && count != arity) || count < -arity {
        return Err(Refusal::Syntax(wrong_arity(C::NAME)));
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

/// Redis's reply to an unknown subcommand of `command` (`CLIENT`, `COMMAND`, ...).
pub(crate) fn unknown_subcommand(subcommand: &[u8], command: &str) -> Refusal {
    Refusal::Syntax(Value::error(
        "ERR",
        format!(
            "unknown subcommand '{}'. Try {command} HELP.",
            shown_text(subcommand, UNKNOWN_SHOWN_BYTES_MAX)
        ),
    ))
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

/// An answer of the state machine as a reply.
pub(crate) fn reply_of(answer: Answer) -> Value {
    let all = |items: Vec<Answer>| items.into_iter().map(reply_of).collect();
    match answer {
        Answer::Ok => Value::Simple("OK"),
        Answer::Status(text) => Value::Status(text),
        Answer::Integer(n) => Value::Integer(n),
        Answer::Bulk(bytes) => Value::Bulk(bytes),
        Answer::Nil => Value::Nil,
        Answer::NilArray => Value::NilArray,
        Answer::Array(items) => Value::Array(all(items)),
        Answer::Map(items) => Value::Map(all(items)),
        Answer::Set(items) => Value::Set(all(items)),
        Answer::Error(text) => Value::Error(text),
    }
}

/// Answers one request: executes it, or queues it in the transaction being queued (MULTI),
/// as Redis does: an unknown command or a wrong arity discards the transaction at EXEC,
/// other refusals are answered in EXEC's reply, and MULTI, EXEC, DISCARD, WATCH and QUIT
/// run at once. Also says whether the connection closes after the reply.
/// The label a request is counted under in the metrics: its command's name if `name` is
/// one ([`COMMAND_NAMES`]), else [`INVALID_COMMAND`].
pub(crate) fn command_label(name: &[u8]) -> &'static str {
    COMMAND_NAMES
        .iter()
        .find(|known| name.eq_ignore_ascii_case(known.as_bytes()))
        .copied()
        .unwrap_or(INVALID_COMMAND)
}

pub(crate) async fn respond(words: Vec<Bytes>, cx: &mut Context<'_>) -> (Value, bool) {
    let request_bytes: usize = words.iter().map(|w| w.len() + 16).sum();
    let parsed = Parsed::parse(words);
    if cx.session.transaction.is_none() {
        return match parsed {
            Err(refusal) => (refusal.reply(), false),
            Ok(Parsed::Data(op)) => (run(cx.service, op).await, false),
            Ok(Parsed::Local(command)) => run_local(command, cx).await,
            Ok(Parsed::Exec(exec)) => (exec.run(cx).await, false),
        };
    }
    let queued = match parsed {
        Ok(Parsed::Exec(exec)) => return (exec.run(cx).await, false),
        Ok(Parsed::Local(command)) if command.runs_in_transaction() => {
            return run_local(command, cx).await
        }
        Ok(Parsed::Local(command)) => Queued::Local(command),
        Ok(Parsed::Data(op)) => Queued::Op(op),
        Err(Refusal::Invalid(reply)) => Queued::Error(reply),
        Err(Refusal::Syntax(reply)) => {
            if let Some(transaction) = &mut cx.session.transaction {
                transaction.failed = true;
            }
            return (reply, false);
        }
    };
    let Some(transaction) = &mut cx.session.transaction else {
        unreachable!("checked above");
    };
    if transaction.queued.len() >= TRANSACTION_COMMANDS_MAX
        || transaction.bytes + request_bytes > TRANSACTION_BYTES_MAX
    {
        transaction.failed = true;
        let message = format!(
            "transaction too large: at most {TRANSACTION_COMMANDS_MAX} commands and \
             {TRANSACTION_BYTES_MAX} bytes of arguments"
        );
        return (Value::error("ERR", message), false);
    }
    transaction.bytes += request_bytes;
    transaction.queued.push(queued);
    (Value::Simple("QUEUED"), false)
}

async fn run_local(command: Local, cx: &mut Context<'_>) -> (Value, bool) {
    let closes = command.closes_connection();
    (command.execute(cx).await, closes)
}

/// Executes a data command outside a transaction: a read on this node after a read barrier,
/// a write through the log (at the leader, forwarded if need be).
pub(crate) async fn run(service: &Service, op: Op) -> Value {
    match op {
        Op::Read(op) => match service.read(&op).await {
            Ok(answer) => reply_of(answer),
            Err(e) => service_error(e),
        },
        Op::Write(op) => run_write(service, op).await,
    }
}

/// Runs a write through the log. A plain SET travels as the native protocol's `Set`, in the
/// hand-written encoding the state machine applies without decoding it generically, and
/// without a clock stamp: the write path of plain SETs is what it was before the other
/// commands existed.
async fn run_write(service: &Service, op: WriteOp) -> Value {
    let command = match op {
        WriteOp::Set {
            key,
            value,
            condition: Condition::Always,
            get: false,
            expiry: SetExpiry::Clear,
        } => KvCommand::Set {
            key,
            value,
            condition: SetCondition::Always,
            return_previous: false,
        },
        op => KvCommand::Redis(Batch::single(op, service.reply_bytes_max())),
    };
    match write(service, command).await {
        Ok(KvResponse::Answer(answer)) => reply_of(answer),
        Ok(KvResponse::Set { written: true, .. }) => Value::Simple("OK"),
        Ok(other) => unexpected(other),
        Err(e) => e,
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

#[cfg(test)]
mod tests;

//! `FLUSHDB [ASYNC | SYNC]`.

use super::{syntax_error, Args, Command, Refusal, WriteCommand};
use crate::kv::WriteOp;

/// Deletes every key, through the log (there is one database, so FLUSHDB and FLUSHALL are
/// the same). `ASYNC` and `SYNC` are accepted; memory is freed when the entry is applied.
pub(crate) struct Flushdb;

impl Command for Flushdb {
    const NAME: &'static str = "flushdb";
    const ARITY: i32 = -1;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let mode = args.next_arg();
        let known = mode
            .as_ref()
            .is_none_or(|m| m.eq_ignore_ascii_case(b"ASYNC") || m.eq_ignore_ascii_case(b"SYNC"));
        if !known || args.len() > 0 {
            return Err(syntax_error().into());
        }
        Ok(Flushdb)
    }
}

impl WriteCommand for Flushdb {
    fn op(self) -> WriteOp {
        WriteOp::Flush
    }
}

//! `DBSIZE`.

use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;

/// The number of keys (expired keys not deleted yet included, as in Redis).
pub(crate) struct Dbsize;

impl Command for Dbsize {
    const NAME: &'static str = "dbsize";
    const ARITY: i32 = 1;

    fn parse(_args: Args) -> Result<Self, Refusal> {
        Ok(Dbsize)
    }
}

impl ReadCommand for Dbsize {
    fn op(self) -> ReadOp {
        ReadOp::DbSize
    }
}

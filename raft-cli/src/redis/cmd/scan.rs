//! `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.

use bytes::Bytes;

use super::{integer, syntax_error};
use super::{Args, Command, ReadCommand, Refusal};
use crate::kv::ReadOp;
use crate::resp::Value;

/// Keys examined by a SCAN without COUNT, as in Redis.
const COUNT_DEFAULT: u64 = 10;

/// Iterates the keys with a cursor. The cursor is a position in a fixed order of keys (a
/// hash of the key that every node computes alike), so it stays valid across writes and
/// whichever node answers the next call: a key present for the whole iteration is returned
/// exactly once.
pub(crate) struct Scan {
    cursor: u64,
    pattern: Option<Bytes>,
    count: u64,
    type_name: Option<Bytes>,
}

impl Command for Scan {
    const NAME: &'static str = "scan";
    const ARITY: i32 = -2;

    fn parse(mut args: Args) -> Result<Self, Refusal> {
        let cursor = args.required()?;
        let cursor = std::str::from_utf8(&cursor)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| Value::error("ERR", "invalid cursor"))?;
        let mut scan = Scan {
            cursor,
            pattern: None,
            count: COUNT_DEFAULT,
            type_name: None,
        };
        while let Some(option) = args.next_arg() {
            let Some(value) = args.next_arg() else {
                return Err(syntax_error().into());
            };
            match &option.to_ascii_uppercase()[..] {
                b"COUNT" => match integer(&value)? {
                    count if count >= 1 => scan.count = count as u64,
                    _ => return Err(syntax_error().into()),
                },
                b"MATCH" => scan.pattern = Some(value).filter(|p| &p[..] != b"*"),
                b"TYPE" => scan.type_name = Some(value),
                _ => return Err(syntax_error().into()),
            }
        }
        Ok(scan)
    }
}

impl ReadCommand for Scan {
    fn op(self) -> ReadOp {
        ReadOp::Scan {
            cursor: self.cursor,
            pattern: self.pattern,
            count: self.count,
            type_name: self.type_name,
        }
    }
}

//! A pure RESP2 codec: request bytes in, argument lists out; reply values in, bytes out. No
//! I/O. "Not enough bytes yet" is `Ok(None)`, never an error.
//!
//! Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), as every client
//! sends, or inline commands (`PING\r\n`), as people type in telnet. Every length is checked
//! against a limit before anything is buffered for it.

use bytes::{Buf, Bytes, BytesMut};

/// Arguments of one request, at most (Redis allows more; MGET of 64 Ki keys is plenty here).
pub const REQUEST_ARGS_MAX: usize = 64 * 1024;
/// Bytes of one bulk argument, at most: a value must fit in one log entry (4 MiB by default).
pub const BULK_BYTES_MAX: usize = 4 << 20;
/// Bytes of one request in total, at most: bounds a connection's buffer.
pub const REQUEST_BYTES_MAX: usize = 16 << 20;
/// Bytes of an inline command or a header line, at most (Redis: 64 KiB).
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Why request bytes are not valid RESP. The connection answers with a protocol error and
/// closes, as Redis does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A header is not what it should be.
    #[error("Protocol error: {0}")]
    Malformed(&'static str),
    /// A length exceeds a limit.
    #[error("Protocol error: {what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
}

/// A reply value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `+OK`.
    Simple(&'static str),
    /// `-ERR ...` (the text includes the error code word).
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`.
    Bulk(Bytes),
    /// `$-1` (nil).
    Nil,
    /// `*N` followed by the values.
    Array(Vec<Value>),
}

impl Value {
    /// An error reply with a code word, e.g. `Value::error("ERR", "syntax error")`.
    pub fn error(code: &str, message: impl std::fmt::Display) -> Value {
        // A reply line must not contain CR or LF.
        let text = format!("{code} {message}").replace(['\r', '\n'], " ");
        Value::Error(text)
    }

    /// Appends the encoding of the value to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Value::Simple(s) => line(out, b'+', s.as_bytes()),
            Value::Error(s) => line(out, b'-', s.as_bytes()),
            Value::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Value::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

fn line(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// Finds the CRLF-terminated line starting at `at`; returns the line without CRLF and the
/// offset after it. `Ok(None)` when the line is not complete yet.
fn read_line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[at.min(buf.len())..];
    match rest.iter().position(|b| *b == b'\n') {
        Some(end) if end > LINE_BYTES_MAX => Err(too_large("line", end, LINE_BYTES_MAX)),
        Some(end) => {
            let line = &rest[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Some((line, at + end + 1)))
        }
        None if rest.len() > LINE_BYTES_MAX => Err(too_large("line", rest.len(), LINE_BYTES_MAX)),
        None => Ok(None),
    }
}

fn too_large(what: &'static str, len: usize, max: usize) -> ProtocolError {
    ProtocolError::TooLarge {
        what,
        len: len as u64,
        max: max as u64,
    }
}

fn parse_len(digits: &[u8], what: &'static str) -> Result<i64, ProtocolError> {
    let text = std::str::from_utf8(digits).map_err(|_| ProtocolError::Malformed(what))?;
    if text.is_empty() || text.len() > 20 {
        return Err(ProtocolError::Malformed(what));
    }
    text.parse().map_err(|_| ProtocolError::Malformed(what))
}

/// Parses one request from the front of `buf`, removing its bytes. Returns `Ok(None)` if the
/// request is not complete yet (the caller reads more and calls again), and `Ok(Some(args))`
/// with an empty `args` for an empty inline line.
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf);
    }
    let Some((header, mut at)) = read_line(buf, 1)? else {
        return Ok(None);
    };
    let count = parse_len(header, "invalid multibulk length")?;
    if count > REQUEST_ARGS_MAX as i64 {
        return Err(too_large(
            "multibulk length",
            count as usize,
            REQUEST_ARGS_MAX,
        ));
    }
    if count <= 0 {
        buf.advance(at);
        return Ok(Some(Vec::new()));
    }
    let mut spans = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != b'$' {
            return Err(ProtocolError::Malformed("expected '$'"));
        }
        let Some((header, start)) = read_line(buf, at + 1)? else {
            return Ok(None);
        };
        let len = parse_len(header, "invalid bulk length")?;
        if len < 0 {
            return Err(ProtocolError::Malformed("invalid bulk length"));
        }
        if len > BULK_BYTES_MAX as i64 {
            return Err(too_large("bulk length", len as usize, BULK_BYTES_MAX));
        }
        let end = start + len as usize;
        if end + 2 > REQUEST_BYTES_MAX {
            return Err(too_large("request", end + 2, REQUEST_BYTES_MAX));
        }
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::Malformed("bulk string not followed by CRLF"));
        }
        spans.push((start, end));
        at = end + 2;
    }
    let frozen = buf.split_to(at).freeze();
    Ok(Some(
        spans.into_iter().map(|(s, e)| frozen.slice(s..e)).collect(),
    ))
}

fn parse_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some((line, next)) = read_line(buf, 0)? else {
        return Ok(None);
    };
    let args: Vec<Bytes> = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|word| !word.is_empty())
        .map(Bytes::copy_from_slice)
        .collect();
    if args.len() > REQUEST_ARGS_MAX {
        return Err(too_large("inline arguments", args.len(), REQUEST_ARGS_MAX));
    }
    buf.advance(next);
    Ok(Some(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        parse_request(&mut BytesMut::from(bytes))
    }

    #[test]
    fn multibulk_inline_and_partial_requests() {
        let args = parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap().unwrap();
        assert_eq!(args, vec![Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(
            parse(b"PING\r\n").unwrap().unwrap(),
            vec![Bytes::from("PING")]
        );
        let full = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut two = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert!(parse_request(&mut two).unwrap().is_some());
        assert!(parse_request(&mut two).unwrap().is_some());
        assert!(two.is_empty());
    }

    #[test]
    fn malformed_and_oversize_requests_are_errors() {
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*1\r\n+PING\r\n").is_err());
        assert!(parse(b"*1\r\n$-5\r\n").is_err());
        assert!(parse(b"*1\r\n$4\r\nPINGxx").is_err());
        assert!(matches!(
            parse(b"*1\r\n$999999999\r\n"),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            parse(b"*99999999\r\n"),
            Err(ProtocolError::TooLarge { .. })
        ));
        let long = vec![b'a'; LINE_BYTES_MAX + 2];
        assert!(matches!(parse(&long), Err(ProtocolError::TooLarge { .. })));
    }

    #[test]
    fn values_encode_as_resp2() {
        let mut out = BytesMut::new();
        Value::Array(vec![
            Value::Simple("OK"),
            Value::error("ERR", "bad\r\nthing"),
            Value::Integer(-3),
            Value::Bulk(Bytes::from("hi")),
            Value::Nil,
        ])
        .encode(&mut out);
        assert_eq!(
            &out[..],
            b"*5\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n"
        );
    }
}

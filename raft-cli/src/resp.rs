//! A pure RESP codec: request bytes in, argument lists out; reply values in, bytes out, in
//! RESP2 or (after `HELLO 3`) RESP3. No I/O. "Not enough bytes yet" is `Ok(None)`, never an
//! error.
//!
//! Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), as every client
//! sends, or inline commands (`PING\r\n`), as people type in telnet. Every length is checked
//! against a limit before anything is buffered for it, and a [`RequestParser`] keeps its
//! place across reads, so a request that arrives in many small pieces is parsed once.
//!
//! Replies are queued in a [`ReplyBuffer`], which copies small values and shares large ones
//! (a value the store holds is referenced, not copied, until it is written).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Arguments of one request, at most (Redis allows more; MGET of 64 Ki keys is plenty here).
pub const REQUEST_ARGS_MAX: usize = 64 * 1024;
/// Bytes of one bulk argument, at most: a value must fit in one log entry (4 MiB by default).
pub const BULK_BYTES_MAX: usize = 4 << 20;
/// Bytes of one request in total, at most: bounds a connection's buffer.
pub const REQUEST_BYTES_MAX: usize = 16 << 20;
/// Bytes of an inline command or a header line, at most (Redis: 64 KiB).
pub const LINE_BYTES_MAX: usize = 64 * 1024;
/// Arguments a parser makes room for when a header announces them, at most: the count is
/// the peer's claim, so room for more is made only as the arguments arrive (a header of
/// `*65536` alone would otherwise cost 1 MiB).
const ARGS_PREALLOCATED_MAX: usize = 1024;
/// Bulk values of at least this many bytes are queued by reference rather than copied into
/// the reply buffer: below it a copy is cheaper than a separate write.
const SHARED_BULK_BYTES_MIN: usize = 16 * 1024;

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

/// A reply value. The types RESP3 adds (maps, sets, verbatim strings, one null) are sent
/// as their RESP2 counterparts on a RESP2 connection, as Redis sends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `+OK`.
    Simple(&'static str),
    /// `+text`, made at run time (TYPE's answer).
    Status(String),
    /// `-ERR ...` (the text includes the error code word).
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`.
    Bulk(Bytes),
    /// Nil: `$-1` in RESP2, `_` in RESP3.
    Nil,
    /// A nil array: `*-1` in RESP2, `_` in RESP3.
    NilArray,
    /// `*N` followed by the values.
    Array(Vec<Value>),
    /// Keys and values alternating: `%N` (N pairs) in RESP3, an array of 2N in RESP2.
    Map(Vec<Value>),
    /// `~N` in RESP3, an array in RESP2.
    Set(Vec<Value>),
    /// Text: `=N\r\ntxt:...` in RESP3, a bulk string in RESP2.
    Verbatim(Bytes),
}

impl Value {
    /// An error reply with a code word, e.g. `Value::error("ERR", "syntax error")`.
    pub fn error(code: &str, message: impl std::fmt::Display) -> Value {
        // A reply line must not contain CR or LF.
        let text = format!("{code} {message}").replace(['\r', '\n'], " ");
        Value::Error(text)
    }

    /// Appends the RESP2 encoding of the value to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_as(out, Protocol::Resp2);
    }

    /// Appends the encoding of the value in `protocol` to `out`.
    pub fn encode_as(&self, out: &mut BytesMut, protocol: Protocol) {
        if let Some(items) = self.items() {
            self.encode_header(out, items.len(), protocol);
            for item in items {
                item.encode_as(out, protocol);
            }
            return;
        }
        match self {
            Value::Simple(s) => line(out, b'+', s.as_bytes()),
            Value::Status(s) => line(out, b'+', s.as_bytes()),
            Value::Error(s) => line(out, b'-', s.as_bytes()),
            Value::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Value::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Verbatim(text) => match protocol {
                Protocol::Resp2 => Value::Bulk(text.clone()).encode_as(out, protocol),
                Protocol::Resp3 => {
                    line(out, b'=', (text.len() + 4).to_string().as_bytes());
                    out.extend_from_slice(b"txt:");
                    out.extend_from_slice(text);
                    out.extend_from_slice(b"\r\n");
                }
            },
            Value::Nil | Value::NilArray if protocol == Protocol::Resp3 => {
                out.extend_from_slice(b"_\r\n")
            }
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(_) | Value::Map(_) | Value::Set(_) => {
                unreachable!("aggregates are encoded above")
            }
        }
    }

    /// The items of an aggregate (array, map, set).
    fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) | Value::Map(items) | Value::Set(items) => Some(items),
            _ => None,
        }
    }

    /// Appends the header of an aggregate of `len` items.
    fn encode_header(&self, out: &mut BytesMut, len: usize, protocol: Protocol) {
        let (tag, count) = match (self, protocol) {
            (Value::Map(_), Protocol::Resp3) => (b'%', len / 2),
            (Value::Set(_), Protocol::Resp3) => (b'~', len),
            _ => (b'*', len),
        };
        line(out, tag, count.to_string().as_bytes());
    }
}

/// The protocol a connection speaks: RESP2 until `HELLO 3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

fn line(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// Encoded replies waiting to be written, in order: small parts copied into one buffer,
/// bulk values of 16 KiB or more kept as the shared `Bytes` they are, so
/// a large reply does not copy the values it carries.
#[derive(Debug, Default)]
pub struct ReplyBuffer {
    /// Parts ready to be written, before `tail`.
    chunks: VecDeque<Bytes>,
    /// Small parts encoded after the last chunk.
    tail: BytesMut,
    /// Bytes in `chunks` and `tail`.
    len: usize,
    /// The most bytes `tail` held since its allocation was made.
    tail_bytes_max: usize,
    /// The protocol replies are encoded in.
    protocol: Protocol,
}

impl ReplyBuffer {
    /// Encodes the replies pushed from now on in `protocol`.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Appends the encoding of `value`.
    pub fn push(&mut self, value: Value) {
        let before = self.tail.len();
        match value {
            Value::Bulk(bytes) if bytes.len() >= SHARED_BULK_BYTES_MIN => {
                line(&mut self.tail, b'$', bytes.len().to_string().as_bytes());
                self.len += self.tail.len() - before + bytes.len();
                self.chunks.push_back(self.tail.split().freeze());
                self.chunks.push_back(bytes);
                self.tail.extend_from_slice(b"\r\n");
                self.len += 2;
                return;
            }
            Value::Array(_) | Value::Map(_) | Value::Set(_) => {
                let len = value.items().map_or(0, <[Value]>::len);
                value.encode_header(&mut self.tail, len, self.protocol);
                self.len += self.tail.len() - before;
                if let Value::Array(items) | Value::Map(items) | Value::Set(items) = value {
                    for item in items {
                        self.push(item);
                    }
                }
                return;
            }
            value => value.encode_as(&mut self.tail, self.protocol),
        }
        self.len += self.tail.len() - before;
        self.tail_bytes_max = self.tail_bytes_max.max(self.tail.len());
    }

    /// Frees the buffer's memory if nothing is queued and it once held more than
    /// `retained_bytes_max`: a connection that was sent one large reply does not keep its
    /// buffer while it waits for the next request. (The capacity a `BytesMut` reports after
    /// writes does not show the size of its allocation, so the high-water mark decides.)
    pub fn release_memory(&mut self, retained_bytes_max: usize) {
        if self.is_empty() && self.tail_bytes_max > retained_bytes_max {
            self.tail = BytesMut::new();
            self.tail_bytes_max = 0;
        }
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next bytes to write, in order; `None` when everything was written.
    pub fn front(&self) -> Option<&[u8]> {
        match self.chunks.front() {
            Some(chunk) => Some(chunk),
            None if self.tail.is_empty() => None,
            None => Some(&self.tail),
        }
    }

    /// Marks the first `written` bytes of [`ReplyBuffer::front`] as written.
    ///
    /// # Panics
    ///
    /// If `written` is more than `front` holds: the caller wrote bytes it was not given.
    pub fn consume(&mut self, written: usize) {
        match self.chunks.front_mut() {
            Some(chunk) => {
                chunk.advance(written);
                if chunk.is_empty() {
                    self.chunks.pop_front();
                }
            }
            None => {
                // The space before the tail is reused when it next grows.
                self.tail.advance(written);
            }
        }
        self.len -= written;
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

/// Parses requests out of a connection's input buffer and keeps its place across reads:
/// bytes it has examined are never examined again, so a request that arrives a byte or an
/// argument at a time costs time in proportion to its length, not to its length squared.
///
/// Contract with the caller, per connection:
/// 1. Between calls the caller only appends to the buffer (reads); it never removes or
///    changes bytes. The parser removes a request's bytes when it returns it.
/// 2. After an error the connection is closed; the parser and buffer are not used again.
#[derive(Debug, Default)]
pub struct RequestParser {
    state: State,
    /// Where the search for the end of the current line resumes: bytes before it (from the
    /// line's start) hold no LF.
    line_scanned_to: usize,
}

#[derive(Debug, Default)]
enum State {
    /// Nothing of the next request parsed yet.
    #[default]
    Start,
    /// A multibulk request whose header was parsed.
    Multibulk(Multibulk),
}

/// The progress of a multibulk request. Offsets are from the start of the buffer, which is
/// the start of the request.
#[derive(Debug)]
struct Multibulk {
    /// Arguments the header announced.
    count: usize,
    /// The arguments parsed so far, as `start..end` offsets.
    spans: Vec<(usize, usize)>,
    /// The first byte not parsed yet.
    at: usize,
    /// The length of the argument whose header was parsed and whose bytes start at `at`.
    bulk_len: Option<usize>,
}

impl RequestParser {
    /// Parses one request from the front of `buf`, removing its bytes. `Ok(None)`: the
    /// request is not complete yet (the caller reads more and calls again); `Ok(Some(args))`
    /// with an empty `args` for an empty inline line or a multibulk of zero arguments.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let parsed = match self.state {
            _ if buf.is_empty() => Ok(None),
            State::Start if buf[0] != b'*' => self.parse_inline(buf),
            State::Start => self.parse_header(buf),
            State::Multibulk(_) => self.parse_arguments(buf),
        };
        if !matches!(parsed, Ok(None)) {
            *self = RequestParser::default();
        }
        parsed
    }

    /// Whether part of a request has been received (or `buf` holds bytes the parser has not
    /// looked at yet): the connection is in the middle of a request.
    pub fn is_mid_request(&self, buf: &BytesMut) -> bool {
        !buf.is_empty() || matches!(self.state, State::Multibulk(_))
    }

    /// Finds the CRLF-terminated line starting at `start`; returns the line without CRLF
    /// and the offset after it. `Ok(None)` when the line is not complete yet.
    fn line<'b>(
        &mut self,
        buf: &'b [u8],
        start: usize,
    ) -> Result<Option<(&'b [u8], usize)>, ProtocolError> {
        let from = self.line_scanned_to.max(start).min(buf.len());
        match buf[from..].iter().position(|b| *b == b'\n') {
            Some(offset) => {
                let end = from + offset;
                if end - start > LINE_BYTES_MAX {
                    return Err(too_large("line", end - start, LINE_BYTES_MAX));
                }
                self.line_scanned_to = end + 1;
                let line = &buf[start..end];
                Ok(Some((line.strip_suffix(b"\r").unwrap_or(line), end + 1)))
            }
            None if buf.len() - start > LINE_BYTES_MAX => {
                Err(too_large("line", buf.len() - start, LINE_BYTES_MAX))
            }
            None => {
                self.line_scanned_to = buf.len();
                Ok(None)
            }
        }
    }

    fn parse_header(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some((header, at)) = self.line(buf, 1)? else {
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
        let count = count as usize;
        self.state = State::Multibulk(Multibulk {
            count,
            // The count is the peer's claim: room for more arguments is made as they arrive.
            spans: Vec::with_capacity(count.min(ARGS_PREALLOCATED_MAX)),
            at,
            bulk_len: None,
        });
        self.parse_arguments(buf)
    }

    fn parse_arguments(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut request = match std::mem::take(&mut self.state) {
            State::Multibulk(request) => request,
            State::Start => unreachable!("parse_arguments outside a multibulk request"),
        };
        let parsed = self.parse_bulks(&mut request, buf);
        match parsed {
            Ok(true) => {
                let frozen = buf.split_to(request.at).freeze();
                let args = request.spans.iter().map(|&(s, e)| frozen.slice(s..e));
                Ok(Some(args.collect()))
            }
            Ok(false) => {
                self.state = State::Multibulk(request);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Parses the arguments of `request` that are complete in `buf`; `Ok(true)` when all
    /// are.
    fn parse_bulks(&mut self, request: &mut Multibulk, buf: &[u8]) -> Result<bool, ProtocolError> {
        while request.spans.len() < request.count {
            let len = match request.bulk_len {
                Some(len) => len,
                None => {
                    let Some(len) = self.parse_bulk_header(request.at, buf)? else {
                        return Ok(false);
                    };
                    request.at = len.1;
                    request.bulk_len = Some(len.0);
                    len.0
                }
            };
            let end = request.at + len;
            if buf.len() < end + 2 {
                return Ok(false);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::Malformed("bulk string not followed by CRLF"));
            }
            request.spans.push((request.at, end));
            request.at = end + 2;
            request.bulk_len = None;
        }
        Ok(true)
    }

    /// Parses the `$len` header at `at`; returns the length and where the bytes start.
    fn parse_bulk_header(
        &mut self,
        at: usize,
        buf: &[u8],
    ) -> Result<Option<(usize, usize)>, ProtocolError> {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != b'$' {
            return Err(ProtocolError::Malformed("expected '$'"));
        }
        let Some((header, start)) = self.line(buf, at + 1)? else {
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
        Ok(Some((len as usize, start)))
    }

    fn parse_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some((line, next)) = self.line(buf, 0)? else {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        RequestParser::default().parse(&mut BytesMut::from(bytes))
    }

    fn words(args: &[&str]) -> Vec<Bytes> {
        args.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn multibulk_inline_and_partial_requests() {
        let args = parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap().unwrap();
        assert_eq!(args, words(&["GET", "k"]));
        assert_eq!(parse(b"PING\r\n").unwrap().unwrap(), words(&["PING"]));
        assert_eq!(parse(b"*0\r\n").unwrap().unwrap(), words(&[]));
        assert_eq!(parse(b"  \r\n").unwrap().unwrap(), words(&[]));
        let full = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut parser = RequestParser::default();
        let mut two = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert!(parser.parse(&mut two).unwrap().is_some());
        assert!(parser.parse(&mut two).unwrap().is_some());
        assert!(two.is_empty());
    }

    /// Pipelined requests, multibulk and inline, fed one byte at a time to one parser come
    /// out exactly as they do from one buffer, and the parser knows when it is mid-request.
    #[test]
    fn requests_fed_a_byte_at_a_time_parse_as_in_one_piece() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhe\nlo\r\nPING  x\r\n*1\r\n$0\r\n\r\n";
        let expected = [
            words(&["SET", "k", "he\nlo"]),
            words(&["PING", "x"]),
            words(&[""]),
        ];
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut parsed = Vec::new();
        for byte in input {
            buf.extend_from_slice(&[*byte]);
            assert!(parser.is_mid_request(&buf));
            if let Some(args) = parser.parse(&mut buf).unwrap() {
                parsed.push(args);
                assert!(!parser.is_mid_request(&buf));
            }
        }
        assert_eq!(parsed, expected);
        assert!(buf.is_empty());
    }

    /// Random pipelines (multibulk and inline requests, empty and binary arguments, values
    /// holding CR and LF) cut at random places come out of one parser exactly as they went
    /// in, whatever the pieces.
    #[test]
    fn random_pipelines_in_random_pieces_parse_exactly() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..300u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..rng.gen_range(1..20) {
                let count = rng.gen_range(1..8);
                let args: Vec<Bytes> = (0..count)
                    .map(|_| {
                        let len = rng.gen_range(0..40);
                        let alphabet = b"ab\r\n$*\0 x";
                        (0..len)
                            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                            .collect()
                    })
                    .collect();
                if rng.gen_bool(0.2) {
                    // Inline: words without separators or line ends.
                    let words: Vec<Bytes> = args
                        .iter()
                        .map(|a| {
                            a.iter()
                                .copied()
                                .filter(|b| b.is_ascii_alphabetic())
                                .collect()
                        })
                        .filter(|w: &Bytes| !w.is_empty())
                        .collect();
                    let line: Vec<&[u8]> = words.iter().map(|w| &w[..]).collect();
                    input.extend_from_slice(&line.join(&b' '));
                    input.extend_from_slice(b"\r\n");
                    expected.push(words);
                } else {
                    input.extend_from_slice(format!("*{count}\r\n").as_bytes());
                    for arg in &args {
                        input.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                        input.extend_from_slice(arg);
                        input.extend_from_slice(b"\r\n");
                    }
                    expected.push(args);
                }
            }
            let mut parser = RequestParser::default();
            let mut buf = BytesMut::new();
            let mut parsed = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let piece = rng.gen_range(1..=64).min(input.len() - at);
                buf.extend_from_slice(&input[at..at + piece]);
                at += piece;
                while let Some(args) = parser.parse(&mut buf).unwrap() {
                    parsed.push(args);
                }
            }
            assert_eq!(parsed, expected, "seed {seed}");
            assert!(
                buf.is_empty() && !parser.is_mid_request(&buf),
                "seed {seed}"
            );
        }
    }

    /// What a parser has parsed it never reads again: the bytes of the header and of the
    /// arguments already parsed are overwritten (which the contract forbids a caller to do)
    /// and the parse goes on as if nothing happened. A parser that started over from the
    /// first byte after every read would find `?` where `*` was.
    #[test]
    fn bytes_already_parsed_are_not_examined_again() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel"[..]);
        assert_eq!(parser.parse(&mut buf).unwrap(), None);
        let parsed = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\n".len();
        buf[..parsed].fill(b'?');
        buf.extend_from_slice(b"lo\r\n");
        let args = parser.parse(&mut buf).unwrap().unwrap();
        assert_eq!(args[2], Bytes::from_static(b"hello"));
        assert!(buf.is_empty());

        // An inline line is searched for its end once, too.
        let mut buf = BytesMut::from(&b"PING"[..]);
        assert_eq!(parser.parse(&mut buf).unwrap(), None);
        buf[1] = b'\n';
        buf.extend_from_slice(b" x\r\n");
        assert_eq!(parser.parse(&mut buf).unwrap().unwrap().len(), 2);
    }

    /// A header's count is the peer's claim: room for the arguments is made as they arrive.
    #[test]
    fn a_declared_count_reserves_little_before_the_arguments_arrive() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*65536\r\n"[..]);
        assert_eq!(parser.parse(&mut buf).unwrap(), None);
        let State::Multibulk(request) = &parser.state else {
            panic!("expected a multibulk request in progress");
        };
        assert!(request.spans.capacity() <= ARGS_PREALLOCATED_MAX);
        assert!(parser.is_mid_request(&buf));
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
        let mut header = b"*1\r\n$".to_vec();
        header.extend(vec![b'1'; LINE_BYTES_MAX + 2]);
        assert!(matches!(
            parse(&header),
            Err(ProtocolError::TooLarge { .. })
        ));
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

    /// RESP3's types go out as such after HELLO 3 and as their RESP2 counterparts before,
    /// from a value and through a reply buffer alike (replies of redis-server 7.0.15).
    #[test]
    fn resp3_types_encode_in_either_protocol() {
        let bulk = |s: &'static str| Value::Bulk(Bytes::from_static(s.as_bytes()));
        let reply = Value::Array(vec![
            Value::Map(vec![bulk("a"), bulk("1")]),
            Value::Set(vec![bulk("x")]),
            Value::Nil,
            Value::NilArray,
            Value::Verbatim(Bytes::from_static(b"k:v")),
            Value::Status("hash".into()),
        ]);
        let resp2 = "*6\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*1\r\n$1\r\nx\r\n$-1\r\n*-1\r\n\
                     $3\r\nk:v\r\n+hash\r\n";
        let resp3 = "*6\r\n%1\r\n$1\r\na\r\n$1\r\n1\r\n~1\r\n$1\r\nx\r\n_\r\n_\r\n\
                     =7\r\ntxt:k:v\r\n+hash\r\n";
        for (protocol, expected) in [(Protocol::Resp2, resp2), (Protocol::Resp3, resp3)] {
            let mut out = BytesMut::new();
            reply.encode_as(&mut out, protocol);
            assert_eq!(String::from_utf8_lossy(&out), expected, "{protocol:?}");
            let mut buffer = ReplyBuffer::default();
            buffer.set_protocol(protocol);
            buffer.push(reply.clone());
            let mut written = Vec::new();
            while let Some(part) = buffer.front() {
                written.extend_from_slice(part);
                let n = part.len();
                buffer.consume(n);
            }
            assert_eq!(String::from_utf8_lossy(&written), expected, "{protocol:?}");
        }
    }

    /// A reply buffer writes the same bytes as `Value::encode`, and a large value goes out
    /// from the allocation it came in (shared, not copied), however often the reply holds it.
    #[test]
    fn reply_buffers_encode_like_values_and_share_large_bulks() {
        let large = Bytes::from(vec![7u8; SHARED_BULK_BYTES_MIN]);
        let reply = Value::Array(vec![
            Value::Bulk(large.clone()),
            Value::Nil,
            Value::Bulk(Bytes::from_static(b"small")),
            Value::Bulk(large.clone()),
        ]);
        let mut expected = BytesMut::new();
        reply.encode(&mut expected);
        expected.extend_from_slice(b"+OK\r\n");

        let mut buffer = ReplyBuffer::default();
        buffer.push(reply);
        buffer.push(Value::Simple("OK"));
        assert_eq!(buffer.len(), expected.len());
        let mut written = Vec::new();
        let mut shared = 0;
        while let Some(part) = buffer.front() {
            shared += usize::from(part.as_ptr() == large.as_ptr());
            // Writes of odd sizes, as a socket may take them.
            let n = part.len().min(1000);
            written.extend_from_slice(&part[..n]);
            buffer.consume(n);
        }
        assert_eq!(written, expected);
        assert_eq!(shared, 2, "the large value was copied");
        assert!(buffer.is_empty());
    }

    #[test]
    fn a_reply_buffer_frees_its_memory_once_written_if_it_grew_large() {
        let mut buffer = ReplyBuffer::default();
        let small_values = vec![Value::Bulk(Bytes::from(vec![1u8; 1000])); 100];
        buffer.push(Value::Array(small_values));
        buffer.release_memory(64 * 1024);
        assert!(buffer.tail.capacity() >= 100_000, "released while queued");
        while let Some(part) = buffer.front() {
            let n = part.len();
            buffer.consume(n);
        }
        buffer.release_memory(200_000);
        assert!(buffer.tail.capacity() > 0, "released below the threshold");
        buffer.release_memory(64 * 1024);
        assert_eq!(buffer.tail.capacity(), 0);
    }
}

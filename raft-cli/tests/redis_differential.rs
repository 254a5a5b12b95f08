//! The Redis front end against a real redis-server (Debian's `redis-server` package),
//! request for request: a seeded generator of random command sequences over a small key
//! space (every supported command, wrong types, bad arguments, pipelines, transactions with
//! WATCH and a second connection, RESP2 and RESP3) sends each request to redis-server and to
//! a 3-node cluster, and the replies must be equal byte for byte, except for the differences
//! raft-cli/README.md lists:
//!
//! * the order of the elements of KEYS, SMEMBERS, HKEYS, HVALS and HGETALL (unspecified in
//!   Redis too): compared sorted;
//! * SCAN cursors: each SCAN runs as a whole iteration on both sides, and the keys it
//!   returned are compared as sets;
//! * TTL and PTTL: the two servers' clocks start the deadline a few milliseconds apart:
//!   equal within 2 s and 3,000 ms;
//! * HELLO: the version and the connection id;
//! * CLIENT ID: only that it is an integer.
//!
//! What the generator avoids, because Redis's own answer depends on timing or differs by
//! design (each listed in the README): deadlines that pass during the test (TTLs are at
//! least 1,000 s; deadlines in the past only where Redis deletes the key at once: EXPIRE
//! with a negative or zero TTL, EXPIREAT and PEXPIREAT in the past), GT and LT against two
//! relative deadlines set in the same millisecond (they are used with absolute times
//! only), INCRBYFLOAT on values whose sum a double does not hold exactly (it targets keys
//! that only hold small numbers), SELECT 1-15, IFEQ, CLIENT SETINFO, COMMAND, CONFIG, INFO.
//!
//! CI runs seeds 1 to 3 (the third in RESP3), 2,000 commands each. More:
//! `RAFT_REDIS_DIFF_SEEDS=N` runs seeds 1 to N, `RAFT_REDIS_DIFF_SEED=S` only seed S,
//! `RAFT_REDIS_DIFF_COMMANDS=M` sends M commands per seed. Skipped, with a notice, where
//! redis-server is not installed.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cluster_with, reply_len, WAIT};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Seeds CI runs.
const SEEDS_DEFAULT: u64 = 3;
/// Commands per seed in CI.
const COMMANDS_DEFAULT: usize = 2_000;
/// Requests kept for the report of a mismatch.
const HISTORY_LEN: usize = 40;

// ---------------------------------------------------------------------------------------
// The reference server.

/// A redis-server on a Unix socket in a temporary directory, killed when dropped.
struct RedisServer {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one; `None` if redis-server is not installed.
    fn start() -> Option<RedisServer> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("redis.sock");
        let spawned = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("starting redis-server: {e}"),
        };
        let server = RedisServer {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        while !server.socket.exists() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Connections.

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// One RESP connection, to either server.
struct Wire {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Wire {
    async fn unix(path: &std::path::Path) -> Wire {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .expect("connect");
        Wire {
            stream: Box::new(stream),
            buf: Vec::new(),
        }
    }

    async fn tcp(addr: &str) -> Wire {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Wire {
            stream: Box::new(stream),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn reply(&mut self) -> Vec<u8> {
        loop {
            if let Some(len) = reply_len(&self.buf) {
                return self.buf.drain(..len).collect();
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a reply in time")
                .expect("read");
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Both servers' connections: `a` is the main one, `b` a second client (it writes what `a`
/// watches).
struct Servers {
    redis: [Wire; 2],
    raft: [Wire; 2],
}

// ---------------------------------------------------------------------------------------
// Replies.

/// A reply as a tree: scalars keep their exact bytes, so equal trees are equal bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tree {
    /// A line: `+`, `-`, `:`, `_`, `,`, `#`, `(` and its text.
    Line(u8, Vec<u8>),
    /// `$` or `=` and the bytes (`None`: nil).
    Bulk(u8, Option<Vec<u8>>),
    /// `*`, `%` or `~` and the items (a map's keys and values alternate; `None`: nil).
    Items(u8, Option<Vec<Tree>>),
}

fn parse_tree(buf: &[u8]) -> (Tree, usize) {
    let end = buf.windows(2).position(|w| w == b"\r\n").expect("a line") + 2;
    let header = &buf[1..end - 2];
    let number = || -> i64 {
        std::str::from_utf8(header)
            .expect("text")
            .parse()
            .expect("a number")
    };
    match buf[0] {
        tag @ (b'$' | b'=') => match number() {
            n if n < 0 => (Tree::Bulk(tag, None), end),
            n => {
                let bytes = buf[end..end + n as usize].to_vec();
                (Tree::Bulk(tag, Some(bytes)), end + n as usize + 2)
            }
        },
        tag @ (b'*' | b'%' | b'~') => match number() {
            n if n < 0 => (Tree::Items(tag, None), end),
            n => {
                let count = if tag == b'%' { n * 2 } else { n };
                let mut at = end;
                let mut items = Vec::new();
                for _ in 0..count {
                    let (item, len) = parse_tree(&buf[at..]);
                    items.push(item);
                    at += len;
                }
                (Tree::Items(tag, Some(items)), at)
            }
        },
        tag => (Tree::Line(tag, header.to_vec()), end),
    }
}

fn tree(reply: &[u8]) -> Tree {
    parse_tree(reply).0
}

/// How two replies to one request are compared.
#[derive(Clone, Debug)]
enum Check {
    /// Byte for byte.
    Exact,
    /// An array or set whose order is unspecified: sorted.
    Sorted,
    /// Fields and values whose order is unspecified: sorted by pairs.
    SortedPairs,
    /// A TTL: equal if negative, else within this much.
    Ttl(i64),
    /// HELLO: with the version and id masked.
    Hello,
    /// An integer, any.
    AnyInteger,
    /// EXEC: element by element, each with its command's check.
    Exec(Vec<Check>),
}

fn sorted(tree: Tree, pairs: bool) -> Tree {
    match tree {
        Tree::Items(tag, Some(mut items)) => {
            if pairs {
                let mut chunks: Vec<Vec<Tree>> = items.chunks(2).map(<[Tree]>::to_vec).collect();
                chunks.sort();
                items = chunks.into_iter().flatten().collect();
            } else {
                items.sort();
            }
            Tree::Items(tag, Some(items))
        }
        other => other,
    }
}

fn masked_hello(tree: Tree) -> Tree {
    match tree {
        Tree::Items(tag, Some(mut items)) => {
            for at in (0..items.len().saturating_sub(1)).step_by(2) {
                let masked =
                    matches!(&items[at], Tree::Bulk(_, Some(k)) if k == b"version" || k == b"id");
                if masked {
                    items[at + 1] = Tree::Line(b'?', Vec::new());
                }
            }
            Tree::Items(tag, Some(items))
        }
        other => other,
    }
}

fn integer_of(tree: &Tree) -> Option<i64> {
    match tree {
        Tree::Line(b':', text) => std::str::from_utf8(text).ok()?.parse().ok(),
        _ => None,
    }
}

fn same_tree(check: &Check, ours: Tree, theirs: Tree) -> bool {
    match check {
        Check::Exact => ours == theirs,
        Check::Sorted => sorted(ours, false) == sorted(theirs, false),
        Check::SortedPairs => sorted(ours, true) == sorted(theirs, true),
        Check::Ttl(tolerance) => match (integer_of(&ours), integer_of(&theirs)) {
            (Some(a), Some(b)) if a < 0 || b < 0 => a == b,
            (Some(a), Some(b)) => (a - b).abs() <= *tolerance,
            _ => ours == theirs,
        },
        Check::Hello => masked_hello(ours) == masked_hello(theirs),
        Check::AnyInteger => integer_of(&ours).is_some() && integer_of(&theirs).is_some(),
        Check::Exec(checks) => match (ours, theirs) {
            (Tree::Items(b'*', Some(ours)), Tree::Items(b'*', Some(theirs))) => {
                ours.len() == theirs.len()
                    && ours.len() == checks.len()
                    && checks
                        .iter()
                        .zip(ours.into_iter().zip(theirs))
                        .all(|(check, (o, t))| same_tree(check, o, t))
            }
            (ours, theirs) => ours == theirs,
        },
    }
}

// ---------------------------------------------------------------------------------------
// The generator.

/// A request and how its replies are compared.
#[derive(Clone, Debug)]
struct Request {
    words: Vec<Vec<u8>>,
    check: Check,
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("*{}\r\n", self.words.len()).into_bytes();
        for word in &self.words {
            out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
            out.extend_from_slice(word);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn shown(&self) -> String {
        let words: Vec<String> = self
            .words
            .iter()
            .map(|w| format!("{:?}", String::from_utf8_lossy(w)))
            .collect();
        words.join(" ")
    }
}

/// Keys of any type; "f" keys also take INCRBYFLOAT, so they only ever hold small numbers
/// (nothing appends to them or renames onto them).
const KEYS: &[&str] = &["k0", "k1", "k2", "k3", "k4", "k5", "f0", "f1"];
const PLAIN_KEYS: &[&str] = &["k0", "k1", "k2", "k3", "k4", "k5"];
const FLOAT_KEYS: &[&str] = &["f0", "f1"];
const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-7",
    "42",
    "3.5",
    "-0.25",
    "abc",
    "hello world",
    "007",
    " 1",
    "1e3",
    "x\r\ny",
    "\0bin",
    "1000000",
];
const INTEGERS: &[&str] = &[
    "1", "-1", "5", "-100", "1000", "0", "abc", "1.5", "", "007", "-0",
];
const FLOATS: &[&str] = &[
    "0.5", "-1.25", "2", "10.5", "1e2", "0.0625", "abc", "inf", "", "-3",
];
const FIELDS: &[&str] = &["f0", "f1", "f2"];
const ELEMENTS: &[&str] = &["a", "b", "c", "1"];

struct Gen {
    rng: SmallRng,
    /// The time the seed started, in seconds since the Unix epoch: absolute deadlines are
    /// far after it.
    start_s: i64,
    resp3: bool,
}

impl Gen {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.gen_range(0..from.len())]
    }

    fn key(&mut self) -> String {
        self.pick(KEYS).to_string()
    }

    fn plain_key(&mut self) -> String {
        self.pick(PLAIN_KEYS).to_string()
    }

    fn value(&mut self) -> String {
        self.pick(VALUES).to_string()
    }

    fn small_int(&mut self, range: std::ops::RangeInclusive<i64>) -> String {
        if self.rng.gen_bool(0.05) {
            return "x".into();
        }
        self.rng.gen_range(range).to_string()
    }

    /// A relative TTL in seconds (or an invalid one).
    fn seconds(&mut self) -> String {
        self.pick(&["1000", "5000", "20000", "1000", "0", "-5", "abc"])
            .to_string()
    }

    /// A relative TTL in milliseconds (or an invalid one).
    fn millis(&mut self) -> String {
        self.pick(&["1000000", "5000000", "20000000", "0", "abc"])
            .to_string()
    }

    /// An absolute deadline in seconds, far after the start (or an invalid one).
    fn at_seconds(&mut self) -> String {
        let offset = self.pick(&["50000", "100000", "200000", "x"]);
        match offset.parse::<i64>() {
            Ok(offset) => (self.start_s + offset).to_string(),
            Err(_) => "-1".into(),
        }
    }

    fn words(&mut self, words: &[String]) -> Vec<Vec<u8>> {
        let _ = &mut self.rng;
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn request(&mut self, words: Vec<String>, check: Check) -> Request {
        Request {
            words: self.words(&words),
            check,
        }
    }

    /// One random data or connection command (not MULTI, EXEC, DISCARD, WATCH, SCAN).
    fn command(&mut self) -> Request {
        let s = |x: &str| x.to_string();
        let pick = self.rng.gen_range(0..100);
        let (words, check): (Vec<String>, Check) = match pick {
            0..=4 => (vec![s("GET"), self.key()], Check::Exact),
            5..=9 => (self.set(), Check::Exact),
            10 => (vec![s("SETNX"), self.key(), self.value()], Check::Exact),
            11 => (vec![s("GETSET"), self.key(), self.value()], Check::Exact),
            12 => {
                let mut words = vec![s(if self.rng.gen() { "MSET" } else { "MSETNX" })];
                for _ in 0..self.rng.gen_range(1..=3) {
                    words.push(self.key());
                    words.push(self.value());
                }
                if self.rng.gen_bool(0.1) {
                    words.pop();
                }
                (words, Check::Exact)
            }
            13..=15 => {
                let name = self.pick(&["INCR", "DECR"]);
                (vec![s(name), self.key()], Check::Exact)
            }
            16..=17 => {
                let name = self.pick(&["INCRBY", "DECRBY"]);
                (
                    vec![s(name), self.key(), s(self.pick(INTEGERS))],
                    Check::Exact,
                )
            }
            18..=19 => {
                let key = s(self.pick(FLOAT_KEYS));
                (
                    vec![s("INCRBYFLOAT"), key, s(self.pick(FLOATS))],
                    Check::Exact,
                )
            }
            20 => (
                vec![s("APPEND"), self.plain_key(), self.value()],
                Check::Exact,
            ),
            21 => (vec![s("STRLEN"), self.key()], Check::Exact),
            22 => {
                let (a, b) = (self.small_int(-12..=12), self.small_int(-12..=12));
                (vec![s("GETRANGE"), self.key(), a, b], Check::Exact)
            }
            23 => {
                let offset = self.small_int(-1..=12);
                let value = self.pick(&["", "xy", "Z"]).to_string();
                (
                    vec![s("SETRANGE"), self.plain_key(), offset, value],
                    Check::Exact,
                )
            }
            24 => (vec![s("GETDEL"), self.key()], Check::Exact),
            25..=26 => {
                let mut words = vec![s("MGET")];
                for _ in 0..self.rng.gen_range(1..=3) {
                    words.push(self.key());
                }
                (words, Check::Exact)
            }
            27 => {
                let name = self.pick(&["SETEX", "PSETEX"]);
                let ttl = if name == "SETEX" {
                    self.seconds()
                } else {
                    self.millis()
                };
                (vec![s(name), self.key(), ttl, self.value()], Check::Exact)
            }
            28..=29 => {
                let mut words = vec![s(self.pick(&["DEL", "UNLINK", "EXISTS"]))];
                for _ in 0..self.rng.gen_range(1..=3) {
                    words.push(self.key());
                }
                (words, Check::Exact)
            }
            30 => (vec![s("TYPE"), self.key()], Check::Exact),
            31 => {
                let name = self.pick(&["RENAME", "RENAMENX"]);
                (vec![s(name), self.key(), self.plain_key()], Check::Exact)
            }
            32 => {
                let pattern = self.pick(&["*", "k*", "k[0-2]", "?1", "*0", "f?", "[^k]*"]);
                (vec![s("KEYS"), s(pattern)], Check::Sorted)
            }
            33 => (vec![s("DBSIZE")], Check::Exact),
            34 if self.rng.gen_bool(0.3) => {
                let name = self.pick(&["FLUSHDB", "FLUSHALL"]);
                let mut words = vec![s(name)];
                if self.rng.gen_bool(0.3) {
                    words.push(s(self.pick(&["ASYNC", "SYNC", "FOO"])));
                }
                (words, Check::Exact)
            }
            35..=37 => (self.expire(), Check::Exact),
            38 => (vec![s("PERSIST"), self.key()], Check::Exact),
            39..=40 => {
                let (name, tolerance) = match self.rng.gen() {
                    true => ("TTL", 2),
                    false => ("PTTL", 3_000),
                };
                (vec![s(name), self.key()], Check::Ttl(tolerance))
            }
            41..=44 => {
                let mut words = vec![s(self.pick(&["HSET", "HMSET"])), self.key()];
                for _ in 0..self.rng.gen_range(1..=2) {
                    words.push(s(self.pick(FIELDS)));
                    words.push(self.value());
                }
                if self.rng.gen_bool(0.05) {
                    words.pop();
                }
                (words, Check::Exact)
            }
            45 => {
                let words = vec![s("HSETNX"), self.key(), s(self.pick(FIELDS)), self.value()];
                (words, Check::Exact)
            }
            46..=47 => (
                vec![s("HGET"), self.key(), s(self.pick(FIELDS))],
                Check::Exact,
            ),
            48 => {
                let words = vec![s("HMGET"), self.key(), s(self.pick(FIELDS)), s("f2")];
                (words, Check::Exact)
            }
            49 => {
                let mut words = vec![s("HDEL"), self.key()];
                for _ in 0..self.rng.gen_range(1..=2) {
                    words.push(s(self.pick(FIELDS)));
                }
                (words, Check::Exact)
            }
            50 => (vec![s("HGETALL"), self.key()], Check::SortedPairs),
            51 => (
                vec![s("HEXISTS"), self.key(), s(self.pick(FIELDS))],
                Check::Exact,
            ),
            52..=53 => {
                let words = vec![
                    s("HINCRBY"),
                    self.key(),
                    s(self.pick(FIELDS)),
                    s(self.pick(INTEGERS)),
                ];
                (words, Check::Exact)
            }
            54 => (vec![s("HLEN"), self.key()], Check::Exact),
            55 => {
                let name = self.pick(&["HKEYS", "HVALS"]);
                (vec![s(name), self.key()], Check::Sorted)
            }
            56..=60 => {
                let mut words = vec![s(self.pick(&["LPUSH", "RPUSH"])), self.key()];
                for _ in 0..self.rng.gen_range(1..=3) {
                    words.push(s(self.pick(ELEMENTS)));
                }
                (words, Check::Exact)
            }
            61..=63 => {
                let mut words = vec![s(self.pick(&["LPOP", "RPOP"])), self.key()];
                if self.rng.gen_bool(0.5) {
                    words.push(s(self.pick(&["0", "1", "2", "4", "-1", "x"])));
                }
                if self.rng.gen_bool(0.03) {
                    words.push(s("1"));
                }
                (words, Check::Exact)
            }
            64..=66 => {
                let (a, b) = (self.small_int(-6..=6), self.small_int(-6..=6));
                (vec![s("LRANGE"), self.key(), a, b], Check::Exact)
            }
            67 => (vec![s("LLEN"), self.key()], Check::Exact),
            68 => (
                vec![s("LINDEX"), self.key(), self.small_int(-5..=5)],
                Check::Exact,
            ),
            69..=72 => {
                let mut words = vec![s(self.pick(&["SADD", "SREM"])), self.key()];
                for _ in 0..self.rng.gen_range(1..=3) {
                    words.push(s(self.pick(ELEMENTS)));
                }
                (words, Check::Exact)
            }
            73 => (vec![s("SMEMBERS"), self.key()], Check::Sorted),
            74 => (
                vec![s("SISMEMBER"), self.key(), s(self.pick(ELEMENTS))],
                Check::Exact,
            ),
            75 => (vec![s("SCARD"), self.key()], Check::Exact),
            76 => {
                let words = match self.rng.gen_range(0..4) {
                    0 => vec![s("PING")],
                    1 => vec![s("PING"), self.value()],
                    2 => vec![s("PING"), s("a"), s("b")],
                    _ => vec![s("ECHO"), self.value()],
                };
                (words, Check::Exact)
            }
            77 => (
                vec![s("SELECT"), s(self.pick(&["0", "16", "x", "-1"]))],
                Check::Exact,
            ),
            78 => match self.rng.gen_range(0..5) {
                0 => (
                    vec![s("CLIENT"), s("SETNAME"), s(self.pick(&["app", "x-1", ""]))],
                    Check::Exact,
                ),
                1 => (vec![s("CLIENT"), s("GETNAME")], Check::Exact),
                2 => (vec![s("CLIENT"), s("SETNAME"), s("a b")], Check::Exact),
                3 => (vec![s("CLIENT"), s("ID")], Check::AnyInteger),
                _ => (vec![s("CLIENT"), s("NOPE")], Check::Exact),
            },
            79 => {
                let proto = if self.resp3 { "3" } else { "2" };
                match self.rng.gen_range(0..4) {
                    0 => (vec![s("HELLO"), s(proto)], Check::Hello),
                    1 => (
                        vec![s("HELLO"), s(proto), s("SETNAME"), s("named")],
                        Check::Hello,
                    ),
                    2 => (vec![s("HELLO"), s("4")], Check::Exact),
                    _ => (vec![s("HELLO"), s("two")], Check::Exact),
                }
            }
            80..=82 => (self.wrong_arity(), Check::Exact),
            83 => (vec![s("NOPE"), self.key()], Check::Exact),
            _ => (vec![s("GET"), self.key()], Check::Exact),
        };
        self.request(words, check)
    }

    fn set(&mut self) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let mut words = vec![s("SET"), self.key(), self.value()];
        for _ in 0..self.rng.gen_range(0..=2) {
            match self.rng.gen_range(0..10) {
                0 => words.push(s("NX")),
                1 => words.push(s("XX")),
                2..=3 => words.push(s("GET")),
                4 => words.push(s("KEEPTTL")),
                5 => words.extend([s("EX"), self.seconds()]),
                6 => words.extend([s("PX"), self.millis()]),
                7 => words.extend([s("EXAT"), self.at_seconds()]),
                8 => {
                    let at = format!("{}000", self.at_seconds());
                    words.extend([s("PXAT"), at]);
                }
                _ => words.push(s(self.pick(&["FOO", "EX"]))),
            }
        }
        words
    }

    fn expire(&mut self) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let key = self.key();
        let mut words = match self.rng.gen_range(0..4) {
            0 => {
                let ttl = self.pick(&["1000", "5000", "-1", "0", "abc", "9223372036854775807"]);
                vec![s("EXPIRE"), key, s(ttl)]
            }
            1 => vec![s("PEXPIRE"), key, self.millis()],
            2 => {
                let at = match self.rng.gen_bool(0.2) {
                    true => s("1"),
                    false => self.at_seconds(),
                };
                vec![s("EXPIREAT"), key, at]
            }
            _ => {
                let at = match self.rng.gen_bool(0.2) {
                    true => s("1"),
                    false => format!("{}000", self.at_seconds()),
                };
                vec![s("PEXPIREAT"), key, at]
            }
        };
        // GT and LT only compare with absolute deadlines: two relative ones set in the
        // same millisecond would be equal on one server and not on the other.
        let absolute = words[0].ends_with("AT");
        let options: &[&[&str]] = if absolute {
            &[
                &[],
                &[],
                &["NX"],
                &["XX"],
                &["GT"],
                &["LT"],
                &["XX", "GT"],
                &["XX", "LT"],
                &["NX", "XX"],
                &["GT", "LT"],
                &["FOO"],
            ]
        } else {
            &[&[], &[], &["NX"], &["XX"], &["NX", "XX"], &["FOO"]]
        };
        let chosen = options[self.rng.gen_range(0..options.len())];
        words.extend(chosen.iter().map(|o| o.to_string()));
        words
    }

    fn wrong_arity(&mut self) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let shapes: &[&[&str]] = &[
            &["GET"],
            &["GET", "k0", "k1"],
            &["SET", "k0"],
            &["HSET", "k0", "f0"],
            &["LPUSH", "k0"],
            &["SADD", "k0"],
            &["EXPIRE", "k0"],
            &["TTL"],
            &["RENAME", "k0"],
            &["INCRBY", "k0"],
            &["HGET", "k0"],
            &["LRANGE", "k0", "0"],
            &["DBSIZE", "x"],
            &["KEYS"],
            &["GETRANGE", "k0", "0"],
        ];
        shapes[self.rng.gen_range(0..shapes.len())]
            .iter()
            .map(|w| s(w))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The run.

/// One seed's run against both servers.
struct Run<'a> {
    seed: u64,
    servers: &'a mut Servers,
    history: VecDeque<String>,
    sent: usize,
}

impl Run<'_> {
    fn note(&mut self, line: String) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(line);
    }

    fn fail(&self, what: &str, ours: &[u8], theirs: &[u8]) -> ! {
        let history: Vec<&str> = self.history.iter().map(String::as_str).collect();
        panic!(
            "seed {} (RAFT_REDIS_DIFF_SEED={} reproduces it), request {}: {what}\n\
             raft:         {:?}\nredis-server: {:?}\nlast requests (connection: request):\n  {}",
            self.seed,
            self.seed,
            self.sent,
            String::from_utf8_lossy(ours),
            String::from_utf8_lossy(theirs),
            history.join("\n  ")
        );
    }

    /// Sends `requests` on connection `conn` of both servers as one pipeline (one write)
    /// and compares the replies; returns redis-server's.
    async fn pipeline(&mut self, conn: usize, requests: &[Request]) -> Vec<Vec<u8>> {
        let bytes: Vec<u8> = requests.iter().flat_map(Request::encode).collect();
        for request in requests {
            let line = format!("{}: {}", ["a", "b"][conn], request.shown());
            self.note(line);
        }
        self.sent += requests.len();
        self.servers.redis[conn].send(&bytes).await;
        let mut theirs = Vec::with_capacity(requests.len());
        for _ in requests {
            theirs.push(self.servers.redis[conn].reply().await);
        }
        self.servers.raft[conn].send(&bytes).await;
        for (request, theirs) in requests.iter().zip(&theirs) {
            let ours = self.servers.raft[conn].reply().await;
            if !same_tree(&request.check, tree(&ours), tree(theirs)) {
                self.fail(&request.shown(), &ours, theirs);
            }
        }
        theirs
    }

    async fn one(&mut self, conn: usize, request: Request) -> Vec<u8> {
        self.pipeline(conn, std::slice::from_ref(&request))
            .await
            .pop()
            .unwrap_or_default()
    }

    /// A whole SCAN iteration on each server, compared as sets of keys.
    async fn scan(&mut self, gen: &mut Gen) {
        let mut options: Vec<String> = Vec::new();
        if gen.rng.gen_bool(0.5) {
            options.extend(["MATCH".into(), gen.pick(&["k*", "*1", "f?", "*"]).into()]);
        }
        if gen.rng.gen_bool(0.5) {
            options.extend(["COUNT".into(), gen.pick(&["1", "2", "100"]).into()]);
        }
        if gen.rng.gen_bool(0.3) {
            options.extend([
                "TYPE".into(),
                gen.pick(&["string", "hash", "LIST", "set", "zset"]).into(),
            ]);
        }
        self.note(format!("a: SCAN (whole iteration) {}", options.join(" ")));
        let theirs = scan_all(&mut self.servers.redis[0], &options).await;
        let ours = scan_all(&mut self.servers.raft[0], &options).await;
        self.sent += 1;
        if ours != theirs {
            self.fail(
                "SCAN iteration",
                format!("{ours:?}").as_bytes(),
                format!("{theirs:?}").as_bytes(),
            );
        }
    }

    /// A transaction on connection a: maybe WATCH, maybe writes from connection b, MULTI,
    /// queued commands (some refused), EXEC or DISCARD.
    async fn transaction(&mut self, gen: &mut Gen) {
        let s = |x: &str| x.as_bytes().to_vec();
        if gen.rng.gen_bool(0.6) {
            let mut words = vec![s("WATCH")];
            for _ in 0..gen.rng.gen_range(1..=2) {
                words.push(gen.key().into_bytes());
            }
            self.one(
                0,
                Request {
                    words,
                    check: Check::Exact,
                },
            )
            .await;
        }
        if gen.rng.gen_bool(0.1) {
            self.one(
                0,
                Request {
                    words: vec![s("UNWATCH")],
                    check: Check::Exact,
                },
            )
            .await;
        }
        for _ in 0..gen.rng.gen_range(0..=2) {
            let conn = usize::from(gen.rng.gen_bool(0.7));
            let request = gen.command();
            self.one(conn, request).await;
        }
        self.one(
            0,
            Request {
                words: vec![s("MULTI")],
                check: Check::Exact,
            },
        )
        .await;
        let mut checks = Vec::new();
        for _ in 0..gen.rng.gen_range(0..=6) {
            let mut request = match gen.rng.gen_range(0..30) {
                0 => Request {
                    words: vec![s("MULTI")],
                    check: Check::Exact,
                },
                1 => Request {
                    words: vec![s("WATCH"), s("k0")],
                    check: Check::Exact,
                },
                _ => gen.command(),
            };
            // The answer comes with EXEC; now it is QUEUED or an error, exactly.
            let check = std::mem::replace(&mut request.check, Check::Exact);
            let reply = self.one(0, request).await;
            if reply == b"+QUEUED\r\n" {
                checks.push(check);
            }
        }
        let end = if gen.rng.gen_bool(0.85) {
            "EXEC"
        } else {
            "DISCARD"
        };
        self.one(
            0,
            Request {
                words: vec![s(end)],
                check: Check::Exec(checks),
            },
        )
        .await;
    }
}

async fn scan_all(wire: &mut Wire, options: &[String]) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    let mut cursor = b"0".to_vec();
    for _ in 0..100_000 {
        let mut request = Request {
            words: vec![b"SCAN".to_vec(), cursor.clone()],
            check: Check::Exact,
        };
        request
            .words
            .extend(options.iter().map(|o| o.as_bytes().to_vec()));
        wire.send(&request.encode()).await;
        let reply = tree(&wire.reply().await);
        let Tree::Items(_, Some(items)) = reply else {
            panic!("SCAN answered {reply:?}");
        };
        let [Tree::Bulk(_, Some(next)), Tree::Items(_, Some(found))] = &items[..] else {
            panic!("SCAN answered {items:?}");
        };
        for key in found {
            if let Tree::Bulk(_, Some(key)) = key {
                keys.insert(key.clone());
            }
        }
        if next == b"0" {
            return keys;
        }
        cursor = next.clone();
    }
    panic!("a SCAN iteration did not end");
}

/// Fixed requests first: the integer limits, which the random part keeps away from (a sum
/// near 2^63 would make INCRBYFLOAT's long double and double disagree).
fn prelude() -> Vec<Request> {
    let requests: &[&[&str]] = &[
        &["SET", "big", "9223372036854775807"],
        &["INCR", "big"],
        &["INCRBY", "big", "-1"],
        &["DECRBY", "big", "-9223372036854775808"],
        &["DECRBY", "big", "9223372036854775807"],
        &["DECR", "big"],
        &["DECR", "big"],
        &["INCRBY", "big", "9223372036854775807"],
        &["INCRBY", "small", "-9223372036854775808"],
        &["DECR", "small"],
        &["INCRBY", "small", "92233720368547758070"],
        &["HINCRBY", "h", "f", "9223372036854775807"],
        &["HINCRBY", "h", "f", "1"],
        &["EXPIRE", "big", "9223372036854775807"],
        &["EXPIRE", "big", "9223372036854775"],
        &["PEXPIRE", "big", "9223372036854775807"],
        &["SET", "big", "v", "EX", "9223372036854775807"],
        &["SET", "big", "v", "PX", "9223372036854775807"],
        &["SETRANGE", "big", "536870912", "x"],
        &["SCAN", "x"],
        &["SCAN", "0", "COUNT", "0"],
        &["SCAN", "18446744073709551616"],
        &["LPOP", "nolist", "2"],
        &["GETRANGE", "big", "-100", "-50"],
        &["MGET", "big", "small", "h", "none"],
        &["FLUSHALL"],
    ];
    requests
        .iter()
        .map(|words| Request {
            words: words.iter().map(|w| w.as_bytes().to_vec()).collect(),
            check: Check::Exact,
        })
        .collect()
}

async fn run_seed(servers: &mut Servers, seed: u64, commands: usize) {
    let start_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut gen = Gen {
        rng: SmallRng::seed_from_u64(seed),
        start_s,
        resp3: seed % 3 == 0,
    };
    let mut run = Run {
        seed,
        servers,
        history: VecDeque::new(),
        sent: 0,
    };
    let flush = Request {
        words: vec![b"FLUSHALL".to_vec()],
        check: Check::Exact,
    };
    run.one(0, flush).await;
    let proto = if gen.resp3 { "3" } else { "2" };
    for conn in 0..2 {
        let hello = Request {
            words: vec![b"HELLO".to_vec(), proto.as_bytes().to_vec()],
            check: Check::Hello,
        };
        run.one(conn, hello).await;
    }
    for request in prelude() {
        run.one(0, request).await;
    }
    while run.sent < commands {
        match gen.rng.gen_range(0..100) {
            0..=64 => {
                let request = gen.command();
                run.one(0, request).await;
            }
            65..=69 => {
                let request = gen.command();
                run.one(1, request).await;
            }
            70..=79 => {
                let requests: Vec<Request> = (0..gen.rng.gen_range(2..=8))
                    .map(|_| gen.command())
                    .collect();
                run.pipeline(0, &requests).await;
            }
            80..=93 => run.transaction(&mut gen).await,
            _ => run.scan(&mut gen).await,
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_equal_redis_servers_byte_for_byte_over_random_command_sequences() {
    let Some(redis) = RedisServer::start() else {
        eprintln!(
            "NOTICE: redis-server not found (apt-get install redis-server); the differential \
             test against Redis is skipped"
        );
        return;
    };
    let seeds: Vec<u64> = match env_number("RAFT_REDIS_DIFF_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_number("RAFT_REDIS_DIFF_SEEDS").unwrap_or(SEEDS_DEFAULT)).collect(),
    };
    let commands = env_number("RAFT_REDIS_DIFF_COMMANDS").map_or(COMMANDS_DEFAULT, |n| n as usize);
    // Long election timeouts: a re-election in the middle (a busy machine) would answer
    // a request with -NOLEADER, which redis-server never does.
    let cluster = cluster_with(
        3,
        &[
            "--election-timeout-ms-min",
            "1500",
            "--election-timeout-ms-max",
            "3000",
        ],
    )
    .await;
    let leader = cluster.client().leader_status().await.expect("a leader").id;
    let follower = cluster
        .nodes
        .values()
        .find(|n| n.id != leader)
        .expect("a follower");
    let leader_addr = cluster.nodes[&leader].redis_addr.clone();
    let started = Instant::now();
    for seed in seeds {
        // Connection a on a follower for odd seeds (its writes are forwarded), on the leader
        // for even ones; b on the other.
        let (a, b) = match seed % 2 {
            1 => (follower.redis_addr.clone(), leader_addr.clone()),
            _ => (leader_addr.clone(), follower.redis_addr.clone()),
        };
        let mut servers = Servers {
            redis: [
                Wire::unix(&redis.socket).await,
                Wire::unix(&redis.socket).await,
            ],
            raft: [Wire::tcp(&a).await, Wire::tcp(&b).await],
        };
        let seed_started = Instant::now();
        run_seed(&mut servers, seed, commands).await;
        eprintln!(
            "seed {seed}: {commands} commands equal in {:.1} s",
            seed_started.elapsed().as_secs_f64()
        );
    }
    eprintln!("all seeds in {:.1} s", started.elapsed().as_secs_f64());
}

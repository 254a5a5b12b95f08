//! Helpers shared by the process-level tests: clusters of real `raft node` processes (the
//! binary under test) on free loopback ports in temporary directories; every child is killed
//! when its cluster is dropped.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use raft_cli::local::LocalCluster;

/// Longest wait for any cluster condition in the tests (debug builds on 2 busy cores).
pub const WAIT: Duration = Duration::from_secs(30);

/// Node flags of the tests: snapshots every 200 entries keeping 50 below them, so restarts
/// and catch-ups go through snapshots and the log alike; logs at info level in the node's
/// log file (printed when a test fails).
pub const NODE_ARGS: &[&str] = &[
    "--snapshot-distance",
    "200",
    "--snapshot-trailing-entries",
    "50",
    "--log-level",
    "info",
];

/// The binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_raft"))
}

/// Starts `voters` nodes and waits for a leader.
pub async fn cluster(voters: u64) -> LocalCluster {
    let mut cluster = LocalCluster::start(binary(), voters, NODE_ARGS).expect("cluster starts");
    cluster.wait_leader(WAIT).await.expect("a leader");
    // A node that could not start (say, its port was taken) can leave a smaller cluster that
    // still elects a leader: say so here rather than in a confusing later failure.
    let dead: Vec<_> = cluster
        .nodes
        .values_mut()
        .filter_map(|n| n.has_exited().then_some(n.id))
        .collect();
    if !dead.is_empty() {
        dump_logs(&cluster);
        panic!("nodes {dead:?} exited during start-up");
    }
    cluster
}

/// Prints the tail of every node's log (call before panicking).
pub fn dump_logs(cluster: &LocalCluster) {
    for id in cluster.nodes.keys() {
        eprintln!("--- node {id} ---\n{}", cluster.log_tail(*id, 40));
    }
}

/// `Bytes` from a string.
pub fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Length of the first complete RESP2 reply in `buf`, if it is complete.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    fn line_end(buf: &[u8], at: usize) -> Option<usize> {
        buf.get(at..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| at + p + 2)
    }
    fn value(buf: &[u8], at: usize) -> Option<usize> {
        let end = line_end(buf, at)?;
        let header = std::str::from_utf8(&buf[at + 1..end - 2]).ok()?;
        match buf[at] {
            b'+' | b'-' | b':' => Some(end),
            b'$' => {
                let len: i64 = header.parse().ok()?;
                if len < 0 {
                    return Some(end);
                }
                let total = end + len as usize + 2;
                (buf.len() >= total).then_some(total)
            }
            b'*' => {
                let count: i64 = header.parse().ok()?;
                let mut at = end;
                for _ in 0..count.max(0) {
                    at = value(buf, at)?;
                }
                Some(at)
            }
            _ => None,
        }
    }
    if buf.is_empty() {
        return None;
    }
    value(buf, 0)
}

/// A raw RESP connection.
pub struct Resp {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Resp {
    /// Connects to a Redis endpoint.
    pub async fn connect(addr: &str) -> Resp {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        Resp {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one complete reply (raw bytes), or `None` if the server closed the connection.
    pub async fn reply(&mut self) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(len) = reply_len(&self.buf) {
                return Some(self.buf.drain(..len).collect());
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a reply in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command as a RESP array of bulk strings and returns the reply as text.
    pub async fn command(&mut self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.send(request.as_bytes()).await;
        let reply = self.reply().await.expect("connection open");
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// Whether the server closed the connection (reads to the end).
    pub async fn is_closed(&mut self) -> bool {
        self.reply().await.is_none()
    }
}

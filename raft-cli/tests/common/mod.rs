//! Helpers shared by the process-level tests: clusters of real `raft node` processes (the
//! binary under test) on free loopback ports in temporary directories; every child is killed
//! when its cluster is dropped.

#![allow(dead_code)]

pub mod metrics;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use raft_cli::client::ClientError;
use raft_cli::local::{LocalCluster, LocalTls};
use raft_core::NodeId;

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
    cluster_with(voters, &[]).await
}

/// Attempts at starting a cluster whose node found its port taken.
const CLUSTER_START_ATTEMPTS: usize = 3;

/// Starts `voters` nodes with `extra` flags after [`NODE_ARGS`] and waits for a leader.
///
/// A node's ports are chosen free and released before the node binds them, so another
/// process (on a shared machine, another test's cluster or client) can take one in between;
/// a cluster whose node exited for that reason is replaced by a new one.
pub async fn cluster_with(voters: u64, extra: &[&str]) -> LocalCluster {
    cluster_prepared_with_tls(voters, extra, None, |_| {}).await
}

/// Like [`cluster_with`], with TLS files for the nodes and the clients' TLS configuration.
pub async fn cluster_with_tls(voters: u64, extra: &[&str], tls: Option<LocalTls>) -> LocalCluster {
    cluster_prepared_with_tls(voters, extra, tls, |_| {}).await
}

/// [`cluster_with`], calling `prepare` with the cluster's nodes defined (ports, data
/// directories, [`LocalCluster::peers`]) before any starts: to fill their data directories
/// (`raft restore`). A cluster replaced because a port was taken is prepared again.
pub async fn cluster_prepared(
    voters: u64,
    extra: &[&str],
    prepare: impl Fn(&LocalCluster),
) -> LocalCluster {
    cluster_prepared_with_tls(voters, extra, None, prepare).await
}

/// [`cluster_prepared`] with TLS files for the nodes (see [`cluster_with_tls`]).
pub async fn cluster_prepared_with_tls(
    voters: u64,
    extra: &[&str],
    tls: Option<LocalTls>,
    prepare: impl Fn(&LocalCluster),
) -> LocalCluster {
    let args: Vec<&str> = NODE_ARGS.iter().chain(extra).copied().collect();
    start_retrying(voters, &args, tls, prepare).await
}

/// Starts `voters` nodes with exactly `args` (no [`NODE_ARGS`]) and waits for a leader,
/// replacing a cluster whose node found its port taken, as [`cluster_with`] does.
pub async fn cluster_with_exactly(voters: u64, args: &[&str]) -> LocalCluster {
    start_retrying(voters, args, None, |_| {}).await
}

async fn start_retrying(
    voters: u64,
    args: &[&str],
    tls: Option<LocalTls>,
    prepare: impl Fn(&LocalCluster),
) -> LocalCluster {
    for attempt in 1..=CLUSTER_START_ATTEMPTS {
        let mut cluster = LocalCluster::define_with_tls(binary(), voters, args, tls.clone())
            .expect("cluster defined");
        prepare(&cluster);
        cluster.start_defined().expect("cluster starts");
        match wait_for_leader(&mut cluster).await {
            Ok(()) => return cluster,
            Err(dead) => {
                let port_taken = dead
                    .iter()
                    .any(|id| cluster.log_tail(*id, 5).contains("Address already in use"));
                if !port_taken || attempt == CLUSTER_START_ATTEMPTS {
                    dump_logs(&cluster);
                    panic!("nodes {dead:?} exited during start-up");
                }
                eprintln!("NOTICE: nodes {dead:?} found their port taken; starting a new cluster");
            }
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Runs the binary under test with `args` (and `RAFT_CLUSTER` set to `cluster`, if given);
/// returns its exit code, stdout and stderr.
pub fn run_raft(cluster: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(binary());
    command.args(args);
    if let Some(cluster) = cluster {
        command.env("RAFT_CLUSTER", cluster);
    }
    let output = command.output().expect("raft runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The members' addresses, comma-separated (for `--cluster` / `RAFT_CLUSTER`).
pub fn member_list(cluster: &LocalCluster) -> String {
    cluster
        .nodes
        .values()
        .map(|n| n.addr.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// Waits for a leader; the nodes that exited if some did. A node that could not start leaves
/// a cluster whose nodes never all agree on a leader, or a smaller one that does: this says
/// so at once rather than after WAIT or in a confusing later failure.
async fn wait_for_leader(cluster: &mut LocalCluster) -> Result<(), Vec<NodeId>> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let led = cluster.wait_leader(Duration::from_secs(1)).await.is_ok();
        let dead: Vec<_> = cluster
            .nodes
            .values_mut()
            .filter_map(|n| n.has_exited().then_some(n.id))
            .collect();
        if !dead.is_empty() {
            return Err(dead);
        }
        if led {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            dump_logs(cluster);
            panic!("no leader within {WAIT:?}");
        }
    }
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

/// Length of the first complete RESP2 or RESP3 reply in `buf`, if it is complete.
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
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(end),
            b'$' | b'=' | b'!' => {
                let len: i64 = header.parse().ok()?;
                if len < 0 {
                    return Some(end);
                }
                let total = end + len as usize + 2;
                (buf.len() >= total).then_some(total)
            }
            b'*' | b'~' | b'>' | b'%' => {
                let count: i64 = header.parse().ok()?;
                let items = if buf[at] == b'%' { count * 2 } else { count };
                let mut at = end;
                for _ in 0..items.max(0) {
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

    /// Connects to a Redis endpoint from the loopback address `local_ip` (a port of its
    /// own there, so opening many connections takes no port another test is about to
    /// bind on 127.0.0.1).
    pub async fn connect_from(local_ip: &str, addr: &str) -> Resp {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        let local = format!("{local_ip}:0").parse().expect("an IPv4 address");
        socket.bind(local).expect("bind");
        let stream = socket
            .connect(addr.parse().expect("host:port"))
            .await
            .expect("connect");
        Resp {
            stream,
            buf: Vec::new(),
        }
    }

    /// The local port of the connection.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local address").port()
    }

    /// Sends every write as its own TCP segment (no Nagle delay).
    pub fn set_nodelay(&self) {
        self.stream.set_nodelay(true).expect("TCP_NODELAY");
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends raw bytes; an error if the server has closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    /// Reads one complete reply (raw bytes), or `None` if the server closed the connection.
    pub async fn reply(&mut self) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(len) = reply_len(&self.buf) {
                return Some(self.buf.drain(..len).collect());
            }
            let mut chunk = vec![0u8; 64 * 1024];
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

/// Resident memory a node may reach in the bad-input tests, in bytes (a debug build holding
/// a few 4 MiB values in its log and table stays well under it).
pub const NODE_RSS_BYTES_MAX: u64 = 256 << 20;

/// Resident memory of process `pid`: now (`VmRSS`) and its peak so far (`VmHWM`), in bytes.
pub fn memory_bytes(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).expect(name);
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .expect("a size in kB");
        kib * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time process `pid` has used so far (user and system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The command name may contain spaces; the fields after it do not.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The process id of running node `id`.
pub fn pid(cluster: &LocalCluster, id: NodeId) -> u32 {
    cluster.nodes[&id].pid().expect("the node runs")
}

/// Checks that node `id` came through: it answers PING on a new connection, its resident
/// memory never exceeded [`NODE_RSS_BYTES_MAX`], and a write through it commits (and is
/// read back through the native client).
pub async fn assert_node_serves_and_cluster_commits(cluster: &LocalCluster, id: NodeId) {
    let (_, peak) = memory_bytes(pid(cluster, id));
    assert!(
        peak < NODE_RSS_BYTES_MAX,
        "node {id} reached {peak} bytes resident"
    );
    let mut conn = Resp::connect(&cluster.nodes[&id].redis_addr).await;
    assert_eq!(conn.command(&["PING"]).await, "+PONG\r\n");
    set_until_ok(&mut conn, "after", "fine").await;
    let client = cluster.client();
    assert_eq!(client.get(b("after")).await.unwrap(), Some(b("fine")));
    put_until_done(cluster, b("after"), b("still")).await;
    assert_eq!(conn.command(&["GET", "after"]).await, "$5\r\nstill\r\n");
}

/// Whether a RESP error reply means "nothing known to be done; try again": no leader, an
/// unknown outcome (a leader change during the write), back-pressure.
fn retryable(reply: &str) -> bool {
    ["-NOLEADER", "-UNKNOWN", "-TRYAGAIN"]
        .iter()
        .any(|code| reply.starts_with(code))
}

/// `SET key value` through `conn`, repeated (it is idempotent) while the cluster answers that
/// it could not tell whether it was done, for at most [`WAIT`]. A large write can take long
/// enough in a debug build for a follower to time out and start an election.
pub async fn set_until_ok(conn: &mut Resp, key: &str, value: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let reply = conn.command(&["SET", key, value]).await;
        if reply == "+OK\r\n" {
            return;
        }
        assert!(
            retryable(&reply) && std::time::Instant::now() < deadline,
            "SET {key} answered {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `key = value` through the native client, repeated while the outcome is unknown (see
/// [`set_until_ok`]).
pub async fn put_until_done(cluster: &LocalCluster, key: Bytes, value: Bytes) {
    let client = cluster.client();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match client.put(key.clone(), value.clone()).await {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(
                    matches!(e, ClientError::OutcomeUnknown(_)),
                    "put failed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("put failed: {e}"),
        }
    }
}

/// Waits for `future`, failing the test as soon as process `pid` has more than
/// [`NODE_RSS_BYTES_MAX`] resident (checked every 10 ms): a node that starts to build a huge
/// reply is stopped (the cluster is dropped) before it takes the machine's memory.
pub async fn within_memory_bound<F: std::future::Future>(pid: u32, future: F) -> F::Output {
    tokio::pin!(future);
    loop {
        tokio::select! {
            output = &mut future => return output,
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                let (resident, _) = memory_bytes(pid);
                assert!(
                    resident < NODE_RSS_BYTES_MAX,
                    "process {pid} reached {resident} bytes resident"
                );
            }
        }
    }
}

/// The state of the server end of a loopback TCP connection, from `/proc/net/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSocket {
    /// The kernel's TCP state (1: established).
    pub state: u8,
    /// Bytes received and not read yet by the server.
    pub unread_bytes: u64,
}

/// TCP state number of an established connection in `/proc/net/tcp`.
pub const TCP_ESTABLISHED: u8 = 1;

/// The server end of the loopback connection between `server_port` and `client_port`, if
/// the kernel still has it.
pub fn server_socket(server_port: u16, client_port: u16) -> Option<ServerSocket> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote) = (fields.get(1)?, fields.get(2)?);
        if port(local)? != server_port || port(remote)? != client_port {
            return None;
        }
        Some(ServerSocket {
            state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
            unread_bytes: u64::from_str_radix(fields.get(4)?.split(':').nth(1)?, 16).ok()?,
        })
    })
}

/// Waits (at most [`WAIT`]) until the server end of the connection satisfies `done`.
pub async fn wait_for_server_socket(
    server_port: u16,
    client_port: u16,
    what: &str,
    done: impl Fn(Option<ServerSocket>) -> bool,
) {
    let deadline = std::time::Instant::now() + WAIT;
    while !done(server_socket(server_port, client_port)) {
        assert!(
            std::time::Instant::now() < deadline,
            "waited in vain for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The port of a `host:port` address.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("host:port")
}

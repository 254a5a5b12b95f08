//! [`LocalCluster`]: `raft node` child processes on free loopback ports in a temporary
//! directory, for `raft demo` and the integration tests. Every child is killed when the
//! cluster is dropped, and the directory removed.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use raft_core::NodeId;
use raft_net_tcp::tls::TlsConfig;

use crate::client::{ClusterClient, ADMIN_REQUEST_TIMEOUT_MS};
use crate::config::CLUSTER_ID_DEFAULT;
use crate::proto::StatusReport;
use crate::tls::TlsClientCerts;

/// How long a gracefully stopped child may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Poll interval while waiting for a cluster condition.
const POLL: Duration = Duration::from_millis(20);

/// One child node.
#[derive(Debug)]
pub struct LocalNode {
    /// Its id.
    pub id: NodeId,
    /// Its Raft and native client address.
    pub addr: String,
    /// Its Redis address.
    pub redis_addr: String,
    /// The address of its HTTP endpoint (`/metrics`, `/health`, `/ready`).
    pub metrics_addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    /// Whether its process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether its process has ended on its own (or was never started); reaps it if so.
    pub fn has_exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Its process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The TLS files of one node (PEM): `--tls-cert`, `--tls-key`, `--tls-ca`.
#[derive(Clone, Debug)]
pub struct NodeTlsFiles {
    /// The node's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA it trusts.
    pub ca: PathBuf,
    /// What it requires of clients (`--tls-client-certs`).
    pub client_certs: TlsClientCerts,
}

/// TLS for a local cluster: each node's files, and the configuration its clients use.
#[derive(Clone, Debug)]
pub struct LocalTls {
    /// The files of each node; a node without an entry runs without TLS.
    pub nodes: BTreeMap<NodeId, NodeTlsFiles>,
    /// What [`LocalCluster::client`] (and so the waits) connect with.
    pub client: TlsConfig,
}

/// A cluster of `raft node` processes on this machine.
#[derive(Debug)]
pub struct LocalCluster {
    dir: tempfile::TempDir,
    binary: PathBuf,
    extra_args: Vec<String>,
    peers: String,
    tls: Option<LocalTls>,
    /// The nodes by id (running or not).
    pub nodes: BTreeMap<NodeId, LocalNode>,
}

/// A free loopback port (bound, read, released: another process could take it in between,
/// which is unlikely enough for tests and the demo).
pub fn free_addr() -> anyhow::Result<String> {
    Ok(free_addrs(1, &[])?.remove(0))
}

/// `count` distinct free loopback ports, none of them in `taken`. All are held at once while
/// they are chosen: ports bound and released one after the other may repeat (the kernel can
/// hand a just-released port out again), and two nodes given the same port made one of them
/// fail to start.
pub fn free_addrs(count: usize, taken: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut held = Vec::with_capacity(count);
    let mut addrs = Vec::with_capacity(count);
    while addrs.len() < count {
        let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let addr = listener.local_addr()?.to_string();
        if !taken.contains(&addr.as_str()) {
            addrs.push(addr);
        }
        held.push(listener);
        anyhow::ensure!(held.len() <= count + 64, "no free loopback port found");
    }
    Ok(addrs)
}

impl LocalCluster {
    /// Starts `voters` nodes (ids 1..=voters) of `binary`, each with `extra_args` after its
    /// own flags (tuning, log level).
    pub fn start(binary: &Path, voters: u64, extra_args: &[&str]) -> anyhow::Result<LocalCluster> {
        LocalCluster::start_with_tls(binary, voters, extra_args, None)
    }

    /// Like [`LocalCluster::start`], with TLS files for (some of) the nodes.
    pub fn start_with_tls(
        binary: &Path,
        voters: u64,
        extra_args: &[&str],
        tls: Option<LocalTls>,
    ) -> anyhow::Result<LocalCluster> {
        let mut cluster = LocalCluster::define_with_tls(binary, voters, extra_args, tls)?;
        cluster.start_defined()?;
        Ok(cluster)
    }

    /// Chooses the ports and data directories of `voters` nodes (ids 1..=voters) without
    /// starting them, so that their data directories can be prepared first (`raft restore`
    /// into [`LocalNode::data_dir`] with [`LocalCluster::peers`]); then
    /// [`LocalCluster::start_defined`].
    pub fn define(binary: &Path, voters: u64, extra_args: &[&str]) -> anyhow::Result<LocalCluster> {
        LocalCluster::define_with_tls(binary, voters, extra_args, None)
    }

    /// Like [`LocalCluster::define`], with TLS files for (some of) the nodes.
    pub fn define_with_tls(
        binary: &Path,
        voters: u64,
        extra_args: &[&str],
        tls: Option<LocalTls>,
    ) -> anyhow::Result<LocalCluster> {
        let dir = tempfile::Builder::new()
            .prefix("raft-cluster-")
            .tempdir()
            .context("creating a temporary directory")?;
        let mut cluster = LocalCluster {
            dir,
            binary: binary.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            peers: String::new(),
            tls,
            nodes: BTreeMap::new(),
        };
        let mut peers = Vec::new();
        for id in 1..=voters {
            cluster.define_node(id)?;
            peers.push(format!("{id}={}", cluster.nodes[&id].addr));
        }
        cluster.peers = peers.join(",");
        Ok(cluster)
    }

    /// Starts every node that does not run, with `--peers` of the first nodes.
    pub fn start_defined(&mut self) -> anyhow::Result<()> {
        let stopped: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| !n.is_running())
            .map(|n| n.id)
            .collect();
        for id in stopped {
            self.spawn(id, None)?;
        }
        Ok(())
    }

    /// The first nodes as `--peers` lists them: `ID=HOST:PORT,...`.
    pub fn peers(&self) -> &str {
        &self.peers
    }

    /// The temporary directory holding every node's data and log file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn define_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let taken: Vec<&str> = self
            .nodes
            .values()
            .flat_map(|n| [&n.addr, &n.redis_addr, &n.metrics_addr])
            .map(String::as_str)
            .collect();
        let mut addrs = free_addrs(3, &taken)?.into_iter();
        let mut next_addr = || addrs.next().context("a free port");
        let node = LocalNode {
            id,
            addr: next_addr()?,
            redis_addr: next_addr()?,
            metrics_addr: next_addr()?,
            data_dir: self.dir.path().join(format!("node{id}")),
            child: None,
        };
        self.nodes.insert(id, node);
        Ok(())
    }

    fn spawn(&mut self, id: NodeId, join: Option<&str>) -> anyhow::Result<()> {
        let log_path = self.dir.path().join(format!("node{id}.log"));
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("node")
            .args(["--id", &id.to_string()])
            .args(["--listen", &node.addr])
            .args(["--redis-listen", &node.redis_addr])
            .args(["--metrics-listen", &node.metrics_addr])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--cluster-id", &CLUSTER_ID_DEFAULT.to_string()]);
        match join {
            Some(via) => command.args(["--join", via]),
            None => command.args(["--peers", &self.peers]),
        };
        if let Some(files) = self.tls.as_ref().and_then(|tls| tls.nodes.get(&id)) {
            command
                .arg("--tls-cert")
                .arg(&files.cert)
                .arg("--tls-key")
                .arg(&files.key)
                .arg("--tls-ca")
                .arg(&files.ca)
                .arg("--tls-client-certs")
                .arg(match files.client_certs {
                    TlsClientCerts::Required => "required",
                    TlsClientCerts::Optional => "optional",
                });
        }
        let child = command
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Gives node `id` TLS files for its next start (the cluster must have been started
    /// with TLS).
    pub fn set_node_tls(&mut self, id: NodeId, files: NodeTlsFiles) -> anyhow::Result<()> {
        let tls = self.tls.as_mut().context("the cluster runs without TLS")?;
        tls.nodes.insert(id, files);
        Ok(())
    }

    /// Adds node `id` (new or wiped) that joins through `via`.
    pub fn start_joining(&mut self, id: NodeId, via: &str) -> anyhow::Result<()> {
        if !self.nodes.contains_key(&id) {
            self.define_node(id)?;
        }
        self.spawn(id, Some(via))
    }

    /// Starts a stopped node again from its data directory.
    pub fn restart(&mut self, id: NodeId) -> anyhow::Result<()> {
        if self.nodes.get(&id).is_some_and(LocalNode::is_running) {
            bail!("node {id} is running");
        }
        self.spawn(id, None)
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub fn kill(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        if let Some(mut child) = node.child.take() {
            child.kill().context("SIGKILL")?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops node `id` with SIGTERM (graceful), killing it after a grace period.
    pub fn stop(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let Some(mut child) = node.child.take() else {
            return Ok(());
        };
        terminate(&child);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        child.kill()?;
        child.wait()?;
        bail!("node {id} did not stop within {STOP_GRACE:?} of SIGTERM")
    }

    /// Removes a stopped node's data directory.
    pub fn wipe(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self.nodes.get(&id).context("no such node")?;
        if node.is_running() {
            bail!("node {id} is running");
        }
        if node.data_dir.exists() {
            std::fs::remove_dir_all(&node.data_dir)?;
        }
        Ok(())
    }

    /// A node's address.
    pub fn addr(&self, id: NodeId) -> &str {
        &self.nodes[&id].addr
    }

    /// Addresses of the running nodes.
    pub fn running_addrs(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.addr.clone())
            .collect()
    }

    /// A client of every node (running or not).
    pub fn client(&self) -> ClusterClient {
        let addrs = self.nodes.values().map(|n| n.addr.clone()).collect();
        let tls = self.tls.as_ref().map(|tls| tls.client.clone());
        ClusterClient::new(addrs, CLUSTER_ID_DEFAULT)
            .with_tls(tls)
            .with_request_timeout_ms(ADMIN_REQUEST_TIMEOUT_MS)
    }

    /// The last lines of a node's log file, for error messages.
    pub fn log_tail(&self, id: NodeId, lines: usize) -> String {
        let path = self.dir.path().join(format!("node{id}.log"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until a running node leads and every running node agrees; returns its status.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<StatusReport> {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        loop {
            let mut leader = None;
            let mut agreed = true;
            for addr in self.running_addrs() {
                match client.status_at(&addr).await {
                    Ok(s) if s.role == "leader" => leader = Some(s),
                    Ok(s) if s.leader.is_none() => agreed = false,
                    Ok(_) => {}
                    Err(_) => agreed = false,
                }
            }
            if let (Some(leader), true) = (&leader, agreed) {
                return Ok(leader.clone());
            }
            if Instant::now() >= deadline {
                bail!("no leader within {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(
        &self,
        id: NodeId,
        index: u64,
        timeout: Duration,
    ) -> anyhow::Result<StatusReport> {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = client.status_at(self.addr(id)).await {
                if s.applied_index >= index {
                    return Ok(s);
                }
            }
            if Instant::now() >= deadline {
                bail!("node {id} did not apply index {index} within {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills every running node.
    pub fn kill_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let _ = self.kill(id);
        }
    }

    /// Stops every running node gracefully.
    pub fn stop_all(&mut self) -> anyhow::Result<()> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in &ids {
            if let Some(child) = self.nodes[id].child.as_ref() {
                terminate(child);
            }
        }
        for id in ids {
            self.stop(id)?;
        }
        Ok(())
    }
}

fn terminate(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: `kill` has no memory-safety preconditions; the pid is our own unreaped child,
    // so it cannot name another process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addrs_are_distinct_and_avoid_taken_ones() {
        let first = free_addrs(20, &[]).unwrap();
        let taken: Vec<&str> = first.iter().map(String::as_str).collect();
        let second = free_addrs(20, &taken).unwrap();
        let mut all: Vec<&String> = first.iter().chain(&second).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 40, "{first:?} {second:?}");
    }
}

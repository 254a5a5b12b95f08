//! The native client subcommands: put, get, delete, cas, status, members, transfer-leader and
//! snapshot. Each finds the leader itself through [`ClusterClient`].

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use raft_core::NodeId;
use serde::Serialize;

use crate::client::{ClusterClient, ADMIN_REQUEST_TIMEOUT_MS};
use crate::config::CLUSTER_ID_DEFAULT;
use crate::proto::{Reply, Request, StatusReport};
use crate::tls::TlsArgs;

/// Default member list of client commands: the by-hand cluster of the README.
pub const CLUSTER_DEFAULT: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

/// Where the cluster is.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Addresses of some members (any one is enough).
    #[arg(long, env = "RAFT_CLUSTER", default_value = CLUSTER_DEFAULT, value_name = "HOST:PORT,...")]
    pub cluster: String,
    /// Cluster id checked in the handshake.
    #[arg(long, default_value_t = CLUSTER_ID_DEFAULT)]
    pub cluster_id: u64,
    /// TLS: the CA and, where the cluster requires one, this client's certificate.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl ClusterArgs {
    /// The member addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.cluster
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// A client of the cluster.
    pub fn client(&self) -> anyhow::Result<ClusterClient> {
        let addrs = self.addrs();
        if addrs.is_empty() {
            bail!("--cluster lists no address");
        }
        Ok(ClusterClient::new(addrs, self.cluster_id).with_tls(self.tls.config()?))
    }

    /// A client for admin requests, which may wait for a new server to catch up.
    pub fn admin_client(&self) -> anyhow::Result<ClusterClient> {
        Ok(self
            .client()?
            .with_request_timeout_ms(ADMIN_REQUEST_TIMEOUT_MS))
    }
}

/// `raft members ...`.
#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    /// Adds a server: as a voter (caught up first, then promoted) or with --learner.
    Add {
        /// The new server's id.
        id: NodeId,
        /// Its Raft address.
        addr: String,
        /// Add as a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Promotes a learner to voter.
    Promote {
        /// The learner's id.
        id: NodeId,
    },
    /// Removes a server.
    Remove {
        /// The server's id.
        id: NodeId,
    },
    /// Lists the members.
    List {
        /// Print one JSON object (leader, joint, members with id, address, voter).
        #[arg(long)]
        json: bool,
    },
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// `raft put KEY VALUE`.
pub async fn put(cluster: &ClusterArgs, key: &str, value: &str) -> anyhow::Result<()> {
    cluster.client()?.put(bytes(key), bytes(value)).await?;
    println!("OK");
    Ok(())
}

/// `raft get KEY`: prints the value; exits non-zero if absent.
pub async fn get(cluster: &ClusterArgs, key: &str) -> anyhow::Result<bool> {
    match cluster.client()?.get(bytes(key)).await? {
        Some(value) => {
            println!("{}", String::from_utf8_lossy(&value));
            Ok(true)
        }
        None => {
            println!("(nil)");
            Ok(false)
        }
    }
}

/// `raft delete KEY`.
pub async fn delete(cluster: &ClusterArgs, key: &str) -> anyhow::Result<()> {
    let existed = cluster.client()?.delete(bytes(key)).await?;
    println!("{}", if existed { "deleted" } else { "(absent)" });
    Ok(())
}

/// `raft cas KEY NEW [--expected OLD]`: returns whether it wrote.
pub async fn cas(
    cluster: &ClusterArgs,
    key: &str,
    new: &str,
    expected: Option<&str>,
) -> anyhow::Result<bool> {
    let client = cluster.client()?;
    let (written, previous) = client
        .cas(bytes(key), expected.map(bytes), bytes(new))
        .await?;
    let previous = previous.map_or("(nil)".into(), |v| String::from_utf8_lossy(&v).into_owned());
    if written {
        println!("OK (was {previous})");
    } else {
        println!("not written: current value is {previous}");
    }
    Ok(written)
}

/// One member's row of `raft status` (also its `--json` form): what the member says of
/// itself, and how far the leader knows it to be replicated. The member's own fields are
/// `None` when it did not answer (`role` is then `down`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    /// The member.
    pub id: NodeId,
    /// Its Raft and native client address.
    pub address: String,
    /// Voter (true) or learner (false), in the leader's configuration.
    pub voter: bool,
    /// `leader`, `follower`, `candidate`, `learner`, or `down` when it did not answer.
    pub role: String,
    /// Its current term.
    pub term: Option<u64>,
    /// Its commit index.
    pub commit_index: Option<u64>,
    /// Its applied index.
    pub applied_index: Option<u64>,
    /// Its last log index.
    pub last_index: Option<u64>,
    /// Index of its latest snapshot (0: none).
    pub snapshot_index: Option<u64>,
    /// Highest index the leader knows replicated there (the leader's own: its last index).
    pub match_index: Option<u64>,
    /// Entries the leader has and it does not (leader's last index - match index).
    pub lag: Option<u64>,
}

/// `raft status --json`: the leader's view and a row per member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// The leader's id.
    pub leader: NodeId,
    /// The leader's term.
    pub term: u64,
    /// The leader's commit index.
    pub commit_index: u64,
    /// Whether the configuration is joint (a membership change in progress).
    pub joint: bool,
    /// Every member of the leader's configuration.
    pub members: Vec<StatusRow>,
}

/// The status of every member, asked of each (a member that does not answer is `down`).
pub async fn cluster_status(client: &ClusterClient) -> anyhow::Result<ClusterStatus> {
    let leader = client.leader_status().await.context("finding the leader")?;
    let mut members = Vec::with_capacity(leader.members.len());
    for member in &leader.members {
        let matched = if member.id == leader.id {
            Some(leader.last_index)
        } else {
            leader
                .peers
                .iter()
                .find(|p| p.id == member.id)
                .map(|p| p.match_index)
        };
        let own = client.status_at(&member.addr).await.ok();
        members.push(StatusRow {
            id: member.id,
            address: member.addr.clone(),
            voter: member.voter,
            role: own.as_ref().map_or("down".into(), |s| s.role.clone()),
            term: own.as_ref().map(|s| s.term),
            commit_index: own.as_ref().map(|s| s.commit_index),
            applied_index: own.as_ref().map(|s| s.applied_index),
            last_index: own.as_ref().map(|s| s.last_index),
            snapshot_index: own.as_ref().map(|s| s.snapshot_index),
            match_index: matched,
            lag: matched.map(|m| leader.last_index.saturating_sub(m)),
        });
    }
    Ok(ClusterStatus {
        leader: leader.id,
        term: leader.term,
        commit_index: leader.commit_index,
        joint: leader.joint,
        members,
    })
}

/// `raft status [--json]`: a table of every member, or one JSON object.
pub async fn status(cluster: &ClusterArgs, json: bool) -> anyhow::Result<()> {
    let status = cluster_status(&cluster.client()?).await?;
    if json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    println!(
        "{:>4}  {:<22} {:<10} {:>6} {:>10} {:>10} {:>10} {:>8}",
        "id", "address", "role", "term", "commit", "applied", "match", "lag"
    );
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for row in &status.members {
        println!(
            "{:>4}  {:<22} {:<10} {:>6} {:>10} {:>10} {:>10} {:>8}",
            row.id,
            row.address,
            row.role,
            show(row.term),
            show(row.commit_index),
            show(row.applied_index),
            show(row.match_index),
            show(row.lag)
        );
    }
    Ok(())
}

/// `raft members ...`.
pub async fn members(cluster: &ClusterArgs, command: MembersCommand) -> anyhow::Result<()> {
    let client = cluster.admin_client()?;
    let request = match command {
        MembersCommand::Add { id, addr, learner } if learner => Request::AddLearner { id, addr },
        MembersCommand::Add { id, addr, .. } => Request::AddVoter { id, addr },
        MembersCommand::Promote { id } => Request::Promote { id },
        MembersCommand::Remove { id } => Request::Remove { id },
        MembersCommand::List { json } => {
            let status = client.leader_status().await?;
            if json {
                println!("{}", serde_json::to_string(&MemberList::from(&status))?);
            } else {
                print_members(&status);
            }
            return Ok(());
        }
    };
    client.call(&request).await?;
    println!("OK");
    print_members(&client.leader_status().await?);
    Ok(())
}

/// `raft members list --json`: the leader's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberList {
    /// The leader's id.
    pub leader: NodeId,
    /// Whether the configuration is joint (a membership change in progress).
    pub joint: bool,
    /// Every member.
    pub members: Vec<MemberRow>,
}

/// One member of [`MemberList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberRow {
    /// The member.
    pub id: NodeId,
    /// Its Raft and native client address.
    pub address: String,
    /// Voter (true) or learner (false).
    pub voter: bool,
}

impl From<&StatusReport> for MemberList {
    fn from(status: &StatusReport) -> MemberList {
        MemberList {
            leader: status.id,
            joint: status.joint,
            members: status
                .members
                .iter()
                .map(|m| MemberRow {
                    id: m.id,
                    address: m.addr.clone(),
                    voter: m.voter,
                })
                .collect(),
        }
    }
}

fn print_members(status: &StatusReport) {
    for m in &status.members {
        let kind = if m.voter { "voter" } else { "learner" };
        println!("{:>4}  {:<22} {kind}", m.id, m.addr);
    }
}

/// `raft transfer-leader ID`.
pub async fn transfer_leader(cluster: &ClusterArgs, id: NodeId) -> anyhow::Result<()> {
    cluster
        .admin_client()?
        .call(&Request::TransferLeader { id })
        .await?;
    println!("OK: node {id} leads");
    Ok(())
}

/// `raft snapshot [--node ADDR]`: on the leader, or on the given member.
pub async fn snapshot(cluster: &ClusterArgs, node: Option<&str>) -> anyhow::Result<()> {
    let client = cluster.admin_client()?;
    let reply = match node {
        Some(addr) => client.call_at(addr, &Request::Snapshot).await?,
        None => {
            let leader = client.leader_status().await?;
            let addr = leader
                .members
                .iter()
                .find(|m| m.id == leader.id)
                .map(|m| m.addr.clone())
                .unwrap_or_default();
            client.call_at(&addr, &Request::Snapshot).await?
        }
    };
    match reply {
        Reply::Snapshot { index } => println!("snapshot at index {index}"),
        other => bail!("unexpected reply {other:?}"),
    }
    Ok(())
}

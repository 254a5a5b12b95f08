//! `raft backup FILE`: streams a snapshot from a member into a backup file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use raft_core::NodeId;
use serde::Serialize;

use super::format::BackupHeader;
use crate::admin::ClusterArgs;
use crate::client::{ClientError, ClusterClient};
use crate::proto::{Reply, Request};

/// `raft backup` flags.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The backup file to write; it must not exist.
    pub file: PathBuf,
    /// The member to take the backup from (default: the leader).
    #[arg(long, value_name = "HOST:PORT")]
    pub node: Option<String>,
    /// Print one JSON object instead of the summary line.
    #[arg(long)]
    pub json: bool,
}

/// What `raft backup` wrote (its `--json` output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    /// The backup file.
    pub file: PathBuf,
    /// The member that served it.
    pub node_id: NodeId,
    /// Its address.
    pub node_address: String,
    /// The snapshot's last included entry: the state is the one after this entry.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// Bytes of snapshot data.
    pub data_bytes: u64,
    /// CRC32 of the snapshot data.
    pub data_crc32: u32,
    /// Bytes of the whole file.
    pub file_bytes: u64,
}

/// `raft backup FILE [--node HOST:PORT]`.
pub async fn run(args: &BackupArgs) -> anyhow::Result<()> {
    let client = args.cluster.admin_client()?;
    let addr = match &args.node {
        Some(addr) => addr.clone(),
        None => leader_addr(&client).await?,
    };
    let summary = save(&client, &addr, args.cluster.cluster_id, &args.file).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "backup of node {} ({}) at index {}, term {}: {} bytes of snapshot data (crc32 \
             {:#010x}), {} bytes written to {}",
            summary.node_id,
            summary.node_address,
            summary.index,
            summary.term,
            summary.data_bytes,
            summary.data_crc32,
            summary.file_bytes,
            summary.file.display()
        );
    }
    Ok(())
}

/// The leader's address.
pub async fn leader_addr(client: &ClusterClient) -> anyhow::Result<String> {
    let leader = client.leader_status().await.context("finding the leader")?;
    leader
        .members
        .iter()
        .find(|m| m.id == leader.id)
        .map(|m| m.addr.clone())
        .context("the leader is not in its own configuration")
}

/// Takes a backup from the member at `addr` into `path`, which must not exist. The file is
/// written under a temporary name in the same directory, synced, and renamed to `path` only
/// when every byte arrived and matched the snapshot's checksum: a failed backup leaves no
/// file that looks complete.
pub async fn save(
    client: &ClusterClient,
    addr: &str,
    cluster_id: u64,
    path: &Path,
) -> anyhow::Result<BackupSummary> {
    if path.exists() {
        bail!(
            "{} exists; remove it or choose another name",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let begun = client
        .call_at(addr, &Request::BackupBegin)
        .await
        .map_err(|e| at_node(addr, e))
        .context("starting the backup")?;
    let (session, node_id, meta) = match begun {
        Reply::BackupBegun {
            session,
            node,
            meta,
        } => (session, node, meta),
        other => bail!("unexpected reply {other:?}"),
    };
    let meta = raft_snapshot::format::decode_meta(&meta).map_err(|e| {
        anyhow::anyhow!(
            "node {node_id} sent invalid snapshot metadata: {}",
            e.reason()
        )
    })?;
    let header = BackupHeader {
        cluster_id,
        node_id,
        taken_unix_ms: now_unix_ms(),
        meta,
    };
    let encoded = header.encode()?;
    let mut temp = tempfile::Builder::new()
        .prefix(".raft-backup-")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    // Plain blocking writes: this command's one task waits for each chunk anyway.
    temp.write_all(&encoded)
        .with_context(|| format!("writing {}", temp.path().display()))?;
    let crc = copy_chunks(client, addr, session, &header, temp.as_file_mut()).await?;
    header
        .check_data_crc(crc)
        .with_context(|| format!("the snapshot node {node_id} sent does not match its checksum"))?;
    temp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", temp.path().display()))?;
    temp.persist_noclobber(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the backup to {}", path.display()))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(BackupSummary {
        file: path.to_path_buf(),
        node_id,
        node_address: addr.to_string(),
        index: header.meta.last_log_id.index,
        term: header.meta.last_log_id.term,
        data_bytes: header.meta.size_bytes,
        data_crc32: header.meta.crc32,
        file_bytes: header.file_bytes(encoded.len()),
    })
}

/// Asks for the snapshot's chunks in order and appends them to `file`; returns the CRC32 of
/// the bytes received. Memory: one chunk.
async fn copy_chunks(
    client: &ClusterClient,
    addr: &str,
    session: u64,
    header: &BackupHeader,
    file: &mut File,
) -> anyhow::Result<u32> {
    let size = header.meta.size_bytes;
    let mut crc = crc32fast::Hasher::new();
    let mut offset = 0u64;
    loop {
        let request = Request::BackupChunk { session, offset };
        let (data, done) = match client.call_at(addr, &request).await {
            Ok(Reply::BackupChunk { data, done }) => (data, done),
            Ok(other) => bail!("unexpected reply {other:?}"),
            Err(e) => {
                return Err(at_node(addr, e))
                    .with_context(|| format!("reading the snapshot at offset {offset} of {size}"))
            }
        };
        let end = offset + data.len() as u64;
        if end > size || done != (end == size) || (data.is_empty() && !done) {
            bail!(
                "node sent a chunk of {} bytes at offset {offset} (done: {done}) of a {size}-byte \
                 snapshot",
                data.len()
            );
        }
        crc.update(&data);
        file.write_all(&data).context("writing the backup file")?;
        offset = end;
        if done {
            return Ok(crc.finalize());
        }
    }
}

/// A failed request to the member at `addr` as the operator should read it: `call_at`
/// reports a member that could not serve (unreachable, busy, shutting down) as "no
/// leader", which says nothing here, since a backup goes to one member whatever its role.
fn at_node(addr: &str, error: ClientError) -> anyhow::Error {
    match error {
        ClientError::NoLeader { last, .. } => anyhow::anyhow!("{addr}: {last}"),
        other => anyhow::anyhow!("{addr}: {other}"),
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

//! `raft restore FILE --data-dir DIR --id N --peers ...`: a data directory from which node N
//! of a new cluster starts with the backup's state.
//!
//! What the directory holds, and why the new cluster starts from it:
//! - `snapshots/`: the backup's snapshot data, published by raft-snapshot's store under
//!   metadata that keeps the backup's last entry (index I, term T) and replaces its
//!   configuration with the voters of `--peers`, recorded as the configuration at entry
//!   (T, I). Every node restores the state machine from it; a later leader opens its term
//!   with a blank entry (the configuration is already written down).
//! - `log/`: a raft-log purged up to (T, I), so it holds no entry and the next one is I + 1,
//!   and a hard state of term T, no vote, commit I. The log continues the snapshot, as after
//!   an install, so the node starts without discarding anything.
//!
//! Each node of the new cluster is restored from the same file with the same `--peers` and
//! its own `--id`; started, they elect a leader in a term above T, which commits a blank
//! entry at I + 1 and takes writes.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use raft_core::node::SnapshotStore;
use raft_core::{HardState, Membership, NodeId, SnapshotMeta};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::format::{BackupHeader, PREFIX_BYTES};
use crate::config::parse_peers;
use crate::snapshots;

/// Bytes read from the backup file at a time while its data is copied.
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// `raft restore` flags.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file (written by `raft backup`).
    pub file: PathBuf,
    /// The data directory to create for this node; it must not exist or be empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This node's id in the new cluster.
    #[arg(long)]
    pub id: NodeId,
    /// Every voter of the new cluster, `ID=HOST:PORT,...` (the same on every node).
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub peers: String,
    /// Print one JSON object instead of the summary line.
    #[arg(long)]
    pub json: bool,
}

/// What `raft restore` prepared (its `--json` output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoreSummary {
    /// The data directory created.
    pub data_dir: PathBuf,
    /// The node it is for.
    pub id: NodeId,
    /// The backup's last included entry: the new cluster's log continues after it.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// Bytes of snapshot data.
    pub data_bytes: u64,
    /// Cluster id of the cluster backed up.
    pub source_cluster_id: u64,
}

/// `raft restore`.
pub async fn run(args: &RestoreArgs) -> anyhow::Result<()> {
    let summary = restore(&args.file, &args.data_dir, args.id, &args.peers).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "restored the backup at index {}, term {} ({} bytes of snapshot data) into {} for \
             node {} of {}",
            summary.index,
            summary.term,
            summary.data_bytes,
            summary.data_dir.display(),
            summary.id,
            args.peers
        );
    }
    Ok(())
}

/// The configuration of the new cluster: the voters of `peers`, which must include `id`.
fn new_membership(id: NodeId, peers: &str) -> anyhow::Result<Membership> {
    let addresses = parse_peers(peers)?;
    if !addresses.contains_key(&id) {
        bail!("--peers must list this node ({id})");
    }
    let mut membership = Membership::new_voters(addresses.keys().copied());
    membership.addresses = addresses;
    membership
        .validate()
        .map_err(|e| anyhow::anyhow!("--peers: {e}"))?;
    Ok(membership)
}

/// Restores the backup in `file` into a new data directory `data_dir` for node `id` of the
/// cluster `peers`. Everything is checked (header, length, data checksum) and written into a
/// temporary directory beside `data_dir`, which is renamed into place only when complete: a
/// damaged file or a failure leaves nothing behind.
pub async fn restore(
    file: &Path,
    data_dir: &Path,
    id: NodeId,
    peers: &str,
) -> anyhow::Result<RestoreSummary> {
    let membership = new_membership(id, peers)?;
    check_empty(data_dir)?;
    let mut backup =
        File::open(file).with_context(|| format!("opening the backup {}", file.display()))?;
    let (header, header_bytes) = read_header(&mut backup)
        .with_context(|| format!("refusing the backup {}", file.display()))?;
    let file_bytes = backup
        .metadata()
        .with_context(|| format!("reading the length of {}", file.display()))?
        .len();
    header
        .check_file_bytes(header_bytes, file_bytes)
        .with_context(|| format!("refusing the backup {}", file.display()))?;
    if header.meta.last_log_id.index == 0 {
        bail!("refusing the backup {}: it holds no entry", file.display());
    }
    let parent = match data_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".raft-restore-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let mut meta = header.meta.clone();
    meta.membership = membership;
    meta.membership_log_id = meta.last_log_id;
    write_snapshot(
        &mut backup,
        &header,
        meta,
        &staging.path().join("snapshots"),
    )
    .await
    .with_context(|| format!("refusing the backup {}", file.display()))?;
    write_log(&staging.path().join("log"), &header.meta)?;
    publish(staging.keep(), data_dir)?;
    Ok(RestoreSummary {
        data_dir: data_dir.to_path_buf(),
        id,
        index: header.meta.last_log_id.index,
        term: header.meta.last_log_id.term,
        data_bytes: header.meta.size_bytes,
        source_cluster_id: header.cluster_id,
    })
}

/// A data directory must be new: restoring over a node's data would mix two histories.
fn check_empty(data_dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty; restore into a new data directory",
                    data_dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", data_dir.display())),
    }
}

/// Reads and checks the header; returns it and its length in bytes. Reads at most the
/// largest header the format allows, whatever the file says.
fn read_header(file: &mut File) -> anyhow::Result<(BackupHeader, usize)> {
    let mut bytes = Vec::with_capacity(PREFIX_BYTES);
    file.by_ref()
        .take(PREFIX_BYTES as u64)
        .read_to_end(&mut bytes)
        .context("reading the header")?;
    let header_bytes = BackupHeader::header_bytes(&bytes)?;
    file.by_ref()
        .take((header_bytes - PREFIX_BYTES) as u64)
        .read_to_end(&mut bytes)
        .context("reading the header")?;
    Ok((BackupHeader::decode(&bytes)?, header_bytes))
}

/// Copies the data (the file is positioned at it) into a new snapshot store in `dir`,
/// published under `meta` only if the bytes match the header's checksum.
async fn write_snapshot(
    backup: &mut File,
    header: &BackupHeader,
    meta: SnapshotMeta,
    dir: &Path,
) -> anyhow::Result<()> {
    let store = snapshots::open(dir)?;
    let mut writer = store
        .begin(meta)
        .await
        .with_context(|| format!("starting a snapshot in {}", dir.display()))?;
    let mut crc = crc32fast::Hasher::new();
    let mut remaining = header.meta.size_bytes;
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let copied: anyhow::Result<()> = async {
        while remaining > 0 {
            let want = remaining.min(COPY_BUFFER_BYTES as u64) as usize;
            // Blocking reads: this command's one task has nothing else to do meanwhile.
            backup
                .read_exact(&mut buf[..want])
                .context("reading the backup's data")?;
            crc.update(&buf[..want]);
            writer.write_all(&buf[..want]).await?;
            remaining -= want as u64;
        }
        header.check_data_crc(crc.clone().finalize())?;
        Ok(())
    }
    .await;
    if let Err(error) = copied {
        writer.abort().await;
        return Err(error);
    }
    let published = writer.finish().await.context("publishing the snapshot")?;
    // The store computed its own checksum of what it wrote: the same bytes.
    anyhow::ensure!(
        published.crc32 == header.meta.crc32 && published.size_bytes == header.meta.size_bytes,
        "the snapshot written differs from the backup's data"
    );
    Ok(())
}

/// A log in `dir` that continues the snapshot: nothing in it, purged up to the snapshot's
/// last entry, and a hard state of that entry's term, committed up to it.
///
/// Its segments are the smallest raft-log makes: the node writes its next segments at its
/// own `log_segment_bytes` (raft-log lets the size change between opens), and a restore of
/// default-sized segments would zero-fill 128 MiB that nothing uses.
fn write_log(dir: &Path, meta: &SnapshotMeta) -> anyhow::Result<()> {
    let options = raft_log::Options {
        segment_bytes: raft_log::SEGMENT_BYTES_MIN,
        ..raft_log::Options::default()
    };
    let log = raft_log::RaftLog::open(dir, options)
        .with_context(|| format!("creating the log in {}", dir.display()))?;
    log.purge(meta.last_log_id)
        .with_context(|| format!("purging the log in {}", dir.display()))?;
    log.save_hard_state(HardState {
        term: meta.last_log_id.term,
        voted_for: None,
        commit: meta.last_log_id.index,
    })
    .with_context(|| format!("writing the hard state in {}", dir.display()))?;
    Ok(())
}

/// Renames the finished `staging` directory to `data_dir` (replacing it if it is an empty
/// directory) and syncs their parent.
fn publish(staging: PathBuf, data_dir: &Path) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        if data_dir.exists() {
            std::fs::remove_dir(data_dir)
                .with_context(|| format!("replacing the empty {}", data_dir.display()))?;
        }
        std::fs::rename(&staging, data_dir)
            .with_context(|| format!("renaming {} to {}", staging.display(), data_dir.display()))?;
        let parent = staging.parent().unwrap_or(Path::new("."));
        File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", parent.display()))
    })();
    if result.is_err() && staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

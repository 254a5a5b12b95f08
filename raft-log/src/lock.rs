//! [`DirLock`]: one process per directory.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file [`DirLock`] creates in the directory it locks. It holds the pid of
/// the process holding the lock, for the error message of the next one that tries.
pub const LOCK_FILE: &str = "LOCK";

/// Longest lock file read back for the holder's pid: a decimal `u32` and a newline.
const LOCK_FILE_BYTES_MAX: u64 = 16;

/// An exclusive lock on a directory, held until dropped (or the process ends, however it
/// ends: the kernel releases it, so a crash never leaves a stale lock).
///
/// [`RaftLog::open`](crate::RaftLog::open) takes one on the log directory, so that two
/// processes never write one log; the `raft` binary also takes one on its data directory,
/// which holds the log and the snapshots. A second [`DirLock::acquire`] of the same directory
/// fails with [`Error::Locked`], from another process or from this one.
///
/// The lock is an advisory `flock(2)` on `<dir>/LOCK`, which works on local file systems
/// (and on NFS only as well as the NFS client emulates `flock`).
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    /// Holds the lock while open: closing it releases the `flock`.
    _file: File,
}

impl DirLock {
    /// Locks `dir` (which must exist) for this process, or fails with [`Error::Locked`]
    /// naming the directory and, when the lock file says, the pid of the holder.
    pub fn acquire(dir: impl AsRef<Path>) -> Result<DirLock> {
        let dir = dir.as_ref();
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        if let Err(e) = try_lock(&file) {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    pid: holder(&file),
                });
            }
            return Err(Error::io("lock directory", &path, e));
        }
        // Not synced: the pid only matters while this process lives.
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
            .map_err(|e| Error::io("write lock file", &path, e))?;
        Ok(DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Takes an exclusive `flock` on `file` without waiting.
fn try_lock(file: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: `flock` takes a descriptor and flags only; the descriptor is open (owned by
        // `file`) for the whole call.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// The pid written in a lock file by its holder, if it can be read.
fn holder(file: &File) -> Option<u32> {
    let mut text = String::new();
    let reader = file;
    reader
        .take(LOCK_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

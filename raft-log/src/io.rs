//! The I/O seam: every write, sync and directory change the log makes goes through [`Io`].
//!
//! Appends, rolls, truncations, purges, hard state saves and recovery all call these methods
//! instead of `std::fs` directly, so that a test can fail, record or panic at any step of any
//! of them (as redb's fault-injecting storage backend does) and check what a reopened log finds.
//! Reads go through the segments' memory maps and never through here.
//!
//! In the library the seam is [`FileIo`], whose methods are the std calls themselves, inlined
//! into their callers: no dynamic dispatch and no extra branch, so appends pay nothing for it.
//! The crate's unit tests compile [`LogIo`] as `fault::FaultIo` instead, which passes every
//! call through to [`FileIo`] unless a test arms it.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

#[cfg(test)]
pub(crate) mod fault;
#[cfg(test)]
pub(crate) mod model;

/// The implementation of [`Io`] the log uses: [`FileIo`], or in unit tests `FaultIo`.
#[cfg(not(test))]
pub(crate) type LogIo = FileIo;
/// The implementation of [`Io`] the log uses: [`FileIo`], or in unit tests `FaultIo`.
#[cfg(test)]
pub(crate) type LogIo = fault::FaultIo;

/// The mutating file system calls of the log.
///
/// Contract, for every implementation:
/// 1. A method either does what its std counterpart does and returns `Ok`, or returns an
///    error; the log treats every error as "the outcome on disk is unknown" and poisons itself.
/// 2. Nothing is durable until the matching sync returns: file contents by [`Io::sync_data`]
///    or [`Io::sync_all`] of that file, names (create, rename, remove) by [`Io::sync_dir`] of
///    their directory.
/// 3. Methods may be called from several threads at once (appenders, the syncer, the
///    background zero-fill).
pub(crate) trait Io: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// Writes all of `bytes` at `offset` of `file` (`pwrite`).
    fn write_at(&self, file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()>;
    /// Writes `slices` back to back at `offset` of `file`. Uses the file position: only one
    /// thread at a time may call it on one file (the writer, under the writer lock).
    fn write_vectored_at(
        &self,
        file: &File,
        slices: &mut [IoSlice<'_>],
        offset: u64,
    ) -> std::io::Result<()>;
    /// Makes the data of `file` durable (`fdatasync`).
    fn sync_data(&self, file: &File) -> std::io::Result<()>;
    /// Makes the data and metadata of `file` durable (`fsync`).
    fn sync_all(&self, file: &File) -> std::io::Result<()>;
    /// Creates `path` (or truncates it to nothing), open for reading and writing.
    fn create(&self, path: &Path) -> std::io::Result<File>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Deletes the file `path`.
    fn remove_file(&self, path: &Path) -> std::io::Result<()>;
    /// Creates the directory `path` (its parent exists).
    fn create_dir(&self, path: &Path) -> std::io::Result<()>;
    /// Makes the names in the directory open as `dir` durable (`fsync` of the directory).
    fn sync_dir(&self, dir: &File) -> std::io::Result<()>;
}

/// [`Io`] as the std calls themselves.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileIo;

impl Io for FileIo {
    #[inline]
    fn write_at(&self, file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        file.write_all_at(bytes, offset)
    }

    /// One slice: `pwrite`. More: a seek and `writev` calls (std has no stable `pwritev`).
    #[inline]
    fn write_vectored_at(
        &self,
        file: &File,
        slices: &mut [IoSlice<'_>],
        offset: u64,
    ) -> std::io::Result<()> {
        if let [only] = &slices[..] {
            return file.write_all_at(only, offset);
        }
        let mut file = file;
        file.seek(SeekFrom::Start(offset))?;
        let mut rest = slices;
        while !rest.is_empty() {
            match file.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[inline]
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        file.sync_data()
    }

    #[inline]
    fn sync_all(&self, file: &File) -> std::io::Result<()> {
        file.sync_all()
    }

    fn create(&self, path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }

    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }

    fn sync_dir(&self, dir: &File) -> std::io::Result<()> {
        dir.sync_all()
    }
}

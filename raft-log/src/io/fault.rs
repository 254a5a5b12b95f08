//! `FaultIo`: [`FileIo`] with a switchboard for the crate's unit tests. A test can count the
//! steps (calls of [`Io`] methods) one operation of the log makes, make the k-th of them fail
//! or panic, and record every step that reached the file system, for the crash model
//! (`model.rs`). Unarmed and not recording, it only passes calls through.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use super::{FileIo, Io};

/// [`Io`] for unit tests: [`FileIo`] plus, when built with [`FaultIo::controlled`], the
/// [`Faults`] a test steers it with.
#[derive(Clone, Debug, Default)]
pub(crate) struct FaultIo {
    faults: Option<Arc<Faults>>,
}

impl FaultIo {
    /// A seam steered through the returned handle (inactive until armed or recording).
    pub(crate) fn controlled() -> (FaultIo, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let io = FaultIo {
            faults: Some(Arc::clone(&faults)),
        };
        (io, faults)
    }
}

/// What the injected step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Returns an I/O error without touching the file system.
    Fail,
    /// Panics without touching the file system.
    Panic,
}

/// One step that reached the file system, as the crash model needs it: files by inode number,
/// names by path.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Write {
        ino: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    Sync {
        ino: u64,
    },
    Create {
        path: PathBuf,
        ino: u64,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Remove {
        path: PathBuf,
    },
    CreateDir {
        path: PathBuf,
    },
    SyncDir {
        ino: u64,
    },
}

impl std::fmt::Debug for Op {
    /// Writes by their length, not their bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Write { ino, offset, bytes } => {
                write!(
                    f,
                    "Write {{ ino: {ino}, offset: {offset}, bytes: {} }}",
                    bytes.len()
                )
            }
            Op::Sync { ino } => write!(f, "Sync {{ ino: {ino} }}"),
            Op::Create { path, ino } => write!(f, "Create {{ path: {path:?}, ino: {ino} }}"),
            Op::Rename { from, to } => write!(f, "Rename {{ from: {from:?}, to: {to:?} }}"),
            Op::Remove { path } => write!(f, "Remove {{ path: {path:?} }}"),
            Op::CreateDir { path } => write!(f, "CreateDir {{ path: {path:?} }}"),
            Op::SyncDir { ino } => write!(f, "SyncDir {{ ino: {ino} }}"),
        }
    }
}

/// The switchboard of a [`FaultIo`].
#[derive(Debug, Default)]
pub(crate) struct Faults {
    state: Mutex<State>,
    /// Held across each step and its recording, so that the recorded order is the order in
    /// which steps reached the file system (writes and syncs of one file race otherwise).
    order: Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    armed: Option<Armed>,
    recorded: Option<Vec<Op>>,
}

/// Counting of steps, from [`Faults::arm`] to [`Faults::disarm`].
#[derive(Debug)]
struct Armed {
    /// Only steps of this thread count (`None`: steps of every thread).
    thread: Option<ThreadId>,
    /// The names of the steps counted so far.
    steps: Vec<&'static str>,
    /// The step (numbered from 0) to inject, and what to do there.
    inject: Option<(usize, Injected)>,
}

/// The verdict on a step about to be made.
enum Verdict {
    Go,
    Inject(Injected, usize),
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panics on purpose never does so under this lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the steps the calling thread makes from now on (every thread's with
    /// `any_thread`), injecting `inject` at the step it numbers.
    pub(crate) fn arm(&self, inject: Option<(usize, Injected)>, any_thread: bool) {
        let thread = (!any_thread).then(|| std::thread::current().id());
        self.state().armed = Some(Armed {
            thread,
            steps: Vec::new(),
            inject,
        });
    }

    /// Stops counting and returns the names of the steps counted.
    pub(crate) fn disarm(&self) -> Vec<&'static str> {
        self.state()
            .armed
            .take()
            .map(|a| a.steps)
            .unwrap_or_default()
    }

    /// Starts recording every step that reaches the file system, on every thread.
    pub(crate) fn start_recording(&self) {
        self.state().recorded = Some(Vec::new());
    }

    /// Stops recording and returns the steps recorded.
    pub(crate) fn take_recording(&self) -> Vec<Op> {
        self.state().recorded.take().unwrap_or_default()
    }

    fn verdict(&self, name: &'static str) -> Verdict {
        let mut state = self.state();
        let Some(armed) = state.armed.as_mut() else {
            return Verdict::Go;
        };
        if armed
            .thread
            .is_some_and(|thread| thread != std::thread::current().id())
        {
            return Verdict::Go;
        }
        let number = armed.steps.len();
        armed.steps.push(name);
        match armed.inject {
            Some((at, injected)) if at == number => Verdict::Inject(injected, number),
            _ => Verdict::Go,
        }
    }

    fn record(&self, op: impl FnOnce() -> Op) {
        if let Some(recorded) = self.state().recorded.as_mut() {
            recorded.push(op());
        }
    }
}

fn ino(file: &File) -> u64 {
    file.metadata()
        .expect("stat a file the log holds open")
        .ino()
}

impl FaultIo {
    /// Runs one step: injects a fault if armed to, else performs it and records it.
    fn step<T>(
        &self,
        name: &'static str,
        perform: impl FnOnce() -> std::io::Result<T>,
        op: impl FnOnce(&T) -> Op,
    ) -> std::io::Result<T> {
        let Some(faults) = &self.faults else {
            return perform();
        };
        match faults.verdict(name) {
            Verdict::Go => {}
            Verdict::Inject(Injected::Fail, number) => {
                let message = format!("injected failure of step {number} ({name})");
                return Err(std::io::Error::other(message));
            }
            Verdict::Inject(Injected::Panic, number) => {
                panic!("injected panic at step {number} ({name})")
            }
        }
        let _order = faults.order.lock().unwrap_or_else(|p| p.into_inner());
        let value = perform()?;
        faults.record(|| op(&value));
        Ok(value)
    }
}

impl Io for FaultIo {
    fn write_at(&self, file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        self.step(
            "write",
            || FileIo.write_at(file, bytes, offset),
            |()| Op::Write {
                ino: ino(file),
                offset,
                bytes: bytes.to_vec(),
            },
        )
    }

    fn write_vectored_at(
        &self,
        file: &File,
        slices: &mut [std::io::IoSlice<'_>],
        offset: u64,
    ) -> std::io::Result<()> {
        // Copied before the write: writing advances (empties) the slices.
        let bytes: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
        self.step(
            "write",
            || FileIo.write_vectored_at(file, slices, offset),
            |()| Op::Write {
                ino: ino(file),
                offset,
                bytes,
            },
        )
    }

    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        self.step(
            "sync",
            || FileIo.sync_data(file),
            |()| Op::Sync { ino: ino(file) },
        )
    }

    fn sync_all(&self, file: &File) -> std::io::Result<()> {
        self.step(
            "sync",
            || FileIo.sync_all(file),
            |()| Op::Sync { ino: ino(file) },
        )
    }

    fn create(&self, path: &Path) -> std::io::Result<File> {
        self.step(
            "create",
            || FileIo.create(path),
            |file| Op::Create {
                path: path.to_path_buf(),
                ino: ino(file),
            },
        )
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.step(
            "rename",
            || FileIo.rename(from, to),
            |()| Op::Rename {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            },
        )
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.step(
            "remove",
            || FileIo.remove_file(path),
            |()| Op::Remove {
                path: path.to_path_buf(),
            },
        )
    }

    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        self.step(
            "create directory",
            || FileIo.create_dir(path),
            |()| Op::CreateDir {
                path: path.to_path_buf(),
            },
        )
    }

    fn sync_dir(&self, dir: &File) -> std::io::Result<()> {
        self.step(
            "sync directory",
            || FileIo.sync_dir(dir),
            |()| Op::SyncDir { ino: ino(dir) },
        )
    }
}

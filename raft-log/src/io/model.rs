//! A model of what a crash leaves on disk, replayed from the steps `FaultIo` recorded, for
//! the crash tests of every step of every operation.
//!
//! The model, per the contract of [`Io`](super::Io):
//! - a file's bytes written since its last sync reach the disk in any subset of 512-byte
//!   sectors (the page cache writes pages back in any order, a disk writes sectors
//!   atomically); synced bytes are on disk;
//! - name changes (create, rename, remove) since the directory's last sync reach the disk as
//!   a prefix, in order (journaling file systems commit them in order);
//! - files are told apart by inode number, so a rename keeps a file's pending bytes with it;
//!   an inode number that a new file reuses after a deletion names a new file (the deleted
//!   one may still be on disk under its old name, if the deletion was not synced).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::fault::Op;

/// The unit a disk writes atomically.
pub(crate) const SECTOR_BYTES: usize = 512;

/// The files of a log directory, by name.
pub(crate) type Image = BTreeMap<String, Vec<u8>>;

/// Which of the pending sectors (by position in a list of them) a crash image keeps.
type Keep = Box<dyn Fn(usize) -> bool>;

/// One file: its bytes on disk and as the page cache holds them.
#[derive(Clone, Debug, Default)]
struct FileState {
    durable: Vec<u8>,
    now: Vec<u8>,
    /// Sectors written since the last sync.
    pending: BTreeSet<usize>,
}

/// A name change not yet made durable by a directory sync.
#[derive(Clone, Debug)]
enum NameOp {
    Link(String, FileId),
    Rename(String, String),
    Remove(String),
}

/// A file of the model: inode numbers are reused, these are not.
type FileId = usize;

/// One directory as a crash would find it, after the steps applied so far.
#[derive(Clone, Debug)]
pub(crate) struct Disk {
    dir: PathBuf,
    dir_ino: u64,
    durable_names: BTreeMap<String, FileId>,
    names: BTreeMap<String, FileId>,
    pending_names: Vec<NameOp>,
    files: Vec<FileState>,
    /// The file each inode number stands for now.
    inodes: HashMap<u64, FileId>,
}

impl Disk {
    /// The directory `dir` as it is now, all of it taken as durable.
    pub(crate) fn load(dir: &Path) -> Disk {
        let dir_ino = std::fs::metadata(dir)
            .expect("stat the log directory")
            .ino();
        let mut disk = Disk {
            dir: dir.to_path_buf(),
            dir_ino,
            durable_names: BTreeMap::new(),
            names: BTreeMap::new(),
            pending_names: Vec::new(),
            files: Vec::new(),
            inodes: HashMap::new(),
        };
        for item in std::fs::read_dir(dir).expect("list the log directory") {
            let item = item.expect("list the log directory");
            let name = item.file_name().to_string_lossy().into_owned();
            let ino = item.metadata().expect("stat").ino();
            let bytes = std::fs::read(item.path()).expect("read");
            disk.names.insert(name, disk.files.len());
            disk.inodes.insert(ino, disk.files.len());
            disk.files.push(FileState {
                durable: bytes.clone(),
                now: bytes,
                pending: BTreeSet::new(),
            });
        }
        disk.durable_names = disk.names.clone();
        disk
    }

    /// The name of `path` in the modelled directory, if it is there.
    fn name_of(&self, path: &Path) -> Option<String> {
        (path.parent() == Some(&self.dir))
            .then(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .flatten()
    }

    fn file(&mut self, ino: u64) -> &mut FileState {
        let id = *self
            .inodes
            .get(&ino)
            .unwrap_or_else(|| panic!("a step on inode {ino}, which the model does not know"));
        &mut self.files[id]
    }

    /// Applies one recorded step.
    pub(crate) fn apply(&mut self, op: &Op) {
        match op {
            Op::Write { ino, offset, bytes } => {
                let file = self.file(*ino);
                let (from, to) = (*offset as usize, *offset as usize + bytes.len());
                if file.now.len() < to {
                    file.now.resize(to, 0);
                }
                file.now[from..to].copy_from_slice(bytes);
                if to > from {
                    file.pending
                        .extend(from / SECTOR_BYTES..=(to - 1) / SECTOR_BYTES);
                }
            }
            Op::Sync { ino } => {
                let file = self.file(*ino);
                file.durable = file.now.clone();
                file.pending.clear();
            }
            Op::Create { path, ino } => {
                let Some(name) = self.name_of(path) else {
                    return;
                };
                let existing = self.names.get(&name).copied();
                let id = match existing {
                    // Creating an existing file truncates it.
                    Some(id) if self.inodes.get(ino) == Some(&id) => {
                        let file = &mut self.files[id];
                        file.pending
                            .extend(0..file.now.len().div_ceil(SECTOR_BYTES));
                        file.now.clear();
                        id
                    }
                    _ => {
                        self.files.push(FileState::default());
                        self.inodes.insert(*ino, self.files.len() - 1);
                        self.files.len() - 1
                    }
                };
                self.names.insert(name.clone(), id);
                self.pending_names.push(NameOp::Link(name, id));
            }
            Op::Rename { from, to } => {
                let (Some(from), Some(to)) = (self.name_of(from), self.name_of(to)) else {
                    panic!("a rename into or out of the log directory: {from:?} -> {to:?}");
                };
                let id = self.names.remove(&from).expect("renamed file exists");
                let replaced = self.names.insert(to.clone(), id);
                self.pending_names.push(NameOp::Rename(from, to));
                self.forget_inode_if_unnamed(replaced);
            }
            Op::Remove { path } => {
                if let Some(name) = self.name_of(path) {
                    let removed = self.names.remove(&name);
                    self.pending_names.push(NameOp::Remove(name));
                    self.forget_inode_if_unnamed(removed);
                }
            }
            Op::CreateDir { .. } => {}
            Op::SyncDir { ino } => {
                if *ino == self.dir_ino {
                    self.durable_names = self.names.clone();
                    self.pending_names.clear();
                }
            }
        }
    }

    /// Once a file has no name left its inode number may be reused: a file created later with
    /// that number is another file. (Nothing writes a file after deleting it.)
    fn forget_inode_if_unnamed(&mut self, id: Option<FileId>) {
        if let Some(id) = id.filter(|id| !self.names.values().any(|named| named == id)) {
            self.inodes.retain(|_, known| *known != id);
        }
    }

    /// The names on disk when the first `applied` pending name changes made it.
    fn names_after(&self, applied: usize) -> BTreeMap<String, FileId> {
        let mut names = self.durable_names.clone();
        for op in &self.pending_names[..applied] {
            match op {
                NameOp::Link(name, id) => {
                    names.insert(name.clone(), *id);
                }
                NameOp::Rename(from, to) => {
                    let id = names.remove(from).expect("renamed file exists");
                    names.insert(to.clone(), id);
                }
                NameOp::Remove(name) => {
                    names.remove(name);
                }
            }
        }
        names
    }

    /// Crash images: for every prefix of the pending name changes, several choices of which
    /// pending sectors reached the disk (none, all, a prefix, a suffix, every other one, a
    /// random subset), each with a description for failure messages. `seed` picks the
    /// prefix cut and the random subset.
    pub(crate) fn crash_images(&self, seed: u64) -> Vec<(String, Image)> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut images = Vec::new();
        for applied in 0..=self.pending_names.len() {
            let names = self.names_after(applied);
            let sectors: Vec<(FileId, usize)> = names
                .values()
                .flat_map(|&id| self.files[id].pending.iter().map(move |&s| (id, s)))
                .collect();
            let count = sectors.len();
            let cut = rng.gen_range(0..=count);
            let choices: [(&str, Keep); 5] = [
                ("no sector", Box::new(|_| false)),
                ("every sector", Box::new(|_| true)),
                ("sectors before the cut", Box::new(move |i| i < cut)),
                ("sectors from the cut", Box::new(move |i| i >= cut)),
                ("every other sector", Box::new(|i| i % 2 == 0)),
            ];
            let random: BTreeSet<usize> = (0..count).filter(|_| rng.gen_bool(0.5)).collect();
            let choices = choices.into_iter().chain(std::iter::once((
                "a random subset of sectors",
                Box::new(move |i: usize| random.contains(&i)) as Keep,
            )));
            for (what, keep) in choices {
                let kept: BTreeSet<(FileId, usize)> = sectors
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| keep(*i))
                    .map(|(_, sector)| *sector)
                    .collect();
                let image = self.image(&names, &kept);
                let description = format!(
                    "{applied} of {} pending name changes, {what} of {count} pending (cut {cut})",
                    self.pending_names.len()
                );
                images.push((description, image));
            }
        }
        images
    }

    fn image(&self, names: &BTreeMap<String, FileId>, kept: &BTreeSet<(FileId, usize)>) -> Image {
        let mut image = Image::new();
        for (name, id) in names {
            let file = &self.files[*id];
            let mut bytes = file.durable.clone();
            bytes.resize(file.now.len(), 0);
            for &sector in &file.pending {
                let from = sector * SECTOR_BYTES;
                let to = (from + SECTOR_BYTES).min(bytes.len());
                if from < to && kept.contains(&(*id, sector)) {
                    bytes[from..to].copy_from_slice(&file.now[from..to]);
                }
            }
            image.insert(name.clone(), bytes);
        }
        image
    }
}

/// Writes `image` into a new temporary directory.
pub(crate) fn restore(image: &Image) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, bytes) in image {
        std::fs::write(dir.path().join(name), bytes).expect("write image file");
    }
    dir
}

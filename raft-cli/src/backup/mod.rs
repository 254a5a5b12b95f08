//! Backup and restore, as `etcdctl snapshot save` and `snapshot restore` do them.
//!
//! - **Backup** (`raft backup FILE`, [`save`]): the client asks a member (the leader by
//!   default) to build a snapshot now ([`Request::BackupBegin`](crate::proto::Request)); the
//!   member opens it and answers with the snapshot's metadata and a session, then serves its
//!   bytes in order, [`serve::BACKUP_CHUNK_BYTES`] per request, from the file it opened (so
//!   the snapshot cannot be removed under the backup). A snapshot holds the state after its
//!   last entry, which the member had applied, so committed: the backup is a committed state
//!   at a known index and term. The client writes the [`format`] header and the data to a
//!   temporary file, checks the data's CRC32 against the snapshot's, syncs and renames it.
//! - **Restore** (`raft restore FILE --data-dir DIR --id N --peers ...`, [`restore`]):
//!   checks the whole file, then prepares a data directory from which node N of a new
//!   cluster (the voters of `--peers`) starts with exactly the backup's state; see
//!   [`restore`] for what it holds and why.
//!
//! The state machine's snapshot bytes are opaque here: a backup carries them with
//! raft-snapshot's metadata, and a restore hands them to the node's snapshot store.

pub mod format;
pub mod restore;
pub mod save;
pub mod serve;

//! Disk mode's files: the data directory (its lock and the node's persisted Raft id), the
//! Raft log journal with its group-committing writer thread, and snapshot files.
//!
//! Layout of `DIR`:
//! - `LOCK`: held (`flock`) for the life of the process, so two nodes never share a directory.
//! - `node-id`: this node's Raft id, written once, atomically; a restart keeps it.
//! - `raft-log`: the journal. `ORMJRNL1`, then frames `[len: u32 LE][crc: u32 LE][payload]`
//!   where `crc` is CRC-32 over the length bytes and the payload, and the payload is a
//!   protobuf `JournalRecord` (`proto/storage.proto`), then zeros: the file is grown 8 MiB
//!   at a time ahead of its end, so that appending never changes its size and a sync has
//!   only data to flush. Replaying the records in order
//!   rebuilds the log store; every record kind is an assignment (set an entry, delete a
//!   range, set the vote), so the last record touching a key decides it.
//! - `snapshot`: the latest snapshot. `ORMSNAP1`, then a frame holding a
//!   `SnapshotFileHeader`, then a frame holding the encoded `StateSnapshot`. Written to a
//!   temporary file, synced, then renamed over the old one: a crash leaves the old or the new
//!   snapshot, never a mix.
//!
//! Why a purpose-built journal rather than an embedded B-tree (redb): the Raft log is only
//! ever appended at the tail, truncated at the tail, and purged at the head, and it is read
//! back whole only at start. An append-only file does each append as one sequential write
//! plus one `fdatasync` shared by everything queued (group commit), and the in-memory copy
//! (`log_store::Inner`) serves every read. The journal is rewritten (compacted) when it has
//! grown to twice its live size.
//!
//! Crash safety: a frame whose length runs past the end of the file, or whose checksum does
//! not match while nothing valid follows it, is a torn tail (the process died mid-write,
//! before the sync that would have acknowledged it): it is cut off with a warning. A bad
//! frame followed by a valid one is corruption, not a torn write, and start-up fails naming
//! the file and offset.
//!
//! Files: `journal` (replay and the writer thread), `snapshot_file`, `frame` (the
//! checksummed frame both use); this module holds the data directory and the error type.

mod frame;
mod journal;
mod snapshot_file;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::NodeId;

pub use frame::frame;
pub use journal::{
    COMPACT_MIN_BYTES, Done, Journal, LiveState, Op, Replayed, SyncObserver, framed, replay_journal,
};
pub use snapshot_file::{decode_snapshot, encode_snapshot, read_snapshot, snapshot_prefix, write_snapshot};

/// Why disk storage could not be opened or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {dir} is in use by another process (its LOCK file is held); two nodes must never share one"
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// Data too large for the on-disk format (its frames record lengths in 32 bits).
    #[error("{what} is {bytes} bytes; the on-disk format holds at most 4 GiB per frame")]
    TooLarge {
        /// What was to be written.
        what: &'static str,
        /// Its size.
        bytes: u64,
    },
    /// A file's content is damaged (not a torn tail: that is repaired).
    #[error("{path} is corrupted at byte {offset}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The data directory of a disk-mode node, locked for as long as this value lives.
#[derive(Debug)]
pub struct DataDir {
    dir: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates (if needed) and locks `dir`.
    pub fn open(dir: &Path) -> Result<DataDir, DiskError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(DiskError::Locked { dir: dir.to_owned() }),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        Ok(DataDir {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The journal's path.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("raft-log")
    }

    /// The snapshot file's path.
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join("snapshot")
    }

    /// The persisted Raft id, or `fresh()` persisted now if this directory has none yet.
    pub fn node_id(&self, fresh: impl FnOnce() -> NodeId) -> Result<(NodeId, bool), DiskError> {
        let path = self.dir.join("node-id");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let id = text.trim().parse::<NodeId>().map_err(|e| DiskError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    problem: format!("`{}` is not a node id: {e}", text.trim()),
                })?;
                Ok((id, false))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = fresh();
                write_atomically(&path, format!("{id}\n").as_bytes())?;
                Ok((id, true))
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the new, never a mix.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(path)
}

pub(super) fn sync_dir(path: &Path) -> Result<(), DiskError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_is_locked_and_keeps_its_node_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(dir.path()).expect("open");
        let e = DataDir::open(dir.path()).expect_err("locked").to_string();
        assert!(e.contains("in use by another process"), "{e}");
        assert_eq!(first.node_id(|| 42).expect("id"), (42, true));
        assert_eq!(first.node_id(|| 7).expect("id"), (42, false));
        drop(first);
        let again = DataDir::open(dir.path()).expect("lock released with the process");
        assert_eq!(again.node_id(|| 7).expect("id"), (42, false));
    }
}

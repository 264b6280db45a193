//! The replicated state machine: student records keyed by id, plus what OpenRaft needs to
//! resume (last applied log id, last membership) and the current snapshot.
//!
//! Snapshots are the protobuf `StateSnapshot` message: compact, fast to encode, and the same
//! bytes whether they are installed locally or streamed to a peer.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};

use super::backup::{Backup, backup_meta, decode_students, encode_record, encode_students};
use super::disk::{self, DiskError};
use super::watch::{Change, Changes, WatchHub};
use crate::model::{Command, CommandResult, Record};
use crate::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// The records by id.
pub type Students = imbl::OrdMap<i64, Record>;

/// The applied state: what every replica agrees on up to `last_applied`.
#[derive(Debug, Default, Clone)]
pub struct StateMachineData {
    /// The last log id applied to `students`.
    pub last_applied: Option<LogId>,
    /// The last membership seen in the applied log.
    pub last_membership: StoredMembership,
    /// The records. A persistent (structurally shared) ordered map, so a snapshot or a
    /// backup takes a copy in O(1) under the lock instead of blocking `apply` while it
    /// copies every record (that copy stalled all writes for tens of milliseconds at a few
    /// hundred thousand records).
    pub students: Students,
}

impl StateMachineData {
    /// Applies one command of the entry at log index `revision`; deterministic, so every
    /// replica reaches the same outcome. The revision check happens here, in log order, so
    /// a conditional write is exactly as linearizable as any other. What it changed is
    /// appended to `changes`, for watchers.
    fn apply_command(&mut self, cmd: Command, revision: u64, changes: &mut Vec<Change>) -> CommandResult {
        match cmd {
            Command::Create(student) => match self.students.entry(student.id) {
                imbl::ordmap::Entry::Occupied(_) => CommandResult::AlreadyExists(student.id),
                imbl::ordmap::Entry::Vacant(slot) => {
                    let record = Record { student, revision };
                    slot.insert(record.clone());
                    changes.push(Change::Put(record.clone()));
                    CommandResult::Created(record)
                }
            },
            Command::Update { student, expected } => {
                let id = student.id;
                match self.students.get_mut(&id) {
                    Some(slot) if expected.is_some_and(|e| e != slot.revision) => {
                        CommandResult::RevisionMismatch {
                            id,
                            current: Some(slot.revision),
                        }
                    }
                    Some(slot) => {
                        *slot = Record { student, revision };
                        changes.push(Change::Put(slot.clone()));
                        CommandResult::Updated(slot.clone())
                    }
                    None if expected.is_some() => CommandResult::RevisionMismatch { id, current: None },
                    None => CommandResult::NotFound(id),
                }
            }
            Command::Delete { id, expected } => match (self.students.get(&id), expected) {
                (Some(r), Some(e)) if r.revision != e => CommandResult::RevisionMismatch {
                    id,
                    current: Some(r.revision),
                },
                (Some(_), _) => {
                    if let Some(gone) = self.students.remove(&id) {
                        changes.push(Change::Delete(gone));
                    }
                    CommandResult::Deleted(id)
                }
                (None, Some(_)) => CommandResult::RevisionMismatch { id, current: None },
                (None, None) => CommandResult::NotFound(id),
            },
            Command::Batch(cmds) => CommandResult::Batch(
                cmds.into_iter()
                    .map(|c| self.apply_command(c, revision, changes))
                    .collect(),
            ),
        }
    }
}

#[derive(Debug)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Shared {
    data: RwLock<StateMachineData>,
    current_snapshot: Mutex<Option<StoredSnapshot>>,
    /// Makes snapshot ids unique even when two snapshots cover the same log id.
    snapshot_seq: AtomicU64,
    /// Disk mode: the file every snapshot is written to before it counts as taken.
    snapshot_file: Option<PathBuf>,
    /// The log id the snapshot file covers; held while writing it, so a snapshot built
    /// concurrently with an install never replaces a newer one (the log is purged up to
    /// the newer one, and an older file would leave a gap after a restart).
    persisted: tokio::sync::Mutex<Option<LogId>>,
    /// The recent changes, for watchers.
    hub: Arc<WatchHub>,
}

/// The state machine store. Clones share state: the API keeps one to read records while
/// OpenRaft owns another to apply the log.
#[derive(Debug, Clone, Default)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl StateMachineStore {
    /// Disk mode: starts from the snapshot in `snapshot_file` if there is one (OpenRaft then
    /// re-applies the committed log after it), and persists every later snapshot there.
    pub fn open(snapshot_file: PathBuf) -> Result<StateMachineStore, DiskError> {
        let mut data = StateMachineData::default();
        let mut current = None;
        if let Some((meta, bytes)) = disk::read_snapshot(&snapshot_file)? {
            data.students = decode_students(&bytes).map_err(|e| DiskError::Corrupt {
                path: snapshot_file.clone(),
                offset: 0,
                problem: format!("undecodable records: {e}"),
            })?;
            data.last_applied = meta.last_log_id;
            data.last_membership = meta.last_membership.clone();
            tracing::info!(path = %snapshot_file.display(), snapshot = %meta.snapshot_id,
                records = data.students.len(), "loaded the snapshot");
            current = Some(StoredSnapshot { meta, data: bytes });
        }
        let hub = Arc::new(WatchHub::default());
        hub.reset(data.last_applied.map_or(0, |l| l.index));
        let persisted = current.as_ref().and_then(|c: &StoredSnapshot| c.meta.last_log_id);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                data: RwLock::new(data),
                current_snapshot: Mutex::new(current),
                snapshot_seq: AtomicU64::new(0),
                persisted: tokio::sync::Mutex::new(persisted),
                snapshot_file: Some(snapshot_file),
                hub,
            }),
        })
    }

    /// Disk mode: writes the snapshot to its file (off the async runtime) before it counts.
    async fn persist(&self, meta: &SnapshotMeta, bytes: &[u8]) -> Result<(), StorageError> {
        let Some(path) = self.shared.snapshot_file.clone() else {
            return Ok(());
        };
        let mut persisted = self.shared.persisted.lock().await;
        if *persisted > meta.last_log_id {
            tracing::info!(snapshot = %meta.snapshot_id, "a newer snapshot is already on disk; not writing this one");
            return Ok(());
        }
        let (meta2, bytes) = (meta.clone(), bytes.to_vec());
        let written = tokio::task::spawn_blocking(move || disk::write_snapshot(&path, &meta2, &bytes))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r.map_err(std::io::Error::other));
        written
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &e)))?;
        *persisted = meta.last_log_id;
        Ok(())
    }

    /// Makes `s` the current snapshot unless a newer one already is.
    fn offer_snapshot(&self, s: StoredSnapshot) {
        let mut slot = self.snapshot_slot();
        if slot
            .as_ref()
            .is_none_or(|cur| cur.meta.last_log_id <= s.meta.last_log_id)
        {
            *slot = Some(s);
        }
    }

    /// A consistent copy of the applied state, to be written out in snapshot-file form
    /// (the backup format) by [`Backup::chunks`]. Taking it is O(1) under the lock.
    pub fn backup(&self) -> Result<Backup, DiskError> {
        let (meta, students) = {
            let data = self.read();
            (backup_meta(&data), data.students.clone())
        };
        // The records' frame starts with their length and checksum: one encoding pass
        // computes both, a second produces the bytes as they are sent, so the encoded
        // records are never held whole (a backup of a big node would double its memory).
        let mut crc = crc32fast::Hasher::new();
        let mut data_len = 0;
        let mut buf = Vec::new();
        for s in students.values() {
            buf.clear();
            encode_record(s, &mut buf);
            crc.update(&buf);
            data_len += buf.len();
        }
        let prefix = disk::snapshot_prefix(&meta, data_len, &crc)?;
        let mut whole = crc32fast::Hasher::new();
        whole.update(&prefix);
        whole.combine(&crc);
        Ok(Backup {
            crc32: whole.finalize(),
            len: (prefix.len() + data_len) as u64,
            index: meta.last_log_id.map_or(0, |l| l.index),
            prefix,
            students,
        })
    }

    /// Read access to the applied state. Hold it briefly: applying waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, StateMachineData> {
        self.shared.data.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, StateMachineData> {
        self.shared.data.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot_slot(&self) -> std::sync::MutexGuard<'_, Option<StoredSnapshot>> {
        self.shared
            .current_snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks up one record in the applied state.
    pub fn get(&self, id: i64) -> Option<Record> {
        self.read().students.get(&id).cloned()
    }

    /// Up to `limit` records with ids greater than `after`, in id order, whether more
    /// follow, and the revision they were read at.
    pub fn list(&self, after: Option<i64>, limit: usize) -> (Vec<Record>, bool, u64) {
        let data = self.read();
        let revision = data.last_applied.map_or(0, |l| l.index);
        let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut iter = data.students.range((start, std::ops::Bound::Unbounded));
        let page: Vec<Record> = iter.by_ref().take(limit).map(|(_, s)| s.clone()).collect();
        let more = iter.next().is_some();
        (page, more, revision)
    }

    /// The change history that watch streams read.
    pub fn watch_hub(&self) -> &Arc<WatchHub> {
        &self.shared.hub
    }

    /// The store's revision: the last log index applied (0 before the first).
    pub fn revision(&self) -> u64 {
        self.read().last_applied.map_or(0, |l| l.index)
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.read().students.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs CPU-heavy work (encoding or decoding a whole snapshot) on the blocking pool.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| std::io::Error::other(format!("snapshot worker failed: {e}")))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        // An O(1) structural copy under the read lock, encoded outside it: applying goes on.
        let (last_applied, last_membership, students) = {
            let data = self.read();
            (
                data.last_applied,
                data.last_membership.clone(),
                data.students.clone(),
            )
        };
        let records = students.len();
        // Encoding is CPU-bound (tens of ms at 100k records): on a runtime thread it would
        // stall every request that thread serves (p99.9 of writes rose to ~40 ms).
        let bytes = off_runtime(move || encode_students(&students))
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, seq),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        // Persisted before OpenRaft learns of it: it purges the log up to it next.
        self.persist(&meta, &bytes).await?;
        self.offer_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        });
        tracing::info!(snapshot = %meta.snapshot_id, records, bytes = bytes.len(),
            took_ms = started.elapsed().as_millis() as u64, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let data = self.read();
        Ok((data.last_applied, data.last_membership.clone()))
    }

    #[tracing::instrument(name = "apply", skip_all)]
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Option<CommandResult>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut data = self.write();
        let entries = entries.into_iter();
        let mut results = Vec::with_capacity(entries.size_hint().0);
        let mut groups = Vec::new();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(cmd) => {
                    let revision = entry.log_id.index;
                    let mut changes = Vec::new();
                    let result = data.apply_command(cmd, revision, &mut changes);
                    if !changes.is_empty() {
                        groups.push(Changes { revision, changes });
                    }
                    Some(result)
                }
                EntryPayload::Membership(m) => {
                    data.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
            };
            results.push(result);
        }
        // Published under the data lock: a list never reports a revision whose changes a
        // watcher started from it could miss.
        if let Some(last) = data.last_applied {
            self.shared.hub.publish(groups, last.index);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let (students, bytes) = off_runtime(move || {
            let students = decode_students(&bytes).map_err(std::io::Error::other);
            students.map(|s| (s, bytes))
        })
        .await
        .and_then(|r| r)
        .map_err(|e| StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e)))?;
        tracing::info!(snapshot = %meta.snapshot_id, records = students.len(), "installing snapshot");
        self.persist(meta, &bytes).await?;
        {
            let mut data = self.write();
            data.last_applied = meta.last_log_id;
            data.last_membership = meta.last_membership.clone();
            data.students = students;
            self.shared.hub.reset(meta.last_log_id.map_or(0, |l| l.index));
        }
        self.offer_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshot_slot().as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;

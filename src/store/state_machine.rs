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
use crate::model::{Command, CommandResult, Student};
use crate::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// The records by id.
pub type Students = imbl::OrdMap<i64, Student>;

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
    /// Applies one command; deterministic, so every replica reaches the same outcome.
    fn apply_command(&mut self, cmd: Command) -> CommandResult {
        match cmd {
            Command::Create(s) => match self.students.entry(s.id) {
                imbl::ordmap::Entry::Occupied(_) => CommandResult::AlreadyExists(s.id),
                imbl::ordmap::Entry::Vacant(slot) => {
                    slot.insert(s.clone());
                    CommandResult::Created(s)
                }
            },
            Command::Update(s) => match self.students.get_mut(&s.id) {
                Some(slot) => {
                    *slot = s.clone();
                    CommandResult::Updated(s)
                }
                None => CommandResult::NotFound(s.id),
            },
            Command::Delete(id) => match self.students.remove(&id) {
                Some(_) => CommandResult::Deleted(id),
                None => CommandResult::NotFound(id),
            },
            Command::Batch(cmds) => {
                CommandResult::Batch(cmds.into_iter().map(|c| self.apply_command(c)).collect())
            }
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
        let persisted = current.as_ref().and_then(|c: &StoredSnapshot| c.meta.last_log_id);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                data: RwLock::new(data),
                current_snapshot: Mutex::new(current),
                snapshot_seq: AtomicU64::new(0),
                persisted: tokio::sync::Mutex::new(persisted),
                snapshot_file: Some(snapshot_file),
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
        Ok(Backup {
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
    pub fn get(&self, id: i64) -> Option<Student> {
        self.read().students.get(&id).cloned()
    }

    /// Up to `limit` records with ids greater than `after`, in id order, and whether more follow.
    pub fn list(&self, after: Option<i64>, limit: usize) -> (Vec<Student>, bool) {
        let data = self.read();
        let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut iter = data.students.range((start, std::ops::Bound::Unbounded));
        let page: Vec<Student> = iter.by_ref().take(limit).map(|(_, s)| s.clone()).collect();
        let more = iter.next().is_some();
        (page, more)
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
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(cmd) => Some(data.apply_command(cmd)),
                EntryPayload::Membership(m) => {
                    data.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
            };
            results.push(result);
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
mod tests {
    use super::*;
    use crate::store::read_backup;

    fn student(id: i64) -> Student {
        Student {
            id,
            name: format!("s{id}"),
            score: 50.0,
        }
    }

    #[test]
    fn commands_have_deterministic_outcomes() {
        let mut d = StateMachineData::default();
        assert_eq!(
            d.apply_command(Command::Create(student(1))),
            CommandResult::Created(student(1))
        );
        assert_eq!(
            d.apply_command(Command::Create(student(1))),
            CommandResult::AlreadyExists(1)
        );
        assert_eq!(
            d.apply_command(Command::Update(student(2))),
            CommandResult::NotFound(2)
        );
        assert_eq!(d.apply_command(Command::Delete(1)), CommandResult::Deleted(1));
        assert_eq!(d.apply_command(Command::Delete(1)), CommandResult::NotFound(1));
    }

    #[test]
    fn a_batch_applies_in_order_with_one_outcome_each() {
        let mut d = StateMachineData::default();
        let batch = Command::Batch(vec![
            Command::Create(student(1)),
            Command::Create(student(1)),
            Command::Delete(1),
            Command::Batch(vec![Command::Delete(1)]),
        ]);
        assert_eq!(
            d.apply_command(batch),
            CommandResult::Batch(vec![
                CommandResult::Created(student(1)),
                CommandResult::AlreadyExists(1),
                CommandResult::Deleted(1),
                CommandResult::Batch(vec![CommandResult::NotFound(1)]),
            ])
        );
        assert!(d.students.is_empty());
    }

    #[test]
    fn snapshot_encoding_round_trips() {
        let students: Students = (1..=100).map(|i| (i, student(i))).collect();
        let back = decode_students(&encode_students(&students)).expect("decodes");
        assert_eq!(back, students);
    }

    /// The streamed backup is byte for byte the snapshot file of the same state, whatever
    /// the chunk size, and reads back as the records it was taken from.
    #[test]
    fn a_streamed_backup_is_the_snapshot_file_of_its_state() {
        for n in [0, 1, 2_500] {
            let sm = StateMachineStore::default();
            let students: Students = (1..=n)
                .map(|i| {
                    (
                        i,
                        Student {
                            id: i,
                            name: format!("é{i}"),
                            score: i as f32 / 7.0,
                        },
                    )
                })
                .collect();
            sm.write().students = students.clone();
            let whole = disk::encode_snapshot(&backup_meta(&sm.read()), &encode_students(&students))
                .expect("small enough");
            for chunk in [1, 100, 64 << 10] {
                let backup = sm.backup().expect("small enough");
                assert_eq!((backup.records(), backup.len), (n as usize, whole.len() as u64));
                // Writes after the copy do not reach it.
                sm.write().students.insert(-1, student(-1));
                let streamed: Vec<u8> = backup.chunks(chunk).flatten().collect();
                sm.write().students.remove(&-1);
                assert!(streamed == whole, "{n} records, chunks of {chunk}: bytes differ");
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("backup");
            std::fs::write(
                &path,
                sm.backup()
                    .expect("small enough")
                    .chunks(1000)
                    .flatten()
                    .collect::<Vec<u8>>(),
            )
            .expect("write");
            let back = read_backup(&path).expect("reads back");
            assert_eq!(back, students.values().cloned().collect::<Vec<_>>());
        }
    }

    #[test]
    fn list_pages_in_id_order() {
        let sm = StateMachineStore::default();
        sm.write().students = (1..=5).map(|i| (i * 10, student(i * 10))).collect();
        let (page, more) = sm.list(None, 2);
        assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), vec![10, 20]);
        assert!(more);
        let (page, more) = sm.list(Some(20), 10);
        assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), vec![30, 40, 50]);
        assert!(!more);
    }
}

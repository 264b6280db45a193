//! The Raft log store: entries by index, the vote and the committed log id, held in memory
//! and, in disk mode, journalled to `DIR/raft-log` (see [`super::disk`]).
//!
//! Every change is a [`LogOp`] applied to the in-memory copy; in disk mode the same op is
//! queued to the journal in the same critical section, so the journal's order is the
//! memory's order. Reads are always served from memory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageIOError};

use super::disk::{self, DiskError, Done, Journal, LiveState, Op, SyncObserver};
use crate::pb::MissingField;
use crate::pb::convert::{log_id_from_pb, log_id_to_pb};
use crate::pb::storage::{self as pb, journal_record};
use crate::{Entry, LogId, StorageError, TypeConfig, Vote};

/// One change to the log store: the unit both of the in-memory update and of the journal.
#[derive(Debug, Clone)]
enum LogOp {
    Append(Entry),
    TruncateFrom(u64),
    PurgeUpto(LogId),
    Vote(Vote),
    Committed(Option<LogId>),
}

impl LogOp {
    fn to_record(&self) -> pb::JournalRecord {
        use journal_record::Op;
        let op = match self {
            LogOp::Append(e) => Op::Append(e.clone().into()),
            LogOp::TruncateFrom(i) => Op::TruncateFrom(*i),
            LogOp::PurgeUpto(id) => Op::PurgeUpto((*id).into()),
            LogOp::Vote(v) => Op::Vote((*v).into()),
            LogOp::Committed(c) => Op::Committed(pb::Committed {
                log_id: log_id_to_pb(*c),
            }),
        };
        pb::JournalRecord { op: Some(op) }
    }

    fn from_record(r: pb::JournalRecord) -> Result<LogOp, MissingField> {
        use journal_record::Op;
        Ok(match r.op.ok_or(MissingField("journal_record.op"))? {
            Op::Append(e) => LogOp::Append(e.try_into()?),
            Op::TruncateFrom(i) => LogOp::TruncateFrom(i),
            Op::PurgeUpto(id) => LogOp::PurgeUpto(id.try_into()?),
            Op::Vote(v) => LogOp::Vote(v.try_into()?),
            Op::Committed(c) => LogOp::Committed(log_id_from_pb(c.log_id)?),
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    last_purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
    committed: Option<LogId>,
    vote: Option<Vote>,
    /// Sequence number of the last op applied (disk mode: of the last op journalled).
    seq: u64,
}

impl Inner {
    fn apply(&mut self, op: LogOp) {
        self.seq += 1;
        match op {
            LogOp::Append(entry) => {
                self.log.insert(entry.log_id.index, entry);
            }
            LogOp::TruncateFrom(index) => {
                self.log.split_off(&index);
            }
            LogOp::PurgeUpto(log_id) => {
                if self.last_purged < Some(log_id) {
                    self.last_purged = Some(log_id);
                }
                // Checked: an index of u64::MAX (a damaged journal, a forged snapshot)
                // purges everything rather than overflowing.
                match log_id.index.checked_add(1) {
                    Some(next) => self.log = self.log.split_off(&next),
                    None => self.log.clear(),
                }
            }
            LogOp::Vote(v) => self.vote = Some(v),
            LogOp::Committed(c) => self.committed = c,
        }
    }

    /// The whole state as journal records: what a compacted journal holds.
    fn live(&self) -> Result<LiveState, DiskError> {
        let ops = (self.vote.map(LogOp::Vote).into_iter())
            .chain([LogOp::Committed(self.committed)])
            .chain(self.last_purged.map(LogOp::PurgeUpto))
            .chain(self.log.values().map(|e| LogOp::Append(e.clone())));
        let mut framed = Vec::new();
        for op in ops {
            framed.extend_from_slice(&disk::framed(&op.to_record())?);
        }
        Ok(LiveState {
            seq: self.seq,
            framed,
        })
    }
}

/// The Raft log. Clones share the same log (the clone is the log reader).
#[derive(Debug, Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// Disk mode: where every op is also journalled.
    journal: Option<Journal>,
}

impl LogStore {
    /// The id of the last entry appended (or purged, when the log is empty): what a pre-vote
    /// compares a candidate's log with. OpenRaft keeps its own copy but does not expose it.
    pub fn last_log_id(&self) -> Option<LogId> {
        let inner = self.lock();
        inner
            .log
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(inner.last_purged)
    }

    /// The lowest index at which one of `ids` names a different entry than the one this
    /// log holds there: where OpenRaft would truncate to accept them. Indexes this log
    /// does not hold (past its end, or purged into a snapshot) conflict with nothing.
    pub fn first_conflict(&self, ids: impl IntoIterator<Item = LogId>) -> Option<u64> {
        let inner = self.lock();
        ids.into_iter()
            .filter(|id| {
                let held = inner
                    .log
                    .get(&id.index)
                    .map(|e| e.log_id)
                    .or(inner.last_purged.filter(|p| p.index == id.index));
                held.is_some_and(|held| held != *id)
            })
            .map(|id| id.index)
            .min()
    }

    /// Disk mode: replays the journal at `path` (cutting off a torn tail) and starts its
    /// writer. `observer` hears about every group commit.
    pub fn open(path: &Path, observer: impl SyncObserver) -> Result<LogStore, DiskError> {
        Self::open_compacting_at(path, observer, disk::COMPACT_MIN_BYTES)
    }

    fn open_compacting_at(
        path: &Path,
        observer: impl SyncObserver,
        compact_min: u64,
    ) -> Result<LogStore, DiskError> {
        let replayed = disk::replay_journal(path)?;
        let mut inner = Inner::default();
        let records = replayed.records.len();
        for (i, record) in replayed.records.into_iter().enumerate() {
            let op = LogOp::from_record(record).map_err(|e| DiskError::Corrupt {
                path: path.to_owned(),
                offset: 0,
                problem: format!("record {i}: {e}"),
            })?;
            inner.apply(op);
        }
        tracing::info!(path = %path.display(), records, entries = inner.log.len(),
            last_purged = ?inner.last_purged, committed = ?inner.committed, vote = ?inner.vote,
            "replayed the Raft log journal");
        let inner = Arc::new(Mutex::new(inner));
        let live = {
            let inner = inner.clone();
            move || lock(&inner).live()
        };
        let journal = Journal::start(path.to_owned(), replayed.valid_len, compact_min, live, observer)?;
        Ok(LogStore {
            inner,
            journal: Some(journal),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Applies `op` in memory and, in disk mode, queues it to the journal (waiting for
    /// room in its bounded queue first); `done` hears when it is durable (at once in
    /// memory mode). A record too large for the journal's format is refused before it is
    /// applied; OpenRaft then stops this node, as on any write error.
    async fn change(&self, op: LogOp, done: Done) -> Result<(), DiskError> {
        match &self.journal {
            Some(journal) => {
                let framed = disk::framed(&op.to_record())?;
                // OpenRaft calls the log store one call at a time, so waiting here cannot
                // reorder ops: the room is taken before the lock that fixes the order.
                let room = journal.room(framed.len()).await;
                let mut inner = self.lock();
                inner.apply(op);
                // Queued under the lock, so the journal's order is the order of `seq`.
                journal.send(
                    Op {
                        seq: inner.seq,
                        framed,
                        done,
                    },
                    room,
                );
            }
            None => {
                self.lock().apply(op);
                // Memory is as durable as this mode gets: done once applied.
                done.complete(&Ok(()));
            }
        }
        Ok(())
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding this lock leaves the in-memory copy in an unknown state; keep
    // going with it so the process can still shut down cleanly (disk mode re-reads the
    // journal on the next start).
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.lock();
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last = inner.log.last_key_value().map(|(_, e)| e.log_id);
        let last_purged = inner.last_purged;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // The vote must be durable before this returns: a node that forgets its vote after a
        // crash can vote twice in one term.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.change(LogOp::Vote(*vote), Done::Reply(tx))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageError::from(StorageIOError::write_vote(&e))),
            Err(_) => Err(StorageError::from(StorageIOError::write_vote(
                &std::io::Error::other("journal writer stopped"),
            ))),
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Need not be synced at once: losing it only means re-applying from the snapshot.
        self.change(LogOp::Committed(committed), Done::Nobody)
            .await
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut entries = entries.into_iter();
        let Some(mut entry) = entries.next() else {
            // No entries: nothing to flush.
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let write_err = |log_id| move |e: DiskError| StorageIOError::write_log_entry(log_id, &e);
        for next in entries {
            let log_id = entry.log_id;
            self.change(LogOp::Append(entry), Done::Nobody)
                .await
                .map_err(write_err(log_id))?;
            entry = next;
        }
        // The journal syncs in order: once the last entry is durable, all are.
        let log_id = entry.log_id;
        self.change(LogOp::Append(entry), Done::Flushed(callback))
            .await
            .map_err(write_err(log_id))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Not synced at once: a crash before the next sync leaves the conflicting entries in
        // place, as if the truncating AppendEntries had never arrived; nothing was
        // acknowledged on top of them yet.
        self.change(LogOp::TruncateFrom(log_id.index), Done::Nobody)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        debug_assert!(self.lock().last_purged <= Some(log_id));
        self.change(LogOp::PurgeUpto(log_id), Done::Nobody)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    #[tokio::test]
    async fn a_conflict_is_a_held_index_with_another_entry() {
        let store = LogStore::default();
        let log_id = |term, index| openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index);
        for i in 1..=5 {
            store
                .change(
                    LogOp::Append(Entry {
                        log_id: log_id(2, i),
                        payload: openraft::EntryPayload::Blank,
                    }),
                    Done::Nobody,
                )
                .await
                .expect("small record");
        }
        store
            .change(LogOp::PurgeUpto(log_id(1, 2)), Done::Nobody)
            .await
            .expect("small record");
        assert_eq!(
            store.first_conflict([log_id(2, 3), log_id(2, 4)]),
            None,
            "the same entries"
        );
        assert_eq!(
            store.first_conflict([log_id(9, 7), log_id(9, 6)]),
            None,
            "past the end"
        );
        assert_eq!(store.first_conflict([log_id(9, 1)]), None, "purged: not held");
        assert_eq!(store.first_conflict([log_id(9, 2)]), Some(2), "the purge point");
        assert_eq!(
            store.first_conflict([log_id(9, 5), log_id(9, 4), log_id(2, 3)]),
            Some(4)
        );
    }

    #[test]
    fn purging_up_to_the_largest_index_empties_the_log_instead_of_overflowing() {
        let mut inner = Inner::default();
        let log_id = |index| openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
        inner.apply(LogOp::Append(Entry {
            log_id: log_id(5),
            payload: openraft::EntryPayload::Blank,
        }));
        inner.apply(LogOp::PurgeUpto(log_id(u64::MAX)));
        assert!(inner.log.is_empty());
        assert_eq!(inner.last_purged, Some(log_id(u64::MAX)));
    }
    use crate::model::{Command, Student};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Command::Create(Student {
                id: index as i64,
                name: "x".repeat(100),
                score: 1.0,
            })),
        }
    }

    /// Applies `op` and waits until it is durable.
    async fn durable(store: &LogStore, op: LogOp) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        store.change(op, Done::Reply(tx)).await.expect("small record");
        rx.await.expect("writer answers").expect("synced");
    }

    fn state(store: &LogStore) -> (Option<LogId>, Vec<LogId>, Option<LogId>, Option<Vote>) {
        let inner = store.lock();
        (
            inner.last_purged,
            inner.log.values().map(|e| e.log_id).collect(),
            inner.committed,
            inner.vote,
        )
    }

    /// Appends, truncations, purges, votes and commits, with the journal compacted many
    /// times along the way: reopening the journal gives back exactly the same log store.
    #[tokio::test]
    async fn a_reopened_journal_is_the_same_log_store_across_compactions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft-log");
        let store = LogStore::open_compacting_at(&path, (), 8 << 10).expect("open");
        for i in 1..=300u64 {
            store
                .change(LogOp::Append(entry(1, i)), Done::Nobody)
                .await
                .expect("small record");
            if i % 50 == 0 {
                store
                    .change(LogOp::TruncateFrom(i - 10), Done::Nobody)
                    .await
                    .expect("small record");
                for j in i - 10..=i {
                    store
                        .change(LogOp::Append(entry(2, j)), Done::Nobody)
                        .await
                        .expect("small record");
                }
                store
                    .change(LogOp::PurgeUpto(entry(1, i - 40).log_id), Done::Nobody)
                    .await
                    .expect("small record");
                // Waiting lets the writer take the next ops as a new group, after which it
                // may compact.
                durable(&store, LogOp::Committed(Some(entry(2, i - 5).log_id))).await;
            }
        }
        durable(&store, LogOp::Vote(Vote::new(2, 1))).await;
        // The writer compacts after answering a group; one more group orders us after that.
        durable(&store, LogOp::Vote(Vote::new(2, 1))).await;
        let before = state(&store);
        // The records' length (the file itself runs on into preallocated zeros).
        let compacted = disk::replay_journal(&path).expect("replays").valid_len;
        assert!(
            compacted < 300 * 150,
            "the journal was compacted: {compacted} bytes"
        );
        drop(store);
        let again = LogStore::open_compacting_at(&path, (), 8 << 10).expect("reopen");
        assert_eq!(state(&again), before);
        assert_eq!(before.1.len(), 300 - 260);
    }
}

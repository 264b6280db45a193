//! The Raft log journal: replaying it at start (cutting off a torn tail) and the writer
//! thread that appends, group-commits with one `fdatasync`, and compacts it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use openraft::storage::LogFlushed;
use prost::Message;

use super::frame::{FRAME_HEADER, Read, frame, read_frame};
use super::{DiskError, io_err, write_atomically};
use crate::TypeConfig;
use crate::pb::storage;

const JOURNAL_MAGIC: &[u8; 8] = b"ORMJRNL1";
/// The journal is compacted once it is this large and twice its size after the last compaction.
pub const COMPACT_MIN_BYTES: u64 = 64 << 20;
/// The journal file is grown (with zeros, synced) this much ahead of its end, so that an
/// append's `fdatasync` has only data to flush: a write that grows a file also changes its
/// size and extents, and syncing that metadata costs about half again as much here.
const PREALLOCATE_BYTES: u64 = 8 << 20;

/// The most bytes of records queued for the writer at once. A sender waits for room
/// beyond it (back-pressure on OpenRaft's appends) instead of growing memory while a slow
/// disk syncs; a single record larger than this is sent on its own.
pub const QUEUE_BYTES: usize = 64 << 20;

/// The journal's records read at start, and the length of its valid prefix.
#[derive(Debug)]
pub struct Replayed {
    /// The records, in order.
    pub records: Vec<storage::JournalRecord>,
    /// Bytes of the file that hold valid frames (the rest was a torn tail, now cut off).
    pub valid_len: u64,
}

/// Reads the journal at `path` (creating it if missing), cutting off a torn tail.
pub fn replay_journal(path: &Path) -> Result<Replayed, DiskError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_atomically(path, JOURNAL_MAGIC)?;
            return Ok(Replayed {
                records: Vec::new(),
                valid_len: JOURNAL_MAGIC.len() as u64,
            });
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |offset: usize, problem: String| DiskError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        problem,
    };
    if bytes.len() < JOURNAL_MAGIC.len() {
        // Created but never completely written: the atomic create makes this a foreign file.
        return Err(corrupt(0, "too short to be a journal".into()));
    }
    if &bytes[..JOURNAL_MAGIC.len()] != JOURNAL_MAGIC {
        return Err(corrupt(0, "not an openraft-memory journal (bad magic)".into()));
    }
    let mut records = Vec::new();
    let mut at = JOURNAL_MAGIC.len();
    while at < bytes.len() {
        match read_frame(&bytes[at..]) {
            Read::Frame(payload) => {
                let record = storage::JournalRecord::decode(payload)
                    .map_err(|e| corrupt(at, format!("undecodable record: {e}")))?;
                records.push(record);
                at += FRAME_HEADER + payload.len();
            }
            Read::Short => break,
            Read::BadCrc => {
                // A torn write is the last thing in the file; anything valid after the bad
                // frame means the damage is in the middle, and guessing would serve bad data.
                let n = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
                let next = at + FRAME_HEADER + n;
                if next < bytes.len() && matches!(read_frame(&bytes[next..]), Read::Frame(_)) {
                    return Err(corrupt(
                        at,
                        "checksum mismatch in a record followed by valid records".into(),
                    ));
                }
                break;
            }
        }
    }
    // Zeros after the last frame are the preallocated, never written part of the file.
    if at < bytes.len() && bytes[at..].iter().any(|b| *b != 0) {
        tracing::warn!(path = %path.display(), offset = at, dropped_bytes = bytes.len() - at,
            "journal ends in a torn write (a crash before its sync): cutting it off");
        let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
        f.set_len(at as u64).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    Ok(Replayed {
        records,
        valid_len: at as u64,
    })
}

/// Who to tell when a write is durable.
pub enum Done {
    /// Nobody: a later sync covers it (the journal is written in order).
    Nobody,
    /// OpenRaft, for appended entries.
    Flushed(LogFlushed<TypeConfig>),
    /// A caller waiting for it (the vote).
    Reply(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl Done {
    /// Tells the waiter `result` (memory mode: `Ok` at once).
    pub(crate) fn complete(self, result: &Result<(), String>) {
        let r = || result.clone().map_err(io::Error::other);
        match self {
            Done::Nobody => {}
            Done::Flushed(cb) => cb.log_io_completed(r()),
            Done::Reply(tx) => {
                let _ = tx.send(r());
            }
        }
    }
}

/// One queued journal write.
pub struct Op {
    /// The record's sequence number (see `Journal::compact_with`).
    pub seq: u64,
    /// The framed record.
    pub framed: Vec<u8>,
    /// Who to tell once it is synced.
    pub done: Done,
}

/// The whole live state as records, captured with its sequence number: what a compacted
/// journal holds.
pub struct LiveState {
    /// Every record written up to and including this sequence number is reflected.
    pub seq: u64,
    /// The framed records.
    pub framed: Vec<u8>,
}

/// Sync statistics the writer thread reports, for metrics.
pub trait SyncObserver: Send + 'static {
    /// One group commit: how many records shared the sync, and how long write + sync took.
    fn synced(&self, records: usize, seconds: f64);
}

impl SyncObserver for () {
    fn synced(&self, _: usize, _: f64) {}
}

/// The journal's writer: a thread that takes everything queued, writes it with one
/// `write` and one `fdatasync` (group commit), then tells each waiter.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<Op>,
    queue: Queue,
}

/// The bytes the writer has not taken yet, bounded by a semaphore: senders take permits
/// for a record's size, the writer gives them back once it has written it.
#[derive(Debug, Clone)]
struct Queue {
    room: Arc<tokio::sync::Semaphore>,
    limit: usize,
}

impl Queue {
    /// The permits a record of `len` bytes takes (a record over the limit takes it all).
    fn cost(&self, len: usize) -> u32 {
        len.clamp(1, self.limit) as u32
    }
}

/// Room taken in the journal's queue for one record; [`Journal::send`] consumes it.
#[must_use = "room is given back only when the record it was taken for is written"]
#[derive(Debug)]
pub struct Room(());

impl Journal {
    /// Starts the writer for the journal at `path` (already replayed, `len` bytes long).
    /// `live` captures the whole state for compaction, once the journal has grown past
    /// `compact_min` bytes and twice its size after the last compaction.
    pub fn start(
        path: PathBuf,
        len: u64,
        compact_min: u64,
        live: impl Fn() -> Result<LiveState, DiskError> + Send + 'static,
        observer: impl SyncObserver,
    ) -> Result<Journal, DiskError> {
        Self::start_with_queue(path, len, compact_min, live, observer, QUEUE_BYTES)
    }

    /// [`Journal::start`] with at most `queue_bytes` of records waiting for the writer.
    pub fn start_with_queue(
        path: PathBuf,
        len: u64,
        compact_min: u64,
        live: impl Fn() -> Result<LiveState, DiskError> + Send + 'static,
        observer: impl SyncObserver,
        queue_bytes: usize,
    ) -> Result<Journal, DiskError> {
        let queue = Queue {
            room: Arc::new(tokio::sync::Semaphore::new(queue_bytes.max(1))),
            limit: queue_bytes.clamp(1, u32::MAX as usize),
        };
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let allocated = file.metadata().map_err(io_err(&path))?.len();
        let (tx, rx) = mpsc::channel::<Op>();
        let writer = Writer {
            path,
            file,
            len,
            allocated,
            compacted_len: len,
            compact_min,
            compacted_seq: 0,
            failed: None,
            queue: queue.clone(),
        };
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(rx, live, observer))
            .map_err(io_err(Path::new("journal-writer thread")))?;
        Ok(Journal { tx, queue })
    }

    /// Waits until the queue has room for a record of `len` bytes, and takes it.
    pub async fn room(&self, len: usize) -> Room {
        // The semaphore is never closed (were it, the send would fail and answer the
        // waiter). The permits are given back by the writer once it has written the record,
        // not on drop.
        if let Ok(permits) = self.queue.room.acquire_many(self.queue.cost(len)).await {
            permits.forget();
        }
        Room(())
    }

    /// [`Journal::room`] from a thread outside the async runtime.
    pub fn blocking_room(&self, len: usize) -> Room {
        futures::executor::block_on(self.room(len))
    }

    /// Queues a write, in the room taken for it. Ops are written in the order they are sent.
    pub fn send(&self, op: Op, _room: Room) {
        if let Err(mpsc::SendError(op)) = self.tx.send(op) {
            // Only when the writer thread is gone, which it never is while we hold `tx`.
            op.done.complete(&Err("journal writer stopped".into()));
        }
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    /// Where the next record goes: the end of the valid records.
    len: u64,
    /// The file's size: `len` plus zeros written ahead.
    allocated: u64,
    compacted_len: u64,
    compact_min: u64,
    /// Records up to this sequence number are in the file already (written by compaction).
    compacted_seq: u64,
    /// After a failed write the file's tail is unknown: every later write fails too, and
    /// OpenRaft stops this node rather than acknowledge anything on a broken log.
    failed: Option<String>,
    queue: Queue,
}

impl Writer {
    fn run(
        mut self,
        rx: mpsc::Receiver<Op>,
        live: impl Fn() -> Result<LiveState, DiskError>,
        observer: impl SyncObserver,
    ) {
        let mut buf = Vec::new();
        // Records written since the last sync (they ride with the next one).
        let mut unsynced = 0;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            buf.clear();
            for op in &batch {
                if op.seq > self.compacted_seq {
                    buf.extend_from_slice(&op.framed);
                }
            }
            // Only appends and votes wait for durability; commit points, truncations and
            // purges are written now and synced by the next sync (the file is synced as a
            // whole, in order), which halves the syncs of a busy node.
            let sync = batch.iter().any(|op| !matches!(op.done, Done::Nobody));
            unsynced += batch.len();
            let started = Instant::now();
            let result = self.write(&buf, sync);
            if sync {
                observer.synced(unsynced, started.elapsed().as_secs_f64());
                unsynced = 0;
            }
            let mut taken = 0usize;
            for op in batch {
                taken += self.queue.cost(op.framed.len()) as usize;
                op.done.complete(&result);
            }
            self.queue.room.add_permits(taken);
            let due = self.failed.is_none() && self.len > self.compact_min.max(self.compacted_len * 2);
            if due && let Err(e) = live().and_then(|live| self.compact(live)) {
                // The old journal is intact (the new one replaces it only by rename).
                tracing::error!(error = %e, "journal compaction failed; keeping the uncompacted journal");
            }
        }
    }

    fn write(&mut self, buf: &[u8], sync: bool) -> Result<(), String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self
            .preallocate(buf.len() as u64)
            .and_then(|_| self.file.write_all_at(buf, self.len))
            .and_then(|_| if sync { self.file.sync_data() } else { Ok(()) });
        match r {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let msg = format!("{}: {e}", self.path.display());
                tracing::error!(error = %msg, "journal write failed; this node stops accepting log writes");
                self.failed = Some(msg.clone());
                Err(msg)
            }
        }
    }

    /// Makes sure `more` bytes fit before the end of the file, growing it with zeros (and
    /// syncing the new size and extents once) if not.
    fn preallocate(&mut self, more: u64) -> io::Result<()> {
        if self.len + more <= self.allocated {
            return Ok(());
        }
        let target = self.len + more + PREALLOCATE_BYTES;
        let zeros = vec![0u8; 1 << 20];
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(zeros.len() as u64);
            self.file.write_all_at(&zeros[..n as usize], at)?;
            at += n;
        }
        self.file.sync_all()?;
        self.allocated = target;
        Ok(())
    }

    fn compact(&mut self, live: LiveState) -> Result<(), DiskError> {
        let started = Instant::now();
        let before = self.len;
        let mut bytes = Vec::with_capacity(JOURNAL_MAGIC.len() + live.framed.len());
        bytes.extend_from_slice(JOURNAL_MAGIC);
        bytes.extend_from_slice(&live.framed);
        write_atomically(&self.path, &bytes)?;
        // From here on the old handle points at the replaced file: without a new one, no
        // later write may be acknowledged.
        match OpenOptions::new().write(true).open(&self.path) {
            Ok(f) => self.file = f,
            Err(e) => {
                self.failed = Some(format!(
                    "{}: reopening after compaction: {e}",
                    self.path.display()
                ));
                return Err(io_err(&self.path)(e));
            }
        }
        self.len = bytes.len() as u64;
        self.allocated = self.len;
        self.compacted_len = self.len;
        self.compacted_seq = live.seq;
        tracing::info!(
            before_bytes = before,
            after_bytes = self.len,
            took_ms = started.elapsed().as_millis() as u64,
            "compacted the journal"
        );
        Ok(())
    }
}

/// Encodes a record and frames it (refused past 4 GiB).
pub fn framed(record: &storage::JournalRecord) -> Result<Vec<u8>, DiskError> {
    let payload = record.encode_to_vec();
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame(&payload, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::pb::storage::journal_record;

    fn record(i: u64) -> storage::JournalRecord {
        storage::JournalRecord {
            op: Some(journal_record::Op::TruncateFrom(i)),
        }
    }

    fn journal_with(path: &Path, n: u64) -> Vec<u8> {
        let mut bytes = JOURNAL_MAGIC.to_vec();
        for i in 0..n {
            bytes.extend_from_slice(&framed(&record(i)).expect("small record"));
        }
        fs::write(path, &bytes).expect("write journal");
        bytes
    }

    #[test]
    fn a_journal_replays_its_records_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft-log");
        let bytes = journal_with(&path, 5);
        let r = replay_journal(&path).expect("replays");
        assert_eq!(r.records, (0..5).map(record).collect::<Vec<_>>());
        assert_eq!(r.valid_len, bytes.len() as u64);
    }

    #[test]
    fn a_torn_tail_at_any_byte_is_cut_off_and_the_prefix_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft-log");
        let full = journal_with(&path, 4);
        let ends: Vec<usize> = {
            let mut at = JOURNAL_MAGIC.len();
            let mut ends = vec![at];
            while at < full.len() {
                let n = u32::from_le_bytes([full[at], full[at + 1], full[at + 2], full[at + 3]]) as usize;
                at += FRAME_HEADER + n;
                ends.push(at);
            }
            ends
        };
        for cut in JOURNAL_MAGIC.len()..full.len() {
            fs::write(&path, &full[..cut]).expect("write");
            let r = replay_journal(&path).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
            assert_eq!(r.records.len(), whole, "cut at {cut}");
            let kept = ends[whole];
            assert_eq!(r.valid_len, kept as u64, "cut at {cut}");
            assert_eq!(
                fs::metadata(&path).expect("stat").len(),
                kept as u64,
                "the torn bytes are gone"
            );
        }
        // A tail of zeros is the preallocated part: nothing torn, nothing cut.
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0u8; 64]);
        fs::write(&path, &zeros).expect("write");
        let r = replay_journal(&path).expect("replays");
        assert_eq!((r.records.len(), r.valid_len), (4, full.len() as u64));
        assert_eq!(fs::metadata(&path).expect("stat").len(), zeros.len() as u64);
    }

    #[test]
    fn damage_before_valid_records_is_corruption_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft-log");
        let mut bytes = journal_with(&path, 4);
        let last = bytes.len() - 1;
        bytes[JOURNAL_MAGIC.len() + FRAME_HEADER] ^= 0xff; // inside the first record
        fs::write(&path, &bytes).expect("write");
        let e = replay_journal(&path).expect_err("corrupt").to_string();
        assert!(
            e.contains("raft-log") && e.contains("byte 8") && e.contains("checksum"),
            "{e}"
        );
        // The same damage in the last record is indistinguishable from a torn write.
        let mut bytes = journal_with(&path, 4);
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        assert_eq!(replay_journal(&path).expect("torn tail").records.len(), 3);
    }

    /// Holds the writer inside its first `synced` until released.
    struct Gate {
        entered: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    }

    impl SyncObserver for Gate {
        fn synced(&self, _: usize, _: f64) {
            let _ = self.entered.send(());
            let _ = self.release.recv();
        }
    }

    #[tokio::test]
    async fn a_sender_waits_for_room_while_the_writer_is_stalled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft-log");
        let len = journal_with(&path, 0).len() as u64;
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let gate = Gate {
            entered: entered_tx,
            release: release_rx,
        };
        let rec = framed(&record(1)).expect("small record");
        let live = || {
            Ok(LiveState {
                seq: 0,
                framed: Vec::new(),
            })
        };
        let journal =
            Journal::start_with_queue(path, len, u64::MAX, live, gate, 2 * rec.len()).expect("start");
        // A reply makes the writer sync (and so call the observer) for each record.
        let op = |seq| Op {
            seq,
            framed: rec.clone(),
            done: Done::Reply(tokio::sync::oneshot::channel().0),
        };
        journal.send(op(1), journal.room(rec.len()).await);
        tokio::task::spawn_blocking(move || entered.recv())
            .await
            .expect("join")
            .expect("the writer syncs the first record");
        // The first record's room comes back only once its sync returns: one more fits.
        let room = journal
            .room(rec.len())
            .now_or_never()
            .expect("room for a second record");
        journal.send(op(2), room);
        let third = journal.room(rec.len());
        tokio::pin!(third);
        assert!(
            (&mut third).now_or_never().is_none(),
            "a full queue makes the sender wait"
        );
        release.send(()).expect("writer waits");
        release.send(()).expect("writer waits");
        let room = tokio::time::timeout(std::time::Duration::from_secs(10), third)
            .await
            .expect("room once the writer catches up");
        journal.send(op(3), room);
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft-log");
        fs::write(&path, b"hello, world").expect("write");
        let e = replay_journal(&path).expect_err("foreign").to_string();
        assert!(e.contains("bad magic"), "{e}");
    }
}

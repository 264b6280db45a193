//! The change history that watch streams read: what every applied entry did to the records,
//! grouped by revision (the entry's log index), in one bounded ring that all watchers share,
//! and [`Watcher`], one watcher's cursor into it.
//!
//! Watchers pull: the apply path only appends to the ring and bumps a revision counter, so
//! it never waits for a watcher and a watcher never holds more than the group it is
//! sending. A watcher that falls so far behind that the ring has dropped the next group it
//! needs is cut off ([`WatchError::FellBehind`]) instead of being buffered for; it resumes
//! from a fresh list, as an etcd client does after a compaction.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::Record;

/// Changes retained by default: about a megabyte of records.
pub const DEFAULT_HISTORY: usize = 10_000;

/// What one write did to one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Created or replaced: the record as it now is.
    Put(Record),
    /// Deleted: the record as it was until this revision.
    Delete(Record),
}

impl Change {
    /// The id of the record changed.
    pub fn id(&self) -> i64 {
        match self {
            Change::Put(r) | Change::Delete(r) => r.student.id,
        }
    }
}

/// The changes of one revision, in the order the entry's commands ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// The log index of the entry that made them.
    pub revision: u64,
    /// At least one change.
    pub changes: Vec<Change>,
}

/// What a watcher yields.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// The (matching) changes of one revision; revisions only increase.
    Changes(Arc<Changes>),
    /// Nothing the watcher asked for changed up to and including this revision: sent once
    /// the watcher has caught up, then whenever it has been idle for the progress interval.
    Progress(u64),
}

/// Why a watch cannot start or go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WatchError {
    /// The start revision is older than the history this node holds.
    #[error(
        "revision {requested} is compacted: this node's change history starts at revision {oldest}; \
         list the records again and watch from the list's revision + 1"
    )]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision a watch can start from.
        oldest: u64,
    },
    /// The watcher did not keep up: the history dropped changes it had not been sent yet.
    #[error(
        "this watcher fell behind: revision {next} was dropped from the change history (it now \
         starts at revision {oldest}) before the watcher read it; read faster, or list the records \
         again and watch from the list's revision + 1"
    )]
    FellBehind {
        /// The first revision the watcher had not been sent.
        next: u64,
        /// The oldest revision a watch can start from now.
        oldest: u64,
    },
    /// The node is shutting down: resume on another node from `next`.
    #[error("this node is shutting down; watch another node from revision {next}")]
    Closed {
        /// The first revision the watcher had not been sent.
        next: u64,
    },
}

#[derive(Debug)]
struct History {
    groups: VecDeque<Arc<Changes>>,
    /// Changes held in `groups`.
    held: usize,
    capacity: usize,
    /// Changes at revisions up to and including this one may no longer be held.
    compacted: u64,
    /// The last revision applied.
    current: u64,
}

/// Where a watcher's next revision stands in the history.
enum Step {
    Send(Arc<Changes>),
    CaughtUp(u64),
    Behind(u64),
}

impl History {
    fn step(&self, next: u64) -> Step {
        if next <= self.compacted {
            return Step::Behind(self.compacted + 1);
        }
        let at = self.groups.partition_point(|g| g.revision < next);
        match self.groups.get(at) {
            Some(g) => Step::Send(g.clone()),
            None => Step::CaughtUp(self.current),
        }
    }

    fn trim(&mut self) {
        // The newest group stays even when it alone is over capacity (a large batch).
        while self.held > self.capacity && self.groups.len() > 1 {
            if let Some(g) = self.groups.pop_front() {
                self.held -= g.changes.len();
                self.compacted = g.revision;
            }
        }
    }
}

/// The history and the signal that wakes watchers; one per state machine.
#[derive(Debug)]
pub struct WatchHub {
    /// Read by every woken watcher at each apply, written by apply: a read-write lock, so
    /// watchers do not queue behind each other (or make apply queue behind them all).
    history: RwLock<History>,
    applied: watch::Sender<u64>,
    closed: AtomicBool,
    watchers: AtomicUsize,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub {
            history: RwLock::new(History {
                groups: VecDeque::new(),
                held: 0,
                capacity: DEFAULT_HISTORY,
                compacted: 0,
                current: 0,
            }),
            applied: watch::channel(0).0,
            closed: AtomicBool::new(false),
            watchers: AtomicUsize::new(0),
        }
    }
}

impl WatchHub {
    fn history(&self) -> RwLockReadGuard<'_, History> {
        self.history.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn history_mut(&self) -> RwLockWriteGuard<'_, History> {
        self.history.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps at most `changes` changes (at least the newest revision's).
    pub fn set_capacity(&self, changes: usize) {
        let mut h = self.history_mut();
        h.capacity = changes;
        h.trim();
    }

    /// Appends the changes of applied entries (in revision order) and records `current` as
    /// the last revision applied.
    pub(super) fn publish(&self, groups: Vec<Changes>, current: u64) {
        {
            let mut h = self.history_mut();
            for g in groups {
                h.held += g.changes.len();
                h.groups.push_back(Arc::new(g));
            }
            h.current = current;
            h.trim();
        }
        self.applied.send_replace(current);
    }

    /// Forgets the history: the state now is a snapshot at `revision` (installed or loaded),
    /// whose individual changes are unknown. Watchers not yet past it are cut off.
    pub(super) fn reset(&self, revision: u64) {
        {
            let mut h = self.history_mut();
            h.groups.clear();
            h.held = 0;
            h.compacted = revision;
            h.current = revision;
        }
        self.applied.send_replace(revision);
    }

    /// Ends every watch (shutdown): each yields [`WatchError::Closed`] at its next step.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.applied.send_modify(|_| {});
    }

    /// Open watchers.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// The oldest revision a watch can start from, and the last applied.
    pub fn bounds(&self) -> (u64, u64) {
        let h = self.history();
        (h.compacted + 1, h.current)
    }

    /// A watcher of the changes from revision `from` on (0: from the next revision applied),
    /// of the record `id` only if given, with a progress event after `progress` idle.
    pub fn watch(
        self: &Arc<Self>,
        from: u64,
        id: Option<i64>,
        progress: Duration,
    ) -> Result<Watcher, WatchError> {
        let rx = self.applied.subscribe();
        let next = {
            let h = self.history();
            match from {
                0 => h.current + 1,
                from if from <= h.compacted => {
                    return Err(WatchError::Compacted {
                        requested: from,
                        oldest: h.compacted + 1,
                    });
                }
                from => from,
            }
        };
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Ok(Watcher {
            hub: self.clone(),
            rx,
            next,
            id,
            progress,
            announced: false,
            last_sent: Instant::now(),
        })
    }
}

/// One watcher's position in the history. Dropping it ends the watch.
#[derive(Debug)]
pub struct Watcher {
    hub: Arc<WatchHub>,
    rx: watch::Receiver<u64>,
    /// The first revision not yet considered.
    next: u64,
    id: Option<i64>,
    progress: Duration,
    /// Whether it has caught up once (and said so with a progress event).
    announced: bool,
    last_sent: Instant,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.hub.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Watcher {
    /// The first revision this watcher has not delivered: where a reconnect resumes.
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    /// The next event: waits for a change, or for the progress interval to pass.
    pub async fn next(&mut self) -> Result<WatchEvent, WatchError> {
        loop {
            // Marked seen before the history is read, so a publish after the read wakes us.
            self.rx.borrow_and_update();
            if self.hub.closed.load(Ordering::SeqCst) {
                return Err(WatchError::Closed { next: self.next });
            }
            let step = self.hub.history().step(self.next);
            match step {
                Step::Behind(oldest) => {
                    return Err(WatchError::FellBehind {
                        next: self.next,
                        oldest,
                    });
                }
                Step::Send(group) => {
                    self.next = group.revision + 1;
                    if let Some(group) = self.matching(group) {
                        self.last_sent = Instant::now();
                        return Ok(WatchEvent::Changes(group));
                    }
                }
                Step::CaughtUp(current) => {
                    // Revisions up to `current` held nothing (more) for this watcher.
                    self.next = self.next.max(current + 1);
                    if !self.announced {
                        self.announced = true;
                        self.last_sent = Instant::now();
                        return Ok(WatchEvent::Progress(current));
                    }
                    let due = self.last_sent + self.progress;
                    tokio::select! {
                        changed = self.rx.changed() => {
                            if changed.is_err() {
                                return Err(WatchError::Closed { next: self.next });
                            }
                        }
                        () = tokio::time::sleep_until(due) => {
                            self.last_sent = Instant::now();
                            return Ok(WatchEvent::Progress(self.next - 1));
                        }
                    }
                }
            }
        }
    }

    /// Resolves once this watcher can no longer go on from where it is: the history has
    /// dropped its next revision, or the node is closing. For a sender whose consumer is not
    /// reading: the watcher is cut off as soon as that happens, not when the consumer reads.
    pub async fn stopped(&mut self) -> WatchError {
        loop {
            self.rx.borrow_and_update();
            if self.hub.closed.load(Ordering::SeqCst) {
                return WatchError::Closed { next: self.next };
            }
            let compacted = self.hub.history().compacted;
            if self.next <= compacted {
                return WatchError::FellBehind {
                    next: self.next,
                    oldest: compacted + 1,
                };
            }
            if self.rx.changed().await.is_err() {
                return WatchError::Closed { next: self.next };
            }
        }
    }

    fn matching(&self, group: Arc<Changes>) -> Option<Arc<Changes>> {
        let Some(id) = self.id else {
            return Some(group);
        };
        let changes: Vec<Change> = group.changes.iter().filter(|c| c.id() == id).cloned().collect();
        (!changes.is_empty()).then(|| {
            Arc::new(Changes {
                revision: group.revision,
                changes,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Student;

    fn put(id: i64, revision: u64) -> Change {
        Change::Put(Record {
            student: Student {
                id,
                name: format!("s{id}"),
                score: 1.0,
            },
            revision,
        })
    }

    fn group(revision: u64, ids: &[i64]) -> Changes {
        Changes {
            revision,
            changes: ids.iter().map(|&id| put(id, revision)).collect(),
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    async fn expect_changes(w: &mut Watcher) -> Arc<Changes> {
        match w.next().await {
            Ok(WatchEvent::Changes(c)) => c,
            other => panic!("expected changes, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_watcher_gets_every_group_from_its_start_in_order_then_a_progress() {
        let hub = Arc::new(WatchHub::default());
        hub.publish(vec![group(2, &[1]), group(3, &[2, 3])], 4);
        let mut w = hub.watch(1, None, LONG).expect("watch");
        assert_eq!(expect_changes(&mut w).await.revision, 2);
        let c = expect_changes(&mut w).await;
        assert_eq!(
            (c.revision, c.changes.len()),
            (3, 2),
            "one revision's changes travel together"
        );
        assert_eq!(w.next().await, Ok(WatchEvent::Progress(4)));
        hub.publish(vec![group(6, &[1])], 6);
        assert_eq!(expect_changes(&mut w).await.revision, 6);
        assert_eq!(w.next_revision(), 7);
    }

    #[tokio::test]
    async fn from_zero_means_only_what_is_applied_next() {
        let hub = Arc::new(WatchHub::default());
        hub.publish(vec![group(2, &[1])], 2);
        let mut w = hub.watch(0, None, LONG).expect("watch");
        assert_eq!(w.next().await, Ok(WatchEvent::Progress(2)));
        hub.publish(vec![group(3, &[1])], 3);
        assert_eq!(expect_changes(&mut w).await.revision, 3);
    }

    #[tokio::test]
    async fn a_filtered_watcher_sees_only_its_record_and_progress_covers_the_rest() {
        let hub = Arc::new(WatchHub::default());
        hub.publish(vec![group(2, &[1, 2]), group(3, &[2])], 3);
        let mut w = hub.watch(1, Some(1), LONG).expect("watch");
        let c = expect_changes(&mut w).await;
        assert_eq!((c.revision, c.changes.len()), (2, 1));
        assert_eq!(w.next().await, Ok(WatchEvent::Progress(3)));
    }

    #[tokio::test]
    async fn an_idle_watcher_gets_progress_at_the_interval() {
        let hub = Arc::new(WatchHub::default());
        hub.publish(vec![], 5);
        let mut w = hub.watch(0, None, Duration::from_millis(20)).expect("watch");
        assert_eq!(w.next().await, Ok(WatchEvent::Progress(5)));
        hub.publish(vec![], 7);
        assert_eq!(
            w.next().await,
            Ok(WatchEvent::Progress(7)),
            "entries without changes still advance it"
        );
    }

    #[tokio::test]
    async fn compaction_refuses_old_starts_and_cuts_off_laggards() {
        let hub = Arc::new(WatchHub::default());
        hub.set_capacity(2);
        hub.publish(vec![group(1, &[1])], 1);
        let mut slow = hub.watch(1, None, LONG).expect("watch");
        hub.publish(vec![group(2, &[1]), group(3, &[1]), group(4, &[1])], 4);
        assert_eq!(hub.bounds(), (3, 4));
        assert_eq!(
            hub.watch(2, None, LONG).err(),
            Some(WatchError::Compacted {
                requested: 2,
                oldest: 3
            })
        );
        assert_eq!(
            slow.stopped().await,
            WatchError::FellBehind { next: 1, oldest: 3 }
        );
        assert_eq!(
            slow.next().await,
            Err(WatchError::FellBehind { next: 1, oldest: 3 })
        );
        let mut ok = hub.watch(3, None, LONG).expect("watch");
        assert_eq!(expect_changes(&mut ok).await.revision, 3);
    }

    #[tokio::test]
    async fn a_snapshot_resets_the_history_and_close_ends_every_watch() {
        let hub = Arc::new(WatchHub::default());
        hub.publish(vec![group(1, &[1])], 1);
        let mut w = hub.watch(2, None, LONG).expect("watch");
        hub.reset(10);
        assert_eq!(
            w.next().await,
            Err(WatchError::FellBehind { next: 2, oldest: 11 })
        );
        let mut after = hub.watch(11, None, LONG).expect("watch");
        assert_eq!(hub.watchers(), 2);
        assert_eq!(after.next().await, Ok(WatchEvent::Progress(10)));
        let waiting = tokio::spawn(async move { after.next().await });
        hub.close();
        assert_eq!(waiting.await.expect("task"), Err(WatchError::Closed { next: 11 }));
        drop(w);
        assert_eq!(hub.watchers(), 0);
    }
}

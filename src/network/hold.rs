//! Commit notices held back for the next AppendEntries. Once the leader commits an entry,
//! OpenRaft sends each follower one more AppendEntries with no entries, only to carry the
//! new commit index. That is a round trip per follower per commit: on the leader, two
//! `writev`s and two reads of the four or five each write costs in all, and a wake-up of
//! every follower. No one waits on it. The client got its answer when the leader applied.
//! A follower needs the commit index only to apply, and the next AppendEntries carries it
//! anyway.
//!
//! So the transport answers such a notice itself. [`PeerConnection`](super::client) holds
//! it when the follower already accepted everything the notice names, in this term,
//! within a heartbeat. The next AppendEntries to that follower carries the newer commit
//! index. Back-to-back writes are the case this is for: there it is the next write's
//! entries. When nothing follows within [`CommitHold::delay`], [`CommitHold::run`] asks
//! OpenRaft for a heartbeat, which delivers it. A follower's linearizable read asks the
//! leader for a read point and flushes at once ([`CommitHold::flush_now`]), so the read
//! does not wait out the delay for an entry the leader already applied.
//!
//! Why the answer is safe: Raft's safety rests on what followers accept, not on when they
//! hear of a commit. A follower's commit index follows the leader's with a lag anyway, and
//! it commits only entries it accepted from this leader. The answer tells OpenRaft nothing
//! new about the follower's log: its matching index stays where the last real answer put
//! it. What it does claim is that the follower heard the leader just now. That is wrong by
//! at most a heartbeat (the freshness condition), and it feeds only OpenRaft's
//! `millis_since_quorum_ack`, which readiness compares with twice
//! `election_timeout_max`. The leader lease that reads trust (`crate::lease`) counts only
//! real answers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio::sync::Notify;
use tokio::time::Instant as TokioInstant;

use crate::NodeId;

/// The held commit notices of one leader, shared by its replication streams (which hold
/// and release them) and the node (which flushes them).
pub struct CommitHold {
    /// How long a notice may wait for the next AppendEntries (zero: never held).
    delay: Duration,
    /// How recent the follower's last real acceptance must be for a notice to be held.
    fresh: Duration,
    /// Per follower: since when a notice waits (tokio's clock, which `run` sleeps on).
    held: Mutex<HashMap<NodeId, TokioInstant>>,
    /// Wakes [`CommitHold::run`] when a notice is held.
    wake: Notify,
    /// Notices the next AppendEntries carried.
    carried: IntCounter,
    /// Notices delivered by a heartbeat asked for on their behalf.
    flushed: IntCounter,
}

impl CommitHold {
    /// A hold with these timings; `carried` and `flushed` count the notices' fates.
    pub fn new(delay: Duration, fresh: Duration, carried: IntCounter, flushed: IntCounter) -> Self {
        CommitHold {
            delay,
            fresh,
            held: Mutex::default(),
            wake: Notify::new(),
            carried,
            flushed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, TokioInstant>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether notices may be held at all.
    pub(super) fn enabled(&self) -> bool {
        !self.delay.is_zero()
    }

    /// Whether an acceptance sent at `sent` is recent enough to answer for the follower.
    pub(super) fn is_fresh(&self, sent: Instant) -> bool {
        sent.elapsed() <= self.fresh
    }

    /// Notes a notice held for `peer`.
    pub(super) fn hold(&self, peer: NodeId) {
        let was_empty = {
            let mut held = self.lock();
            let was_empty = held.is_empty();
            held.entry(peer).or_insert_with(TokioInstant::now);
            was_empty
        };
        // Only an empty map leaves `run` waiting for a wake-up; otherwise it sleeps until
        // the oldest notice is due and looks again then (a wake-up per write cost a task
        // switch per write at one connection).
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// An AppendEntries to `peer` is leaving with the newest commit index: its held notice
    /// (if [`CommitHold::run`] has not flushed it already) rides along.
    pub(super) fn release(&self, peer: NodeId) {
        if self.lock().remove(&peer).is_some() {
            self.carried.inc();
        }
    }

    /// Forgets every held notice and says whether there were any: the caller then asks
    /// OpenRaft for a heartbeat, which the streams that held send for real.
    pub fn flush_now(&self) -> bool {
        let mut held = self.lock();
        if held.is_empty() {
            return false;
        }
        self.flushed.inc_by(held.len() as u64);
        held.clear();
        true
    }

    /// Until dropped: `flush()` (a heartbeat) whenever a notice has waited
    /// [`CommitHold::delay`].
    pub async fn run<F: Future<Output = ()>>(&self, flush: impl Fn() -> F) {
        if !self.enabled() {
            return std::future::pending().await;
        }
        loop {
            let oldest = self.lock().values().min().copied();
            match oldest {
                // `notify_one` keeps a permit when no one waits: a notice held between the
                // look and the wait still wakes it.
                None => self.wake.notified().await,
                Some(since) => {
                    tokio::time::sleep_until(since + self.delay).await;
                    let due = self.lock().values().any(|t| t.elapsed() >= self.delay);
                    if due && self.flush_now() {
                        flush().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(delay_ms: u64) -> CommitHold {
        let counter = |n: &str| IntCounter::new(n, "test").expect("counter");
        CommitHold::new(
            Duration::from_millis(delay_ms),
            Duration::from_millis(50),
            counter("carried"),
            counter("flushed"),
        )
    }

    #[test]
    fn a_notice_carried_by_the_next_append_is_not_flushed() {
        let h = hold(5);
        h.hold(2);
        h.release(2);
        assert_eq!(h.carried.get(), 1);
        assert!(!h.flush_now(), "nothing left to flush");
        assert_eq!(h.flushed.get(), 0);
    }

    #[test]
    fn flushing_forgets_what_it_flushed() {
        let h = hold(5);
        h.hold(2);
        h.hold(3);
        assert!(h.flush_now());
        assert_eq!(h.flushed.get(), 2);
        h.release(2);
        assert_eq!(h.carried.get(), 0, "a flushed notice is not counted twice");
    }

    #[tokio::test]
    async fn a_notice_nothing_carries_is_flushed_once_it_has_waited_the_delay() {
        let h = std::sync::Arc::new(hold(30));
        let (flushed_tx, mut flushed_rx) = tokio::sync::mpsc::unbounded_channel();
        let runner = tokio::spawn({
            let h = h.clone();
            async move {
                h.run(|| {
                    let _ = flushed_tx.send(TokioInstant::now());
                    std::future::ready(())
                })
                .await
            }
        });
        let held_at = TokioInstant::now();
        h.hold(2);
        let at = tokio::time::timeout(Duration::from_secs(10), flushed_rx.recv())
            .await
            .expect("flushed within 10 s")
            .expect("flush");
        assert!(
            at - held_at >= Duration::from_millis(30),
            "flushed after {:?}",
            at - held_at
        );
        assert_eq!(h.flushed.get(), 1);
        assert!(!h.flush_now(), "the flush forgot the notice");
        runner.abort();
    }

    #[test]
    fn a_zero_delay_disables_holding() {
        assert!(!hold(0).enabled());
        assert!(hold(1).enabled());
    }
}

//! Linearizable reads: a read point confirmed by the leader lease or a heartbeat round,
//! shared by concurrent readers, then a wait until this node has applied it; and the
//! admission of watch streams, which read the applied log's changes.

use std::time::Instant;

use openraft::ServerState;
use openraft::error::RaftError;

use super::leader::{Target, route_to_leader};
use super::{NodeError, RaftNode};
use crate::model::Record;
use crate::store::watch::{WatchError, Watcher};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started (leader lease or read index).
    #[default]
    Linearizable,
    /// This node's applied state, without contacting the leader.
    Local,
}

/// A read point: the commit index a linearizable read must wait for (None: empty log).
pub(super) type ReadPoint = Result<Option<u64>, NodeError>;

impl RaftNode {
    /// A read point: once this node has applied up to the returned index, a local read is
    /// linearizable. Concurrent callers (local readers, followers' read-index requests)
    /// share one leadership confirmation.
    pub async fn read_index_local(&self) -> ReadPoint {
        let node = self.clone();
        self.inner
            .leader_reads
            .join(move || {
                let node = node.clone();
                async move { node.confirm_leadership().await }
            })
            .await
    }

    /// One leadership confirmation with its read point: from the leader lease when it
    /// vouches, otherwise by a quorum (a heartbeat round).
    async fn confirm_leadership(&self) -> ReadPoint {
        if let Some(point) = self.lease_read_point() {
            self.inner.metrics.lease_confirmations.inc();
            return Ok(point);
        }
        if let Some(reason) = self.cut_off() {
            return Err(NodeError::no_leader(reason));
        }
        self.inner.metrics.heartbeat_confirmations.inc();
        let timeout = self.inner.settings.raft.write_timeout;
        match tokio::time::timeout(timeout, self.inner.raft.get_read_log_id()).await {
            Err(_) => Err(NodeError::Timeout(format!(
                "could not confirm leadership with a quorum within {timeout:?}"
            ))),
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map(|l| l.index)),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(NodeError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(NodeError::no_leader(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(NodeError::Internal(format!("raft stopped: {e}"))),
        }
    }

    /// The read point the leader lease vouches for, without any round trip; None if it
    /// cannot: the lease is off, this node does not lead, its lease has run out, a candidate
    /// asked it for a vote this term, or it has not applied an entry of its own term yet.
    /// The read point is this node's applied index: as leader it answers a write only after
    /// applying it, and its term's first entry (applied) follows every earlier term's.
    fn lease_read_point(&self) -> Option<Option<u64>> {
        let raft = &self.inner.settings.raft;
        if !raft.read_lease || self.is_shutting_down() {
            return None;
        }
        let me = self.inner.id;
        // Taken after the read arrived: the lease must cover a moment inside the read.
        let now = Instant::now();
        let term = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            let vote = m.vote;
            let leads = m.state == ServerState::Leader
                && vote.is_committed()
                && vote.leader_id().voted_for() == Some(me);
            let configs = m.membership_config.membership().get_joint_config();
            let window = raft.election_timeout_min / 2;
            if !leads || !self.inner.lease.vouches(me, &vote, configs, now, window) {
                return None;
            }
            vote.leader_id().get_term()
        };
        let applied = self.inner.sm.read().last_applied?;
        (applied.leader_id.term >= term).then_some(Some(applied.index))
    }

    /// Waits until this node's state reflects every write acknowledged before the call.
    /// Concurrent readers on this node share the read point (one request to the leader).
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout;
        if self.lease_read_point().is_some() {
            // The leader's applied state already holds every acknowledged write.
            self.inner.metrics.lease_confirmations.inc();
            return Ok(());
        }
        let node = self.clone();
        let index = self
            .inner
            .barrier_reads
            .join(move || {
                let node = node.clone();
                async move { node.fetch_read_point().await }
            })
            .await?;
        let applied = self.inner.sm.read().last_applied.map(|l| l.index);
        if let Some(index) = index.filter(|i| applied < Some(*i)) {
            self.catch_up_to(index, deadline).await?;
        }
        Ok(())
    }

    /// Waits until this node applied `index`, by `deadline`. A follower that stops hearing
    /// from its leader meanwhile (a partition that still lets it ask for read points, but
    /// not receive entries) gives up at once: it would only catch up after the heal, and a
    /// refused read is always safe to retry elsewhere.
    async fn catch_up_to(&self, index: u64, deadline: Instant) -> Result<(), NodeError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let wait = self.inner.raft.wait(Some(remaining));
        let applied = wait.applied_index_at_least(Some(index), "read barrier");
        tokio::pin!(applied);
        let every = self.inner.settings.raft.tick();
        loop {
            tokio::select! {
                done = &mut applied => {
                    return done.map(|_| ()).map_err(|e| {
                        NodeError::Timeout(format!("this node did not catch up to the read point: {e}"))
                    });
                }
                () = tokio::time::sleep(every) => {}
            }
            let me = self.inner.id;
            if let Some((leader, member)) = self.current_leader().filter(|(l, _)| *l != me)
                && let Some(reason) = self.leader_silent(leader)
            {
                return Err(NodeError::NoLeader {
                    reason: format!("this node cannot catch up to the read point at index {index}: {reason}"),
                    believed: Some((leader, member)),
                });
            }
        }
    }

    /// Asks the leader (this node or another) for a read point.
    async fn fetch_read_point(&self) -> ReadPoint {
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout;
        route_to_leader(self, deadline, |target| async move {
            match target {
                Target::Here => self.read_index_local().await,
                Target::Peer(leader) => Ok(self.inner.peers.read_index(&leader, deadline).await?),
            }
        })
        .await
    }

    /// Reads one record.
    pub async fn get(&self, id: i64, consistency: Consistency) -> Result<Option<Record>, NodeError> {
        if consistency == Consistency::Linearizable {
            self.read_barrier().await?;
        }
        Ok(self.inner.sm.get(id))
    }

    /// Reads a page of records with ids after `after`.
    pub async fn list(
        &self,
        after: Option<i64>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<(Vec<Record>, bool, u64), NodeError> {
        if consistency == Consistency::Linearizable {
            self.read_barrier().await?;
        }
        Ok(self.inner.sm.list(after, limit))
    }

    /// A watch of the changes from revision `from` on (0: from the next one applied), of
    /// the record `id` only if given. Served from this node's own applied log, so any node
    /// can serve it; refused while `watch.max_watchers` are open or the node shuts down.
    pub fn watch(&self, from: u64, id: Option<i64>) -> Result<Watcher, NodeError> {
        let settings = &self.settings().watch;
        let hub = self.inner.sm.watch_hub();
        if self.is_shutting_down() {
            return Err(WatchError::Closed { next: from }.into());
        }
        if hub.watchers() >= settings.max_watchers {
            self.metrics()
                .rejected_total
                .with_label_values(&["watchers"])
                .inc();
            return Err(NodeError::Overloaded(format!(
                "{} watch streams are open, as many as `watch.max_watchers` allows; retry later or on another node",
                hub.watchers()
            )));
        }
        Ok(hub.watch(from, id, settings.progress_interval)?)
    }
}

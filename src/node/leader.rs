//! Finding the leader: the one this node knows, waiting (bounded) for one mid-election,
//! or for a successor while this node hands leadership over.

use std::time::Instant;

use super::{NodeError, RaftNode};
use crate::NodeId;
use crate::model::Member;

/// How many times a forwarded request follows a changed leader before giving up.
pub(super) const FORWARD_ATTEMPTS: usize = 3;

impl RaftNode {
    /// The leader this node knows, with its address. On every request's path: it borrows the
    /// metrics instead of cloning them.
    pub(super) fn current_leader(&self) -> Option<(NodeId, Member)> {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow();
        let leader = m.current_leader?;
        let member = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, member))
    }

    /// Waits (bounded) until some leader is known, for requests that arrive mid-election.
    pub(super) async fn await_leader(&self, deadline: Instant) -> Result<(NodeId, Member), NodeError> {
        if let Some(known) = self.current_leader() {
            return Ok(known);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let wait = remaining.min(self.inner.settings.raft.election_timeout_max * 2);
        let _ = self
            .inner
            .raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await;
        self.current_leader().ok_or_else(|| {
            NodeError::NoLeader(format!(
                "no leader elected within {wait:?}; a quorum of voters may be down or partitioned"
            ))
        })
    }

    /// Waits (bounded) until another node leads.
    pub(super) async fn await_successor(&self, deadline: Instant) -> Result<(NodeId, Member), NodeError> {
        let me = self.inner.id;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let _ = self
            .inner
            .raft
            .wait(Some(remaining))
            .metrics(|m| m.current_leader.is_some_and(|l| l != me), "successor elected")
            .await;
        match self.current_leader() {
            Some((id, m)) if id != me => Ok((id, m)),
            _ => Err(NodeError::NoLeader(
                "this node is shutting down and no successor was elected in time".into(),
            )),
        }
    }

    pub(super) fn observe_peer_rpc(&self, rpc: &str, peer: &Member, started: Instant) {
        self.inner
            .metrics
            .peer_rpc_duration
            .with_label_values(&[rpc, &peer.name])
            .observe(started.elapsed().as_secs_f64());
    }
}

//! Membership changes: joins (learner, then voter, replacing a stale member of the same
//! name) and removals, serialised on the leader and forwarded from elsewhere.

use std::collections::BTreeSet;
use std::time::Instant;

use openraft::ChangeMembers;

use super::leader::{Target, route_to_leader};
use super::{NodeError, RaftNode};
use crate::NodeId;
use crate::model::Member;

impl RaftNode {
    /// Adds `id` as a voter (through a learner that has caught up), replacing any other
    /// member with the same name. Idempotent. Runs on the leader; forwards otherwise.
    pub async fn join(&self, id: NodeId, member: Member) -> Result<NodeId, NodeError> {
        let deadline = Instant::now() + self.inner.settings.raft.membership_timeout();
        route_to_leader(self, deadline, |target| {
            let member = member.clone();
            async move {
                match target {
                    Target::Here => self.join_as_leader(id, member).await.map(|_| self.inner.id),
                    Target::Peer(leader) => Ok(self.inner.peers.join(&leader, id, member, deadline).await?),
                }
            }
        })
        .await
    }

    async fn join_as_leader(&self, id: NodeId, member: Member) -> Result<(), NodeError> {
        let _guard = self.inner.membership_lock.lock().await;
        let raft = &self.inner.raft;
        let current = raft.metrics().borrow().membership_config.clone();
        let membership = current.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let stale: BTreeSet<NodeId> = membership
            .nodes()
            .filter(|(nid, n)| **nid != id && n.name == member.name)
            .map(|(nid, _)| *nid)
            .collect();
        if voters.contains(&id) && stale.is_empty() {
            return Ok(());
        }
        if membership.get_node(&id).is_none() {
            tracing::info!(node_id = id, member = %member, "adding learner");
            // Blocking: returns once the learner has caught up with the leader's log.
            raft.add_learner(id, member.clone(), true)
                .await
                .map_err(|e| NodeError::Membership(e.to_string()))?;
        }
        // One joint change replaces the stale member with the new one, so the number of
        // live voters never drops below a quorum during the swap.
        let mut new_voters: BTreeSet<NodeId> = voters.difference(&stale).copied().collect();
        new_voters.insert(id);
        tracing::info!(node_id = id, ?stale, voters = ?new_voters, "promoting to voter");
        raft.change_membership(ChangeMembers::ReplaceAllVoters(new_voters), false)
            .await
            .map_err(|e| NodeError::Membership(e.to_string()))?;
        // Stale learners (never promoted) are dropped from the node list too.
        let leftover: BTreeSet<NodeId> = {
            let m = raft.metrics().borrow().membership_config.clone();
            m.membership()
                .learner_ids()
                .filter(|l| stale.contains(l))
                .collect()
        };
        if !leftover.is_empty() {
            raft.change_membership(ChangeMembers::RemoveNodes(leftover), false)
                .await
                .map_err(|e| NodeError::Membership(e.to_string()))?;
        }
        Ok(())
    }

    /// Removes a member (leader only, no forwarding): used by the scale-down reconciler.
    pub async fn remove_member_here(&self, id: NodeId) -> Result<(), NodeError> {
        self.remove_as_leader(id).await
    }

    /// Removes a member (admin call). Runs on the leader; forwards otherwise.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), NodeError> {
        // A removal commits a joint and a final configuration: two writes' worth of time.
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout * 2;
        route_to_leader(self, deadline, |target| async move {
            match target {
                Target::Here => self.remove_as_leader(id).await,
                Target::Peer(leader) => Ok(self.inner.peers.remove_member(&leader, id, deadline).await?),
            }
        })
        .await
    }

    async fn remove_as_leader(&self, id: NodeId) -> Result<(), NodeError> {
        let _guard = self.inner.membership_lock.lock().await;
        let raft = &self.inner.raft;
        let m = raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        if membership.get_node(&id).is_none() {
            return Err(NodeError::UnknownMember(id));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(NodeError::Membership("refusing to remove the last voter".into()));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        raft.change_membership(change, false)
            .await
            .map_err(|e| NodeError::Membership(e.to_string()))?;
        Ok(())
    }
}

impl RaftNode {
    /// Refuses an AppendEntries that would remove entries from this node's log when its
    /// leader is in no membership this node knows. With peer TLS off nothing proves who
    /// sent it, and a forged leader with a higher term could otherwise truncate entries
    /// that are committed on the rest of the cluster (OpenRaft only protects what this
    /// node itself knows to be committed). A real leader unknown to this node is one it
    /// missed both joining and being promoted; it is still accepted whenever it only
    /// adds entries. With peer TLS on, certificates prove membership instead.
    pub fn check_append_source(
        &self,
        leader: NodeId,
        prev: Option<crate::LogId>,
        entries: &[crate::Entry],
    ) -> Result<(), NodeError> {
        if self.inner.security.peer_tls() {
            return Ok(());
        }
        let known = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            let mut nodes = metrics.membership_config.membership().nodes().peekable();
            // A node with no membership yet has nothing a truncation could take.
            nodes.peek().is_none() || nodes.any(|(id, _)| *id == leader)
        };
        if known {
            return Ok(());
        }
        let ids = prev.into_iter().chain(entries.iter().map(|e| e.log_id));
        match self.inner.log.first_conflict(ids) {
            None => Ok(()),
            Some(index) => {
                self.inner
                    .metrics
                    .rejected_total
                    .with_label_values(&["unknown_leader"])
                    .inc();
                Err(NodeError::Membership(format!(
                    "AppendEntries from node {leader}, which is in no membership this node knows, \
                     would remove this node's entries from index {index}: refused (turn on peer \
                     TLS to prove membership)"
                )))
            }
        }
    }
}

//! What the node reports about itself: readiness, the status answer for bootstrap probes,
//! `/cluster`, and the commit index it knows.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::RaftNode;
use crate::NodeId;
use crate::model::Member;

/// What this node last heard from a leader; feeds readiness and the committed-index metric.
#[derive(Debug, Default)]
pub(super) struct LeaderContact {
    at: Option<Instant>,
    leader: Option<NodeId>,
}

/// What this node tells a peer that probes it during bootstrap.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's name.
    pub name: String,
    /// True when it belongs to a cluster (its membership has a voter).
    pub initialized: bool,
    /// The leader it knows, with its address.
    pub leader: Option<(NodeId, Member)>,
    /// The current voters.
    pub voters: Vec<NodeId>,
    /// The current term.
    pub term: u64,
    /// True once this node began shutting down.
    pub shutting_down: bool,
}

/// A snapshot of membership and progress, for `GET /cluster`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ClusterInfo {
    /// This node.
    pub node: NodeInfo,
    /// The leader, if known.
    pub leader: Option<MemberInfo>,
    /// Voters of the current (possibly joint) membership.
    pub voters: Vec<MemberInfo>,
    /// Learners.
    pub learners: Vec<MemberInfo>,
    /// Log indexes.
    pub indexes: Indexes,
    /// The store's revision on this node: the last log index it applied. Every record's
    /// revision is at most this; a watch from `revision + 1` sees only later changes.
    pub revision: u64,
}

/// This node's identity and role.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Raft node id.
    pub id: NodeId,
    /// Node name.
    pub name: String,
    /// Peer address.
    pub addr: String,
    /// Raft server state (Leader, Follower, Candidate, Learner, Shutdown).
    pub state: String,
    /// Current term.
    pub term: u64,
}

/// A member in `GET /cluster`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MemberInfo {
    /// Raft node id.
    pub id: NodeId,
    /// Node name.
    pub name: String,
    /// Peer address.
    pub addr: String,
}

/// Log progress.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Indexes {
    /// Last log index on this node.
    pub last_log: Option<u64>,
    /// Commit index known to this node.
    pub committed: Option<u64>,
    /// Last applied index.
    pub applied: Option<u64>,
    /// Last index covered by a snapshot.
    pub snapshot: Option<u64>,
    /// Last purged index.
    pub purged: Option<u64>,
}

impl RaftNode {
    /// Records that a leader contacted us (called by the peer service on AppendEntries).
    pub fn note_leader_contact(&self, leader: NodeId, leader_commit: Option<u64>) {
        let mut c = self.inner.contact.lock().unwrap_or_else(PoisonError::into_inner);
        c.at = Some(Instant::now());
        c.leader = Some(leader);
        if let Some(idx) = leader_commit {
            // The latest report, not the greatest ever: one absurd value from the wire
            // (u64::MAX) must not hold readiness down until a restart; the next heartbeat
            // replaces it.
            self.inner.leader_commit.store(idx, Ordering::Relaxed);
        }
    }

    /// Why `leader` looks unreachable from this follower: it was heard from (AppendEntries
    /// or a heartbeat) but not for longer than `max(election_timeout_min / 2, 3 heartbeats)`.
    /// Half an election timeout: long enough that a busy but live leader is not refused,
    /// short enough that clients hear about a lost leader before the election that
    /// replaces it. `None` when it is heard, or when this node has no contact record for
    /// it yet (a leader just elected, or one known only from a restart): then it is tried.
    pub(super) fn leader_silent(&self, leader: NodeId) -> Option<String> {
        let raft = &self.inner.settings.raft;
        let limit = (raft.election_timeout_min / 2).max(raft.heartbeat_interval * 3);
        let quiet = self.quiet_for(leader)?;
        (quiet > limit).then(|| {
            format!(
                "the leader has not been heard from for {} ms (limit {} ms): it is down or \
                 cut off from this node",
                quiet.as_millis(),
                limit.as_millis()
            )
        })
    }

    /// When this node last heard from a leader (any leader).
    pub(super) fn last_leader_contact(&self) -> Option<Instant> {
        self.inner
            .contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .at
    }

    /// How long ago `leader` was last heard from; `None` when the last contact was with
    /// another leader, or there was none.
    pub(super) fn quiet_for(&self, leader: NodeId) -> Option<Duration> {
        let c = self.inner.contact.lock().unwrap_or_else(PoisonError::into_inner);
        let at = c.at?;
        (c.leader == Some(leader)).then(|| at.elapsed())
    }

    /// The commit index this node knows: its own on the leader, the leader's report elsewhere.
    pub fn committed_index(&self) -> Option<u64> {
        let m = self.inner.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            // The highest index a majority of every voter configuration has matched (two
            // configurations during a membership change).
            let repl = m.replication.as_ref();
            let matched = |v: NodeId| {
                if v == m.id {
                    m.last_log_index
                } else {
                    repl.and_then(|r| r.get(&v).copied().flatten()).map(|l| l.index)
                }
            };
            let configs = m.membership_config.membership().get_joint_config();
            return crate::quorum::joint_quorum_value(configs, matched);
        }
        let c = self.inner.leader_commit.load(Ordering::Relaxed);
        (c > 0).then_some(c)
    }

    /// What this node knows about the cluster, for bootstrap probing.
    pub fn status(&self) -> NodeStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        NodeStatus {
            node_id: self.inner.id,
            name: self.inner.member.name.clone(),
            initialized: !voters.is_empty(),
            leader: m
                .current_leader
                .and_then(|l| membership.get_node(&l).cloned().map(|n| (l, n))),
            voters,
            term: m.current_term,
            shutting_down: self.is_shutting_down(),
        }
    }

    /// Membership and progress, for `GET /cluster`.
    pub fn cluster_info(&self) -> ClusterInfo {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let info = |id: NodeId| {
            let n = membership.get_node(&id).cloned().unwrap_or_default();
            MemberInfo {
                id,
                name: n.name,
                addr: n.addr,
            }
        };
        ClusterInfo {
            node: NodeInfo {
                id: self.inner.id,
                name: self.inner.member.name.clone(),
                addr: self.inner.member.addr.clone(),
                state: format!("{:?}", m.state),
                term: m.current_term,
            },
            leader: m.current_leader.map(info),
            voters: membership.voter_ids().map(info).collect(),
            learners: membership.learner_ids().map(info).collect(),
            indexes: Indexes {
                last_log: m.last_log_index,
                committed: self.committed_index(),
                applied: m.last_applied.map(|l| l.index),
                snapshot: m.snapshot.map(|l| l.index),
                purged: m.purged.map(|l| l.index),
            },
            revision: self.inner.sm.revision(),
        }
    }

    /// Readiness: `Ok` when this node is a voter, knows a leader it heard from recently, and
    /// has applied what that leader had committed. `Err` says why not.
    pub async fn readiness(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        if let Some(status) = self
            .inner
            .restoring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Err(status);
        }
        let m = self.inner.raft.metrics().borrow().clone();
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.inner.id)
        {
            return Err(format!(
                "not a voter of the current membership (state {:?})",
                m.state
            ));
        }
        let Some(leader) = m.current_leader else {
            return Err("no known leader".into());
        };
        let fresh = self.inner.settings.raft.election_timeout_max * 2;
        if leader == self.inner.id {
            if let Some(why) = self.cut_off() {
                return Err(why);
            }
            return match m.millis_since_quorum_ack {
                Some(ms) if Duration::from_millis(ms) <= fresh => Ok(()),
                Some(ms) => Err(format!("leader without quorum contact for {ms} ms")),
                None => Err("leader has not yet been acknowledged by a quorum".into()),
            };
        }
        let contact = {
            let c = self.inner.contact.lock().unwrap_or_else(PoisonError::into_inner);
            (c.at, c.leader)
        };
        match contact {
            (Some(at), Some(l)) if l == leader && at.elapsed() <= fresh => {}
            (Some(at), _) => return Err(format!("last heard from the leader {:?} ago", at.elapsed())),
            (None, _) => return Err("has not heard from the leader yet".into()),
        }
        let target = self.inner.leader_commit.load(Ordering::Relaxed);
        let applied = self
            .inner
            .raft
            .wait(Some(self.inner.settings.raft.election_timeout_min))
            .applied_index_at_least(Some(target), "readiness")
            .await;
        match applied {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "applied index {:?} is behind the leader's commit index {target}",
                m.last_applied.map(|l| l.index)
            )),
        }
    }
}

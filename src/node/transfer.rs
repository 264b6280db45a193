//! Leadership transfer (Raft's `TimeoutNow`, thesis section 3.10). OpenRaft 0.9 has none,
//! and its followers refuse every vote for `election_timeout_max` after the leader's last
//! heartbeat, so a leader that stops without one leaves the cluster leaderless for a lease
//! plus an election timeout. Instead the leaving leader (already refusing new writes, which
//! wait for its successor) lets what it proposed be applied, then asks a voter that holds
//! its whole log to campaign at once. The candidate's vote request reaches the leaving
//! leader, whose own lease ran out long ago (OpenRaft counts it from when it was elected),
//! so it grants it and steps down: with its vote the candidate has a quorum of a 3-voter
//! cluster at once. With 5 voters the other followers still refuse until their leases end
//! (and so does a leader elected less than a lease ago): the election then falls back to
//! [`super::election`]'s timer, as without a transfer.
//!
//! Safety stays with OpenRaft's vote rules (the leaving leader grants only a log at least
//! as long as its own), and the leaving leader stops trusting its read lease when it sees
//! the vote request ([`crate::lease::LeaderLease`]).

use std::time::{Duration, Instant};

use openraft::ServerState;

use super::RaftNode;
use super::election::show;
use crate::{LogId, NodeId};

impl RaftNode {
    /// Answers a leader's `TimeoutNow` (leadership transfer on its shutdown): campaigns at
    /// once when `leader` is the leader this voter follows in `term` and this node's log holds
    /// everything up to `last_log_id`; `Err` says why not. No pre-vote: the leader asking is
    /// the one whose followers the vote could otherwise disturb, and it grants the vote
    /// itself (it is stepping aside), so with it the candidate has a quorum of a 3-voter
    /// cluster without waiting for the other followers' leases to run out.
    pub async fn timeout_now(
        &self,
        leader: NodeId,
        term: u64,
        last_log_id: Option<LogId>,
    ) -> Result<(), String> {
        let me = self.inner.id;
        let (state, vote, voter) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            let voter = m.membership_config.membership().voter_ids().any(|v| v == me);
            (m.state, m.vote, voter)
        };
        if !voter {
            return Err("this node is not a voter".into());
        }
        if self.is_shutting_down() {
            return Err("this node is shutting down too".into());
        }
        if state == ServerState::Leader {
            return Err("this node leads".into());
        }
        let follows = vote.is_committed()
            && vote.leader_id().voted_for() == Some(leader)
            && vote.leader_id().get_term() == term;
        if !follows {
            return Err(format!(
                "this node does not follow {leader} in term {term} (its vote: {vote})"
            ));
        }
        let mine = self.inner.log.last_log_id();
        if mine < last_log_id {
            return Err(format!(
                "this node's log ends at {}, before the leader's {}",
                show(mine),
                show(last_log_id)
            ));
        }
        tracing::info!(%leader, term = term + 1, "campaigning: the leader is handing over to this node");
        self.inner.metrics.raft_campaigns_started_total.inc();
        self.inner
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| format!("could not start an election: {e}"))
    }

    /// Hands leadership to another voter: waits (until `until`) for this leader's proposals
    /// to be applied and for a voter to hold its whole log, then asks the voters that do,
    /// one by one, to campaign now. Returns once one started an election (the caller waits
    /// for it to win) or none would; `Err` says why no election was started.
    pub async fn transfer_leadership(&self, until: Instant) -> Result<NodeId, String> {
        let me = self.inner.id;
        let raft = &self.inner.raft;
        let remaining = || until.saturating_duration_since(Instant::now());
        raft.wait(Some(remaining()))
            .metrics(
                |m| m.last_applied.map(|l| l.index) >= m.last_log_index,
                "proposed entries applied",
            )
            .await
            .map_err(|e| format!("this leader's last entries were not applied: {e}"))?;
        let last = self.inner.log.last_log_id();
        let caught_up = |m: &openraft::RaftMetrics<NodeId, crate::model::Member>| -> Vec<NodeId> {
            let voters: Vec<NodeId> = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|v| *v != me)
                .collect();
            let matched = m.replication.as_ref();
            voters
                .into_iter()
                .filter(|v| matched.and_then(|r| r.get(v)).is_some_and(|l| *l >= last))
                .collect()
        };
        let m = raft
            .wait(Some(remaining()))
            .metrics(|m| !caught_up(m).is_empty(), "a voter holds the whole log")
            .await
            .map_err(|e| format!("no voter holds this leader's whole log: {e}"))?;
        if m.state != ServerState::Leader {
            return Err("this node no longer leads".into());
        }
        // OpenRaft grants no vote within its own lease either, counted from its election:
        // a leader elected moments ago waits that out (a tick's margin covers check-quorum
        // having seen the leadership a little after it began).
        let raft_settings = &self.inner.settings.raft;
        if let Some(since) = self.inner.lease.leading_since(&m.vote) {
            let lease_end = since + raft_settings.election_timeout_max + raft_settings.tick();
            tokio::time::sleep_until(lease_end.min(until).into()).await;
        }
        let term = m.vote.leader_id().get_term();
        let membership = m.membership_config.membership();
        let mut refusals = Vec::new();
        for id in caught_up(&m) {
            let Some(member) = membership.get_node(&id) else {
                continue;
            };
            // An answer takes one round trip and OpenRaft's election trigger; a voter that
            // does not answer within a heartbeat is not the one to wait for.
            let deadline =
                (Instant::now() + raft_settings.heartbeat_interval.max(Duration::from_millis(50))).min(until);
            // Logged as the request leaves, not when it is answered: the voter campaigns on
            // receipt, and the hand-over stops waiting (dropping this call) as soon as it
            // sees the new leader, which can be before the answer arrives.
            tracing::info!(candidate = %member.name, "asked a caught-up voter to campaign now");
            match self
                .inner
                .peers
                .timeout_now(member, id, me, term, last, deadline)
                .await
            {
                Ok(Ok(())) => return Ok(id),
                Ok(Err(why)) => refusals.push(format!("{}: {why}", member.name)),
                Err(e) => refusals.push(format!("{}: {e}", member.name)),
            }
        }
        Err(refusals.join("; "))
    }
}

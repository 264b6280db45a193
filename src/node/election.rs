//! The election timer, with pre-vote. OpenRaft 0.9's own timer is switched off
//! ([`RaftNode::take_over_elections`]) because of what it does under partitions:
//! - A node cut off from the others campaigns again and again, each time with a higher
//!   term; when the partition heals, the first answer carrying that term makes the
//!   majority's healthy leader step down, and the cluster stops for another election.
//!   (etcd's PreVote exists for exactly this.)
//! - A follower waits `election_timeout_max` (its leader lease) plus its election timeout,
//!   drawn once per process, before it campaigns; a node that once saw a longer log in a
//!   vote answer adds `2 x election_timeout_max` to every later election until its timer
//!   fires again. Gaps of 2-3 s per lost leader were the result with 0.6 s timeouts.
//!
//! Here, every heartbeat, a voter that is not leading checks whether an election is due
//! (the only voter of a single-node cluster at once):
//! as follower, when its leader has been silent for `election_timeout_max` plus a fresh
//! random part of `election_timeout_max - election_timeout_min` (by then the other followers' leases, counted from
//! the same last heartbeat, have run out, so the first round can win); otherwise (no leader,
//! or a round that stayed undecided) after a fresh random `election_timeout_min..=max` since
//! the vote last changed. Then it asks every voter for a pre-vote ([`RaftNode::pre_vote`]:
//! "would you vote for me now?", which changes nothing) and campaigns only when a quorum of
//! every configuration says yes. So a node that cannot win (cut off, its log behind, or the
//! others still hear their leader) never raises the term.
//!
//! Safety does not depend on any of this: OpenRaft grants and refuses the real votes as
//! before. The old leader's read lease (half `election_timeout_min`, counted from when it
//! sent the heartbeat a follower accepted) has long ended when a follower campaigns.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::ServerState;
use rand::Rng;

use super::RaftNode;
use crate::config::RaftSettings;
use crate::{LogId, NodeId, Vote};

/// The election timer's state between ticks.
pub(super) struct ElectionTimer {
    /// The vote seen at the last tick, and when it changed to it.
    vote: Option<(Vote, Instant)>,
    /// How long to wait, from the later of that change and the last contact with a leader.
    wait: Duration,
    /// When this node last asked for pre-votes.
    asked: Option<Instant>,
}

impl ElectionTimer {
    pub(super) fn new(raft: &RaftSettings) -> Self {
        ElectionTimer {
            vote: None,
            wait: candidate_wait(raft),
            asked: None,
        }
    }
}

/// A follower's wait after its leader's last heartbeat: `election_timeout_max` (until then
/// the other followers' leases refuse any vote) plus a random part of the election
/// timeout's spread (`max - min`), so that two followers rarely ask within one round trip
/// of each other.
fn follower_wait(raft: &RaftSettings) -> Duration {
    let spread = raft
        .election_timeout_max
        .saturating_sub(raft.election_timeout_min);
    raft.election_timeout_max + random_between(Duration::ZERO, spread)
}

/// The wait without a leader to follow: a random election timeout.
fn candidate_wait(raft: &RaftSettings) -> Duration {
    random_between(raft.election_timeout_min, raft.election_timeout_max)
}

/// A uniformly random duration in `lo..=hi` (millisecond steps).
fn random_between(lo: Duration, hi: Duration) -> Duration {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let (lo, hi) = (ms(lo), ms(hi).max(ms(lo)));
    Duration::from_millis(rand::rng().random_range(lo..=hi))
}

impl RaftNode {
    /// Switches OpenRaft's own election timer off: [`RaftNode::check_quorum`]'s loop runs
    /// elections from here on (see the module doc).
    pub fn take_over_elections(&self) {
        self.inner.raft.runtime_config().elect(false);
    }

    /// Answers a pre-vote: `Ok` when this node would vote for `candidate`, whose log ends at
    /// `last_log_id`, if it campaigned now; `Err` says why not. Changes nothing.
    pub async fn pre_vote(&self, candidate: NodeId, last_log_id: Option<LogId>) -> Result<(), String> {
        let me = self.inner.id;
        let (state, vote) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            (m.state, m.vote)
        };
        let lease = self.inner.settings.raft.election_timeout_max;
        if state == ServerState::Leader {
            // A leader a quorum still hears keeps its followers' leases alive: they would
            // refuse anyway. One that is cut off or leaving lets the others go ahead.
            if !self.is_shutting_down() && self.cut_off().is_none() {
                return Err("this node leads and a quorum of voters hears it".into());
            }
        } else if let Some((leader, quiet)) = vote
            .is_committed()
            .then(|| vote.leader_id().voted_for())
            .flatten()
            .filter(|l| *l != candidate && *l != me)
            .and_then(|l| self.quiet_for(l).map(|q| (l, q)))
            .filter(|(_, q)| *q <= lease)
        {
            return Err(format!(
                "this node heard from the leader {leader} {} ms ago",
                quiet.as_millis()
            ));
        }
        let mine = self.inner.log.last_log_id();
        if last_log_id < mine {
            return Err(format!(
                "the candidate's log ends at {}, before this node's {}",
                show(last_log_id),
                show(mine)
            ));
        }
        Ok(())
    }

    /// One tick of the election timer (see the module doc).
    pub(super) async fn election_tick(&self, timer: &mut ElectionTimer) {
        let raft = &self.inner.settings.raft;
        let me = self.inner.id;
        let now = Instant::now();
        let (state, vote, configs) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            let configs: Vec<BTreeSet<NodeId>> = m.membership_config.membership().get_joint_config().clone();
            (m.state, m.vote, configs)
        };
        let voter = configs.iter().any(|c| c.contains(&me));
        if timer.vote.is_none_or(|(v, _)| v != vote) {
            timer.vote = Some((vote, now));
            timer.wait = if vote.is_committed() {
                follower_wait(raft)
            } else {
                candidate_wait(raft)
            };
        }
        if !voter || state == ServerState::Leader || self.is_shutting_down() {
            return;
        }
        let changed = timer.vote.map_or(now, |(_, at)| at);
        let heard = self.last_leader_contact().filter(|_| vote.is_committed());
        let since = heard.map_or(changed, |h| h.max(changed));
        let since = timer.asked.map_or(since, |a| a.max(since));
        let waited = now.saturating_duration_since(since);
        // The only voter (a single-node cluster restarted from disk) has nobody to wait
        // for or ask: it campaigns at once, as OpenRaft's own timer would.
        let only_voter = configs.iter().all(|c| c.len() == 1 && c.contains(&me));
        let asked_lately = timer
            .asked
            .is_some_and(|a| now.saturating_duration_since(a) <= timer.wait);
        if (only_voter && asked_lately) || (!only_voter && waited <= timer.wait) {
            return;
        }
        timer.asked = Some(now);
        timer.wait = candidate_wait(raft);
        if !only_voter && let Err(why) = self.ask_for_pre_votes(&configs).await {
            tracing::debug!(reason = %why, "not campaigning: no quorum of pre-votes");
            return;
        }
        tracing::info!(
            term = vote.leader_id().get_term() + 1,
            waited_ms = waited.as_millis(),
            "campaigning: no leader heard, and a quorum of voters granted pre-votes"
        );
        self.inner.metrics.raft_campaigns_started_total.inc();
        if let Err(e) = self.inner.raft.trigger().elect().await {
            tracing::warn!(error = %e, "could not start an election");
        }
    }

    /// Asks every other voter for a pre-vote, concurrently, each bounded by half an
    /// election timeout; `Ok` when a quorum of every configuration (counting this node)
    /// grants it.
    async fn ask_for_pre_votes(&self, configs: &[BTreeSet<NodeId>]) -> Result<(), String> {
        let me = self.inner.id;
        let last_log_id = self.inner.log.last_log_id();
        let deadline = Instant::now() + self.inner.settings.raft.election_timeout_min / 2;
        let members: Vec<(NodeId, crate::model::Member)> = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            configs
                .iter()
                .flatten()
                .filter(|v| **v != me)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter_map(|v| membership.get_node(v).map(|n| (*v, n.clone())))
                .collect()
        };
        let answers = futures::future::join_all(members.iter().map(|(id, m)| async move {
            let answer = self.inner.peers.pre_vote(m, *id, me, last_log_id, deadline).await;
            (*id, answer)
        }))
        .await;
        let mut granted: BTreeSet<NodeId> = BTreeSet::from([me]);
        let mut refusals = Vec::new();
        for (id, answer) in answers {
            match answer {
                Ok(Ok(())) => {
                    granted.insert(id);
                }
                Ok(Err(why)) => refusals.push(format!("{id}: {why}")),
                Err(e) => refusals.push(format!("{id}: {e}")),
            }
        }
        let quorum = configs
            .iter()
            .all(|c| c.intersection(&granted).count() >= crate::quorum::majority(c.len()));
        if quorum { Ok(()) } else { Err(refusals.join("; ")) }
    }
}

pub(super) fn show(id: Option<LogId>) -> String {
    id.map_or_else(
        || "the start".to_owned(),
        |l| format!("index {} of term {}", l.index, l.leader_id.term),
    )
}

//! The leader's side of the leader lease, recorded by the transport: when each peer last
//! accepted this node's leadership, and the greatest votes candidates asked this node for.
//!
//! OpenRaft's followers refuse to vote for anyone else for `election_timeout_max` after they
//! accept an AppendEntries. So if a quorum accepted requests this leader *sent* at time `t`,
//! none of them helps elect another leader before `t + election_timeout_max` (on clocks
//! that tick at sane rates). The leader itself is the exception: OpenRaft lets a leader grant
//! a vote once its own lease is over, and with that vote a candidate needs only one of the
//! followers. Every vote request passes through [`LeaderLease::saw_vote_request`] before
//! OpenRaft sees it, so a leader stops trusting its lease before it could grant such a
//! vote. OpenRaft 0.9 keeps similar bookkeeping internally but does not expose it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{NodeId, Vote};

/// Lease bookkeeping: owned by the node (reads ask it), handed to the transport (which
/// records acceptances) and to the peer service (which notes vote requests).
#[derive(Default)]
pub struct LeaderLease {
    state: Mutex<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    /// Per peer: the newest send time of a request that the peer accepted, with the vote it
    /// carried (a later term's leadership must not inherit an earlier term's acceptances).
    acks: HashMap<NodeId, (Vote, Instant)>,
    /// The greatest votes asked of this node (several: votes are only partially ordered).
    /// OpenRaft grants only a vote above the node's own in its order (which, by default,
    /// also ranks a same-term candidate with a higher node id above), so a leader that saw
    /// a request above its vote may have granted it, and one below it cannot have.
    requested: Vec<Vote>,
    /// The vote and voter configurations this node was first seen leading with, and when
    /// (check-quorum's baseline before a quorum of them accepted).
    leading: Option<(Vote, Vec<BTreeSet<NodeId>>, Instant)>,
    /// The vote this node was first seen leading with, and when (kept across membership
    /// changes, unlike `leading`).
    led_since: Option<(Vote, Instant)>,
}

impl LeaderLease {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `peer` accepted a request carrying `vote`, sent at `sent`.
    pub fn record_ack(&self, peer: NodeId, vote: &Vote, sent: Instant) {
        let mut st = self.lock();
        match st.acks.get_mut(&peer) {
            Some((v, t)) if *v == *vote => *t = (*t).max(sent),
            Some((v, _)) if *v > *vote => {}
            _ => {
                st.acks.insert(peer, (*vote, sent));
            }
        }
    }

    /// Records a vote request before it reaches Raft.
    pub fn saw_vote_request(&self, vote: &Vote) {
        let mut st = self.lock();
        // Votes are only partially ordered; keep those no other one covers.
        if !st.requested.iter().any(|r| *vote <= *r) {
            st.requested
                .retain(|r| r.partial_cmp(vote).is_none_or(|o| o.is_gt()));
            st.requested.push(*vote);
        }
    }

    /// Whether the lease vouches, at `now`, that `me` is the only leader: it leads with
    /// `vote`, was asked for no vote above it, and in every configuration of
    /// `configs` (two during a membership change) a majority accepted a request carrying
    /// `vote` sent less than `window` ago.
    pub fn vouches(
        &self,
        me: NodeId,
        vote: &Vote,
        configs: &[BTreeSet<NodeId>],
        now: Instant,
        window: Duration,
    ) -> bool {
        let st = self.lock();
        if st.requested.iter().any(|r| r > vote) {
            return false;
        }
        st.quorum_acked_at(me, vote, configs, now)
            .is_some_and(|t| now < t + window)
    }

    /// Check-quorum: how long, at `now`, a majority of some configuration of `configs` has
    /// not accepted a request carrying `vote` — counted from the first time this was asked
    /// about `vote` when no quorum accepted one since. A leader silent for longer than an
    /// election timeout has probably been replaced, or cannot commit anything.
    pub fn quorum_silence(
        &self,
        me: NodeId,
        vote: &Vote,
        configs: &[BTreeSet<NodeId>],
        now: Instant,
    ) -> Duration {
        let mut st = self.lock();
        if st.led_since.is_none_or(|(v, _)| v != *vote) {
            st.led_since = Some((*vote, now));
        }
        // A new term, or a membership change (a voter just added has not been asked
        // anything yet), starts the count afresh.
        let since = match &st.leading {
            Some((v, c, t)) if v == vote && c.as_slice() == configs => *t,
            _ => {
                st.leading = Some((*vote, configs.to_vec(), now));
                now
            }
        };
        let heard = st.quorum_acked_at(me, vote, configs, now).unwrap_or(since);
        now.saturating_duration_since(heard)
    }

    /// When check-quorum first saw this node leading with `vote` (it asks every tick, so
    /// within a tick of the election); `None` before it did.
    pub fn leading_since(&self, vote: &Vote) -> Option<Instant> {
        self.lock().led_since.filter(|(v, _)| v == vote).map(|(_, t)| t)
    }
}

impl LeaseState {
    /// The latest time `t` such that in every configuration a majority of voters accepted a
    /// request carrying `vote` sent at or after `t`; `me` counts as accepting at `now`.
    fn quorum_acked_at(
        &self,
        me: NodeId,
        vote: &Vote,
        configs: &[BTreeSet<NodeId>],
        now: Instant,
    ) -> Option<Instant> {
        crate::quorum::joint_quorum_value(configs, |id| match self.acks.get(&id) {
            _ if id == me => Some(now),
            Some((v, t)) if v == vote => Some(*t),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_since_is_when_a_vote_was_first_seen_leading_and_survives_membership_changes() {
        let lease = LeaderLease::default();
        let base = Instant::now();
        let vote = Vote::new_committed(2, 1);
        assert_eq!(lease.leading_since(&vote), None, "never seen leading");
        lease.quorum_silence(1, &vote, &cfgs(&[&[1, 2, 3]]), at(base, 100));
        lease.quorum_silence(1, &vote, &cfgs(&[&[1, 2, 3, 4, 5]]), at(base, 900));
        assert_eq!(lease.leading_since(&vote), Some(at(base, 100)));
        let next = Vote::new_committed(3, 1);
        assert_eq!(lease.leading_since(&next), None, "another term's leadership");
        lease.quorum_silence(1, &next, &cfgs(&[&[1, 2, 3]]), at(base, 2000));
        assert_eq!(lease.leading_since(&next), Some(at(base, 2000)));
        assert_eq!(lease.leading_since(&vote), None);
    }

    #[test]
    fn quorum_silence_counts_from_the_last_quorum_acceptance_or_the_first_question_in_this_term_and_membership()
     {
        let lease = LeaderLease::default();
        let base = Instant::now();
        let vote = Vote::new_committed(2, 1);
        let three = cfgs(&[&[1, 2, 3]]);
        assert_eq!(lease.quorum_silence(1, &vote, &three, base), Duration::ZERO);
        assert_eq!(
            lease.quorum_silence(1, &vote, &three, at(base, 700)),
            Duration::from_millis(700),
            "no peer accepted since leadership began"
        );
        lease.record_ack(2, &vote, at(base, 600));
        assert_eq!(
            lease.quorum_silence(1, &vote, &three, at(base, 700)),
            Duration::from_millis(100),
            "one follower makes a majority of three"
        );
        // A membership change starts the count afresh: the new voters were never asked.
        let five = cfgs(&[&[1, 2, 3, 4, 5]]);
        assert_eq!(
            lease.quorum_silence(1, &vote, &five, at(base, 700)),
            Duration::ZERO
        );
        assert_eq!(
            lease.quorum_silence(1, &vote, &five, at(base, 1400)),
            Duration::from_millis(700),
            "one follower of four is no majority of five"
        );
        let joint = cfgs(&[&[1, 2, 3], &[1, 4, 5]]);
        assert_eq!(
            lease.quorum_silence(1, &vote, &joint, at(base, 1400)),
            Duration::ZERO
        );
        assert_eq!(
            lease.quorum_silence(1, &vote, &joint, at(base, 2100)),
            Duration::from_millis(700),
            "during a change, the new configuration needs its own majority"
        );
        lease.record_ack(4, &vote, at(base, 2000));
        assert_eq!(
            lease.quorum_silence(1, &vote, &joint, at(base, 2100)),
            Duration::from_millis(1500),
            "the old configuration last had a majority at 600 ms"
        );
        lease.record_ack(2, &vote, at(base, 2000));
        assert_eq!(
            lease.quorum_silence(1, &vote, &joint, at(base, 2100)),
            Duration::from_millis(100),
            "a majority of each configuration accepted at 2000 ms"
        );
        let next = Vote::new_committed(3, 1);
        assert_eq!(
            lease.quorum_silence(1, &next, &three, at(base, 2200)),
            Duration::ZERO,
            "a new term starts its own count; the old term's acceptances do not carry over"
        );
    }

    fn cfgs(configs: &[&[NodeId]]) -> Vec<BTreeSet<NodeId>> {
        configs.iter().map(|c| c.iter().copied().collect()).collect()
    }

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn acked(
        lease: &LeaderLease,
        me: NodeId,
        vote: &Vote,
        configs: &[BTreeSet<NodeId>],
        now: Instant,
    ) -> Option<Instant> {
        lease.lock().quorum_acked_at(me, vote, configs, now)
    }

    #[test]
    fn a_majority_is_the_leader_and_its_most_recent_follower() {
        let base = Instant::now();
        let vote = Vote::new_committed(3, 1);
        let lease = LeaderLease::default();
        let now = at(base, 1000);
        let three = cfgs(&[&[1, 2, 3]]);
        assert_eq!(acked(&lease, 1, &vote, &three, now), None, "no follower accepted");
        lease.record_ack(2, &vote, at(base, 100));
        lease.record_ack(3, &vote, at(base, 300));
        assert_eq!(acked(&lease, 1, &vote, &three, now), Some(at(base, 300)));
        // Five voters: the leader and the two newest of four followers.
        lease.record_ack(4, &vote, at(base, 200));
        let five = cfgs(&[&[1, 2, 3, 4, 5]]);
        assert_eq!(acked(&lease, 1, &vote, &five, now), Some(at(base, 200)));
        // A single-voter cluster needs only the leader.
        assert_eq!(acked(&lease, 1, &vote, &cfgs(&[&[1]]), now), Some(now));
    }

    #[test]
    fn the_lease_lasts_the_window_from_the_send_time() {
        let base = Instant::now();
        let vote = Vote::new_committed(3, 1);
        let lease = LeaderLease::default();
        let three = cfgs(&[&[1, 2, 3]]);
        let window = Duration::from_millis(400);
        lease.record_ack(2, &vote, at(base, 100));
        assert!(lease.vouches(1, &vote, &three, at(base, 499), window));
        assert!(!lease.vouches(1, &vote, &three, at(base, 500), window));
    }

    #[test]
    fn acceptances_of_another_term_do_not_count_and_old_sends_do_not_regress() {
        let base = Instant::now();
        let (old, new) = (Vote::new_committed(3, 1), Vote::new_committed(4, 1));
        let lease = LeaderLease::default();
        let three = cfgs(&[&[1, 2, 3]]);
        lease.record_ack(2, &old, at(base, 500));
        assert_eq!(acked(&lease, 1, &new, &three, at(base, 600)), None);
        lease.record_ack(2, &new, at(base, 100));
        lease.record_ack(2, &new, at(base, 50)); // a reply to an older request arriving late
        lease.record_ack(2, &old, at(base, 700)); // a straggler of the earlier term
        assert_eq!(acked(&lease, 1, &new, &three, at(base, 800)), Some(at(base, 100)));
    }

    #[test]
    fn a_joint_configuration_needs_a_majority_of_each_and_a_leader_outside_counts_nothing() {
        let base = Instant::now();
        let vote = Vote::new_committed(5, 1);
        let lease = LeaderLease::default();
        lease.record_ack(2, &vote, at(base, 400));
        lease.record_ack(4, &vote, at(base, 200));
        let now = at(base, 1000);
        // Old {1,2,3}: leader + 2 at 400. New {2,3,4}: 2 at 400 and 4 at 200 → 200.
        let joint = cfgs(&[&[1, 2, 3], &[2, 3, 4]]);
        assert_eq!(acked(&lease, 1, &vote, &joint, now), Some(at(base, 200)));
        // The leader is being removed: {2,3,4} alone, and 3 never answered.
        lease.record_ack(3, &vote, at(base, 100));
        assert_eq!(
            acked(&lease, 1, &vote, &cfgs(&[&[2, 3, 4]]), now),
            Some(at(base, 200))
        );
        assert_eq!(
            acked(&lease, 1, &vote, &cfgs(&[&[2, 3, 4, 5, 6]]), now),
            Some(at(base, 100))
        );
        assert_eq!(acked(&lease, 1, &vote, &cfgs(&[&[2, 5, 6]]), now), None);
    }

    #[test]
    fn a_vote_request_above_the_leaders_vote_ends_the_lease_for_its_term() {
        let base = Instant::now();
        let vote = Vote::new_committed(5, 1);
        let lease = LeaderLease::default();
        let three = cfgs(&[&[1, 2, 3]]);
        let window = Duration::from_millis(400);
        lease.record_ack(2, &vote, at(base, 100));
        // A stale candidate of an older term cannot be granted anything.
        lease.saw_vote_request(&Vote::new(4, 3));
        assert!(lease.vouches(1, &vote, &three, at(base, 200), window));
        // A candidate of a newer term might be: from now on this term confirms by heartbeat,
        // however fresh the acceptances.
        lease.saw_vote_request(&Vote::new(6, 3));
        lease.record_ack(2, &vote, at(base, 250));
        assert!(!lease.vouches(1, &vote, &three, at(base, 300), window));
        // Within the leader's own term OpenRaft's order decides: a candidate ranked below
        // the leader's vote cannot be granted (the lease holds), one ranked above could.
        let other = LeaderLease::default();
        other.record_ack(2, &vote, at(base, 100));
        let (below, above) = (Vote::new(5, 0), Vote::new(5, 3));
        assert!(below < vote && above > vote, "OpenRaft's vote order changed");
        other.saw_vote_request(&below);
        assert!(other.vouches(1, &vote, &three, at(base, 200), window));
        other.saw_vote_request(&above);
        assert!(!other.vouches(1, &vote, &three, at(base, 200), window));
        // Leading in a later term, the lease holds again.
        let later = Vote::new_committed(7, 1);
        lease.record_ack(2, &later, at(base, 900));
        assert!(lease.vouches(1, &later, &three, at(base, 1000), window));
    }
}

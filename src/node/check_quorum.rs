//! Check-quorum: a leader that no quorum of voters has accepted for `election_timeout_min`
//! is treated as cut off. OpenRaft 0.9 keeps such a leader leading (it has no step-down),
//! so writes sent to it waited `raft.write_timeout` and then failed as "may or may not be
//! applied", and followers that forwarded to it waited too. Here the node refuses every
//! leader-only request at once as a retry-safe `no-leader` while it is cut off, and fails
//! the writes it has in flight as soon as it notices (their outcome stays unknown: the
//! entries may still commit after a heal, or be overwritten by the next leader).
//!
//! It does not step down inside OpenRaft, on purpose: the only way 0.9 offers is a vote for
//! a higher term, which makes the node campaign with ever higher terms while cut off and,
//! after the heal, forces the healthy majority's leader to step down too (etcd without
//! pre-vote behaves the same). Staying at its term, the old leader is replaced by the
//! majority's election, and a heal before that election costs nothing: its followers
//! answer again and it serves on.

//!
//! The same loop drives the election timer ([`super::election`]): one task watches the
//! node's role every heartbeat.

use std::time::Instant;

use openraft::ServerState;
use tokio::sync::watch;

use super::RaftNode;
use super::election::ElectionTimer;

impl RaftNode {
    /// Why this node, which leads, cannot serve leader-only requests now: no majority of
    /// every voter configuration accepted its leadership within `election_timeout_min`.
    /// `None` when it is not the leader or a quorum is with it.
    pub(super) fn cut_off(&self) -> Option<String> {
        let me = self.inner.id;
        let now = Instant::now();
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let vote = m.vote;
        if m.state != ServerState::Leader || !vote.is_committed() || vote.leader_id().voted_for() != Some(me)
        {
            return None;
        }
        let configs = m.membership_config.membership().get_joint_config();
        let silence = self.inner.lease.quorum_silence(me, &vote, configs, now);
        let limit = self.inner.settings.raft.election_timeout_min;
        (silence > limit).then(|| {
            format!(
                "this node leads term {} but no quorum of voters has answered it for {} ms \
                 (over election_timeout_min, {} ms): it is cut off from the others, who will \
                 elect a new leader",
                vote.leader_id().get_term(),
                silence.as_millis(),
                limit.as_millis()
            )
        })
    }

    /// Becomes `true` while this leader is cut off ([`RaftNode::check_quorum`] updates it).
    pub(super) fn cut_off_signal(&self) -> watch::Receiver<bool> {
        self.inner.cut_off.subscribe()
    }

    /// Watches this node's leadership every heartbeat until `stop`: as leader, flags the
    /// moment it is cut off (logged, counted, and signalled to the writes in flight) and
    /// when it is heard again; as follower or candidate, campaigns when the election stalls.
    pub async fn check_quorum(&self, mut stop: watch::Receiver<bool>) {
        let every = self.inner.settings.raft.tick();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut timer = ElectionTimer::new(&self.inner.settings.raft);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.election_tick(&mut timer).await;
            let reason = self.cut_off();
            let now_cut = reason.is_some();
            let was_cut = *self.inner.cut_off.borrow();
            if now_cut == was_cut {
                continue;
            }
            match reason {
                Some(why) => {
                    tracing::warn!(reason = %why, "leader cut off from its quorum: refusing writes and linearizable reads until it is heard again or replaced");
                    self.inner.metrics.raft_quorum_lost_total.inc();
                }
                None => tracing::info!("no longer cut off: heard by a quorum again, or no longer leading"),
            }
            self.inner.metrics.raft_leader_cut_off.set(i64::from(now_cut));
            self.inner.cut_off.send_replace(now_cut);
        }
    }
}

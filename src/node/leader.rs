//! Reaching the leader. Every leader-only operation (a write, a read point, a join, a
//! removal) goes through [`route_to_leader`]: find the leader (waiting, bounded, for one
//! mid-election, or for a successor while this node hands leadership over), run the
//! operation here or on that peer, and follow a leader that moved meanwhile, a few times,
//! within one deadline. [`LeaderView`] is all it needs to know about the node, so the
//! routing rules are unit-tested against a scripted fake.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{NodeError, RaftNode};
use crate::NodeId;
use crate::model::Member;

/// How many times a leader-only operation follows a changed leader before giving up.
const ROUTE_ATTEMPTS: usize = 3;

/// Where one attempt of a leader-only operation runs.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Target {
    /// This node leads: run it locally.
    Here,
    /// This peer leads: send it there.
    Peer(Member),
}

/// What routing needs to know about leadership.
pub(super) trait LeaderView: Sync {
    /// This node's id.
    fn me(&self) -> NodeId;
    /// True while this node is shutting down (and handing leadership over).
    fn handing_over(&self) -> bool;
    /// How long to let a leader change settle before trying again.
    fn settle(&self) -> Duration;
    /// The leader, waiting (bounded by `deadline`) until one is known.
    fn await_leader(
        &self,
        deadline: Instant,
    ) -> impl Future<Output = Result<(NodeId, Member), NodeError>> + Send;
    /// Another node as leader, waiting (bounded by `deadline`) until one is elected.
    fn await_successor(
        &self,
        deadline: Instant,
    ) -> impl Future<Output = Result<(NodeId, Member), NodeError>> + Send;
    /// Waits (at most `wait`) until the leader is someone other than `from`.
    fn await_change(&self, from: NodeId, wait: Duration) -> impl Future<Output = ()> + Send;
    /// Why this node, which leads, cannot serve now (check-quorum), if so.
    fn cut_off(&self) -> Option<String>;
    /// Why `leader`, which this follower knows, looks unreachable (it has gone quiet), if so.
    fn leader_silent(&self, leader: NodeId) -> Option<String>;
}

/// Runs `op` on the leader, by `deadline`. An attempt that finds the leader moved
/// ([`NodeError::NotLeader`]) waits for the change to settle and tries the new leader;
/// every other outcome is final. When the leader never settles, the last move is reported
/// as [`NodeError::NoLeader`] (retry-safe: a refusing peer applied nothing).
pub(super) async fn route_to_leader<V, T, F, Fut>(
    view: &V,
    deadline: Instant,
    mut op: F,
) -> Result<T, NodeError>
where
    V: LeaderView,
    F: FnMut(Target) -> Fut,
    Fut: Future<Output = Result<T, NodeError>>,
{
    let mut last_move = None;
    for _ in 0..ROUTE_ATTEMPTS {
        let (mut leader_id, mut leader) = view.await_leader(deadline).await?;
        if leader_id == view.me() && view.handing_over() {
            // Leadership is being handed over: send it to the successor, so clients of a
            // terminating node see latency, not errors.
            (leader_id, leader) = view.await_successor(deadline).await?;
        }
        let target = if leader_id == view.me() {
            if let Some(reason) = view.cut_off() {
                // Refused before anything is proposed: the client may retry elsewhere at once.
                return Err(NodeError::no_leader(reason));
            }
            Target::Here
        } else {
            if let Some(reason) = view.leader_silent(leader_id) {
                // Forwarding would wait for a dead link to be noticed and then leave the
                // outcome unknown: refuse before sending, and say whom we believe leads.
                return Err(NodeError::NoLeader {
                    reason,
                    believed: Some((leader_id, leader)),
                });
            }
            Target::Peer(leader.clone())
        };
        let here = target == Target::Here;
        match op(target).await {
            // The leader this node knows could not be reached (or refused: it is cut off
            // itself): say which node that is, so a client can try it directly.
            Err(NodeError::NoLeader {
                reason,
                believed: None,
            }) if !here => {
                return Err(NodeError::NoLeader {
                    reason,
                    believed: Some((leader_id, leader)),
                });
            }
            Err(NodeError::NotLeader { leader: hint }) => {
                let now = hint.map_or_else(|| "unknown".to_owned(), |(_, m)| m.name);
                last_move = Some(NodeError::no_leader(format!(
                    "leadership moved while this request was routed to {} (now: {now})",
                    leader.name
                )));
                let remaining = deadline.saturating_duration_since(Instant::now());
                view.await_change(leader_id, view.settle().min(remaining)).await;
            }
            other => return other,
        }
    }
    Err(last_move.unwrap_or_else(|| NodeError::no_leader("the leader kept changing")))
}

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
}

impl LeaderView for RaftNode {
    fn me(&self) -> NodeId {
        self.inner.id
    }

    fn handing_over(&self) -> bool {
        self.is_shutting_down()
    }

    fn settle(&self) -> Duration {
        self.inner.settings.raft.heartbeat_interval * 3
    }

    async fn await_leader(&self, deadline: Instant) -> Result<(NodeId, Member), NodeError> {
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
            NodeError::no_leader(format!(
                "no leader elected within {wait:?}; a quorum of voters may be down or partitioned"
            ))
        })
    }

    async fn await_successor(&self, deadline: Instant) -> Result<(NodeId, Member), NodeError> {
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
            _ => Err(NodeError::no_leader(
                "this node is shutting down and no successor was elected in time",
            )),
        }
    }

    async fn await_change(&self, from: NodeId, wait: Duration) {
        let _ = self
            .inner
            .raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader != Some(from), "leader changed")
            .await;
    }

    fn cut_off(&self) -> Option<String> {
        RaftNode::cut_off(self)
    }

    fn leader_silent(&self, leader: NodeId) -> Option<String> {
        RaftNode::leader_silent(self, leader)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn member(id: NodeId) -> Member {
        Member {
            name: format!("n{id}"),
            addr: format!("127.0.0.1:{}", 5000 + id),
        }
    }

    /// A scripted view of leadership: each `await_leader` answers the next scripted leader
    /// (None: no leader within the deadline); it records every call.
    struct Script {
        me: NodeId,
        leaders: Mutex<Vec<Option<NodeId>>>,
        handing_over: bool,
        successor: Option<NodeId>,
        changes_awaited: Mutex<Vec<NodeId>>,
        cut_off: Option<String>,
        silent: Option<NodeId>,
    }

    impl Script {
        fn new(me: NodeId, leaders: &[Option<NodeId>]) -> Self {
            Script {
                me,
                leaders: Mutex::new(leaders.iter().rev().copied().collect()),
                handing_over: false,
                successor: None,
                changes_awaited: Mutex::default(),
                cut_off: None,
                silent: None,
            }
        }
    }

    impl LeaderView for Script {
        fn me(&self) -> NodeId {
            self.me
        }
        fn handing_over(&self) -> bool {
            self.handing_over
        }
        fn settle(&self) -> Duration {
            Duration::from_millis(1)
        }
        async fn await_leader(&self, _deadline: Instant) -> Result<(NodeId, Member), NodeError> {
            let next = self.leaders.lock().expect("test lock").pop().flatten();
            next.map(|id| (id, member(id)))
                .ok_or_else(|| NodeError::no_leader("no leader elected within the deadline"))
        }
        async fn await_successor(&self, _deadline: Instant) -> Result<(NodeId, Member), NodeError> {
            self.successor
                .map(|id| (id, member(id)))
                .ok_or_else(|| NodeError::no_leader("no successor"))
        }
        async fn await_change(&self, from: NodeId, _wait: Duration) {
            self.changes_awaited.lock().expect("test lock").push(from);
        }
        fn cut_off(&self) -> Option<String> {
            self.cut_off.clone()
        }
        fn leader_silent(&self, leader: NodeId) -> Option<String> {
            (self.silent == Some(leader)).then(|| format!("n{leader} silent for 800 ms"))
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// Runs a route whose attempts answer from `answers` in turn; returns the result and the
    /// targets tried.
    async fn run(
        view: &Script,
        answers: Vec<Result<u32, NodeError>>,
    ) -> (Result<u32, NodeError>, Vec<Target>) {
        let tried = Mutex::new(Vec::new());
        let answers = Mutex::new(answers.into_iter());
        let result = route_to_leader(view, soon(), |t| {
            tried.lock().expect("test lock").push(t);
            let next = answers
                .lock()
                .expect("test lock")
                .next()
                .expect("no more scripted answers");
            async move { next }
        })
        .await;
        (result, tried.into_inner().expect("test lock"))
    }

    fn moved() -> NodeError {
        NodeError::NotLeader { leader: None }
    }

    #[tokio::test]
    async fn runs_here_when_this_node_leads_and_on_the_peer_otherwise() {
        let (r, tried) = run(&Script::new(1, &[Some(1)]), vec![Ok(7)]).await;
        assert_eq!((r.ok(), tried), (Some(7), vec![Target::Here]));
        let (r, tried) = run(&Script::new(1, &[Some(2)]), vec![Ok(8)]).await;
        assert_eq!((r.ok(), tried), (Some(8), vec![Target::Peer(member(2))]));
    }

    #[tokio::test]
    async fn follows_a_leader_that_changes_mid_call() {
        let view = Script::new(1, &[Some(2), Some(3)]);
        let (r, tried) = run(&view, vec![Err(moved()), Ok(9)]).await;
        assert_eq!(r.ok(), Some(9));
        assert_eq!(tried, vec![Target::Peer(member(2)), Target::Peer(member(3))]);
        assert_eq!(
            *view.changes_awaited.lock().expect("test lock"),
            vec![2],
            "waited for the move to settle"
        );
    }

    #[tokio::test]
    async fn the_leadership_moving_away_from_this_node_is_followed_too() {
        let view = Script::new(1, &[Some(1), Some(2)]);
        let (r, tried) = run(&view, vec![Err(moved()), Ok(1)]).await;
        assert_eq!(r.ok(), Some(1));
        assert_eq!(tried, vec![Target::Here, Target::Peer(member(2))]);
    }

    #[tokio::test]
    async fn no_leader_within_the_deadline_is_a_retry_safe_no_leader() {
        let (r, tried) = run(&Script::new(1, &[None]), vec![]).await;
        assert!(
            matches!(r, Err(NodeError::NoLeader { reason, .. }) if reason.contains("within the deadline"))
        );
        assert!(tried.is_empty(), "nothing was attempted");
    }

    #[tokio::test]
    async fn a_peer_that_keeps_refusing_ends_in_no_leader_after_the_attempts() {
        let view = Script::new(1, &[Some(2), Some(2), Some(2)]);
        let (r, tried) = run(&view, vec![Err(moved()), Err(moved()), Err(moved())]).await;
        assert!(
            matches!(&r, Err(NodeError::NoLeader { reason, .. }) if reason.contains("leadership moved")),
            "{r:?}"
        );
        assert_eq!(tried.len(), ROUTE_ATTEMPTS);
    }

    #[tokio::test]
    async fn a_failure_other_than_a_move_is_final() {
        let view = Script::new(1, &[Some(2), Some(3)]);
        let unreachable = NodeError::no_leader("leader n2 is unreachable: connection refused");
        let (r, tried) = run(&view, vec![Err(unreachable), Ok(1)]).await;
        assert!(matches!(r, Err(NodeError::NoLeader { reason, .. }) if reason.contains("unreachable")));
        assert_eq!(tried.len(), 1, "not retried: the caller decides");
        let timeout = NodeError::Timeout("may or may not be applied".into());
        let (r, _) = run(&Script::new(1, &[Some(2)]), vec![Err(timeout)]).await;
        assert!(
            matches!(r, Err(NodeError::Timeout(_))),
            "a write of unknown outcome is never retried"
        );
    }

    #[tokio::test]
    async fn a_leader_cut_off_from_its_quorum_refuses_at_once_without_trying() {
        let mut view = Script::new(1, &[Some(1)]);
        view.cut_off = Some("no quorum answered for 900 ms".into());
        let (r, tried) = run(&view, vec![]).await;
        assert!(
            matches!(&r, Err(NodeError::NoLeader { reason, believed: None }) if reason.contains("900 ms")),
            "{r:?}"
        );
        assert!(tried.is_empty(), "nothing was proposed");
        // Cut off is about this node leading: a follower still forwards to its leader.
        let mut view = Script::new(1, &[Some(2)]);
        view.cut_off = Some("irrelevant".into());
        let (r, _) = run(&view, vec![Ok(4)]).await;
        assert_eq!(r.ok(), Some(4));
    }

    #[tokio::test]
    async fn an_unreachable_leader_is_named_in_the_refusal() {
        let view = Script::new(1, &[Some(2)]);
        let down = NodeError::no_leader("leader n2 is unreachable: link down");
        let (r, _) = run(&view, vec![Err(down)]).await;
        match r {
            Err(NodeError::NoLeader {
                reason,
                believed: Some((2, m)),
            }) => {
                assert!(reason.contains("link down"), "{reason}");
                assert_eq!(m, member(2));
            }
            other => panic!("expected no-leader naming n2, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_silent_leader_is_not_forwarded_to_and_is_named() {
        let mut view = Script::new(1, &[Some(2)]);
        view.silent = Some(2);
        let (r, tried) = run(&view, vec![]).await;
        match r {
            Err(NodeError::NoLeader {
                reason,
                believed: Some((2, m)),
            }) => {
                assert!(reason.contains("silent"), "{reason}");
                assert_eq!(m, member(2));
            }
            other => panic!("expected no-leader naming n2, got {other:?}"),
        }
        assert!(tried.is_empty(), "nothing was sent");
        // Only the silent node is refused: a leader that is heard is forwarded to.
        let mut view = Script::new(1, &[Some(3)]);
        view.silent = Some(2);
        let (r, _) = run(&view, vec![Ok(6)]).await;
        assert_eq!(r.ok(), Some(6));
    }

    #[tokio::test]
    async fn a_node_handing_over_sends_to_its_successor() {
        let mut view = Script::new(1, &[Some(1)]);
        view.handing_over = true;
        view.successor = Some(3);
        let (r, tried) = run(&view, vec![Ok(5)]).await;
        assert_eq!((r.ok(), tried), (Some(5), vec![Target::Peer(member(3))]));
        let mut view = Script::new(1, &[Some(1)]);
        view.handing_over = true;
        let (r, tried) = run(&view, vec![]).await;
        assert!(matches!(r, Err(NodeError::NoLeader { .. })));
        assert!(tried.is_empty());
    }
}

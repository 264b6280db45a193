//! Leadership transfer on shutdown: a leader that is asked to stop hands over first, so
//! clients see a short wait, not errors.

use std::time::Duration;

use crate::node::RaftNode;

/// Moves leadership away from this node before it stops: it stops sending heartbeats, so
/// the followers elect a new leader once the leader lease runs out, and waits for that.
/// Returns whether another node leads now.
pub async fn hand_over_leadership(node: &RaftNode, deadline: Duration) -> bool {
    let raft = node.raft();
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(node.id()) {
        return true;
    }
    let others = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != node.id())
        .count();
    if others == 0 {
        return false;
    }
    tracing::info!("leader shutting down: stepping aside so another voter takes over");
    raft.runtime_config().heartbeat(false);
    raft.runtime_config().elect(false);
    let me = node.id();
    let moved = raft
        .wait(Some(deadline))
        .metrics(
            |m| m.current_leader.is_some() && m.current_leader != Some(me),
            "leadership moved",
        )
        .await;
    match moved {
        Ok(m) => {
            tracing::info!(new_leader = ?m.current_leader, "leadership moved");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "leadership did not move before the deadline");
            false
        }
    }
}

//! Leadership transfer on shutdown: a leader that is asked to stop hands over first, so
//! clients see a short wait, not errors.

use std::time::Duration;

use crate::model::Member;
use crate::node::RaftNode;

/// Moves leadership away from this node before it stops: it stops sending heartbeats, so
/// the followers elect a new leader once the leader lease runs out, and waits for that.
/// Stops waiting early when no other voter can take over (every one is unreachable or
/// shutting down too, as when the whole cluster is stopped). Returns whether another node
/// leads now.
pub async fn hand_over_leadership(node: &RaftNode, deadline: Duration) -> bool {
    let raft = node.raft();
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(node.id()) {
        return true;
    }
    let membership = m.membership_config.membership();
    let others: Vec<Member> = membership
        .voter_ids()
        .filter(|v| *v != node.id())
        .filter_map(|v| membership.get_node(&v).cloned())
        .collect();
    if others.is_empty() {
        return false;
    }
    tracing::info!("leader shutting down: stepping aside so another voter takes over");
    raft.runtime_config().heartbeat(false);
    raft.runtime_config().elect(false);
    let me = node.id();
    let wait = raft.wait(Some(deadline));
    let moved = wait.metrics(
        |m| m.current_leader.is_some() && m.current_leader != Some(me),
        "leadership moved",
    );
    tokio::select! {
        moved = moved => match moved {
            Ok(m) => {
                tracing::info!(new_leader = ?m.current_leader, "leadership moved");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "leadership did not move before the deadline");
                false
            }
        },
        () = nobody_can_take_over(node, &others) => {
            tracing::info!("no other voter can take over (each is stopped or stopping): not waiting for a hand-over");
            false
        }
    }
}

/// Resolves once no voter in `others` answers as a running member (probed every 250 ms).
async fn nobody_can_take_over(node: &RaftNode, others: &[Member]) {
    let probe = Duration::from_millis(250);
    loop {
        tokio::time::sleep(probe).await;
        let answers =
            futures::future::join_all(others.iter().map(|m| node.peers().status(&m.addr, probe))).await;
        if !answers.iter().any(|a| matches!(a, Ok(s) if !s.shutting_down)) {
            return;
        }
    }
}

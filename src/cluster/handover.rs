//! Leadership transfer on shutdown: a leader that is asked to stop hands over first, so
//! clients see a short wait, not errors.

use std::time::{Duration, Instant};

use crate::model::Member;
use crate::node::RaftNode;

/// Moves leadership away from this node before it stops: it asks a caught-up voter to
/// campaign now ([`RaftNode::transfer_leadership`]) and waits for the new leader. It also
/// stops sending heartbeats, so that when the transfer cannot work (5 voters, a voter that
/// does not answer) the followers still elect a leader once their leases run out. Stops
/// waiting early when no other voter can take over (every one is unreachable or
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
    let until = Instant::now() + deadline;
    let transfer = async {
        match node.transfer_leadership(until).await {
            Ok(to) => tracing::info!(candidate = to, "the voter accepted the hand-over"),
            Err(why) => {
                tracing::info!(reason = %why, "no voter campaigns at once: waiting for the followers' leases to run out")
            }
        }
        std::future::pending::<std::convert::Infallible>().await
    };
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
        never = transfer => match never {},
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

//! Cluster formation and upkeep: who initialises, how others join, and how a leader hands
//! over before it stops.
//!
//! The rules (DESIGN.md, "Cluster lifecycle"):
//! - With no peers the node initialises a single-node cluster by itself.
//! - Only ordinal 0 may initialise, and only after probing its peers for a while and finding
//!   none that belongs to a cluster. Everyone else only ever joins.
//! - Joining is idempotent and retried with capped exponential backoff and jitter until this
//!   node is a voter. The leader replaces any older member with the same name.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::model::ordinal_of;
use crate::node::RaftNode;
use crate::pb::peer;

/// Forms or joins the cluster; returns once this node is a voter, or when `stop` fires.
pub async fn form(node: RaftNode, stop: tokio::sync::watch::Receiver<bool>) {
    let settings = node.settings().clone();
    let peers = settings.cluster.peers.clone();
    let raft = node.raft().clone();
    if raft.is_initialized().await.unwrap_or(false) {
        return;
    }
    if peers.is_empty() {
        initialize_alone(&node).await;
        return;
    }
    if ordinal_of(&node.member().name) == Some(0) {
        let probe_until = Instant::now() + settings.cluster.bootstrap_probe;
        loop {
            if *stop.borrow() {
                return;
            }
            if let Some(existing) = find_cluster(&node, &peers).await {
                tracing::info!(peer = %existing, "a peer already belongs to a cluster: joining it instead of initialising");
                break;
            }
            if Instant::now() >= probe_until {
                tracing::info!(probe = ?settings.cluster.bootstrap_probe, "no peer belongs to a cluster: ordinal 0 initialises it");
                initialize_alone(&node).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    join_loop(&node, &peers, stop).await;
}

async fn initialize_alone(node: &RaftNode) {
    let members = BTreeMap::from([(node.id(), node.member().clone())]);
    match node.raft().initialize(members).await {
        Ok(()) => tracing::info!(node_id = node.id(), "initialised a new cluster"),
        Err(e) => tracing::warn!(error = %e, "initialise refused (already initialised?)"),
    }
}

/// The first peer that reports belonging to a cluster, if any answers so.
async fn find_cluster(node: &RaftNode, peers: &[String]) -> Option<String> {
    let probes = peers.iter().map(|addr| async move {
        let mut client = node.peers().client(addr).ok()?;
        let mut req = tonic::Request::new(peer::StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        let status = client.status(req).await.ok()?.into_inner();
        (status.initialized && status.node_id != node.id()).then(|| addr.clone())
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .next()
}

async fn join_loop(node: &RaftNode, peers: &[String], mut stop: tokio::sync::watch::Receiver<bool>) {
    let max = node.settings().cluster.join_backoff_max;
    let mut backoff = Duration::from_millis(200);
    let mut attempt: u64 = 0;
    let mut last_log = Instant::now() - Duration::from_secs(60);
    loop {
        if *stop.borrow() {
            return;
        }
        if node.is_voter() {
            return;
        }
        let addr = &peers[(attempt as usize) % peers.len()];
        attempt += 1;
        match request_join(node, addr).await {
            Ok(leader) => {
                tracing::info!(via = %addr, leader, node_id = node.id(), "joined the cluster as a voter");
                return;
            }
            Err(e) => {
                // One line every few seconds is enough to tell an operator why we wait.
                if last_log.elapsed() >= Duration::from_secs(5) {
                    tracing::warn!(via = %addr, attempt, error = %e, "join failed; retrying");
                    last_log = Instant::now();
                } else {
                    tracing::debug!(via = %addr, attempt, error = %e, "join failed; retrying");
                }
            }
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        let sleep = backoff + Duration::from_millis(jitter);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(max);
    }
}

async fn request_join(node: &RaftNode, addr: &str) -> Result<u64, tonic::Status> {
    let mut client = node.peers().client(addr)?;
    let mut req = tonic::Request::new(peer::JoinRequest {
        node_id: node.id(),
        member: Some(node.member().clone().into()),
    });
    // Catching up a learner can take a while with a large state: allow for it.
    req.set_timeout(node.settings().raft.write_timeout * 6);
    Ok(client.join(req).await?.into_inner().leader_id)
}

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

//! Forming the cluster: ordinal 0's bootstrap decision, everyone else's join loop, and
//! staying a member (asking to join again after being unready for long).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::restore::restore;
use super::{Backoff, Throttle, pause};
use crate::config::RestoreSource;
use crate::discovery::Peer;
use crate::model::{Member, ordinal_of};
use crate::network::PeerError;
use crate::node::RaftNode;

/// Forms or joins the cluster; returns once this node is a voter, or when `stop` fires.
pub async fn form(node: RaftNode, mut stop: watch::Receiver<bool>) {
    let settings = node.settings().clone();
    if node.raft().is_initialized().await.unwrap_or(false) {
        // Disk mode, restarted with its data: already a member — unless it was removed
        // while it was away.
        stay_member(&node, stop).await;
        return;
    }
    let discovery = node.discovery().clone();
    if discovery.is_standalone() {
        initialize_alone(&node).await;
        return;
    }
    let is_zero = ordinal_of(&node.member().name) == Some(0);
    let mut listed_since: Option<Instant> = None;
    let mut backoff = Backoff::new(settings.cluster.join_backoff_max);
    // A normal formation has peers that have not started yet and no leader until ordinal 0
    // has probed and initialised: those stay out of the warning log for a few probe
    // windows. Discovery failing is worth a warning at once.
    let formation = settings.cluster.bootstrap_probe * 3;
    let mut dns_warn = Throttle::new(Duration::from_secs(10), Duration::ZERO);
    let mut join_warn = Throttle::new(Duration::from_secs(5), formation);
    let mut silent_warn = Throttle::new(Duration::from_secs(10), formation);
    let mut attempt: usize = 0;
    loop {
        if *stop.borrow() || node.is_voter() {
            return;
        }
        let peers = match discovery.peers().await {
            Ok(p) => p,
            Err(e) => {
                if dns_warn.ready() {
                    tracing::warn!(error = %e, "peer discovery failed; retrying (the cluster forms once discovery answers)");
                } else {
                    tracing::debug!(error = %e, "peer discovery failed; retrying");
                }
                if !pause(backoff.step(), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let target = if is_zero {
            let since = *listed_since.get_or_insert_with(Instant::now);
            match find_cluster(&node, &peers).await {
                Probe::Member(addr) => {
                    tracing::info!(peer = %addr, "a peer already belongs to a cluster: joining it instead of initialising");
                    Some(addr)
                }
                Probe::NoneAnswered { silent } if !silent.is_empty() => {
                    if silent_warn.ready() {
                        tracing::warn!(silent = ?silent,
                            "not initialising: these peers do not answer, and one of them may belong to a cluster; waiting for them");
                    } else {
                        tracing::debug!(silent = ?silent, "not initialising yet: waiting for silent peers");
                    }
                    if !pause(Duration::from_millis(250), &mut stop).await {
                        return;
                    }
                    continue;
                }
                Probe::NoneAnswered { .. } if since.elapsed() >= settings.cluster.bootstrap_probe => {
                    tracing::info!(probe = ?settings.cluster.bootstrap_probe, peers = peers.len(),
                        "every peer answered and none belongs to a cluster: ordinal 0 initialises it");
                    initialize_alone(&node).await;
                    return;
                }
                Probe::NoneAnswered { .. } => {
                    if !pause(Duration::from_millis(250), &mut stop).await {
                        return;
                    }
                    continue;
                }
            }
        } else if peers.is_empty() {
            None
        } else {
            attempt += 1;
            Some(peers[attempt % peers.len()].addr.clone())
        };
        if let Some(addr) = target {
            match request_join(&node, &addr).await {
                Ok(leader) => {
                    tracing::info!(via = %addr, leader, node_id = node.id(), "joined the cluster as a voter");
                    return;
                }
                Err(e) if join_warn.ready() => {
                    tracing::warn!(via = %addr, error = %e, "join failed; retrying")
                }
                Err(e) => tracing::debug!(via = %addr, error = %e, "join failed; retrying"),
            }
        }
        if !pause(backoff.step(), &mut stop).await {
            return;
        }
    }
}

/// A disk-mode node that restarts with its data is initialised, so there is nothing to
/// form; but the cluster may have removed it while it was away (scaled down, then scaled up
/// again onto its old volume). Such a node never hears from a leader again. After a long
/// silence it asks to join, under its own id and with its own durable log: a no-op for a
/// current member, and for a removed one the ordinary learner → voter path. (Reusing the id
/// is safe here because the node kept its log and vote; it is an id without its log that
/// must never come back.)
async fn stay_member(node: &RaftNode, mut stop: watch::Receiver<bool>) {
    if node.discovery().is_standalone() {
        return;
    }
    let settings = node.settings().clone();
    let patience = settings.raft.election_timeout_max * 10;
    let mut unready_since: Option<Instant> = None;
    let mut attempt: usize = 0;
    let mut backoff = Backoff::new(settings.cluster.join_backoff_max.max(Duration::from_secs(1)));
    loop {
        if !pause(Duration::from_secs(1), &mut stop).await {
            return;
        }
        if node.readiness().await.is_ok() {
            unready_since = None;
            continue;
        }
        if unready_since.get_or_insert_with(Instant::now).elapsed() < patience {
            continue;
        }
        let Ok(peers) = node.discovery().peers().await else {
            continue;
        };
        if peers.is_empty() {
            continue;
        }
        attempt += 1;
        let addr = peers[attempt % peers.len()].addr.clone();
        match request_join(node, &addr).await {
            Ok(leader) => {
                tracing::info!(via = %addr, leader, node_id = node.id(),
                    "not ready for long: asked to (re)join under this node's own id");
                unready_since = None;
            }
            Err(e) => {
                tracing::debug!(via = %addr, error = %e, "rejoin request failed; retrying");
                if !pause(backoff.step(), &mut stop).await {
                    return;
                }
            }
        }
    }
}

async fn initialize_alone(node: &RaftNode) {
    let members = BTreeMap::from([(node.id(), node.member().clone())]);
    // Marked before the cluster exists, so that nothing (the backup schedule above all)
    // ever sees the new cluster's leader between initialising and restoring: a scheduled
    // backup of a half-restored store would become the newest backup.
    let restores = node.settings().storage.restore_source() != RestoreSource::Nothing;
    if restores {
        node.set_restoring(Some("initialising a cluster to restore into".into()));
    }
    match node.raft().initialize(members).await {
        Ok(()) => {
            tracing::info!(node_id = node.id(), "initialised a new cluster");
            restore(node).await;
        }
        Err(e) => {
            if restores {
                node.set_restoring(None);
            }
            tracing::warn!(error = %e, "initialise refused (already initialised?)");
        }
    }
}

/// What ordinal 0 learnt by asking every listed peer whether it belongs to a cluster.
enum Probe {
    /// This peer answered that it does: join through it.
    Member(String),
    /// No peer said it does; `silent` lists those that did not answer at all.
    NoneAnswered { silent: Vec<String> },
}

/// Asks every peer for its status at once; silence is not "no cluster" (see the module doc).
async fn find_cluster(node: &RaftNode, peers: &[Peer]) -> Probe {
    let probes = peers.iter().map(|p| async move {
        let answer = node
            .peers()
            .status(&p.addr, Duration::from_millis(500))
            .await
            .ok();
        (p.addr.clone(), answer)
    });
    let mut silent = Vec::new();
    let mut member = None;
    for (addr, answer) in futures::future::join_all(probes).await {
        match answer {
            // Join through the leader when one answers: with peer TLS only the leader can
            // check this node's own certificate (a member forwarding the join presents its
            // certificate, not ours, and is refused).
            Some(status) if status.initialized && status.node_id != node.id() && status.leads => {
                return Probe::Member(addr);
            }
            Some(status) if status.initialized && status.node_id != node.id() => {
                member.get_or_insert(addr);
            }
            Some(_) => {}
            None => silent.push(addr),
        }
    }
    match member {
        Some(addr) => Probe::Member(addr),
        None => Probe::NoneAnswered { silent },
    }
}

async fn request_join(node: &RaftNode, addr: &str) -> Result<u64, PeerError> {
    let via = Member {
        name: addr.to_owned(),
        addr: addr.to_owned(),
    };
    let deadline = Instant::now() + node.settings().raft.membership_timeout();
    node.peers()
        .join(&via, node.id(), node.member().clone(), deadline)
        .await
}

//! Scale-down: the leader removes members whose pods have been gone from DNS for longer
//! than the grace period, one at a time, never below the floor. And on every node, peer
//! channels to addresses that are no member's and idle are closed.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tokio::sync::watch;

use super::pause;
use crate::node::RaftNode;

/// Channels idle this long to addresses that are no member's are closed.
const CHANNEL_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// Closes peer channels to non-members that nobody used for [`CHANNEL_IDLE`].
pub async fn prune_channels(node: RaftNode, mut stop: watch::Receiver<bool>) {
    while pause(CHANNEL_IDLE / 5, &mut stop).await {
        let members = node.member_addrs();
        let dropped = node
            .peers()
            .evict_idle(CHANNEL_IDLE, |addr| members.contains(addr));
        if dropped > 0 {
            tracing::debug!(dropped, "closed idle channels to addresses that are no member's");
        }
    }
}

/// On the leader, with DNS discovery: removes members whose pods are gone for longer than
/// the grace period. DNS errors are not absence: nothing is removed while discovery fails.
pub async fn reconcile(node: RaftNode, mut stop: watch::Receiver<bool>) {
    if !node.discovery().is_dns() {
        return;
    }
    let settings = node.settings().clone();
    let grace = settings.cluster.scale_down_grace;
    let mut absent_since: HashMap<String, Instant> = HashMap::new();
    while pause(settings.cluster.reconcile_interval, &mut stop).await {
        if !node.is_leader() {
            absent_since.clear();
            continue;
        }
        let Ok(peers) = node.discovery().peers().await else {
            continue;
        };
        let mut present: HashSet<String> = peers.into_iter().filter_map(|p| p.name).collect();
        present.insert(node.member().name.clone());
        let members = node.member_names();
        let now = Instant::now();
        absent_since.retain(|name, _| !present.contains(name) && members.values().any(|n| n == name));
        for name in members.values().filter(|n| !present.contains(*n)) {
            absent_since.entry(name.clone()).or_insert_with(|| {
                tracing::info!(member = %name, ?grace, "member missing from discovery; removing it if it stays missing");
                now
            });
        }
        let voters = node.voter_ids();
        let expired = members
            .iter()
            .find(|(_, name)| absent_since.get(*name).is_some_and(|t| t.elapsed() >= grace));
        let Some((&id, name)) = expired else { continue };
        if voters.contains(&id) && voters.len() <= settings.cluster.min_voters {
            tracing::warn!(member = %name, voters = voters.len(), min_voters = settings.cluster.min_voters,
                "member gone past the grace period, but removing it would go below cluster.min_voters");
            continue;
        }
        match node.remove_member_here(id).await {
            Ok(()) => {
                tracing::info!(member = %name, node_id = id, "removed a member gone past the grace period");
                absent_since.remove(name);
            }
            Err(e) => tracing::warn!(member = %name, error = %e, "could not remove a departed member"),
        }
    }
}

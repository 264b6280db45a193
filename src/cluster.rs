//! Cluster formation and upkeep: who initialises, how others join, how members that are
//! gone for good are removed, and how a leader hands over before it stops.
//!
//! The rules:
//! - With no peers the node initialises a single-node cluster by itself.
//! - Only ordinal 0 may initialise, and only after it has been able to list its peers for
//!   `cluster.bootstrap_probe`, every listed peer has answered, and none of them reported
//!   belonging to a cluster. Everyone else only ever joins. A DNS outage, a partition or a
//!   paused peer therefore delays bootstrap; it never causes one. (A restarted, empty
//!   ordinal 0 that took silence for "no cluster" would found a second cluster beside the
//!   one its silent peers still run: split brain, found by the fault-injection checker.)
//! - Joining is idempotent and retried with capped exponential backoff and jitter until this
//!   node is a voter. The leader replaces any older member with the same name.
//! - The leader removes a member whose name has been missing from DNS discovery for longer
//!   than `cluster.scale_down_grace`, one at a time, never below `cluster.min_voters`. A
//!   SIGTERM alone never removes anyone: rolling restarts must not shrink the cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;

use crate::discovery::Peer;
use crate::model::{Member, ordinal_of};
use crate::network::PeerError;
use crate::node::RaftNode;

/// Lets a repeated warning through at most once per period, so a long outage is visible in
/// the log without flooding it.
struct Throttle {
    every: Duration,
    last: Option<Instant>,
}

impl Throttle {
    fn new(every: Duration) -> Self {
        Throttle { every, last: None }
    }

    fn ready(&mut self) -> bool {
        let due = self.last.is_none_or(|t| t.elapsed() >= self.every);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }
}

/// Capped exponential backoff with up to 50 % jitter, so joiners do not retry in lockstep.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(200),
            max,
        }
    }

    fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0..=base.as_millis() as u64 / 2);
        base + Duration::from_millis(jitter)
    }
}

/// Sleeps `d`; returns false if `stop` fired first.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

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
    let mut dns_warn = Throttle::new(Duration::from_secs(10));
    let mut join_warn = Throttle::new(Duration::from_secs(5));
    let mut silent_warn = Throttle::new(Duration::from_secs(10));
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
    match node.raft().initialize(members).await {
        Ok(()) => {
            tracing::info!(node_id = node.id(), "initialised a new cluster");
            let backup = node.settings().storage.restore_from.clone();
            if !backup.as_os_str().is_empty() {
                restore(node, &backup).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "initialise refused (already initialised?)"),
    }
}

/// Records proposed per log entry while restoring a backup.
const RESTORE_CHUNK: usize = 1000;

/// Loads a backup into the cluster this node has just initialised, as ordinary replicated
/// creates (so every member that joins gets the records through the log or a snapshot).
/// Readiness fails until it is done.
async fn restore(node: &RaftNode, backup: &std::path::Path) {
    node.set_restoring(Some(format!("restoring the backup {}", backup.display())));
    let students = match crate::store::read_backup(backup) {
        Ok(s) => s,
        Err(e) => {
            // Checked at start-up, so only a file changed since then gets here.
            tracing::error!(error = %e, "cannot restore the backup; the cluster stays empty and not ready");
            node.set_restoring(Some(format!("restore failed: {e}")));
            return;
        }
    };
    let total = students.len();
    let started = Instant::now();
    let mut done = 0;
    for chunk in students.chunks(RESTORE_CHUNK) {
        let cmd =
            crate::model::Command::Batch(chunk.iter().cloned().map(crate::model::Command::Create).collect());
        let mut backoff = Backoff::new(Duration::from_secs(2));
        loop {
            match node.raft().client_write(cmd.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, done, total, "restore write failed; retrying");
                    tokio::time::sleep(backoff.step()).await;
                }
            }
        }
        done += chunk.len();
        node.set_restoring(Some(format!(
            "restoring the backup {}: {done} of {total} records",
            backup.display()
        )));
    }
    tracing::info!(records = total, took_ms = started.elapsed().as_millis() as u64, backup = %backup.display(),
        "restored the backup");
    node.set_restoring(None);
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
    for (addr, answer) in futures::future::join_all(probes).await {
        match answer {
            Some(status) if status.initialized && status.node_id != node.id() => {
                return Probe::Member(addr);
            }
            Some(_) => {}
            None => silent.push(addr),
        }
    }
    Probe::NoneAnswered { silent }
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

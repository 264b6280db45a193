//! One running member of the cluster: the Raft handle plus everything the edges (REST,
//! client gRPC, the peer service) need, so the rules live in one place. Each concern has
//! its own file: [`batch`] (the write batcher), [`write`] (local and forwarded writes), [`read`] (linearizable
//! reads: leader lease, shared read rounds), [`membership`] (join and remove), [`health`]
//! (readiness, status, `/cluster`), [`leader`] (finding the leader), [`check_quorum`] (a
//! leader cut off from its quorum refuses at once), [`election`] (the election timer, with
//! pre-vote), [`error`].

mod batch;
mod check_quorum;
mod election;
mod error;
mod health;
mod leader;
mod membership;
mod read;
mod rounds;
mod transfer;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::Settings;
use crate::discovery::Discovery;
use crate::lease::LeaderLease;
use crate::metrics::Metrics;
use crate::model::Member;
use crate::network::{CommitHold, PeerClients};
use crate::security::Security;
use crate::store::StateMachineStore;
use crate::{NodeId, Raft};

pub use error::NodeError;
pub use health::{ClusterInfo, NodeStatus};
pub use read::Consistency;

use batch::Batcher;
use health::LeaderContact;
use rounds::Rounds;

/// What a node is built from: the started Raft instance and the parts it shares with it.
pub struct NodeParts {
    /// This node's Raft id.
    pub id: NodeId,
    /// This node's name and advertised peer address.
    pub member: Member,
    /// The started Raft instance.
    pub raft: Raft,
    /// The log store Raft appends to (read for pre-votes).
    pub log: crate::store::LogStore,
    /// The state machine Raft applies to (read directly for local reads).
    pub sm: StateMachineStore,
    /// The peer channel pool (shared with Raft's network).
    pub peers: PeerClients,
    /// The leader lease: this node owns it, the transport renews it, reads ask it.
    pub lease: Arc<LeaderLease>,
    /// Commit notices the transport holds for the next AppendEntries (this node flushes).
    pub hold: Arc<CommitHold>,
    /// Where peers come from.
    pub discovery: Discovery,
    /// The settings.
    pub settings: Arc<Settings>,
    /// The metrics.
    pub metrics: Metrics,
    /// TLS material and tokens, re-read when their files change.
    pub security: Arc<Security>,
}

/// The parts plus the node's own state. Derefs to its parts, so `inner.raft` reads well.
struct Inner {
    parts: NodeParts,
    contact: Mutex<LeaderContact>,
    /// Highest commit index heard from a leader (followers) — an upper bound for readiness.
    leader_commit: AtomicU64,
    shutting_down: AtomicBool,
    /// While ordinal 0 loads a backup into a new cluster: what readiness reports.
    restoring: Mutex<Option<String>>,
    /// Serialises membership changes made by this node while it leads.
    membership_lock: tokio::sync::Mutex<()>,
    /// Client writes waiting to be proposed together.
    batcher: Batcher,
    /// Leadership confirmations shared by concurrent readers (this node as leader).
    leader_reads: Rounds<Option<u64>>,
    /// Read points shared by concurrent linearizable reads on this node.
    barrier_reads: Rounds<Option<u64>>,
    /// True while this node leads but no quorum answers it (`check_quorum`).
    cut_off: tokio::sync::watch::Sender<bool>,
}

impl std::ops::Deref for Inner {
    type Target = NodeParts;

    fn deref(&self) -> &NodeParts {
        &self.parts
    }
}

/// A cheap-to-clone handle on this node.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

impl RaftNode {
    /// Wraps a started Raft instance.
    pub fn new(parts: NodeParts) -> Self {
        let (raft_settings, metrics) = (&parts.settings.raft, &parts.metrics);
        let limits = batch::BatchLimits {
            in_flight: raft_settings.max_in_flight_batches,
            batch: raft_settings.max_batch_writes,
            queued: raft_settings.max_queued_writes,
        };
        let batcher = Batcher::new(
            limits,
            metrics.write_batch_size.clone(),
            metrics.rejected_total.with_label_values(&["write_queue"]),
        );
        let reads_refused = metrics.rejected_total.with_label_values(&["read_queue"]);
        let max_reads = raft_settings.max_queued_reads;
        let leader_reads = Rounds::new(
            metrics.read_index_rounds.clone(),
            max_reads,
            reads_refused.clone(),
        );
        let barrier_reads = Rounds::new(metrics.read_index_rounds.clone(), max_reads, reads_refused);
        RaftNode {
            inner: Arc::new(Inner {
                parts,
                contact: Mutex::default(),
                leader_commit: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
                restoring: Mutex::new(None),
                membership_lock: tokio::sync::Mutex::new(()),
                batcher,
                leader_reads,
                barrier_reads,
                cut_off: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's name and peer address.
    pub fn member(&self) -> &Member {
        &self.inner.member
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The settings this node runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// TLS material and tokens.
    pub fn security(&self) -> &Arc<Security> {
        &self.inner.security
    }

    /// The peer channel pool.
    pub fn peers(&self) -> &PeerClients {
        &self.inner.peers
    }

    /// Until `stop`: asks OpenRaft for a heartbeat whenever a held commit notice has waited
    /// `raft.commit_hold` (see [`CommitHold`]).
    pub async fn flush_held_commits(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        tokio::select! {
            _ = self.inner.hold.run(|| self.heartbeat_now()) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    /// A follower asks for a read point and will wait until it has applied it: a commit
    /// notice held for it would make it wait out `raft.commit_hold`, so send them now.
    pub async fn flush_commits_for_readers(&self) {
        if self.inner.hold.flush_now() {
            self.heartbeat_now().await;
        }
    }

    /// Asks OpenRaft for a heartbeat to every follower now (which takes them the newest
    /// commit index).
    async fn heartbeat_now(&self) {
        // Fails only once Raft has stopped, when there is no one left to tell.
        let _ = self.inner.raft.trigger().heartbeat().await;
    }

    /// The leader lease (the peer service notes vote requests in it).
    pub fn lease(&self) -> &LeaderLease {
        &self.inner.lease
    }

    /// Where peers come from.
    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    /// The state machine (for local reads).
    pub fn state_machine(&self) -> &StateMachineStore {
        &self.inner.sm
    }

    /// Marks the node as shutting down: readiness fails from now on.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// True while a backup is being restored into this (new) cluster.
    pub fn is_restoring(&self) -> bool {
        self.inner
            .restoring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Sets (or with `None` clears) the restore progress that keeps readiness failing.
    pub fn set_restoring(&self, status: Option<String>) {
        *self
            .inner
            .restoring
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// True when this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.id)
    }

    /// The current voter ids.
    pub fn voter_ids(&self) -> BTreeSet<NodeId> {
        let m = self.inner.raft.metrics().borrow().membership_config.clone();
        m.membership().voter_ids().collect()
    }

    /// The peer ids and names of the current membership (for metrics labels).
    pub fn member_names(&self) -> BTreeMap<NodeId, String> {
        let m = self.inner.raft.metrics().borrow().membership_config.clone();
        m.membership()
            .nodes()
            .map(|(id, n)| (*id, n.name.clone()))
            .collect()
    }

    /// The peer addresses of every member (voters and learners).
    pub fn member_addrs(&self) -> BTreeSet<String> {
        let m = self.inner.raft.metrics().borrow().membership_config.clone();
        m.membership().nodes().map(|(_, n)| n.addr.clone()).collect()
    }

    /// Whether `f` holds for some member's peer address; `None` while this node knows no
    /// members (it holds no log yet). Borrows the membership instead of copying it: the
    /// peer service asks on every Raft RPC.
    pub fn any_member_addr(&self, f: impl Fn(&str) -> bool) -> Option<bool> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let mut members = metrics.membership_config.membership().nodes().peekable();
        members.peek()?;
        Some(members.any(|(_, m)| f(&m.addr)))
    }

    /// True when this node is a voter of its current membership.
    pub fn is_voter(&self) -> bool {
        let m = self.inner.raft.metrics().borrow().membership_config.clone();
        m.membership().voter_ids().any(|v| v == self.inner.id)
    }
}

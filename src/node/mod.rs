//! One running member of the cluster: the Raft handle plus everything the edges (REST,
//! client gRPC, the peer service) need, so the rules live in one place. Each concern has
//! its own file: [`batch`] (the write batcher), [`write`] (local and forwarded writes), [`read`] (linearizable
//! reads: leader lease, shared read rounds), [`membership`] (join and remove), [`health`]
//! (readiness, status, `/cluster`), [`leader`] (finding the leader), [`error`].

mod batch;
mod error;
mod health;
mod leader;
mod membership;
mod read;
mod rounds;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::Settings;
use crate::discovery::Discovery;
use crate::lease::LeaderLease;
use crate::metrics::Metrics;
use crate::model::Member;
use crate::network::PeerClients;
use crate::store::StateMachineStore;
use crate::{NodeId, Raft};

pub use error::NodeError;
pub use health::{ClusterInfo, NodeStatus};
pub use read::Consistency;

use batch::Batcher;
use health::LeaderContact;
use rounds::Rounds;

struct Inner {
    id: NodeId,
    member: Member,
    raft: Raft,
    sm: StateMachineStore,
    peers: PeerClients,
    /// The leader lease: this node owns it, the transport renews it, reads ask it.
    lease: Arc<LeaderLease>,
    discovery: Discovery,
    settings: Arc<Settings>,
    metrics: Metrics,
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
}

/// A cheap-to-clone handle on this node.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

impl RaftNode {
    /// Wraps a started Raft instance.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        member: Member,
        raft: Raft,
        sm: StateMachineStore,
        peers: PeerClients,
        lease: Arc<LeaderLease>,
        discovery: Discovery,
        settings: Arc<Settings>,
        metrics: Metrics,
    ) -> Self {
        let round_sizes = metrics.read_index_rounds.clone();
        let batcher = Batcher::new(
            settings.raft.max_in_flight_batches,
            settings.raft.max_batch_writes,
            metrics.write_batch_size.clone(),
        );
        RaftNode {
            inner: Arc::new(Inner {
                id,
                member,
                raft,
                sm,
                peers,
                lease,
                discovery,
                settings,
                metrics,
                contact: Mutex::default(),
                leader_commit: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
                restoring: Mutex::new(None),
                membership_lock: tokio::sync::Mutex::new(()),
                batcher,
                leader_reads: Rounds::new(round_sizes.clone()),
                barrier_reads: Rounds::new(round_sizes),
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

    /// The peer channel pool.
    pub fn peers(&self) -> &PeerClients {
        &self.inner.peers
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

    /// True when this node is a voter of its current membership.
    pub fn is_voter(&self) -> bool {
        let m = self.inner.raft.metrics().borrow().membership_config.clone();
        m.membership().voter_ids().any(|v| v == self.inner.id)
    }
}

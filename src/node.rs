//! One running member of the cluster: the Raft handle plus everything the APIs and the peer
//! service need — writes that forward to the leader, linearizable reads, membership changes,
//! cluster status and readiness. Every edge (REST, client gRPC, peer gRPC) calls into here,
//! so the rules live in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tonic::Code;
use tracing::Instrument;

use crate::config::Settings;
use crate::discovery::Discovery;
use crate::lease::LeaderLease;
use crate::metrics::Metrics;
use crate::model::{Command, CommandResult, Member, Student};
use crate::network::PeerClients;
use crate::network::client::within;
use crate::pb::peer;
use crate::store::StateMachineStore;
use crate::{NodeId, Raft};

/// Why the node could not do what it was asked. The edges map each kind to a status once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// No leader is known or reachable; the caller may retry.
    #[error("no leader is available: {0}")]
    NoLeader(String),
    /// This node is not the leader (peer-level answer; clients never see it).
    #[error("this node is not the leader")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<(NodeId, Member)>,
    },
    /// The operation did not finish in time; a write may or may not have been applied.
    #[error("{0}")]
    Timeout(String),
    /// A membership change was refused.
    #[error("{0}")]
    Membership(String),
    /// No member has this id.
    #[error("no member with id {0}")]
    UnknownMember(NodeId),
    /// Something that should not happen (a Raft fatal error, a malformed peer answer).
    #[error("internal error: {0}")]
    Internal(String),
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started (leader lease or read index).
    #[default]
    Linearizable,
    /// This node's applied state, without contacting the leader.
    Local,
}

/// What this node last heard from a leader; feeds readiness and the committed-index metric.
#[derive(Debug, Default)]
struct LeaderContact {
    at: Option<Instant>,
    leader: Option<NodeId>,
}

/// A snapshot of membership and progress, for `GET /cluster`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterInfo {
    /// This node.
    pub node: NodeInfo,
    /// The leader, if known.
    pub leader: Option<MemberInfo>,
    /// Voters of the current (possibly joint) membership.
    pub voters: Vec<MemberInfo>,
    /// Learners.
    pub learners: Vec<MemberInfo>,
    /// Log indexes.
    pub indexes: Indexes,
}

/// This node's identity and role.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    /// Raft node id.
    pub id: NodeId,
    /// Node name.
    pub name: String,
    /// Peer address.
    pub addr: String,
    /// Raft server state (Leader, Follower, Candidate, Learner, Shutdown).
    pub state: String,
    /// Current term.
    pub term: u64,
}

/// A member in `GET /cluster`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    /// Raft node id.
    pub id: NodeId,
    /// Node name.
    pub name: String,
    /// Peer address.
    pub addr: String,
}

/// Log progress.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Indexes {
    /// Last log index on this node.
    pub last_log: Option<u64>,
    /// Commit index known to this node.
    pub committed: Option<u64>,
    /// Last applied index.
    pub applied: Option<u64>,
    /// Last index covered by a snapshot.
    pub snapshot: Option<u64>,
    /// Last purged index.
    pub purged: Option<u64>,
}

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
    proposals: Mutex<Proposals>,
    /// Leadership confirmations shared by concurrent readers (this node as leader).
    leader_reads: ReadRounds,
    /// Read points shared by concurrent linearizable reads on this node.
    barrier_reads: ReadRounds,
}

/// A client write waiting for its batch.
struct Proposal {
    cmd: Command,
    /// The request's span: a batch of one runs in it, so its trace continues to the leader.
    span: tracing::Span,
    done: tokio::sync::oneshot::Sender<Result<CommandResult, NodeError>>,
}

/// The write batcher's state: writes not yet proposed, and batches in flight.
#[derive(Default)]
struct Proposals {
    queue: Vec<Proposal>,
    in_flight: usize,
}

/// A read point: the commit index a linearizable read must wait for (None: empty log).
type ReadPoint = Result<Option<u64>, NodeError>;

/// Concurrent readers share one read-index round instead of each paying for a quorum
/// round trip. A reader joins the *next* round, never one already in flight: a round that
/// started before the reader arrived could confirm a leadership (and a commit index) older
/// than the reader's invocation, which would not be linearizable.
#[derive(Default)]
struct ReadRounds {
    state: Mutex<RoundsState>,
}

impl ReadRounds {
    fn lock(&self) -> std::sync::MutexGuard<'_, RoundsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct RoundsState {
    running: bool,
    waiting: Vec<tokio::sync::oneshot::Sender<ReadPoint>>,
}

/// A cheap-to-clone handle on this node.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

/// Where a client write goes: straight to Raft from the caller's task, or into the queue.
enum Route {
    Inline(Command),
    Queued(tokio::sync::oneshot::Receiver<Result<CommandResult, NodeError>>),
}

/// An in-flight slot taken by a lone write; released when the write ends or is dropped.
struct Slot<'a>(&'a RaftNode);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release_slot();
    }
}

/// How many times a forwarded request follows a changed leader before giving up.
const FORWARD_ATTEMPTS: usize = 3;

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
                proposals: Mutex::default(),
                leader_reads: ReadRounds::default(),
                barrier_reads: ReadRounds::default(),
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

    /// Records that a leader contacted us (called by the peer service on AppendEntries).
    pub fn note_leader_contact(&self, leader: NodeId, leader_commit: Option<u64>) {
        let mut c = self.inner.contact.lock().unwrap_or_else(PoisonError::into_inner);
        c.at = Some(Instant::now());
        c.leader = Some(leader);
        if let Some(idx) = leader_commit {
            self.inner.leader_commit.fetch_max(idx, Ordering::Relaxed);
        }
    }

    /// The commit index this node knows: its own on the leader, the leader's report elsewhere.
    pub fn committed_index(&self) -> Option<u64> {
        let m = self.inner.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            // The highest index a majority of every voter configuration has matched (two
            // configurations during a membership change).
            let repl = m.replication.as_ref();
            let matched = |v: NodeId| {
                if v == m.id {
                    m.last_log_index
                } else {
                    repl.and_then(|r| r.get(&v).copied().flatten()).map(|l| l.index)
                }
            };
            let configs = m.membership_config.membership().get_joint_config();
            return crate::quorum::joint_quorum_value(configs, matched);
        }
        let c = self.inner.leader_commit.load(Ordering::Relaxed);
        (c > 0).then_some(c)
    }

    /// The leader this node knows, with its address. On every request's path: it borrows the
    /// metrics instead of cloning them.
    fn current_leader(&self) -> Option<(NodeId, Member)> {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow();
        let leader = m.current_leader?;
        let member = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, member))
    }

    /// Waits (bounded) until some leader is known, for requests that arrive mid-election.
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
            NodeError::NoLeader(format!(
                "no leader elected within {wait:?}; a quorum of voters may be down or partitioned"
            ))
        })
    }

    /// Waits (bounded) until another node leads.
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
            _ => Err(NodeError::NoLeader(
                "this node is shutting down and no successor was elected in time".into(),
            )),
        }
    }

    /// Applies a write through Raft, on this node if it leads, else through the leader.
    /// Returns the state machine's outcome once the entry is committed and applied.
    ///
    /// Concurrent writes are batched: while `raft.max_in_flight_batches` batches are being
    /// committed, new writes queue, and the next free slot proposes the whole queue as one
    /// log entry (one forwarded RPC on a follower). A lone write goes out at once, so batching
    /// costs latency only when the node is busy anyway.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, NodeError> {
        let route = {
            let mut p = self.lock_proposals();
            if p.queue.is_empty() && p.in_flight < self.inner.settings.raft.max_in_flight_batches {
                // A lone write on an idle slot is proposed from the caller's own task: no
                // batch task, no hand-back through a channel (two task hops off the
                // 1-connection latency). Only this caller waits for it, so a client that
                // goes away strands nobody; the slot is released either way.
                p.in_flight += 1;
                Route::Inline(cmd)
            } else {
                let (done, rx) = tokio::sync::oneshot::channel();
                p.queue.push(Proposal {
                    cmd,
                    span: tracing::Span::current(),
                    done,
                });
                Route::Queued(rx)
            }
        };
        match route {
            Route::Inline(cmd) => {
                let _slot = Slot(self);
                self.inner.metrics.write_batch_size.observe(1.0);
                self.write_direct(cmd).await
            }
            Route::Queued(rx) => {
                self.propose_queued();
                rx.await
                    .unwrap_or_else(|_| Err(NodeError::Internal("the write's batch was dropped".into())))
            }
        }
    }

    fn lock_proposals(&self) -> std::sync::MutexGuard<'_, Proposals> {
        self.inner
            .proposals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Frees an in-flight slot and proposes whatever queued meanwhile.
    fn release_slot(&self) {
        self.lock_proposals().in_flight -= 1;
        self.propose_queued();
    }

    /// Starts batches for queued writes while there is a free in-flight slot.
    fn propose_queued(&self) {
        let raft = &self.inner.settings.raft;
        let batch: Vec<Proposal> = {
            let mut p = self.lock_proposals();
            if p.queue.is_empty() || p.in_flight >= raft.max_in_flight_batches {
                return;
            }
            p.in_flight += 1;
            let n = p.queue.len().min(raft.max_batch_writes);
            p.queue.drain(..n).collect()
        };
        let node = self.clone();
        // Its own task: a client that disconnects must not strand the others in its batch.
        tokio::spawn(async move {
            node.inner.metrics.write_batch_size.observe(batch.len() as f64);
            let span = if batch.len() == 1 {
                batch[0].span.clone()
            } else {
                tracing::info_span!("write_batch", writes = batch.len())
            };
            let (cmds, waiters): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.done)).unzip();
            let n = cmds.len();
            let combined = match <[Command; 1]>::try_from(cmds) {
                Ok([one]) => one,
                Err(many) => Command::Batch(many),
            };
            let outcomes = match node.write_direct(combined).instrument(span).await {
                Ok(CommandResult::Batch(results)) if n > 1 && results.len() == n => Ok(results),
                Ok(one) if n == 1 => Ok(vec![one]),
                Ok(other) => Err(NodeError::Internal(format!(
                    "a batch of {n} writes produced {other:?}"
                ))),
                Err(e) => Err(e),
            };
            match outcomes {
                Ok(results) => {
                    for (w, r) in waiters.into_iter().zip(results) {
                        let _ = w.send(Ok(r));
                    }
                }
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
            node.release_slot();
        });
    }

    /// Proposes one command (possibly a batch): locally if this node leads, else through
    /// the leader, following a moved leader a few times.
    async fn write_direct(&self, cmd: Command) -> Result<CommandResult, NodeError> {
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout;
        let mut last_err = None;
        for _ in 0..FORWARD_ATTEMPTS {
            let (mut leader_id, mut leader) = self.await_leader(deadline).await?;
            if leader_id == self.inner.id && self.is_shutting_down() {
                // We are handing leadership over: wait for the successor and forward to it,
                // so clients of a terminating node see latency, not errors.
                (leader_id, leader) = self.await_successor(deadline).await?;
            }
            let result = if leader_id == self.inner.id {
                self.write_local(cmd.clone(), deadline).await
            } else {
                self.forward_write(&leader, cmd.clone(), deadline).await
            };
            match result {
                // The leader moved between our look-up and the call: look again.
                Err(NodeError::NotLeader { leader }) => {
                    last_err = Some(NodeError::NoLeader(format!(
                        "leadership moved while forwarding (now: {})",
                        leader.map_or("unknown".into(), |(_, m)| m.name)
                    )));
                    let _ = self
                        .inner
                        .raft
                        .wait(Some(self.inner.settings.raft.heartbeat_interval * 3))
                        .metrics(|m| m.current_leader != Some(leader_id), "leader changed")
                        .await;
                }
                other => return other,
            }
        }
        Err(last_err.unwrap_or_else(|| NodeError::NoLeader("leader kept changing".into())))
    }

    fn observe_peer_rpc(&self, rpc: &str, peer: &Member, started: Instant) {
        self.inner
            .metrics
            .peer_rpc_duration
            .with_label_values(&[rpc, &peer.name])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Proposes a write on this node, which must be the leader.
    #[tracing::instrument(name = "raft_client_write", skip_all, fields(log_index))]
    pub async fn write_local(&self, cmd: Command, deadline: Instant) -> Result<CommandResult, NodeError> {
        if self.is_shutting_down() {
            // Let the caller retry elsewhere instead of racing our own leadership transfer.
            return Err(NodeError::NotLeader { leader: None });
        }
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        let res = tokio::time::timeout(remaining, self.inner.raft.client_write(cmd)).await;
        self.inner
            .metrics
            .raft_client_write_duration
            .observe(started.elapsed().as_secs_f64());
        match res {
            Err(_) => Err(NodeError::Timeout(format!(
                "the write was not committed within {:?}; it may or may not be applied (no quorum?)",
                self.inner.settings.raft.write_timeout
            ))),
            Ok(Ok(resp)) => {
                tracing::Span::current().record("log_index", resp.log_id.index);
                resp.data.ok_or_else(|| {
                    NodeError::Internal("state machine returned no result for a command".into())
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(NodeError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            }),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(NodeError::Internal(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(NodeError::Internal(format!("raft stopped: {e}"))),
        }
    }

    #[tracing::instrument(skip_all, fields(leader = %leader.name))]
    async fn forward_write(
        &self,
        leader: &Member,
        cmd: Command,
        deadline: Instant,
    ) -> Result<CommandResult, NodeError> {
        let mut client = self
            .inner
            .peers
            .client(&leader.addr)
            .map_err(|s| status_to_error(s, leader))?;
        let mut req = tonic::Request::new(peer::ClientWriteRequest {
            command: Some(cmd.into()),
        });
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        crate::telemetry::inject(&mut req);
        let started = Instant::now();
        let resp = within(
            deadline.saturating_duration_since(started),
            client.client_write(req),
        )
        .await;
        self.observe_peer_rpc("client_write", leader, started);
        let resp = resp.map_err(|s| write_status_to_error(s, leader))?;
        resp.result
            .ok_or(crate::pb::MissingField("client_write_response.result"))
            .and_then(CommandResult::try_from)
            .map_err(|e| NodeError::Internal(e.to_string()))
    }

    /// Runs `fetch` for this caller in a round shared with every caller that arrives while a
    /// round is running (they all get the next round's answer). The round runs in its own
    /// task, so a caller that goes away (client disconnect) does not strand the others.
    async fn shared_round<F, Fut>(&self, rounds: fn(&Inner) -> &ReadRounds, fetch: F) -> ReadPoint
    where
        F: Fn(RaftNode) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ReadPoint> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut st = rounds(&self.inner).lock();
            st.waiting.push(tx);
            !std::mem::replace(&mut st.running, true)
        };
        if start {
            let node = self.clone();
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut st = rounds(&node.inner).lock();
                        if st.waiting.is_empty() {
                            st.running = false;
                            break;
                        }
                        std::mem::take(&mut st.waiting)
                    };
                    node.inner.metrics.read_index_rounds.observe(batch.len() as f64);
                    let point = fetch(node.clone()).await;
                    for waiter in batch {
                        let _ = waiter.send(point.clone());
                    }
                }
            });
        }
        rx.await
            .unwrap_or_else(|_| Err(NodeError::Internal("the shared read round was dropped".into())))
    }

    /// A read point: once this node has applied up to the returned index, a local read is
    /// linearizable. Concurrent callers (local readers, followers' read-index requests)
    /// share one leadership confirmation.
    pub async fn read_index_local(&self) -> ReadPoint {
        self.shared_round(
            |i| &i.leader_reads,
            |node| async move { node.confirm_leadership().await },
        )
        .await
    }

    /// One leadership confirmation with its read point: from the leader lease when it
    /// vouches, otherwise by a quorum (a heartbeat round).
    async fn confirm_leadership(&self) -> ReadPoint {
        if let Some(point) = self.lease_read_point() {
            self.inner.metrics.lease_confirmations.inc();
            return Ok(point);
        }
        self.inner.metrics.heartbeat_confirmations.inc();
        let timeout = self.inner.settings.raft.write_timeout;
        match tokio::time::timeout(timeout, self.inner.raft.get_read_log_id()).await {
            Err(_) => Err(NodeError::Timeout(format!(
                "could not confirm leadership with a quorum within {timeout:?}"
            ))),
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map(|l| l.index)),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(NodeError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(NodeError::NoLeader(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(NodeError::Internal(format!("raft stopped: {e}"))),
        }
    }

    /// The read point the leader lease vouches for, without any round trip; None if it
    /// cannot: the lease is off, this node does not lead, its lease has run out, a candidate
    /// asked it for a vote this term, or it has not applied an entry of its own term yet.
    /// The read point is this node's applied index: as leader it answers a write only after
    /// applying it, and its term's first entry (applied) follows every earlier term's.
    fn lease_read_point(&self) -> Option<Option<u64>> {
        let raft = &self.inner.settings.raft;
        if !raft.read_lease || self.is_shutting_down() {
            return None;
        }
        let me = self.inner.id;
        // Taken after the read arrived: the lease must cover a moment inside the read.
        let now = Instant::now();
        let term = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            let vote = m.vote;
            let leads = m.state == ServerState::Leader
                && vote.is_committed()
                && vote.leader_id().voted_for() == Some(me);
            let configs = m.membership_config.membership().get_joint_config();
            let window = raft.election_timeout_min / 2;
            if !leads || !self.inner.lease.vouches(me, &vote, configs, now, window) {
                return None;
            }
            vote.leader_id().get_term()
        };
        let applied = self.inner.sm.read().last_applied?;
        (applied.leader_id.term >= term).then_some(Some(applied.index))
    }

    /// Waits until this node's state reflects every write acknowledged before the call.
    /// Concurrent readers on this node share the read point (one request to the leader).
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout;
        if self.lease_read_point().is_some() {
            // The leader's applied state already holds every acknowledged write.
            self.inner.metrics.lease_confirmations.inc();
            return Ok(());
        }
        let index = self
            .shared_round(
                |i| &i.barrier_reads,
                |node| async move { node.fetch_read_point().await },
            )
            .await?;
        let applied = self.inner.sm.read().last_applied.map(|l| l.index);
        if let Some(index) = index.filter(|i| applied < Some(*i)) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.inner
                .raft
                .wait(Some(remaining))
                .applied_index_at_least(Some(index), "read barrier")
                .await
                .map_err(|e| {
                    NodeError::Timeout(format!("this node did not catch up to the read point: {e}"))
                })?;
        }
        Ok(())
    }

    /// Asks the leader (this node or another) for a read point, following a moved leader.
    async fn fetch_read_point(&self) -> ReadPoint {
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout;
        let mut index = None;
        for _ in 0..FORWARD_ATTEMPTS {
            let (leader_id, leader) = self.await_leader(deadline).await?;
            let r = if leader_id == self.inner.id {
                self.read_index_local().await
            } else {
                let mut client = self
                    .inner
                    .peers
                    .client(&leader.addr)
                    .map_err(|s| status_to_error(s, &leader))?;
                let mut req = tonic::Request::new(peer::ReadIndexRequest {});
                req.set_timeout(deadline.saturating_duration_since(Instant::now()));
                let started = Instant::now();
                let r = within(
                    deadline.saturating_duration_since(started),
                    client.read_index(req),
                )
                .await;
                self.observe_peer_rpc("read_index", &leader, started);
                r.map(|r| r.index).map_err(|s| status_to_error(s, &leader))
            };
            match r {
                Err(NodeError::NotLeader { .. }) => continue,
                other => {
                    index = Some(other?);
                    break;
                }
            }
        }
        index.ok_or_else(|| NodeError::NoLeader("leader kept changing".into()))
    }

    /// Reads one record.
    pub async fn get(&self, id: i64, consistency: Consistency) -> Result<Option<Student>, NodeError> {
        if consistency == Consistency::Linearizable {
            self.read_barrier().await?;
        }
        Ok(self.inner.sm.get(id))
    }

    /// Reads a page of records with ids after `after`.
    pub async fn list(
        &self,
        after: Option<i64>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<(Vec<Student>, bool), NodeError> {
        if consistency == Consistency::Linearizable {
            self.read_barrier().await?;
        }
        Ok(self.inner.sm.list(after, limit))
    }

    /// Adds `id` as a voter (through a learner that has caught up), replacing any other
    /// member with the same name. Idempotent. Runs on the leader; forwards otherwise.
    pub async fn join(&self, id: NodeId, member: Member) -> Result<NodeId, NodeError> {
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout * 6;
        for _ in 0..FORWARD_ATTEMPTS {
            let (leader_id, leader) = self.await_leader(deadline).await?;
            let r = if leader_id == self.inner.id {
                self.join_as_leader(id, member.clone()).await.map(|_| leader_id)
            } else {
                let mut client = self
                    .inner
                    .peers
                    .client(&leader.addr)
                    .map_err(|s| status_to_error(s, &leader))?;
                let mut req = tonic::Request::new(peer::JoinRequest {
                    node_id: id,
                    member: Some(member.clone().into()),
                });
                req.set_timeout(deadline.saturating_duration_since(Instant::now()));
                within(
                    deadline.saturating_duration_since(Instant::now()),
                    client.join(req),
                )
                .await
                .map(|r| r.leader_id)
                .map_err(|s| status_to_error(s, &leader))
            };
            match r {
                Err(NodeError::NotLeader { .. }) => continue,
                other => return other,
            }
        }
        Err(NodeError::NoLeader("leader kept changing".into()))
    }

    async fn join_as_leader(&self, id: NodeId, member: Member) -> Result<(), NodeError> {
        let _guard = self.inner.membership_lock.lock().await;
        let raft = &self.inner.raft;
        let current = raft.metrics().borrow().membership_config.clone();
        let membership = current.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let stale: BTreeSet<NodeId> = membership
            .nodes()
            .filter(|(nid, n)| **nid != id && n.name == member.name)
            .map(|(nid, _)| *nid)
            .collect();
        if voters.contains(&id) && stale.is_empty() {
            return Ok(());
        }
        if membership.get_node(&id).is_none() {
            tracing::info!(node_id = id, member = %member, "adding learner");
            // Blocking: returns once the learner has caught up with the leader's log.
            raft.add_learner(id, member.clone(), true)
                .await
                .map_err(|e| NodeError::Membership(e.to_string()))?;
        }
        // One joint change replaces the stale member with the new one, so the number of
        // live voters never drops below a quorum during the swap.
        let mut new_voters: BTreeSet<NodeId> = voters.difference(&stale).copied().collect();
        new_voters.insert(id);
        tracing::info!(node_id = id, ?stale, voters = ?new_voters, "promoting to voter");
        raft.change_membership(ChangeMembers::ReplaceAllVoters(new_voters), false)
            .await
            .map_err(|e| NodeError::Membership(e.to_string()))?;
        // Stale learners (never promoted) are dropped from the node list too.
        let leftover: BTreeSet<NodeId> = {
            let m = raft.metrics().borrow().membership_config.clone();
            m.membership()
                .learner_ids()
                .filter(|l| stale.contains(l))
                .collect()
        };
        if !leftover.is_empty() {
            raft.change_membership(ChangeMembers::RemoveNodes(leftover), false)
                .await
                .map_err(|e| NodeError::Membership(e.to_string()))?;
        }
        Ok(())
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

    /// Removes a member (leader only, no forwarding): used by the scale-down reconciler.
    pub async fn remove_member_here(&self, id: NodeId) -> Result<(), NodeError> {
        self.remove_as_leader(id).await
    }

    /// Removes a member (admin call). Runs on the leader; forwards otherwise.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout * 2;
        for _ in 0..FORWARD_ATTEMPTS {
            let (leader_id, leader) = self.await_leader(deadline).await?;
            let r = if leader_id == self.inner.id {
                self.remove_as_leader(id).await
            } else {
                let mut client = self
                    .inner
                    .peers
                    .client(&leader.addr)
                    .map_err(|s| status_to_error(s, &leader))?;
                let remaining = deadline.saturating_duration_since(Instant::now());
                within(
                    remaining,
                    client.remove_member(peer::RemoveMemberRequest { node_id: id }),
                )
                .await
                .map(|_| ())
                .map_err(|s| match s.code() {
                    Code::NotFound => NodeError::UnknownMember(id),
                    _ => status_to_error(s, &leader),
                })
            };
            match r {
                Err(NodeError::NotLeader { .. }) => continue,
                other => return other,
            }
        }
        Err(NodeError::NoLeader("leader kept changing".into()))
    }

    async fn remove_as_leader(&self, id: NodeId) -> Result<(), NodeError> {
        let _guard = self.inner.membership_lock.lock().await;
        let raft = &self.inner.raft;
        let m = raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        if membership.get_node(&id).is_none() {
            return Err(NodeError::UnknownMember(id));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(NodeError::Membership("refusing to remove the last voter".into()));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        raft.change_membership(change, false)
            .await
            .map_err(|e| NodeError::Membership(e.to_string()))?;
        Ok(())
    }

    /// What this node knows about the cluster, for bootstrap probing.
    pub fn status(&self) -> peer::StatusResponse {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let leader = m
            .current_leader
            .and_then(|l| membership.get_node(&l).cloned().map(|n| (l, n)));
        peer::StatusResponse {
            node_id: self.inner.id,
            name: self.inner.member.name.clone(),
            initialized: !voters.is_empty(),
            leader_id: leader.as_ref().map(|(l, _)| *l),
            leader: leader.map(|(_, n)| n.into()),
            voters,
            term: m.current_term,
        }
    }

    /// Membership and progress, for `GET /cluster`.
    pub fn cluster_info(&self) -> ClusterInfo {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let info = |id: NodeId| {
            let n = membership.get_node(&id).cloned().unwrap_or_default();
            MemberInfo {
                id,
                name: n.name,
                addr: n.addr,
            }
        };
        ClusterInfo {
            node: NodeInfo {
                id: self.inner.id,
                name: self.inner.member.name.clone(),
                addr: self.inner.member.addr.clone(),
                state: format!("{:?}", m.state),
                term: m.current_term,
            },
            leader: m.current_leader.map(info),
            voters: membership.voter_ids().map(info).collect(),
            learners: membership.learner_ids().map(info).collect(),
            indexes: Indexes {
                last_log: m.last_log_index,
                committed: self.committed_index(),
                applied: m.last_applied.map(|l| l.index),
                snapshot: m.snapshot.map(|l| l.index),
                purged: m.purged.map(|l| l.index),
            },
        }
    }

    /// Readiness: `Ok` when this node is a voter, knows a leader it heard from recently, and
    /// has applied what that leader had committed. `Err` says why not.
    pub async fn readiness(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        if let Some(status) = self
            .inner
            .restoring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Err(status);
        }
        let m = self.inner.raft.metrics().borrow().clone();
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.inner.id)
        {
            return Err(format!(
                "not a voter of the current membership (state {:?})",
                m.state
            ));
        }
        let Some(leader) = m.current_leader else {
            return Err("no known leader".into());
        };
        let fresh = self.inner.settings.raft.election_timeout_max * 2;
        if leader == self.inner.id {
            return match m.millis_since_quorum_ack {
                Some(ms) if Duration::from_millis(ms) <= fresh => Ok(()),
                Some(ms) => Err(format!("leader without quorum contact for {ms} ms")),
                None => Err("leader has not yet been acknowledged by a quorum".into()),
            };
        }
        let contact = {
            let c = self.inner.contact.lock().unwrap_or_else(PoisonError::into_inner);
            (c.at, c.leader)
        };
        match contact {
            (Some(at), Some(l)) if l == leader && at.elapsed() <= fresh => {}
            (Some(at), _) => return Err(format!("last heard from the leader {:?} ago", at.elapsed())),
            (None, _) => return Err("has not heard from the leader yet".into()),
        }
        let target = self.inner.leader_commit.load(Ordering::Relaxed);
        let applied = self
            .inner
            .raft
            .wait(Some(self.inner.settings.raft.election_timeout_min))
            .applied_index_at_least(Some(target), "readiness")
            .await;
        match applied {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "applied index {:?} is behind the leader's commit index {target}",
                m.last_applied.map(|l| l.index)
            )),
        }
    }

    /// The peer ids and names of the current membership (for metrics labels).
    pub fn member_names(&self) -> BTreeMap<NodeId, String> {
        let m = self.inner.raft.metrics().borrow().membership_config.clone();
        m.membership()
            .nodes()
            .map(|(id, n)| (*id, n.name.clone()))
            .collect()
    }
}

/// Maps a peer's answer (or a transport failure) to a [`NodeError`].
pub fn status_to_error(status: tonic::Status, peer: &Member) -> NodeError {
    match status.code() {
        Code::FailedPrecondition => NodeError::NotLeader { leader: None },
        Code::DeadlineExceeded => NodeError::Timeout(format!(
            "{} did not answer in time; a write may or may not be applied: {}",
            peer.name,
            status.message()
        )),
        Code::Unavailable => NodeError::NoLeader(format!(
            "leader {} is unreachable: {}",
            peer.name,
            status.message()
        )),
        Code::Aborted => NodeError::Membership(status.message().to_owned()),
        _ => NodeError::Internal(format!(
            "{} answered {:?}: {}",
            peer.name,
            status.code(),
            status.message()
        )),
    }
}

pub use crate::pb::{NOT_APPLIED_HEADER, not_applied};

/// Like [`status_to_error`], for a forwarded write: a transport failure may have happened
/// after the leader received the write, so only a marked refusal counts as "not applied".
pub fn write_status_to_error(status: tonic::Status, peer: &Member) -> NodeError {
    if status.code() == Code::Unavailable && status.metadata().get(NOT_APPLIED_HEADER).is_none() {
        return NodeError::Timeout(format!(
            "lost contact with the leader {} during the write; it may or may not have been applied: {}",
            peer.name,
            status.message()
        ));
    }
    status_to_error(status, peer)
}

/// Maps a [`NodeError`] to the status a peer returns, so [`status_to_error`] can invert it.
pub fn error_to_status(e: NodeError) -> tonic::Status {
    match e {
        NodeError::NotLeader { .. } => tonic::Status::failed_precondition("not the leader"),
        NodeError::NoLeader(m) => not_applied(m),
        NodeError::Timeout(m) => tonic::Status::deadline_exceeded(m),
        NodeError::Membership(m) => tonic::Status::aborted(m),
        NodeError::UnknownMember(id) => tonic::Status::not_found(format!("no member with id {id}")),
        NodeError::Internal(m) => tonic::Status::internal(m),
    }
}

impl RaftNode {
    /// True when this node is a voter of its current membership.
    pub fn is_voter(&self) -> bool {
        let m = self.inner.raft.metrics().borrow().membership_config.clone();
        m.membership().voter_ids().any(|v| v == self.inner.id)
    }
}

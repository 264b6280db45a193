//! Outgoing peer RPCs.
//!
//! One [`PeerChannel`] (one HTTP/2 connection that dials again when it breaks) per peer
//! address for the life of the process, so Raft RPCs never pay for a new connection.
//! Failures are mapped to OpenRaft's error kinds so it backs off from dead peers
//! ([`Unreachable`]) and retries slow ones ([`Timeout`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use tonic::{Code, Status};

use crate::discovery::HostResolver;
use crate::lease::LeaderLease;
use crate::metrics::Metrics;
use crate::model::Member;
use crate::network::channel::{LinkTiming, PeerChannel};
use crate::network::hold::CommitHold;
use crate::pb::TARGET_NODE_HEADER;
use crate::pb::convert::{log_id_from_pb, log_id_to_pb};
use crate::pb::peer;
use crate::pb::peer::raft_peer_client::RaftPeerClient;
use crate::security::Security;
use crate::{LogId, NodeId, Snapshot, TypeConfig, Vote};

/// Wraps a peer message in a request addressed to `target`.
pub(super) fn addressed<T>(msg: T, target: NodeId) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert(TARGET_NODE_HEADER, tonic::metadata::MetadataValue::from(target));
    req
}

/// Bounds a peer call on the client side. `grpc-timeout` alone does not bound the time a
/// request waits for a connection to a peer that is paused or cut off, and cluster
/// formation must never wait forever on one peer.
pub async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!("no answer within {limit:?}"))),
    }
}

/// Snapshot bytes per streamed message: small enough to stay far below gRPC message limits,
/// large enough that per-message overhead does not matter.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// The pool of peer channels, keyed by address. Cheap to clone.
#[derive(Clone)]
pub struct PeerClients {
    /// Each channel with when it was last handed out.
    channels: Arc<Mutex<HashMap<String, (PeerChannel, Instant)>>>,
    timing: LinkTiming,
    /// The largest message sent or accepted (`RaftSettings::peer_message_limit`).
    max_message: usize,
    metrics: Metrics,
    resolver: HostResolver,
    security: Arc<Security>,
}

impl PeerClients {
    /// An empty pool; channels are created on first use and resolve names with `resolver`.
    pub fn new(
        timing: LinkTiming,
        max_message: usize,
        metrics: Metrics,
        resolver: HostResolver,
        security: Arc<Security>,
    ) -> Self {
        PeerClients {
            channels: Arc::default(),
            timing,
            max_message,
            metrics,
            resolver,
            security,
        }
    }

    /// The client for `addr` (host:port), creating its channel on first use. Connecting is
    /// lazy: a peer that is down costs nothing until an RPC is attempted.
    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<PeerChannel>, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get_mut(addr) {
            Some((c, used)) => {
                *used = Instant::now();
                c.clone()
            }
            None => {
                let channel =
                    PeerChannel::new(addr, self.resolver.clone(), self.timing, self.security.clone())?;
                channels.insert(addr.to_owned(), (channel.clone(), Instant::now()));
                channel
            }
        };
        Ok(RaftPeerClient::new(channel)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message))
    }

    /// Drops the channels (and so their connections) not handed out for `idle`, except
    /// those `keep` names; returns how many were dropped. Addresses of departed members,
    /// probed peers and joiners that never came would otherwise stay forever.
    pub fn evict_idle(&self, idle: Duration, keep: impl Fn(&str) -> bool) -> usize {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let before = channels.len();
        channels.retain(|addr, (_, used)| keep(addr) || used.elapsed() < idle);
        before - channels.len()
    }

    /// Channels in the pool.
    pub fn len(&self) -> usize {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The link timing every channel uses.
    pub fn timing(&self) -> LinkTiming {
        self.timing
    }

    /// Metrics, for timing peer calls.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The [`RaftNetworkFactory`] handed to OpenRaft.
#[derive(Clone)]
pub struct PeerNetwork {
    /// This node's id, for error reports.
    pub id: NodeId,
    /// The shared channel pool.
    pub clients: PeerClients,
    /// The node's leader lease, renewed by every AppendEntries a peer accepts.
    pub lease: Arc<LeaderLease>,
    /// Commit notices held for the next AppendEntries.
    pub hold: Arc<CommitHold>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerConnection {
        PeerConnection {
            id: self.id,
            target,
            member: node.clone(),
            clients: self.clients.clone(),
            lease: self.lease.clone(),
            hold: self.hold.clone(),
            accepted: None,
            delivered_commit: None,
            holding: false,
        }
    }
}

/// OpenRaft's view of one peer: one replication stream, whose calls come one at a time.
pub struct PeerConnection {
    id: NodeId,
    target: NodeId,
    member: Member,
    clients: PeerClients,
    lease: Arc<LeaderLease>,
    hold: Arc<CommitHold>,
    /// The last AppendEntries the peer accepted: its vote, the log id the peer's log then
    /// matched up to, and when it was sent.
    accepted: Option<(Vote, Option<LogId>, Instant)>,
    /// The newest commit index an AppendEntries took to the peer.
    delivered_commit: Option<LogId>,
    /// A commit notice is held for the next AppendEntries.
    holding: bool,
}

/// Maps a failed peer call to OpenRaft's error kinds.
fn rpc_error<E: std::error::Error>(
    status: Status,
    id: NodeId,
    target: NodeId,
    action: RPCTypes,
    timeout: Duration,
) -> RPCError<NodeId, Member, E> {
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => RPCError::Timeout(Timeout {
            action,
            id,
            target,
            timeout,
        }),
        // Connection refused/reset, a peer that is shutting down, or a broken channel: back off.
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Aborted => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl PeerConnection {
    async fn timed<T, F>(&self, rpc: &'static str, timeout: Duration, fut: F) -> Result<T, Status>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let _timer = self
            .clients
            .metrics()
            .peer_rpc_duration
            .with_label_values(&[rpc, &self.member.name])
            .start_timer();
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{rpc} to {} timed out",
                self.member
            ))),
        }
    }

    /// Holds a commit-only AppendEntries back for the next one (see [`CommitHold`]): when
    /// it carries nothing but a commit index newer than the peer has, and the peer accepted
    /// everything it names, in this term, within a heartbeat. Periodic heartbeats (no new
    /// commit index) always go out: they are what keeps the peer's lease on this leader.
    fn try_hold(&mut self, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
        if !self.hold.enabled() || self.holding || rpc.leader_commit <= self.delivered_commit {
            return false;
        }
        let matched = matches!(self.accepted, Some((vote, matching, sent))
            if vote == rpc.vote && matching == rpc.prev_log_id && self.hold.is_fresh(sent));
        if matched {
            self.holding = true;
            self.hold.hold(self.target);
        }
        matched
    }

    fn decode_err<E: std::error::Error>(
        &self,
        e: impl std::error::Error + 'static,
    ) -> RPCError<NodeId, Member, E> {
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        if rpc.entries.is_empty() {
            // A heartbeat or a new commit index only. OpenRaft wakes this task at the same
            // moment it hands the committed entry to the state machine; letting the tasks
            // already queued run first means the client's answer leaves before this
            // message (or before this stream's answer to OpenRaft, when the notice is
            // held) instead of after it (`strace` at 1 connection showed it on the
            // critical path of every write).
            tokio::task::yield_now().await;
            if self.try_hold(&rpc) {
                return Ok(AppendEntriesResponse::Success);
            }
        }
        let timeout = option.hard_ttl();
        let to_err = |s| rpc_error(s, self.id, self.target, RPCTypes::AppendEntries, timeout);
        let mut client = self.clients.client(&self.member.addr).map_err(to_err)?;
        let (vote, sent) = (rpc.vote, Instant::now());
        if std::mem::take(&mut self.holding) {
            // This request carries the newest commit index, so the held notice too.
            self.hold.release(self.target);
        }
        let commit = rpc.leader_commit;
        let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        self.accepted = None;
        let req = peer::AppendEntriesRequest {
            vote: Some(rpc.vote.into()),
            prev_log_id: log_id_to_pb(rpc.prev_log_id),
            entries: rpc.entries.into_iter().map(Into::into).collect(),
            leader_commit: log_id_to_pb(rpc.leader_commit),
        };
        let resp = self
            .timed(
                "append_entries",
                timeout,
                client.append_entries(addressed(req, self.target)),
            )
            .await
            .map_err(to_err)?;
        use peer::append_entries_response::Result as R;
        // Success means the peer accepted our vote, and with it renewed our lease. (So does
        // Conflict, but it is rare and leaving it out only shortens the lease.)
        match resp.result {
            Some(R::Success(_)) => {
                self.lease.record_ack(self.target, &vote, sent);
                self.accepted = Some((vote, last, sent));
                self.delivered_commit = self.delivered_commit.max(commit);
                Ok(AppendEntriesResponse::Success)
            }
            Some(R::PartialSuccess(p)) => {
                let matching = log_id_from_pb(p.matching).map_err(|e| self.decode_err(e))?;
                self.lease.record_ack(self.target, &vote, sent);
                self.accepted = Some((vote, matching, sent));
                self.delivered_commit = self.delivered_commit.max(commit);
                Ok(AppendEntriesResponse::PartialSuccess(matching))
            }
            Some(R::Conflict(_)) => Ok(AppendEntriesResponse::Conflict),
            Some(R::HigherVote(v)) => Ok(AppendEntriesResponse::HigherVote(
                Vote::try_from(v).map_err(|e| self.decode_err(e))?,
            )),
            None => Err(self.decode_err(crate::pb::MissingField("append_entries_response.result"))),
        }
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // OpenRaft only calls this from its default `full_snapshot`, which we replace with a
        // streaming RPC below; reaching here would be an OpenRaft behaviour change.
        Err(RPCError::Network(NetworkError::new(&Status::unimplemented(
            "chunked install_snapshot is not used: snapshots are streamed by full_snapshot",
        ))))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let timeout = option.hard_ttl();
        let to_err = |s| rpc_error(s, self.id, self.target, RPCTypes::Vote, timeout);
        let mut client = self.clients.client(&self.member.addr).map_err(to_err)?;
        let req = peer::VoteRequest {
            vote: Some(rpc.vote.into()),
            last_log_id: log_id_to_pb(rpc.last_log_id),
        };
        let resp = self
            .timed("vote", timeout, client.vote(addressed(req, self.target)))
            .await
            .map_err(to_err)?;
        let vote = resp
            .vote
            .ok_or(crate::pb::MissingField("vote_response.vote"))
            .and_then(Vote::try_from)
            .map_err(|e| self.decode_err(e))?;
        Ok(VoteResponse {
            vote,
            vote_granted: resp.vote_granted,
            last_log_id: log_id_from_pb(resp.last_log_id).map_err(|e| self.decode_err(e))?,
        })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let timeout = option.hard_ttl();
        let mut client = self
            .clients
            .client(&self.member.addr)
            .map_err(|s| StreamingError::Unreachable(Unreachable::new(&s)))?;
        let data = snapshot.snapshot.into_inner();
        let header = peer::SnapshotChunk {
            kind: Some(peer::snapshot_chunk::Kind::Header(peer::SnapshotHeader {
                vote: Some(vote.into()),
                meta: Some((&snapshot.meta).into()),
                crc32: Some(crc32fast::hash(&data)),
            })),
        };
        let bytes = data.len();
        let chunks: Vec<peer::SnapshotChunk> = std::iter::once(header)
            .chain(data.chunks(SNAPSHOT_CHUNK_BYTES).map(|c| peer::SnapshotChunk {
                kind: Some(peer::snapshot_chunk::Kind::Data(c.to_vec())),
            }))
            .collect();
        tracing::info!(target_node = self.target, snapshot = %snapshot.meta.snapshot_id, bytes, "streaming snapshot");
        let send = self.timed(
            "install_snapshot",
            timeout,
            client.install_snapshot(addressed(futures::stream::iter(chunks), self.target)),
        );
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => r,
        };
        let resp = resp.map_err(|s| {
            match rpc_error::<Fatal<NodeId>>(s, self.id, self.target, RPCTypes::InstallSnapshot, timeout) {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                other => StreamingError::Network(NetworkError::new(&other)),
            }
        })?;
        let vote = resp
            .vote
            .ok_or(crate::pb::MissingField("snapshot_response.vote"))
            .and_then(Vote::try_from)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        Ok(SnapshotResponse { vote })
    }

    fn backoff(&self) -> Backoff {
        // Exponential from `retry_after` up to the dial bound (half an election timeout):
        // a peer back from a partition is retried before its absence can cost the leader
        // its quorum (a cap of 2 s once kept a healed majority without one for 1.8 s),
        // while a dead peer costs one bounded dial per interval.
        let t = self.clients.timing();
        let (first, cap) = (t.retry_after, t.connect_timeout.max(t.retry_after));
        Backoff::new((0..).map(move |i: u32| first.saturating_mul(1 << i.min(10)).min(cap)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer message cap fits the largest AppendEntries a leader can send: every entry a
    /// full batch of the largest valid records.
    #[test]
    fn the_peer_message_limit_fits_a_full_append_of_the_largest_records() {
        use crate::config::{MAX_ENTRIES_PER_APPEND, Settings, Sources};
        use prost::Message;
        for batch in [1, 256, 1024] {
            let mut settings = Settings::load(Sources::default()).expect("defaults");
            settings.raft.max_batch_writes = batch;
            let widest = "\u{1D11E}".repeat(crate::model::MAX_NAME_CHARS);
            let command = |id| peer::Command {
                op: Some(peer::command::Op::Create(crate::pb::client::Student {
                    id,
                    name: widest.clone(),
                    score: 100.0,
                    revision: u64::MAX,
                })),
            };
            let log_id = |index| peer::LogId {
                leader_id: Some(peer::LeaderId {
                    term: u64::MAX,
                    node_id: u64::MAX,
                }),
                index,
            };
            let entries = (0..MAX_ENTRIES_PER_APPEND)
                .map(|i| peer::Entry {
                    log_id: Some(log_id(u64::MAX - i)),
                    payload: Some(peer::entry::Payload::Normal(peer::Command {
                        op: Some(peer::command::Op::Batch(peer::CommandBatch {
                            commands: (0..batch as i64).map(|k| command(i64::MIN + k)).collect(),
                        })),
                    })),
                })
                .collect();
            let append = peer::AppendEntriesRequest {
                vote: Some(peer::Vote {
                    leader_id: Some(peer::LeaderId {
                        term: u64::MAX,
                        node_id: u64::MAX,
                    }),
                    committed: true,
                }),
                prev_log_id: Some(log_id(u64::MAX)),
                entries,
                leader_commit: Some(log_id(u64::MAX)),
            };
            let len = append.encoded_len();
            let limit = settings.raft.peer_message_limit();
            assert!(
                len <= limit,
                "batch {batch}: {len} bytes over the limit of {limit}"
            );
            // Sized to the settings, not a fixed ceiling: a tenth of the old 64 MiB here.
            if batch == 256 {
                assert!(limit < 10 << 20, "{limit}");
            }
        }
    }

    #[tokio::test]
    async fn idle_channels_to_non_members_are_evicted_and_members_kept() {
        let resolver = HostResolver::new(None).expect("resolver");
        let timing = LinkTiming::for_raft(
            Duration::from_millis(100),
            Duration::from_millis(800),
            Duration::from_secs(1),
        );
        let pool = PeerClients::new(timing, 2 << 20, Metrics::new(), resolver, Security::none());
        pool.client("member:1").expect("channel");
        pool.client("gone:1").expect("channel");
        assert_eq!(
            pool.evict_idle(Duration::ZERO, |a| a == "member:1"),
            1,
            "the idle non-member goes"
        );
        assert_eq!(pool.len(), 1);
        pool.client("gone:1").expect("a channel comes back on use");
        assert_eq!(
            pool.evict_idle(Duration::from_secs(60), |_| false),
            0,
            "recently used channels stay"
        );
        assert_eq!(pool.len(), 2);
    }
}

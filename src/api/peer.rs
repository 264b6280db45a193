//! The peer gRPC service (an inbound edge, like REST and client gRPC): Raft RPCs into
//! OpenRaft, plus forwarded writes, read-index requests, joins, removals and status probes
//! from other members.

use std::io::Cursor;
use std::time::Instant;

use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::accept::ConnInfo;
use crate::model::Command;
use crate::node::{NodeError, NodeStatus, RaftNode};
use crate::pb::convert::{log_id_from_pb, log_id_to_pb};
use crate::pb::{MissingField, peer};
use crate::pb::{TARGET_NODE_HEADER, not_applied};
use crate::security::tls::host_of;
use crate::{Entry, Snapshot, SnapshotMeta, Vote};

/// Serves the peer protocol for one node.
#[derive(Clone)]
pub struct PeerService {
    node: RaftNode,
}

impl PeerService {
    /// A service answering for `node`.
    pub fn new(node: RaftNode) -> Self {
        PeerService { node }
    }
}

impl PeerService {
    /// Refuses a Raft RPC meant for another node id: this address now belongs to a newer
    /// incarnation. `UNAVAILABLE` makes the sender back off from the stale id.
    ///
    /// An RPC without the header is refused too: a restarted, empty node answering a vote
    /// or an append in its predecessor's name breaks Raft's safety (a candidate missing
    /// committed entries can win), so the check must not be skippable. Being strict also
    /// makes a sender that forgets the header fail every test at once instead of rarely.
    fn check_target<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(raw) = request.metadata().get(TARGET_NODE_HEADER) else {
            return Err(Status::invalid_argument(format!(
                "Raft RPCs must name their target node id in the {TARGET_NODE_HEADER} header"
            )));
        };
        let target = raw.to_str().ok().and_then(|s| s.parse::<u64>().ok());
        match target {
            Some(t) if t == self.node.id() => Ok(()),
            Some(t) => Err(Status::unavailable(format!(
                "node {t} is not here: this address now serves node {} ({})",
                self.node.id(),
                self.node.member().name
            ))),
            None => Err(Status::invalid_argument(format!(
                "malformed {TARGET_NODE_HEADER} header"
            ))),
        }
    }
}

/// Which peers an RPC accepts, once peer TLS is on (the CA check is the handshake's).
#[derive(Debug, Clone, Copy)]
enum Peer<'a> {
    /// A member of the cluster (by a certificate naming a member's host, or an allowed
    /// name): Raft RPCs, forwarded writes, read points, removals.
    Member(&'static str),
    /// A node claiming `addr` for itself: its certificate must name that host.
    Claiming(&'a str),
}

impl PeerService {
    /// Binds a peer's certificate to its place in the membership, so node-2's valid
    /// certificate cannot speak for node-1 or for a node that is not a member.
    fn authorize<T>(&self, request: &Request<T>, peer: Peer<'_>) -> Result<(), Status> {
        let security = self.node.security();
        if !security.peer_tls() {
            return Ok(());
        }
        let info = request.extensions().get::<ConnInfo>();
        let remote = info.and_then(|c| c.remote);
        let deny = |reason: &str, status: Status| {
            self.node
                .metrics()
                .auth_denied_total
                .with_label_values(&["peer", reason])
                .inc();
            tracing::warn!(?remote, error = %status.message(), "peer request refused");
            Err(status)
        };
        let cert = info.and_then(|c| c.cert.clone());
        let Some(cert) = cert else {
            return deny(
                "unauthenticated",
                Status::unauthenticated("peer TLS: no client certificate was presented"),
            );
        };
        match peer {
            Peer::Claiming(addr) => {
                let host = host_of(addr);
                if cert.names_host(host) {
                    return Ok(());
                }
                deny(
                    "forbidden",
                    Status::permission_denied(format!(
                        "certificate `{}` does not name `{host}`: a node may join only under an address its certificate names",
                        cert.identity()
                    )),
                )
            }
            Peer::Member(rpc) => {
                let allowed = security.allowed_peer_names();
                if cert.names.iter().any(|n| allowed.contains(n)) {
                    return Ok(());
                }
                // A node that has no log yet knows no members: its first leader is accepted
                // on the CA alone (it has nothing to protect until it holds entries).
                let known = self
                    .node
                    .any_member_addr(|addr| cert.names_host(host_of(addr)))
                    .unwrap_or(true);
                if known {
                    return Ok(());
                }
                deny(
                    "forbidden",
                    Status::permission_denied(format!(
                        "{rpc} refused: certificate `{}` names no member of this cluster",
                        cert.identity()
                    )),
                )
            }
        }
    }
}

/// The largest term or log index a peer may name. No real cluster gets near it (a new term
/// every millisecond for 290 million years), and refusing beyond it keeps `term + 1` and
/// `index + 1` in OpenRaft and in our code from overflowing on a forged `u64::MAX`.
const MAX_PLAUSIBLE: u64 = u64::MAX >> 1;

/// Refuses a vote or log id from the wire whose term or index is past [`MAX_PLAUSIBLE`].
fn check_plausible(what: &str, term: u64, index: Option<u64>) -> Result<(), Status> {
    if term > MAX_PLAUSIBLE || index.is_some_and(|i| i > MAX_PLAUSIBLE) {
        return Err(Status::invalid_argument(format!(
            "{what}: term {term} / index {index:?} is past any real cluster's (at most {MAX_PLAUSIBLE})"
        )));
    }
    Ok(())
}

/// [`check_plausible`] for an optional log id.
fn check_log_id(what: &str, id: Option<crate::LogId>) -> Result<(), Status> {
    id.map_or(Ok(()), |l| check_plausible(what, l.leader_id.term, Some(l.index)))
}

/// Refuses an AppendEntries whose shape no leader sends: entries that do not follow
/// `prev` one index at a time, or whose log ids go backwards or name a newer leader than
/// the sender's vote. OpenRaft assumes all of it (debug builds assert it, release builds
/// would act on nonsense), so it is checked before OpenRaft sees the request.
fn check_shape(vote: &Vote, prev: Option<crate::LogId>, entries: &[Entry]) -> Result<(), Status> {
    check_plausible("AppendEntries vote", vote.leader_id.term, None)?;
    check_log_id("AppendEntries previous entry", prev)?;
    if let Some(last) = entries.last() {
        check_log_id("AppendEntries last entry", Some(last.log_id))?;
    }
    let mut expected = match prev {
        None => Some(0),
        Some(p) => p.index.checked_add(1),
    };
    let mut last = prev;
    for e in entries {
        if Some(e.log_id.index) != expected {
            return Err(Status::invalid_argument(format!(
                "AppendEntries entry {} does not follow the previous entry {:?}: entries must be consecutive",
                e.log_id, last
            )));
        }
        if last.is_some_and(|l| l.leader_id > e.log_id.leader_id) || e.log_id.leader_id > vote.leader_id {
            return Err(Status::invalid_argument(format!(
                "AppendEntries entry {} goes back in term after {:?} or is newer than the sender's vote {vote}",
                e.log_id, last
            )));
        }
        expected = e.log_id.index.checked_add(1);
        last = Some(e.log_id);
    }
    if prev.is_some_and(|p| p.leader_id > vote.leader_id) {
        return Err(Status::invalid_argument(format!(
            "AppendEntries previous entry {prev:?} is newer than the sender's vote {vote}"
        )));
    }
    Ok(())
}

/// Refuses snapshot data that does not match the sender's checksum or does not decode,
/// before OpenRaft sees it: a storage error inside its install would stop this node. The
/// work runs off the async threads (up to `raft.max_snapshot_bytes` of data).
async fn check_received_snapshot(meta: &SnapshotMeta, crc32: u32, data: Vec<u8>) -> Result<Vec<u8>, Status> {
    let id = meta.snapshot_id.clone();
    tokio::task::spawn_blocking(move || {
        let actual = crc32fast::hash(&data);
        if actual != crc32 {
            return Err(Status::invalid_argument(format!(
                "snapshot {id}: its data has checksum {actual:08x}, the header says {crc32:08x}: damaged in transit"
            )));
        }
        crate::store::check_snapshot_data(&data)
            .map_err(|e| Status::invalid_argument(format!("snapshot {id} does not decode: {e}")))?;
        Ok(data)
    })
    .await
    .map_err(|e| Status::internal(format!("snapshot check failed: {e}")))?
}

fn bad(e: MissingField) -> Status {
    Status::invalid_argument(e.to_string())
}

fn fatal(e: impl std::fmt::Display) -> Status {
    // The Raft core stopped (shutdown): tell the caller to back off and try elsewhere.
    Status::unavailable(format!("raft is not running: {e}"))
}

#[tonic::async_trait]
impl peer::raft_peer_server::RaftPeer for PeerService {
    async fn vote(
        &self,
        request: Request<peer::VoteRequest>,
    ) -> Result<Response<peer::VoteResponse>, Status> {
        // A restarted (empty) node must not vote in its predecessor's name: that would let a
        // candidate that lacks committed entries win an election.
        self.authorize(&request, Peer::Member("Vote"))?;
        self.check_target(&request)?;
        let req = request.into_inner();
        let vote = Vote::try_from(req.vote.ok_or(MissingField("vote")).map_err(bad)?).map_err(bad)?;
        let rpc = VoteRequest {
            vote,
            last_log_id: log_id_from_pb(req.last_log_id).map_err(bad)?,
        };
        check_plausible("Vote", rpc.vote.leader_id.term, None)?;
        check_log_id("Vote last log id", rpc.last_log_id)?;
        // Before Raft can grant it: a leader that might vote for someone else must stop
        // trusting its lease first.
        self.node.lease().saw_vote_request(&rpc.vote);
        let resp = self.node.raft().vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(peer::VoteResponse {
            vote: Some(resp.vote.into()),
            vote_granted: resp.vote_granted,
            last_log_id: log_id_to_pb(resp.last_log_id),
        }))
    }

    async fn append_entries(
        &self,
        request: Request<peer::AppendEntriesRequest>,
    ) -> Result<Response<peer::AppendEntriesResponse>, Status> {
        self.authorize(&request, Peer::Member("AppendEntries"))?;
        self.check_target(&request)?;
        let req = request.into_inner();
        let vote = Vote::try_from(req.vote.ok_or(MissingField("vote")).map_err(bad)?).map_err(bad)?;
        let entries = req
            .entries
            .into_iter()
            .map(Entry::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let leader_commit = log_id_from_pb(req.leader_commit).map_err(bad)?;
        check_log_id("AppendEntries leader_commit", leader_commit)?;
        let prev_log_id = log_id_from_pb(req.prev_log_id).map_err(bad)?;
        check_shape(&vote, prev_log_id, &entries)?;
        if let Err(e) = self
            .node
            .check_append_source(vote.leader_id.node_id, prev_log_id, &entries)
        {
            tracing::warn!(error = %e, "AppendEntries refused");
            return Err(Status::permission_denied(e.to_string()));
        }
        let rpc = AppendEntriesRequest {
            vote,
            prev_log_id,
            entries,
            leader_commit,
        };
        let resp = self.node.raft().append_entries(rpc).await.map_err(fatal)?;
        use peer::append_entries_response::Result as R;
        let result = match resp {
            AppendEntriesResponse::Success => {
                self.node
                    .note_leader_contact(vote.leader_id.node_id, leader_commit.map(|l| l.index));
                R::Success(peer::Empty {})
            }
            AppendEntriesResponse::PartialSuccess(m) => {
                self.node
                    .note_leader_contact(vote.leader_id.node_id, leader_commit.map(|l| l.index));
                R::PartialSuccess(peer::PartialSuccess {
                    matching: log_id_to_pb(m),
                })
            }
            AppendEntriesResponse::Conflict => R::Conflict(peer::Empty {}),
            AppendEntriesResponse::HigherVote(v) => R::HigherVote(v.into()),
        };
        Ok(Response::new(peer::AppendEntriesResponse {
            result: Some(result),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<peer::SnapshotChunk>>,
    ) -> Result<Response<peer::SnapshotResponse>, Status> {
        self.authorize(&request, Peer::Member("InstallSnapshot"))?;
        self.check_target(&request)?;
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let Some(peer::snapshot_chunk::Kind::Header(header)) = first.kind else {
            return Err(Status::invalid_argument(
                "snapshot stream must start with a header",
            ));
        };
        let vote =
            Vote::try_from(header.vote.ok_or(MissingField("header.vote")).map_err(bad)?).map_err(bad)?;
        let meta = SnapshotMeta::try_from(header.meta.ok_or(MissingField("header.meta")).map_err(bad)?)
            .map_err(bad)?;
        let crc32 = header.crc32.ok_or(MissingField("header.crc32")).map_err(bad)?;
        check_plausible("InstallSnapshot vote", vote.leader_id.term, None)?;
        check_log_id("InstallSnapshot last log id", meta.last_log_id)?;
        let cap = self.node.settings().raft.max_snapshot_bytes;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk?.kind {
                Some(peer::snapshot_chunk::Kind::Data(bytes)) => {
                    if (data.len() as u64).saturating_add(bytes.len() as u64) > cap {
                        self.node
                            .metrics()
                            .rejected_total
                            .with_label_values(&["snapshot_size"])
                            .inc();
                        return Err(Status::resource_exhausted(format!(
                            "snapshot {} is larger than raft.max_snapshot_bytes ({cap} bytes)",
                            meta.snapshot_id
                        )));
                    }
                    data.extend_from_slice(&bytes);
                }
                _ => return Err(Status::invalid_argument("only data chunks may follow the header")),
            }
        }
        let data = check_received_snapshot(&meta, crc32, data).await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "received snapshot");
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        };
        let resp = self
            .node
            .raft()
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(fatal)?;
        Ok(Response::new(peer::SnapshotResponse {
            vote: Some(resp.vote.into()),
        }))
    }

    async fn client_write(
        &self,
        request: Request<peer::ClientWriteRequest>,
    ) -> Result<Response<peer::ClientWriteResponse>, Status> {
        self.authorize(&request, Peer::Member("forwarded write"))?;
        let deadline = Instant::now() + self.node.settings().raft.write_timeout;
        // Continue the forwarding node's trace: one write, one trace, across both nodes.
        let span = tracing::info_span!("forwarded_client_write");
        crate::telemetry::extract_into(&request, &span);
        let req = request.into_inner();
        let cmd = Command::try_from(req.command.ok_or(MissingField("command")).map_err(bad)?).map_err(bad)?;
        // A peer's command gets the client edges' checks: the state machine applies anything.
        cmd.validate(self.node.settings().raft.max_batch_writes)
            .map_err(|e| Status::invalid_argument(format!("forwarded write refused: {e}")))?;
        let result = self
            .node
            .write_local(cmd, deadline)
            .instrument(span)
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(peer::ClientWriteResponse {
            result: Some(result.into()),
        }))
    }

    async fn read_index(
        &self,
        request: Request<peer::ReadIndexRequest>,
    ) -> Result<Response<peer::ReadIndexResponse>, Status> {
        self.authorize(&request, Peer::Member("ReadIndex"))?;
        self.node.flush_commits_for_readers().await;
        let index = self.node.read_index_local().await.map_err(error_to_status)?;
        Ok(Response::new(peer::ReadIndexResponse { index }))
    }

    async fn join(
        &self,
        request: Request<peer::JoinRequest>,
    ) -> Result<Response<peer::JoinResponse>, Status> {
        let claimed = request
            .get_ref()
            .member
            .as_ref()
            .map(|m| m.addr.clone())
            .unwrap_or_default();
        self.authorize(&request, Peer::Claiming(&claimed))?;
        let req = request.into_inner();
        let member = req.member.ok_or(MissingField("member")).map_err(bad)?;
        if member.name.is_empty() || member.addr.is_empty() {
            return Err(Status::invalid_argument(
                "a joining member needs a name and an address",
            ));
        }
        let leader_id = self
            .node
            .join(req.node_id, member.into())
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(peer::JoinResponse { leader_id }))
    }

    async fn remove_member(
        &self,
        request: Request<peer::RemoveMemberRequest>,
    ) -> Result<Response<peer::RemoveMemberResponse>, Status> {
        self.authorize(&request, Peer::Member("RemoveMember"))?;
        self.node
            .remove_member(request.into_inner().node_id)
            .await
            .map_err(error_to_status)?;
        Ok(Response::new(peer::RemoveMemberResponse {}))
    }

    async fn status(
        &self,
        _request: Request<peer::StatusRequest>,
    ) -> Result<Response<peer::StatusResponse>, Status> {
        Ok(Response::new(self.node.status().into()))
    }

    async fn pre_vote(
        &self,
        request: Request<peer::PreVoteRequest>,
    ) -> Result<Response<peer::PreVoteResponse>, Status> {
        self.authorize(&request, Peer::Member("PreVote"))?;
        self.check_target(&request)?;
        let req = request.into_inner();
        let last_log_id = log_id_from_pb(req.last_log_id).map_err(bad)?;
        check_log_id("PreVote last log id", last_log_id)?;
        let answer = self.node.pre_vote(req.candidate, last_log_id).await;
        Ok(Response::new(peer::PreVoteResponse {
            granted: answer.is_ok(),
            reason: answer.err().unwrap_or_default(),
        }))
    }

    async fn timeout_now(
        &self,
        request: Request<peer::TimeoutNowRequest>,
    ) -> Result<Response<peer::TimeoutNowResponse>, Status> {
        self.authorize(&request, Peer::Member("TimeoutNow"))?;
        self.check_target(&request)?;
        let req = request.into_inner();
        let last_log_id = log_id_from_pb(req.last_log_id).map_err(bad)?;
        check_log_id("TimeoutNow last log id", last_log_id)?;
        let answer = self.node.timeout_now(req.leader, req.term, last_log_id).await;
        Ok(Response::new(peer::TimeoutNowResponse {
            started: answer.is_ok(),
            reason: answer.err().unwrap_or_default(),
        }))
    }
}

/// The peer protocol's answer for a [`NodeError`]; `network::peer::PeerError` decodes it on
/// the calling side.
fn error_to_status(e: NodeError) -> Status {
    match e {
        NodeError::NotLeader { .. } => Status::failed_precondition("not the leader"),
        // Refused before anything was proposed: the caller may retry safely.
        NodeError::NoLeader { reason, believed } => {
            let mut status = not_applied(reason);
            crate::pb::tell_leader(
                status.metadata_mut(),
                believed.as_ref().map(|(id, m)| (*id, m.name.as_str())),
            );
            status
        }
        NodeError::Timeout(m) => Status::deadline_exceeded(m),
        NodeError::Membership(m) => Status::aborted(m),
        NodeError::UnknownMember(id) => Status::not_found(format!("no member with id {id}")),
        NodeError::Overloaded(m) => Status::resource_exhausted(m),
        NodeError::Internal(m) => Status::internal(m),
        // Watches are served by each node itself; no peer call yields this.
        e @ NodeError::Watch(_) => Status::out_of_range(e.to_string()),
    }
}

impl From<NodeStatus> for peer::StatusResponse {
    fn from(s: NodeStatus) -> Self {
        peer::StatusResponse {
            node_id: s.node_id,
            name: s.name,
            initialized: s.initialized,
            leader_id: s.leader.as_ref().map(|(id, _)| *id),
            leader: s.leader.map(|(_, m)| m.into()),
            voters: s.voters,
            term: s.term,
            shutting_down: s.shutting_down,
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn id(term: u64, index: u64) -> crate::LogId {
        crate::LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blanks(ids: &[(u64, u64)]) -> Vec<Entry> {
        ids.iter()
            .map(|&(t, i)| Entry {
                log_id: id(t, i),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    #[test]
    fn only_entries_that_follow_prev_in_order_pass() {
        let vote = Vote::new_committed(3, 1);
        assert!(check_shape(&vote, None, &blanks(&[(1, 0), (1, 1), (3, 2)])).is_ok());
        assert!(check_shape(&vote, Some(id(1, 4)), &blanks(&[(2, 5)])).is_ok());
        assert!(check_shape(&vote, Some(id(1, 4)), &[]).is_ok());
        let refused = [
            check_shape(&vote, None, &blanks(&[(1, 1)])),
            check_shape(&vote, Some(id(1, 4)), &blanks(&[(1, 6)])),
            check_shape(&vote, Some(id(2, 4)), &blanks(&[(1, 5)])),
            check_shape(&vote, None, &blanks(&[(4, 0)])),
            check_shape(&vote, Some(id(4, 4)), &[]),
            check_shape(&vote, Some(id(1, u64::MAX)), &blanks(&[(1, 0)])),
            check_shape(&vote, Some(id(1, u64::MAX)), &[]),
            check_shape(&Vote::new_committed(u64::MAX, 1), None, &[]),
            check_shape(
                &Vote::new_committed(u64::MAX, 1),
                Some(id(u64::MAX, 4)),
                &blanks(&[(u64::MAX, 5)]),
            ),
        ];
        for r in refused {
            assert_eq!(r.map_err(|s| s.code()), Err(tonic::Code::InvalidArgument));
        }
    }
}

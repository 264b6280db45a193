//! The typed client of the peer protocol's own calls: forwarding a write, asking the
//! leader for a read point, joining, removing a member, and the bootstrap status probe.
//! It owns the client half of the wire contract (deadlines sent as `grpc-timeout`, trace
//! context, the not-applied marker, what each status code means), so the node above it
//! deals in [`PeerError`] and domain types and never sees tonic.

use std::time::{Duration, Instant};

use tonic::{Code, Status};

use super::client::{PeerClients, within};
use crate::NodeId;
use crate::model::{Command, CommandResult, Member};
use crate::pb::{MissingField, NOT_APPLIED_HEADER, peer};

/// Why a peer call failed, as the peer protocol defines it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeerError {
    /// The peer is not (or no longer) the leader.
    #[error("{peer} is not the leader")]
    NotLeader {
        /// The peer that refused.
        peer: String,
    },
    /// The request never reached the peer, or the peer refused it before acting on it
    /// (it knows no leader): nothing was applied, so a retry is safe.
    #[error("{peer} is unreachable: {message}")]
    Unreachable {
        /// The peer.
        peer: String,
        /// What the transport or the peer said.
        message: String,
    },
    /// Contact was lost after the request may have arrived: a forwarded write may or may
    /// not have been applied.
    #[error("lost contact with {peer}: {message}")]
    ContactLost {
        /// The peer.
        peer: String,
        /// What the transport said.
        message: String,
    },
    /// No answer within the deadline.
    #[error("{peer} did not answer in time: {message}")]
    Timeout {
        /// The peer.
        peer: String,
        /// What the transport or the peer said.
        message: String,
    },
    /// The leader refused a membership change.
    #[error("{0}")]
    Refused(String),
    /// The leader has no member with this id.
    #[error("no member with id {0}")]
    UnknownMember(NodeId),
    /// The peer has no such thing (for a removal: no such member).
    #[error("{0}")]
    NotFound(String),
    /// An answer outside the protocol: an unexpected code or a malformed message.
    #[error("{peer} answered {code}: {message}")]
    Unexpected {
        /// The peer.
        peer: String,
        /// The status code (or "malformed").
        code: String,
        /// The detail.
        message: String,
    },
}

impl PeerError {
    /// Decodes a peer's status. `name` names the peer in messages.
    fn from_status(status: Status, name: &str) -> Self {
        let peer = name.to_owned();
        let message = status.message().to_owned();
        match status.code() {
            Code::FailedPrecondition => PeerError::NotLeader { peer },
            Code::DeadlineExceeded => PeerError::Timeout { peer, message },
            Code::Unavailable if status.metadata().get(NOT_APPLIED_HEADER).is_some() => {
                PeerError::Unreachable { peer, message }
            }
            Code::Unavailable => PeerError::ContactLost { peer, message },
            Code::Aborted => PeerError::Refused(message),
            Code::NotFound => PeerError::NotFound(message),
            code => PeerError::Unexpected {
                peer,
                code: format!("{code:?}"),
                message,
            },
        }
    }

    /// For calls that change nothing when repeated, a lost contact is as retry-safe as an
    /// unreachable peer.
    fn idempotent(self) -> Self {
        match self {
            PeerError::ContactLost { peer, message } => PeerError::Unreachable { peer, message },
            other => other,
        }
    }
}

/// What a peer says about itself when asked during bootstrap.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// Its Raft id.
    pub node_id: NodeId,
    /// True once it belongs to a cluster (it has voters).
    pub initialized: bool,
    /// True once it began shutting down.
    pub shutting_down: bool,
    /// True when it is the leader.
    pub leads: bool,
}

impl PeerClients {
    /// Forwards a client write to the leader `to`; the caller's trace continues there.
    pub async fn forward_write(
        &self,
        to: &Member,
        cmd: Command,
        deadline: Instant,
    ) -> Result<CommandResult, PeerError> {
        let mut req = request(
            peer::ClientWriteRequest {
                command: Some(cmd.into()),
            },
            deadline,
        );
        crate::telemetry::inject(&mut req);
        let resp = self
            .call("client_write", to, deadline, |mut c| async move {
                c.client_write(req).await
            })
            .await?;
        resp.result
            .ok_or(MissingField("client_write_response.result"))
            .and_then(CommandResult::try_from)
            .map_err(|e| malformed(to, e))
    }

    /// Asks the leader `to` for a read point (None: its log is empty).
    pub async fn read_index(&self, to: &Member, deadline: Instant) -> Result<Option<u64>, PeerError> {
        let req = request(peer::ReadIndexRequest {}, deadline);
        let resp = self
            .call("read_index", to, deadline, |mut c| async move {
                c.read_index(req).await
            })
            .await
            .map_err(PeerError::idempotent)?;
        Ok(resp.index)
    }

    /// Asks the leader `to` to add `member` as voter `id`; answers the leader's id.
    pub async fn join(
        &self,
        to: &Member,
        id: NodeId,
        member: Member,
        deadline: Instant,
    ) -> Result<NodeId, PeerError> {
        let req = request(
            peer::JoinRequest {
                node_id: id,
                member: Some(member.into()),
            },
            deadline,
        );
        let resp = self
            .call("join", to, deadline, |mut c| async move { c.join(req).await })
            .await
            .map_err(PeerError::idempotent)?;
        Ok(resp.leader_id)
    }

    /// Asks the leader `to` to remove member `id`.
    pub async fn remove_member(&self, to: &Member, id: NodeId, deadline: Instant) -> Result<(), PeerError> {
        let req = request(peer::RemoveMemberRequest { node_id: id }, deadline);
        self.call("remove_member", to, deadline, |mut c| async move {
            c.remove_member(req).await
        })
        .await
        .map_err(|e| match e.idempotent() {
            PeerError::NotFound(_) => PeerError::UnknownMember(id),
            other => other,
        })?;
        Ok(())
    }

    /// Asks the peer at `addr` whether it belongs to a cluster (bootstrap probing).
    pub async fn status(&self, addr: &str, limit: Duration) -> Result<PeerStatus, PeerError> {
        let to = Member {
            name: addr.to_owned(),
            addr: addr.to_owned(),
        };
        let deadline = Instant::now() + limit;
        let req = request(peer::StatusRequest {}, deadline);
        let resp = self
            .call_untimed(&to, deadline, |mut c| async move { c.status(req).await })
            .await?;
        Ok(PeerStatus {
            node_id: resp.node_id,
            initialized: resp.initialized,
            shutting_down: resp.shutting_down,
            leads: resp.leader_id == Some(resp.node_id),
        })
    }

    /// Asks voter `id` at `to` whether it would vote for `candidate`, whose log ends at
    /// `last_log_id`, now (pre-vote). `Ok(Err(reason))`: it would not, and why.
    pub async fn pre_vote(
        &self,
        to: &Member,
        id: NodeId,
        candidate: NodeId,
        last_log_id: Option<crate::LogId>,
        deadline: Instant,
    ) -> Result<Result<(), String>, PeerError> {
        // Addressed like the Raft RPCs: a new incarnation at the same address must not
        // answer for its predecessor.
        let mut req = super::client::addressed(
            peer::PreVoteRequest {
                candidate,
                last_log_id: crate::pb::convert::log_id_to_pb(last_log_id),
            },
            id,
        );
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let resp = self
            .call(
                "pre_vote",
                to,
                deadline,
                |mut c| async move { c.pre_vote(req).await },
            )
            .await?;
        Ok(if resp.granted { Ok(()) } else { Err(resp.reason) })
    }

    /// Asks voter `id` at `to` to campaign now, because this node, the leader of `term`
    /// whose log ends at `last_log_id`, is stepping aside. `Ok(Err(reason))`: it would not.
    pub async fn timeout_now(
        &self,
        to: &Member,
        id: NodeId,
        leader: NodeId,
        term: u64,
        last_log_id: Option<crate::LogId>,
        deadline: Instant,
    ) -> Result<Result<(), String>, PeerError> {
        let mut req = super::client::addressed(
            peer::TimeoutNowRequest {
                leader,
                term,
                last_log_id: crate::pb::convert::log_id_to_pb(last_log_id),
            },
            id,
        );
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let resp = self
            .call("timeout_now", to, deadline, |mut c| async move {
                c.timeout_now(req).await
            })
            .await?;
        Ok(if resp.started { Ok(()) } else { Err(resp.reason) })
    }

    /// One call to `to`, bounded by `deadline`, timed in `peer_rpc_duration_seconds`.
    async fn call<T, F, Fut>(&self, rpc: &str, to: &Member, deadline: Instant, f: F) -> Result<T, PeerError>
    where
        F: FnOnce(peer::raft_peer_client::RaftPeerClient<super::channel::PeerChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let _timer = self
            .metrics()
            .peer_rpc_duration
            .with_label_values(&[rpc, &to.name])
            .start_timer();
        self.call_untimed(to, deadline, f).await
    }

    async fn call_untimed<T, F, Fut>(&self, to: &Member, deadline: Instant, f: F) -> Result<T, PeerError>
    where
        F: FnOnce(peer::raft_peer_client::RaftPeerClient<super::channel::PeerChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let client = self
            .client(&to.addr)
            .map_err(|s| PeerError::from_status(s, &to.name))?;
        within(deadline.saturating_duration_since(Instant::now()), f(client))
            .await
            .map_err(|s| PeerError::from_status(s, &to.name))
    }
}

/// A request carrying the caller's remaining time, so the peer gives up when it does.
fn request<T>(msg: T, deadline: Instant) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(deadline.saturating_duration_since(Instant::now()));
    req
}

fn malformed(to: &Member, e: impl std::fmt::Display) -> PeerError {
    PeerError::Unexpected {
        peer: to.name.clone(),
        code: "a malformed answer".into(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::not_applied;

    #[test]
    fn status_codes_decode_to_the_protocol_meaning() {
        let cases = [
            (
                Status::failed_precondition("x"),
                PeerError::NotLeader { peer: "n1".into() },
            ),
            (
                not_applied("no leader"),
                PeerError::Unreachable {
                    peer: "n1".into(),
                    message: "no leader".into(),
                },
            ),
            (
                Status::unavailable("reset"),
                PeerError::ContactLost {
                    peer: "n1".into(),
                    message: "reset".into(),
                },
            ),
            (
                Status::deadline_exceeded("slow"),
                PeerError::Timeout {
                    peer: "n1".into(),
                    message: "slow".into(),
                },
            ),
            (
                Status::aborted("last voter"),
                PeerError::Refused("last voter".into()),
            ),
            (
                Status::not_found("no member"),
                PeerError::NotFound("no member".into()),
            ),
        ];
        for (status, want) in cases {
            assert_eq!(PeerError::from_status(status, "n1"), want);
        }
        assert!(matches!(
            PeerError::from_status(Status::internal("boom"), "n1"),
            PeerError::Unexpected { code, .. } if code == "Internal"
        ));
    }

    #[test]
    fn a_lost_contact_is_retry_safe_only_for_idempotent_calls() {
        let lost = PeerError::ContactLost {
            peer: "n1".into(),
            message: "reset".into(),
        };
        assert!(matches!(lost.clone().idempotent(), PeerError::Unreachable { .. }));
        assert_eq!(
            PeerError::NotLeader { peer: "n1".into() }.idempotent(),
            PeerError::NotLeader { peer: "n1".into() }
        );
        assert!(matches!(lost, PeerError::ContactLost { .. }));
    }
}

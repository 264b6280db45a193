//! Client writes: into the batcher (`node::batch`), then proposed on the leader, here
//! or forwarded to it from a follower.

use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};

use super::batch::{self, Batcher, Propose};
use super::leader::{Target, route_to_leader};
use super::{NodeError, RaftNode};
use crate::model::{Command, CommandResult, Member};

impl Propose for RaftNode {
    fn batcher(&self) -> &Batcher {
        &self.inner.batcher
    }

    async fn propose(&self, cmd: Command) -> Result<CommandResult, NodeError> {
        self.write_direct(cmd).await
    }
}

impl RaftNode {
    /// Applies a write through Raft, on this node if it leads, else through the leader.
    /// Returns the state machine's outcome once the entry is committed and applied.
    /// Concurrent writes are batched (`node::batch`): while `raft.max_in_flight_batches`
    /// batches are being committed, new writes share the next log entry.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, NodeError> {
        batch::submit(self, cmd).await
    }

    /// Proposes one command (possibly a batch) on the leader: here, or forwarded to it.
    async fn write_direct(&self, cmd: Command) -> Result<CommandResult, NodeError> {
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout;
        route_to_leader(self, deadline, |target| {
            let cmd = cmd.clone();
            async move {
                match target {
                    Target::Here => self.write_local(cmd, deadline).await,
                    // Boxed: the gRPC call's future is ~4.5 KB, and inline it would make
                    // every write's future (and each copy of it, on the leader too) that big.
                    Target::Peer(leader) => Box::pin(self.forward_write(&leader, cmd, deadline)).await,
                }
            }
        })
        .await
    }

    /// Proposes a write on this node, which must be the leader.
    #[tracing::instrument(name = "raft_client_write", skip_all, fields(log_index))]
    pub async fn write_local(&self, cmd: Command, deadline: Instant) -> Result<CommandResult, NodeError> {
        if self.is_shutting_down() {
            // Let the caller retry elsewhere instead of racing our own leadership transfer.
            return Err(NodeError::NotLeader { leader: None });
        }
        if let Some(reason) = self.cut_off() {
            // Forwarded writes arrive here directly: refuse them before proposing, too.
            return Err(NodeError::no_leader(reason));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timer = self.inner.metrics.raft_client_write_duration.start_timer();
        let mut cut_off = self.cut_off_signal();
        let res = tokio::select! {
            res = tokio::time::timeout(remaining, self.inner.raft.client_write(cmd)) => res,
            _ = cut_off.wait_for(|cut| *cut) => {
                return Err(NodeError::Timeout(
                    "this node lost contact with a quorum of voters while the write was in flight; \
                     it may or may not be applied (a new leader may still commit it)".into(),
                ));
            }
        };
        drop(timer);
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
        Ok(self.inner.peers.forward_write(leader, cmd, deadline).await?)
    }
}

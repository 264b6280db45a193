//! Client writes: the batcher (concurrent writes share one log entry while the in-flight
//! slots are busy), proposing on the leader, and forwarding to it from a follower.

use std::sync::PoisonError;
use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};
use tracing::Instrument;

use super::leader::{Target, route_to_leader};
use super::{NodeError, RaftNode};
use crate::model::{Command, CommandResult, Member};

/// A client write waiting for its batch.
pub(super) struct Proposal {
    cmd: Command,
    /// The request's span: a batch of one runs in it, so its trace continues to the leader.
    span: tracing::Span,
    done: tokio::sync::oneshot::Sender<Result<CommandResult, NodeError>>,
}

/// The write batcher's state: writes not yet proposed, and batches in flight.
#[derive(Default)]
pub(super) struct Proposals {
    queue: Vec<Proposal>,
    in_flight: usize,
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

impl RaftNode {
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

    pub(super) fn lock_proposals(&self) -> std::sync::MutexGuard<'_, Proposals> {
        self.inner
            .proposals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Frees an in-flight slot and proposes whatever queued meanwhile.
    pub(super) fn release_slot(&self) {
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

    /// Proposes one command (possibly a batch) on the leader: here, or forwarded to it.
    async fn write_direct(&self, cmd: Command) -> Result<CommandResult, NodeError> {
        let deadline = Instant::now() + self.inner.settings.raft.write_timeout;
        route_to_leader(self, deadline, |target| {
            let cmd = cmd.clone();
            async move {
                match target {
                    Target::Here => self.write_local(cmd, deadline).await,
                    Target::Peer(leader) => self.forward_write(&leader, cmd, deadline).await,
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
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timer = self.inner.metrics.raft_client_write_duration.start_timer();
        let res = tokio::time::timeout(remaining, self.inner.raft.client_write(cmd)).await;
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

//! The write batcher: concurrent writes share one log entry while the in-flight slots are
//! busy. While `max_in_flight` batches are being committed, new writes queue, and the next
//! free slot proposes the whole queue (up to `max_batch` writes) as one
//! [`Command::Batch`], one forwarded RPC on a follower. A lone write on an idle slot is
//! proposed from the caller's own task at once, so batching costs latency only when the
//! node is busy anyway. A batch never holds two writes to one id: every command of an
//! entry gets the entry's index as its revision, so two writes to one record in one entry
//! would share a revision and an `If-Match` naming it could not tell them apart; the
//! second write waits for the next batch instead. What "propose" means (here or on the leader) is the [`Propose`]
//! implementation's business; the batcher is unit-tested with a gated fake.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use prometheus::{Histogram, IntCounter};
use tracing::Instrument;

use super::NodeError;
use crate::model::{Command, CommandResult};

/// Whoever commits the batches: the node, or a test's fake.
pub(super) trait Propose: Clone + Send + Sync + 'static {
    /// The batcher this proposer feeds.
    fn batcher(&self) -> &Batcher;
    /// Commits one command (possibly a batch) and answers its outcome.
    fn propose(&self, cmd: Command) -> impl Future<Output = Result<CommandResult, NodeError>> + Send;
}

/// A client write waiting for its batch.
struct Waiting {
    cmd: Command,
    /// The request's span: a batch of one runs in it, so its trace continues to the leader.
    span: tracing::Span,
    done: tokio::sync::oneshot::Sender<Result<CommandResult, NodeError>>,
}

#[derive(Default)]
struct State {
    queue: Vec<Waiting>,
    in_flight: usize,
}

/// The batcher's queue and in-flight slots.
pub(super) struct Batcher {
    state: Mutex<State>,
    max_in_flight: usize,
    max_batch: usize,
    /// Writes waiting for a slot at most; more are refused (`Overloaded`).
    max_queued: usize,
    /// Observes the number of writes in each proposal.
    sizes: Histogram,
    /// Counts writes refused because the queue was full.
    refused: IntCounter,
}

/// How much a batcher takes at once.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchLimits {
    /// Batches proposed and not yet committed.
    pub(super) in_flight: usize,
    /// Writes in one batch.
    pub(super) batch: usize,
    /// Writes waiting for a slot.
    pub(super) queued: usize,
}

impl Batcher {
    /// An idle batcher (every limit is at least 1; settings validation guarantees it).
    pub(super) fn new(limits: BatchLimits, sizes: Histogram, refused: IntCounter) -> Self {
        Batcher {
            state: Mutex::default(),
            max_in_flight: limits.in_flight.max(1),
            max_batch: limits.batch.max(1),
            max_queued: limits.queued.max(1),
            sizes,
            refused,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a client write goes: straight to the proposer from the caller's task, or into the queue.
enum Route {
    Inline(Command),
    Queued(tokio::sync::oneshot::Receiver<Result<CommandResult, NodeError>>),
}

/// An in-flight slot taken by a lone write; released when the write ends or is dropped.
struct Slot<'a, P: Propose>(&'a P);

impl<P: Propose> Drop for Slot<'_, P> {
    fn drop(&mut self) {
        release(self.0);
    }
}

/// Submits one client write and answers its own outcome, batched with others when busy.
pub(super) async fn submit<P: Propose>(p: &P, cmd: Command) -> Result<CommandResult, NodeError> {
    let b = p.batcher();
    let route = {
        let mut st = b.lock();
        if st.queue.is_empty() && st.in_flight < b.max_in_flight {
            // A lone write on an idle slot is proposed from the caller's own task: no batch
            // task, no hand-back through a channel. Only this caller waits for it, so a
            // client that goes away strands nobody; the slot is released either way.
            st.in_flight += 1;
            Route::Inline(cmd)
        } else if st.queue.len() >= b.max_queued {
            // Back-pressure: a full queue refuses at once (nothing was proposed) instead of
            // growing without bound behind a slow or lost leader.
            b.refused.inc();
            return Err(NodeError::Overloaded(format!(
                "{} writes are already waiting on this node (raft.max_queued_writes); retry later",
                st.queue.len()
            )));
        } else {
            let (done, rx) = tokio::sync::oneshot::channel();
            st.queue.push(Waiting {
                cmd,
                span: tracing::Span::current(),
                done,
            });
            Route::Queued(rx)
        }
    };
    match route {
        Route::Inline(cmd) => {
            let _slot = Slot(p);
            b.sizes.observe(1.0);
            p.propose(cmd).await
        }
        Route::Queued(rx) => {
            propose_queued(p);
            rx.await
                .unwrap_or_else(|_| Err(NodeError::Internal("the write's batch was dropped".into())))
        }
    }
}

/// Frees an in-flight slot and proposes whatever queued meanwhile.
fn release<P: Propose>(p: &P) {
    p.batcher().lock().in_flight -= 1;
    propose_queued(p);
}

/// Takes up to `max` queued writes in queue order, at most one per record id; the rest stay
/// queued in their order, so two writes to one id still commit in the order they queued.
fn take_batch(queue: &mut Vec<Waiting>, max: usize) -> Vec<Waiting> {
    let mut ids = HashSet::with_capacity(max.min(queue.len()));
    let mut batch = Vec::with_capacity(max.min(queue.len()));
    let mut rest = Vec::new();
    for w in queue.drain(..) {
        if batch.len() < max && w.cmd.id().is_none_or(|id| ids.insert(id)) {
            batch.push(w);
        } else {
            rest.push(w);
        }
    }
    *queue = rest;
    batch
}

/// Starts batches of queued writes while slots are free.
fn propose_queued<P: Propose>(p: &P) {
    let b = p.batcher();
    loop {
        let batch: Vec<Waiting> = {
            let mut st = b.lock();
            if st.queue.is_empty() || st.in_flight >= b.max_in_flight {
                return;
            }
            st.in_flight += 1;
            take_batch(&mut st.queue, b.max_batch)
        };
        spawn_batch(p, batch);
    }
}

/// Proposes one batch from its own task and answers each of its writes.
fn spawn_batch<P: Propose>(p: &P, batch: Vec<Waiting>) {
    let p = p.clone();
    // Its own task: a client that disconnects must not strand the others in its batch.
    tokio::spawn(async move {
        p.batcher().sizes.observe(batch.len() as f64);
        let span = if batch.len() == 1 {
            batch[0].span.clone()
        } else {
            tracing::info_span!("write_batch", writes = batch.len())
        };
        let (cmds, waiters): (Vec<Command>, Vec<_>) = batch.into_iter().map(|w| (w.cmd, w.done)).unzip();
        let n = cmds.len();
        let combined = match <[Command; 1]>::try_from(cmds) {
            Ok([one]) => one,
            Err(many) => Command::Batch(many),
        };
        let outcomes = match p.propose(combined).instrument(span).await {
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
        release(&p);
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use prometheus::HistogramOpts;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::model::{Record, Student};

    /// Commits each proposal once the test releases it, applying every command as a
    /// deletion of its id (or failing, when told to); records what it was asked.
    #[derive(Clone)]
    struct Gated {
        batcher: Arc<Batcher>,
        release: Arc<Semaphore>,
        proposed: Arc<Mutex<Vec<Command>>>,
        fail: bool,
    }

    impl Gated {
        fn new(max_in_flight: usize, max_batch: usize) -> Self {
            let sizes = Histogram::with_opts(HistogramOpts::new("batch_size", "test")).expect("histogram");
            Gated {
                batcher: Arc::new(Batcher::new(
                    BatchLimits {
                        in_flight: max_in_flight,
                        batch: max_batch,
                        queued: 8,
                    },
                    sizes,
                    IntCounter::new("refused", "test").expect("counter"),
                )),
                release: Arc::new(Semaphore::new(0)),
                proposed: Arc::default(),
                fail: false,
            }
        }

        fn write(&self, id: i64) -> tokio::task::JoinHandle<Result<CommandResult, NodeError>> {
            let p = self.clone();
            tokio::spawn(async move { submit(&p, Command::delete(id)).await })
        }

        fn proposed(&self) -> Vec<Command> {
            self.proposed.lock().expect("test lock").clone()
        }

        async fn until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
            tokio::time::timeout(Duration::from_secs(5), async {
                while !cond(self) {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
        }

        fn queued(&self) -> usize {
            self.batcher.lock().queue.len()
        }
    }

    fn outcome(cmd: &Command) -> CommandResult {
        match cmd {
            Command::Delete { id, .. } => CommandResult::Deleted(*id),
            Command::Batch(cmds) => CommandResult::Batch(cmds.iter().map(outcome).collect()),
            other => panic!("unexpected command {other:?}"),
        }
    }

    impl Propose for Gated {
        fn batcher(&self) -> &Batcher {
            &self.batcher
        }

        async fn propose(&self, cmd: Command) -> Result<CommandResult, NodeError> {
            self.proposed.lock().expect("test lock").push(cmd.clone());
            self.release.acquire().await.expect("open").forget();
            if self.fail {
                return Err(NodeError::Timeout("no quorum".into()));
            }
            Ok(outcome(&cmd))
        }
    }

    async fn result(
        h: tokio::task::JoinHandle<Result<CommandResult, NodeError>>,
    ) -> Result<CommandResult, NodeError> {
        h.await.expect("writer task")
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_proposes_nothing_more() {
        let p = Gated::new(1, 4);
        let first = p.write(1);
        p.until("the first write holds the slot", |p| p.proposed().len() == 1)
            .await;
        let queued: Vec<_> = (2..=9).map(|id| p.write(id)).collect();
        p.until("eight writes queue (the cap)", |p| p.queued() == 8).await;
        let refused = result(p.write(10)).await;
        assert!(matches!(refused, Err(NodeError::Overloaded(_))), "{refused:?}");
        assert_eq!(p.batcher.refused.get(), 1);
        assert_eq!(p.queued(), 8, "the refused write was not queued");
        // Once the slot frees, the queue drains in batches of the cap and everyone is answered.
        p.release.add_permits(100);
        assert!(result(first).await.is_ok());
        for w in queued {
            assert!(result(w).await.is_ok());
        }
        assert!(
            p.proposed()
                .iter()
                .all(|c| !matches!(c, Command::Delete { id: 10, .. }))
        );
    }

    #[tokio::test]
    async fn a_lone_write_is_proposed_alone_and_unwrapped() {
        let p = Gated::new(2, 10);
        p.release.add_permits(1);
        assert_eq!(result(p.write(1)).await.ok(), Some(CommandResult::Deleted(1)));
        assert_eq!(p.proposed(), vec![Command::delete(1)]);
    }

    #[tokio::test]
    async fn writes_that_queue_behind_busy_slots_share_one_entry_and_get_their_own_outcome() {
        let p = Gated::new(1, 10);
        let first = p.write(1);
        p.until("the first write is proposed", |p| p.proposed().len() == 1)
            .await;
        let queued: Vec<_> = (2..=4).map(|id| p.write(id)).collect();
        p.until("three writes queue", |p| p.queued() == 3).await;
        p.release.add_permits(2);
        assert_eq!(result(first).await.ok(), Some(CommandResult::Deleted(1)));
        for (id, w) in (2..=4).zip(queued) {
            assert_eq!(
                result(w).await.ok(),
                Some(CommandResult::Deleted(id)),
                "write {id}"
            );
        }
        let batch = Command::Batch(vec![Command::delete(2), Command::delete(3), Command::delete(4)]);
        assert_eq!(p.proposed(), vec![Command::delete(1), batch]);
    }

    #[tokio::test]
    async fn a_batch_holds_at_most_max_batch_writes() {
        let p = Gated::new(1, 2);
        let first = p.write(1);
        p.until("the first write is proposed", |p| p.proposed().len() == 1)
            .await;
        let queued: Vec<_> = (2..=4).map(|id| p.write(id)).collect();
        p.until("three writes queue", |p| p.queued() == 3).await;
        p.release.add_permits(3);
        result(first).await.ok();
        for w in queued {
            assert!(result(w).await.is_ok());
        }
        let sizes: Vec<usize> = p
            .proposed()
            .iter()
            .map(|c| match c {
                Command::Batch(b) => b.len(),
                _ => 1,
            })
            .collect();
        assert_eq!(sizes, vec![1, 2, 1]);
    }

    #[tokio::test]
    async fn two_writes_to_one_id_never_share_an_entry() {
        let p = Gated::new(1, 10);
        let first = p.write(1);
        p.until("the first write is proposed", |p| p.proposed().len() == 1)
            .await;
        // Queue 2, 3, 2, 4, 2: the first batch takes 2, 3, 4; the other writes to 2 follow,
        // one entry each, in the order they queued.
        let mut queued = Vec::new();
        for (n, id) in [2, 3, 2, 4, 2].into_iter().enumerate() {
            queued.push(p.write(id));
            p.until("the write queues", |p| p.queued() == n + 1).await;
        }
        p.release.add_permits(10);
        result(first).await.ok();
        for w in queued {
            assert!(result(w).await.is_ok());
        }
        let batch = Command::Batch(vec![Command::delete(2), Command::delete(3), Command::delete(4)]);
        assert_eq!(
            p.proposed(),
            vec![Command::delete(1), batch, Command::delete(2), Command::delete(2)]
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_writes() {
        let mut p = Gated::new(1, 10);
        p.fail = true;
        let first = p.write(1);
        p.until("the first write is proposed", |p| p.proposed().len() == 1)
            .await;
        let queued: Vec<_> = (2..=3).map(|id| p.write(id)).collect();
        p.until("two writes queue", |p| p.queued() == 2).await;
        p.release.add_permits(2);
        assert!(matches!(result(first).await, Err(NodeError::Timeout(_))));
        for w in queued {
            assert!(matches!(result(w).await, Err(NodeError::Timeout(_))));
        }
    }

    #[tokio::test]
    async fn a_lone_writer_that_goes_away_gives_its_slot_back() {
        let p = Gated::new(1, 10);
        let abandoned = p.write(1);
        p.until("the write is proposed", |p| p.proposed().len() == 1)
            .await;
        let queued = p.write(2);
        p.until("the next write queues", |p| p.queued() == 1).await;
        abandoned.abort();
        // The slot came back with the dropped write, and the queued one was proposed.
        p.until("the queued write is proposed", |p| p.proposed().len() == 2)
            .await;
        p.release.add_permits(1);
        assert_eq!(result(queued).await.ok(), Some(CommandResult::Deleted(2)));
        assert_eq!(p.batcher.lock().in_flight, 0, "every slot is free again");
    }

    #[tokio::test]
    async fn a_batch_answer_of_the_wrong_shape_is_an_internal_error_not_a_mixup() {
        #[derive(Clone)]
        struct Short(Arc<Batcher>, Arc<Semaphore>);
        impl Propose for Short {
            fn batcher(&self) -> &Batcher {
                &self.0
            }
            async fn propose(&self, _cmd: Command) -> Result<CommandResult, NodeError> {
                self.1.acquire().await.expect("open").forget();
                Ok(CommandResult::Batch(vec![CommandResult::Created(Record {
                    student: Student {
                        id: 1,
                        name: "a".into(),
                        score: 1.0,
                    },
                    revision: 1,
                })]))
            }
        }
        let sizes = Histogram::with_opts(HistogramOpts::new("batch_size", "test")).expect("histogram");
        let limits = BatchLimits {
            in_flight: 1,
            batch: 10,
            queued: 8,
        };
        let refused = IntCounter::new("refused", "test").expect("counter");
        let p = Short(
            Arc::new(Batcher::new(limits, sizes, refused)),
            Arc::new(Semaphore::new(0)),
        );
        let p2 = p.clone();
        let first = tokio::spawn(async move { submit(&p2, Command::delete(1)).await });
        tokio::time::timeout(Duration::from_secs(5), async {
            while p.0.lock().in_flight < 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the first write takes the slot");
        let (a, b) = (p.clone(), p.clone());
        let w2 = tokio::spawn(async move { submit(&a, Command::delete(2)).await });
        let w3 = tokio::spawn(async move { submit(&b, Command::delete(3)).await });
        tokio::time::timeout(Duration::from_secs(5), async {
            while p.0.lock().queue.len() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("two writes queue");
        p.1.add_permits(2);
        let _ = first.await;
        for w in [w2, w3] {
            assert!(matches!(w.await.expect("task"), Err(NodeError::Internal(_))));
        }
    }
}

//! Shared rounds: concurrent callers share one run of an expensive confirmation (the
//! leader's leadership check, a follower's read point from the leader) instead of each
//! paying for a quorum round trip.
//!
//! A caller joins the *next* round, never one already in flight: a round that started
//! before the caller arrived could confirm a leadership (and a commit index) older than
//! the caller's invocation, which would not be linearizable. Rounds run in their own task,
//! so a caller that goes away (client disconnect) strands nobody.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{Histogram, IntCounter};

use super::NodeError;

/// Callers waiting for a round, and whether the round runner is active.
struct State<T> {
    running: bool,
    waiting: Vec<tokio::sync::oneshot::Sender<Result<T, NodeError>>>,
}

/// One kind of shared round. Cheap to clone (the clones share the rounds).
pub(super) struct Rounds<T> {
    state: Arc<Mutex<State<T>>>,
    /// Observes how many callers each round answered.
    sizes: Histogram,
    /// Callers waiting at most; more are refused (`Overloaded`).
    max_waiting: usize,
    /// Counts refused callers.
    refused: IntCounter,
}

impl<T> Clone for Rounds<T> {
    fn clone(&self) -> Self {
        Rounds {
            state: self.state.clone(),
            sizes: self.sizes.clone(),
            max_waiting: self.max_waiting,
            refused: self.refused.clone(),
        }
    }
}

impl<T: Clone + Send + 'static> Rounds<T> {
    /// No rounds yet; each round's size goes to `sizes`; at most `max_waiting` callers
    /// wait, and further ones are refused and counted in `refused`.
    pub(super) fn new(sizes: Histogram, max_waiting: usize, refused: IntCounter) -> Self {
        Rounds {
            state: Arc::new(Mutex::new(State {
                running: false,
                waiting: Vec::new(),
            })),
            sizes,
            max_waiting: max_waiting.max(1),
            refused,
        }
    }

    /// Waits for the answer of the next round to start. If no round is running, this
    /// caller's `fetch` runs the rounds until nobody waits (every caller of one kind of
    /// round must pass the same `fetch`).
    pub(super) async fn join<F, Fut>(&self, fetch: F) -> Result<T, NodeError>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, NodeError>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut st = self.lock();
            if st.waiting.len() >= self.max_waiting {
                // Callers that gave up (a client timeout) hold no place.
                st.waiting.retain(|w| !w.is_closed());
            }
            if st.waiting.len() >= self.max_waiting {
                self.refused.inc();
                return Err(NodeError::Overloaded(format!(
                    "{} reads are already waiting for a read round on this node (raft.max_queued_reads); retry later",
                    st.waiting.len()
                )));
            }
            st.waiting.push(tx);
            !std::mem::replace(&mut st.running, true)
        };
        if start {
            let rounds = self.clone();
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut st = rounds.lock();
                        if st.waiting.is_empty() {
                            st.running = false;
                            break;
                        }
                        std::mem::take(&mut st.waiting)
                    };
                    rounds.sizes.observe(batch.len() as f64);
                    let answer = fetch().await;
                    for waiter in batch {
                        let _ = waiter.send(answer.clone());
                    }
                }
            });
        }
        rx.await
            .unwrap_or_else(|_| Err(NodeError::Internal("the shared round was dropped".into())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use prometheus::HistogramOpts;
    use tokio::sync::Semaphore;

    use super::*;

    /// A fetch that answers its round's number once the test releases it.
    struct Gate {
        rounds: Rounds<u64>,
        release: Arc<Semaphore>,
        started: Arc<AtomicU64>,
    }

    impl Gate {
        fn new() -> Self {
            Gate::with_cap(1000)
        }

        fn with_cap(max_waiting: usize) -> Self {
            let sizes = Histogram::with_opts(HistogramOpts::new("round_size", "test")).expect("histogram");
            Gate {
                rounds: Rounds::new(
                    sizes,
                    max_waiting,
                    IntCounter::new("refused", "test").expect("counter"),
                ),
                release: Arc::new(Semaphore::new(0)),
                started: Arc::default(),
            }
        }

        /// A caller joining the next round, in its own task.
        fn reader(&self) -> tokio::task::JoinHandle<Result<u64, NodeError>> {
            let (rounds, release, started) =
                (self.rounds.clone(), self.release.clone(), self.started.clone());
            tokio::spawn(async move {
                rounds
                    .join(move || {
                        let (release, started) = (release.clone(), started.clone());
                        async move {
                            let round = started.fetch_add(1, Ordering::SeqCst) + 1;
                            release.acquire().await.expect("open").forget();
                            Ok(round)
                        }
                    })
                    .await
            })
        }

        async fn until_started(&self, rounds: u64) {
            tokio::time::timeout(Duration::from_secs(5), async {
                while self.started.load(Ordering::SeqCst) < rounds {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the round started");
        }

        /// Waits until `n` callers wait for the next round (the running one excluded).
        async fn until_waiting(&self, n: usize) {
            tokio::time::timeout(Duration::from_secs(5), async {
                while self.rounds.lock().waiting.len() < n {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the callers queued");
        }
    }

    async fn answer(h: tokio::task::JoinHandle<Result<u64, NodeError>>) -> u64 {
        h.await.expect("reader task").expect("an answer")
    }

    #[tokio::test]
    async fn a_caller_that_arrives_during_a_round_gets_the_next_one() {
        let g = Gate::new();
        let first = g.reader();
        g.until_started(1).await;
        let late = g.reader();
        g.until_waiting(1).await;
        g.release.add_permits(1);
        assert_eq!(answer(first).await, 1);
        g.until_started(2).await;
        g.release.add_permits(1);
        assert_eq!(
            answer(late).await,
            2,
            "not the round that began before it arrived"
        );
    }

    #[tokio::test]
    async fn callers_waiting_together_share_one_round() {
        let g = Gate::new();
        let first = g.reader();
        g.until_started(1).await;
        let waiting: Vec<_> = (0..5).map(|_| g.reader()).collect();
        g.until_waiting(5).await;
        g.release.add_permits(2);
        assert_eq!(answer(first).await, 1);
        for w in waiting {
            assert_eq!(answer(w).await, 2);
        }
        assert_eq!(g.started.load(Ordering::SeqCst), 2, "six callers, two rounds");
        assert_eq!(g.rounds.sizes.get_sample_count(), 2);
        assert_eq!(g.rounds.sizes.get_sample_sum(), 6.0);
    }

    #[tokio::test]
    async fn waiting_is_capped_and_callers_that_left_give_their_place_back() {
        let g = Gate::with_cap(2);
        let first = g.reader();
        g.until_started(1).await;
        let a = g.reader();
        let b = g.reader();
        g.until_waiting(2).await;
        let refused = g.reader().await.expect("task");
        assert!(matches!(refused, Err(NodeError::Overloaded(_))), "{refused:?}");
        assert_eq!(g.rounds.refused.get(), 1);
        b.abort();
        let _ = b.await;
        let c = g.reader();
        g.release.add_permits(2);
        assert_eq!(answer(first).await, 1);
        assert_eq!(
            answer(a).await,
            2,
            "a place freed by a caller that left is taken again"
        );
        assert_eq!(answer(c).await, 2);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_strands_nobody() {
        let g = Gate::new();
        let first = g.reader();
        g.until_started(1).await;
        let stays = g.reader();
        let leaves = g.reader();
        g.until_waiting(2).await;
        leaves.abort();
        g.release.add_permits(2);
        assert_eq!(answer(first).await, 1);
        assert_eq!(answer(stays).await, 2);
        // Later callers still get rounds of their own.
        let again = g.reader();
        g.release.add_permits(1);
        assert_eq!(answer(again).await, 3);
    }

    #[tokio::test]
    async fn a_failed_round_fails_every_caller_in_it() {
        let sizes = Histogram::with_opts(HistogramOpts::new("round_size", "test")).expect("histogram");
        let rounds: Rounds<u64> =
            Rounds::new(sizes, 1000, IntCounter::new("refused", "test").expect("counter"));
        let failing = || async { Err(NodeError::no_leader("no quorum")) };
        let (a, b) = tokio::join!(rounds.join(failing), rounds.join(failing));
        for r in [a, b] {
            assert!(matches!(r, Err(NodeError::NoLeader { reason, .. }) if reason == "no quorum"));
        }
    }
}

//! `bench --watchers N`: watch streams held open (and read) on the client gRPC ports while
//! the load runs, so the cost of watchers to writes is measured in the same run as writes
//! without them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ops::{Conn, Dial};
use super::{BenchArgs, BenchError, Protocol};
use crate::pb::client::WatchRequest;

/// Open watch streams and the changes they have received so far.
pub(super) struct Watchers {
    received: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    /// Opens `--watchers` streams over `--watch-targets` round-robin, each from the next
    /// revision on (of `--watch-id` only, if given); fails if any cannot start.
    pub(super) async fn open(args: &BenchArgs) -> Result<Watchers, BenchError> {
        let received = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        if args.watchers == 0 {
            return Ok(Watchers { received, tasks });
        }
        if args.watch_targets.is_empty() {
            return Err(BenchError::Usage(
                "--watchers needs --watch-targets (the nodes' client gRPC addresses)".into(),
            ));
        }
        let dial = Dial::over(args, Protocol::Grpc)?;
        for i in 0..args.watchers {
            let target = &args.watch_targets[i % args.watch_targets.len()];
            let Conn::Grpc(mut client) = dial.open(target).await.map_err(BenchError::Setup)? else {
                return Err(BenchError::Setup(
                    "a gRPC dial gave another kind of connection".into(),
                ));
            };
            let mut stream = client
                .watch_students(WatchRequest {
                    start_revision: 0,
                    id: args.watch_id,
                })
                .await
                .map_err(|s| BenchError::Setup(format!("watch on {target}: {}", s.message())))?
                .into_inner();
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(resp)) = stream.message().await {
                    received.fetch_add(resp.events.len() as u64, Ordering::Relaxed);
                }
            }));
        }
        Ok(Watchers { received, tasks })
    }

    /// Changes received by all watchers so far.
    pub(super) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Watchers whose stream is still open.
    pub(super) fn open_count(&self) -> usize {
        self.tasks.iter().filter(|t| !t.is_finished()).count()
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

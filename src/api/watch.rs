//! Watch streams as both edges send them: a node's [`Watcher`] driven by its own task into
//! a bounded buffer that the response reads, counting the open watchers, the changes sent
//! and why a stream was ended. REST renders it as Server-Sent Events (`rest::watch`), gRPC
//! as `WatchStudents` responses.
//!
//! The task matters for slow consumers: a response body is only polled when the client's
//! connection has room, so a watcher polled by the body alone would never notice that it
//! fell behind while its client stalls. The task notices at once, stops, and leaves the
//! reason after what is buffered.

use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::node::NodeError;
use crate::store::watch::{WatchError, WatchEvent, Watcher};

/// Events buffered per watcher ahead of its client (besides the sockets' own buffers).
const BUFFER: usize = 16;

/// Decrements the open-watchers gauge when the response goes away.
struct Open {
    metrics: Metrics,
    api: &'static str,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.watchers.with_label_values(&[self.api]).dec();
    }
}

/// `watcher`'s events, then (if the node ends the watch) its reason as the last item.
pub(crate) fn metered(
    metrics: &Metrics,
    watcher: Watcher,
    api: &'static str,
) -> impl Stream<Item = Result<WatchEvent, NodeError>> + Send + 'static {
    metrics.watchers.with_label_values(&[api]).inc();
    let (tx, rx) = mpsc::channel(BUFFER);
    let (end_tx, end_rx) = oneshot::channel();
    tokio::spawn(pump(watcher, tx, end_tx, metrics.clone(), api));
    let open = Open {
        metrics: metrics.clone(),
        api,
    };
    futures::stream::unfold((rx, Some(end_rx), open), |(mut rx, end, open)| async move {
        if let Some(event) = rx.recv().await {
            return Some((Ok(event), (rx, end, open)));
        }
        // The task stopped: with a reason, or because the node dropped the watch.
        let reason = end?.await.ok()?;
        Some((Err(reason.into()), (rx, None, open)))
    })
}

/// Moves events from the watcher into the buffer until the client leaves or the watch ends.
async fn pump(
    mut watcher: Watcher,
    tx: mpsc::Sender<WatchEvent>,
    end: oneshot::Sender<WatchError>,
    metrics: Metrics,
    api: &'static str,
) {
    let stopped = loop {
        let next = tokio::select! {
            next = watcher.next() => next,
            () = tx.closed() => return,
        };
        let event = match next {
            Ok(event) => event,
            Err(e) => break e,
        };
        let permit = tokio::select! {
            permit = tx.reserve() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            // The client is not reading and the history moved past this watcher meanwhile.
            e = watcher.stopped() => break e,
        };
        if let WatchEvent::Changes(c) = &event {
            metrics
                .watch_events_sent_total
                .with_label_values(&[api])
                .inc_by(c.changes.len() as u64);
        }
        permit.send(event);
    };
    let reason = match stopped {
        WatchError::FellBehind { .. } | WatchError::Compacted { .. } => "fell_behind",
        WatchError::Closed { .. } => "shutdown",
    };
    metrics.watchers_cut_off_total.with_label_values(&[reason]).inc();
    tracing::info!(api, reason, error = %stopped, "ended a watch stream");
    let _ = end.send(stopped);
}

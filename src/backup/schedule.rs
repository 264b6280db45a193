//! The leader's scheduled backups: every `backup.interval` it uploads a backup of its
//! applied state to `backup.target` and deletes the oldest beyond `backup.keep`. A node
//! that becomes leader first reads the target, so the schedule continues from the newest
//! backup (whoever took it) instead of restarting. A failure is retried with capped
//! backoff; it never blocks writes (the backup is a copy-on-write view of the records,
//! taken in O(1) under the state machine's lock and encoded as it uploads).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::{BackupError, Stored, Target};
use crate::metrics::Metrics;
use crate::node::RaftNode;

/// How often a waiting scheduler checks that this node still leads.
const LEADERSHIP_POLL: Duration = Duration::from_millis(500);
/// The first retry after a failure; doubled each time up to the interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Runs scheduled backups until `stop`; does nothing when `backup.target` is empty.
pub async fn run(node: RaftNode, mut stop: watch::Receiver<bool>) {
    let settings = node.settings().backup.clone();
    if settings.target.is_empty() {
        return;
    }
    let metrics = node.metrics().clone();
    let target = match Target::open(&settings.target) {
        Ok(t) => t,
        Err(e) => {
            // Validated at start-up, so only an unusable environment (credentials) gets here.
            tracing::error!(error = %e, "scheduled backups are off: the target cannot be opened");
            metrics.backup_failures_total.with_label_values(&["target"]).inc();
            return;
        }
    };
    metrics
        .backup_interval_seconds
        .set(settings.interval.as_secs() as i64);
    // Every reason exported from the start (at 0), so "failures in the last hour" is a
    // number, not an absent series, before the first failure.
    for reason in ["snapshot", "upload", "list", "retention", "target"] {
        metrics.backup_failures_total.with_label_values(&[reason]);
    }
    tracing::info!(target = %target.url(), interval = ?settings.interval, keep = settings.keep,
        "scheduled backups: the leader uploads one every interval");
    loop {
        if !wait(&node, &mut stop, None).await {
            return;
        }
        // Newly leader: continue the schedule from the newest backup in the target.
        let mut next = match target.list().await {
            Ok(all) => match all.first() {
                Some(newest) => {
                    note_success(&metrics, newest);
                    let due = Duration::from_millis(newest.name.taken_ms) + settings.interval;
                    due.saturating_sub(since_epoch())
                }
                None => Duration::ZERO,
            },
            Err(e) => {
                tracing::warn!(error = ?e, target = %target.url(), "cannot list the backups; backing up now");
                metrics.backup_failures_total.with_label_values(&["list"]).inc();
                Duration::ZERO
            }
        };
        let mut retry = FIRST_RETRY;
        loop {
            if !wait(&node, &mut stop, Some(next)).await {
                break;
            }
            // A stop during the attempt aborts its upload (no parts left in the bucket)
            // and ends it early; what it answers then is not a failure.
            let outcome = backup_once(&node, &target, &metrics, settings.keep, &stop).await;
            if *stop.borrow() {
                return;
            }
            match outcome {
                Ok(()) => {
                    next = settings.interval;
                    retry = FIRST_RETRY;
                }
                Err(reason) => {
                    metrics.backup_failures_total.with_label_values(&[reason]).inc();
                    next = retry;
                    retry = (retry * 2).min(settings.interval);
                }
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Waits `for_` (or, with `None`, until this node leads); false if `stop` fired first or,
/// when waiting a time, if this node stopped leading meanwhile.
async fn wait(node: &RaftNode, stop: &mut watch::Receiver<bool>, for_: Option<Duration>) -> bool {
    let until = for_.map(|d| tokio::time::Instant::now() + d);
    loop {
        if *stop.borrow() {
            return false;
        }
        match until {
            None if node.is_leader() => return true,
            Some(_) if !node.is_leader() => return false,
            // A restoring leader is not backed up: the store is only part of the backup.
            Some(t) if tokio::time::Instant::now() >= t && !node.is_restoring() => return true,
            _ => {}
        }
        let step = until.map_or(LEADERSHIP_POLL, |t| {
            t.saturating_duration_since(tokio::time::Instant::now())
                .min(LEADERSHIP_POLL)
        });
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

/// Takes, uploads and prunes one backup; on failure answers the metric's reason.
async fn backup_once(
    node: &RaftNode,
    target: &Target,
    metrics: &Metrics,
    keep: usize,
    stop: &watch::Receiver<bool>,
) -> Result<(), &'static str> {
    let stopped = || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let started = std::time::Instant::now();
    let sm = node.state_machine().clone();
    // The sizing pass encodes every record once: CPU work, off the runtime.
    let taking = tokio::task::spawn_blocking(move || sm.backup());
    let taken = tokio::select! {
        taken = taking => taken,
        () = stopped() => return Err("cancelled"),
    };
    let backup = match taken {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot take a backup; retrying");
            return Err("snapshot");
        }
        Err(e) => {
            tracing::warn!(error = %e, "the backup task failed; retrying");
            return Err("snapshot");
        }
    };
    let records = backup.records();
    let taken_ms = since_epoch().as_millis() as u64;
    let stored = match target.upload(backup, taken_ms, stopped()).await {
        Ok(s) => s,
        Err(BackupError::Cancelled) => {
            tracing::info!(target = %target.url(), "backup upload aborted: the node is stopping");
            return Err("cancelled");
        }
        Err(e) => {
            tracing::warn!(error = ?e, target = %target.url(), "backup upload failed; retrying with backoff");
            return Err("upload");
        }
    };
    let took = started.elapsed();
    metrics.backup_duration_seconds.observe(took.as_secs_f64());
    metrics.backup_last_size_bytes.set(stored.size as i64);
    metrics.backups_total.inc();
    note_success(metrics, &stored);
    tracing::info!(backup = %stored.location, revision = stored.name.revision, bytes = stored.size, records,
        took_ms = took.as_millis() as u64, "backup uploaded");
    // The backup is safe; a stop only postpones the retention to the next leader's round.
    let pruned = tokio::select! {
        pruned = target.prune(keep) => pruned,
        () = stopped() => return Ok(()),
    };
    match pruned {
        Ok(deleted) => {
            for d in deleted {
                tracing::info!(backup = %d.location, keep, "deleted an old backup (backup.keep)");
            }
            Ok(())
        }
        Err(e) => {
            // The backup itself is safe; the next round tries the retention again.
            tracing::warn!(error = %e, "deleting old backups failed");
            metrics
                .backup_failures_total
                .with_label_values(&["retention"])
                .inc();
            Ok(())
        }
    }
}

fn note_success(metrics: &Metrics, stored: &Stored) {
    metrics
        .backup_last_success_timestamp_seconds
        .set((stored.name.taken_ms / 1000) as i64);
    metrics
        .backup_last_success_revision
        .set(stored.name.revision as i64);
}

fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

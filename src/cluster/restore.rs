//! Seeding a new cluster from a backup: ordinal 0 writes its records through Raft after
//! initialising, while readiness reports the progress.

use std::time::{Duration, Instant};

use super::Backoff;

use crate::node::RaftNode;

/// Records proposed per log entry while restoring a backup.
const RESTORE_CHUNK: usize = 1000;

/// Loads a backup into the cluster this node has just initialised, as ordinary replicated
/// creates (so every member that joins gets the records through the log or a snapshot).
/// Readiness fails until it is done.
pub(super) async fn restore(node: &RaftNode, backup: &std::path::Path) {
    node.set_restoring(Some(format!("restoring the backup {}", backup.display())));
    let students = match crate::store::read_backup(backup) {
        Ok(s) => s,
        Err(e) => {
            // Checked at start-up, so only a file changed since then gets here.
            tracing::error!(error = %e, "cannot restore the backup; the cluster stays empty and not ready");
            node.set_restoring(Some(format!("restore failed: {e}")));
            return;
        }
    };
    let total = students.len();
    let started = Instant::now();
    let mut done = 0;
    for chunk in students.chunks(RESTORE_CHUNK) {
        // Each record gets the revision of the entry that restores it: a new cluster's log
        // starts over, so the backup's revisions would name entries it never had.
        let cmd = crate::model::Command::Batch(
            chunk
                .iter()
                .map(|r| crate::model::Command::Create(r.student.clone()))
                .collect(),
        );
        let mut backoff = Backoff::new(Duration::from_secs(2));
        loop {
            match node.raft().client_write(cmd.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, done, total, "restore write failed; retrying");
                    tokio::time::sleep(backoff.step()).await;
                }
            }
        }
        done += chunk.len();
        node.set_restoring(Some(format!(
            "restoring the backup {}: {done} of {total} records",
            backup.display()
        )));
    }
    tracing::info!(records = total, took_ms = started.elapsed().as_millis() as u64, backup = %backup.display(),
        "restored the backup");
    node.set_restoring(None);
}

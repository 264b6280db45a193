//! Seeding a new cluster from a backup: ordinal 0 writes its records through Raft after
//! initialising, while readiness reports the progress.

use std::time::{Duration, Instant};

use super::Backoff;

use crate::backup::{FetchError, Fetched, fetch_for_restore};
use crate::config::RestoreSource;
use crate::node::RaftNode;

/// Records proposed per log entry while restoring a backup.
const RESTORE_CHUNK: usize = 1000;

/// Loads the backup `storage.restore_from` names into the cluster this node has just
/// initialised, as ordinary replicated creates (so every member that joins gets the records
/// through the log or a snapshot). Readiness fails until it is done. A backup in object
/// storage is fetched first, retried with backoff while the store cannot be read.
pub(super) async fn restore(node: &RaftNode) {
    let settings = node.settings();
    let source = settings.storage.restore_source();
    let (backup, students) = match &source {
        RestoreSource::Nothing => return,
        RestoreSource::File(backup) => {
            node.set_restoring(Some(format!("restoring the backup {}", backup.display())));
            match crate::store::read_backup(backup) {
                Ok(s) => (backup.display().to_string(), s),
                Err(e) => {
                    // Checked at start-up, so only a file changed since then gets here.
                    tracing::error!(error = %e, "cannot restore the backup; the cluster stays empty and not ready");
                    node.set_restoring(Some(format!("restore failed: {e}")));
                    return;
                }
            }
        }
        RestoreSource::Object(_) | RestoreSource::Latest => match fetch(node, &source).await {
            Some(fetched) => (fetched.url, fetched.records),
            None => return,
        },
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
            "restoring the backup {backup}: {done} of {total} records"
        )));
    }
    tracing::info!(records = total, took_ms = started.elapsed().as_millis() as u64, %backup,
        "restored the backup");
    node.set_restoring(None);
}

/// Fetches a backup from object storage, retrying until it is in hand; `None` when there is
/// nothing to restore (`latest` under a target that holds no backups yet).
async fn fetch(node: &RaftNode, source: &RestoreSource) -> Option<Fetched> {
    let settings = node.settings();
    let scratch = match settings.storage.mode {
        crate::config::StorageMode::Disk => settings.storage.data_dir.clone(),
        crate::config::StorageMode::Memory => std::env::temp_dir(),
    };
    let mut backoff = Backoff::new(Duration::from_secs(30));
    loop {
        node.set_restoring(Some(format!(
            "fetching the backup to restore ({})",
            settings.storage.restore_from
        )));
        match fetch_for_restore(source, &settings.backup.target, &scratch).await {
            Ok(Some(fetched)) => {
                tracing::info!(backup = %fetched.url, records = fetched.records.len(), "fetched the backup to restore");
                return Some(fetched);
            }
            Ok(None) => {
                tracing::info!(target = %settings.backup.target,
                    "restore_from = \"latest\": no backups under the target yet; the cluster starts empty");
                node.set_restoring(None);
                return None;
            }
            Err(e) => {
                let what = match e {
                    FetchError::NoneUsable { .. } => "no usable backup",
                    FetchError::Backup(_) => "cannot fetch the backup",
                };
                tracing::error!(error = %e, "{what}; the cluster stays empty and not ready; retrying");
                node.set_restoring(Some(format!("restore failed: {e}; retrying")));
                tokio::time::sleep(backoff.step()).await;
            }
        }
    }
}

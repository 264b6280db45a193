//! Finding and fetching the backup a new cluster restores from (`storage.restore_from` as
//! an object URL or `latest`): downloaded to a local file, checked against its name and
//! decoded before a single record is written.

use std::path::Path;

use super::{BackupError, Stored, Target};
use crate::config::RestoreSource;
use crate::model::Record;

/// Why no backup could be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The store could not be asked or read; worth retrying.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// Every backup under the target is damaged.
    #[error("none of the {skipped} backups under {target} is usable (each is named in the log)")]
    NoneUsable {
        /// The target.
        target: String,
        /// How many were tried.
        skipped: usize,
    },
}

/// A backup fetched and decoded.
#[derive(Debug)]
pub struct Fetched {
    /// Where it came from.
    pub url: String,
    /// Its records, in id order.
    pub records: Vec<Record>,
}

/// Fetches what `source` names (an object, or the newest usable backup under
/// `backup_target`), using `scratch` for the download. `Ok(None)`: `latest` found no
/// backups at all, so the cluster starts empty. Damaged backups are skipped for `latest`
/// with a warning naming each; a damaged object named directly is an error.
pub async fn fetch_for_restore(
    source: &RestoreSource,
    backup_target: &str,
    scratch: &Path,
) -> Result<Option<Fetched>, FetchError> {
    let file = scratch.join(format!("openraft-memory-restore-{}.snapshot", std::process::id()));
    let result = match source {
        RestoreSource::Object(url) => {
            let (target, stored) = Target::stat(url).await?;
            fetch_one(&target, &stored, &file)
                .await
                .map(Some)
                .map_err(Into::into)
        }
        RestoreSource::Latest => latest(backup_target, &file).await,
        RestoreSource::Nothing | RestoreSource::File(_) => Ok(None),
    };
    let _ = std::fs::remove_file(&file);
    result
}

async fn latest(url: &str, file: &Path) -> Result<Option<Fetched>, FetchError> {
    let target = Target::open(url)?;
    let all = target.list().await?;
    if all.is_empty() {
        return Ok(None);
    }
    for stored in &all {
        match fetch_one(&target, stored, file).await {
            Ok(fetched) => return Ok(Some(fetched)),
            Err(BackupError::Damaged { name, problem }) => {
                tracing::warn!(backup = %name, %problem, "skipping a damaged backup; trying the next older one");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(FetchError::NoneUsable {
        target: url.to_owned(),
        skipped: all.len(),
    })
}

async fn fetch_one(target: &Target, stored: &Stored, file: &Path) -> Result<Fetched, BackupError> {
    target.download(stored, file).await?;
    let url = format!("{}/{}", target.url(), stored.name.file_name());
    // The checksum matched its name, so only a backup written damaged gets here.
    let records = crate::store::read_backup(file).map_err(|e| BackupError::Damaged {
        name: stored.location.to_string(),
        problem: e.to_string(),
    })?;
    Ok(Fetched { url, records })
}

//! Backups in object storage: where they go (`backup.target`: `s3://`, `gs://`, `file://`
//! through the `object_store` crate), what an object is called, uploading one as a
//! multipart stream (never the whole backup in memory), listing, retention, and fetching
//! one back with its checksum checked. `schedule` runs the leader's periodic backups;
//! `fetch` finds the backup a new cluster restores from.
//!
//! An object's name carries everything needed to choose and check it without reading it:
//! `openraft-memory-<revision>-<unix ms>-<crc32>.snapshot`, zero-padded so that names sort
//! in revision order. The bytes are exactly what `GET /cluster/snapshot` streams.

mod fetch;
mod schedule;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, WriteMultipart};
use tokio::io::AsyncWriteExt;

pub use fetch::{FetchError, Fetched, fetch_for_restore};
pub use schedule::run as schedule;

use crate::store::Backup;

/// Bytes per uploaded part: S3's minimum, so a backup of any size holds little memory.
const PART_BYTES: usize = 5 << 20;
/// Parts uploading at once; with the one being filled, the memory an upload holds.
const PARTS_IN_FLIGHT: usize = 2;
/// Bytes encoded at a time while producing a backup.
const ENCODE_CHUNK: usize = 256 << 10;
/// How long aborting a failed or cancelled upload may take (the store may be unreachable).
const ABORT_TIMEOUT: Duration = Duration::from_secs(3);

/// What went wrong with a backup target.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target URL cannot be used.
    #[error("backup target `{url}`: {problem}")]
    Target {
        /// The URL as configured.
        url: String,
        /// Why.
        problem: String,
    },
    /// The object store refused or failed a request.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A fetched backup does not match its name or does not decode.
    #[error("backup {name} is damaged: {problem}")]
    Damaged {
        /// The object.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The upload was cancelled (the node is stopping) and aborted.
    #[error("the upload was cancelled: the node is stopping")]
    Cancelled,
    /// A local file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl BackupError {
    /// A short reason for the failure metric's label.
    pub fn reason(&self) -> &'static str {
        match self {
            BackupError::Target { .. } => "target",
            BackupError::Store(object_store::Error::NotFound { .. }) => "not_found",
            BackupError::Store(_) => "store",
            BackupError::Damaged { .. } => "damaged",
            BackupError::Io { .. } => "io",
            BackupError::Cancelled => "cancelled",
        }
    }
}

/// What a backup object's name says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackupName {
    /// The log index the backup reflects.
    pub revision: u64,
    /// When it was taken (Unix milliseconds).
    pub taken_ms: u64,
    /// The CRC-32 of its bytes.
    pub crc32: u32,
}

impl BackupName {
    const PREFIX: &'static str = "openraft-memory-";
    const SUFFIX: &'static str = ".snapshot";

    /// The object's file name.
    pub fn file_name(&self) -> String {
        format!(
            "{}{:020}-{:013}-{:08x}{}",
            Self::PREFIX,
            self.revision,
            self.taken_ms,
            self.crc32,
            Self::SUFFIX
        )
    }

    /// Reads a file name written by [`BackupName::file_name`]; anything else is `None`.
    pub fn parse(file: &str) -> Option<BackupName> {
        let body = file.strip_prefix(Self::PREFIX)?.strip_suffix(Self::SUFFIX)?;
        let mut parts = body.split('-');
        let name = BackupName {
            revision: parts.next()?.parse().ok()?,
            taken_ms: parts.next()?.parse().ok()?,
            crc32: u32::from_str_radix(parts.next()?, 16).ok()?,
        };
        parts.next().is_none().then_some(name)
    }
}

/// A backup object in the target.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Where it is.
    pub location: Path,
    /// What its name says.
    pub name: BackupName,
    /// Its size in bytes.
    pub size: u64,
}

/// An object-store location that backups go to (a bucket and a prefix, or a directory).
#[derive(Clone)]
pub struct Target {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Target {
    /// Opens `url` (`s3://bucket/prefix`, `gs://bucket/prefix`, `file:///dir`); credentials
    /// and endpoints come from the environment as the cloud's own tools read them.
    pub fn open(url: &str) -> Result<Target, BackupError> {
        let (store, prefix) = open_store(url)?;
        Ok(Target {
            url: url.trim_end_matches('/').to_owned(),
            store,
            prefix,
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backups under the prefix, newest (highest revision, then latest taken) first.
    /// Objects not named like backups are left alone.
    pub async fn list(&self) -> Result<Vec<Stored>, BackupError> {
        let mut listing = self.store.list(Some(&self.prefix));
        let mut found = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            // Only the prefix's own files: a nested prefix is another target's business.
            if meta.location.prefix_match(&self.prefix).map(|p| p.count()) != Some(1) {
                continue;
            }
            if let Some(name) = meta.location.filename().and_then(BackupName::parse) {
                found.push(Stored {
                    location: meta.location,
                    name,
                    size: meta.size,
                });
            }
        }
        found.sort_by_key(|s| std::cmp::Reverse(s.name));
        Ok(found)
    }

    /// Uploads `backup` as one multipart object, encoding it part by part: memory stays at
    /// [`PARTS_IN_FLIGHT`] + 1 parts whatever its size. If `cancel` completes first (the
    /// node is stopping), the upload is aborted and [`BackupError::Cancelled`] answered.
    pub async fn upload(
        &self,
        backup: Backup,
        taken_ms: u64,
        cancel: impl Future<Output = ()>,
    ) -> Result<Stored, BackupError> {
        let name = BackupName {
            revision: backup.index,
            taken_ms,
            crc32: backup.crc32,
        };
        let size = backup.len;
        let location = self.prefix.clone().join(name.file_name());
        // Encoding a chunk is a few hundred microseconds of CPU: fine between awaits.
        self.put_streamed(&location, backup.chunks(ENCODE_CHUNK), cancel)
            .await?;
        Ok(Stored { location, name, size })
    }

    /// Uploads a backup file (from `GET /cluster/snapshot`), named from what it holds.
    pub async fn upload_file(&self, file: &std::path::Path, taken_ms: u64) -> Result<Stored, BackupError> {
        let bytes = tokio::fs::read(file).await.map_err(|source| BackupError::Io {
            path: file.to_owned(),
            source,
        })?;
        let (meta, _) =
            crate::store::disk::decode_snapshot(file, &bytes).map_err(|e| BackupError::Damaged {
                name: file.display().to_string(),
                problem: e.to_string(),
            })?;
        let name = BackupName {
            revision: meta.last_log_id.map_or(0, |l| l.index),
            taken_ms,
            crc32: crc32fast::hash(&bytes),
        };
        let location = self.prefix.clone().join(name.file_name());
        self.put_streamed(&location, bytes.chunks(PART_BYTES), std::future::pending())
            .await?;
        Ok(Stored {
            location,
            name,
            size: bytes.len() as u64,
        })
    }

    /// Writes `pieces` as one multipart object. A failed or cancelled upload is aborted, so
    /// no partial object is listed (a multipart object exists only once completed) and no
    /// uploaded parts are left for the bucket to bill until a lifecycle rule clears them.
    async fn put_streamed<P: AsRef<[u8]>>(
        &self,
        location: &Path,
        pieces: impl Iterator<Item = P>,
        cancel: impl Future<Output = ()>,
    ) -> Result<(), BackupError> {
        let upload = self.store.put_multipart(location).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut cancel = std::pin::pin!(cancel);
        let mut failed = None;
        // The last `wait_for_capacity(0)` lets every part finish before `finish`, which
        // takes the writer: past that point a cancel could no longer abort it.
        for piece in pieces.map(Some).chain([None]) {
            let room = if piece.is_some() { PARTS_IN_FLIGHT } else { 0 };
            tokio::select! {
                waited = writer.wait_for_capacity(room) => if let Err(e) = waited {
                    failed = Some(BackupError::Store(e));
                    break;
                },
                () = &mut cancel => {
                    failed = Some(BackupError::Cancelled);
                    break;
                }
            }
            if let Some(piece) = piece {
                writer.write(piece.as_ref());
            }
        }
        match failed {
            None => {
                writer.finish().await?;
                Ok(())
            }
            Some(e) => {
                // Bounded: the store may be the thing that is gone.
                match tokio::time::timeout(ABORT_TIMEOUT, writer.abort()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(a)) => {
                        tracing::warn!(error = %a, object = %location, "cannot abort the multipart upload; the bucket keeps its parts until a lifecycle rule clears them")
                    }
                    Err(_) => {
                        tracing::warn!(object = %location, "aborting the multipart upload timed out; the bucket keeps its parts until a lifecycle rule clears them")
                    }
                }
                Err(e)
            }
        }
    }

    /// Deletes the oldest backups beyond the newest `keep`; answers the ones it deleted.
    pub async fn prune(&self, keep: usize) -> Result<Vec<Stored>, BackupError> {
        let stale: Vec<Stored> = self.list().await?.into_iter().skip(keep).collect();
        for s in &stale {
            match self.store.delete(&s.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stale)
    }

    /// Streams one backup into the file `to`, checking its size and CRC-32 against its name.
    pub async fn download(&self, stored: &Stored, to: &std::path::Path) -> Result<(), BackupError> {
        let io = |source| BackupError::Io {
            path: to.to_owned(),
            source,
        };
        let mut body = self.store.get(&stored.location).await?.into_stream();
        let mut file = tokio::fs::File::create(to).await.map_err(io)?;
        let mut crc = crc32fast::Hasher::new();
        let mut size = 0u64;
        while let Some(piece) = body.next().await {
            let piece = piece?;
            crc.update(&piece);
            size += piece.len() as u64;
            file.write_all(&piece).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        let damaged = |problem: String| BackupError::Damaged {
            name: stored.location.to_string(),
            problem,
        };
        if size != stored.size {
            return Err(damaged(format!("{size} bytes read, {} listed", stored.size)));
        }
        let crc = crc.finalize();
        if crc != stored.name.crc32 {
            return Err(damaged(format!(
                "CRC-32 {crc:08x}, its name says {:08x}",
                stored.name.crc32
            )));
        }
        Ok(())
    }

    /// The object at `url` (one backup, named like one), found through its directory.
    pub async fn stat(url: &str) -> Result<(Target, Stored), BackupError> {
        let (dir, file) = url
            .trim_end_matches('/')
            .rsplit_once('/')
            .ok_or_else(|| BackupError::Target {
                url: url.to_owned(),
                problem: "names no object".into(),
            })?;
        let name = BackupName::parse(file).ok_or_else(|| BackupError::Target {
            url: url.to_owned(),
            problem: "is not a backup's name (openraft-memory-<revision>-<ms>-<crc32>.snapshot)".into(),
        })?;
        let target = Target::open(dir)?;
        let location = target.prefix.clone().join(file);
        let meta = target.store.head(&location).await?;
        let stored = Stored {
            location,
            name,
            size: meta.size,
        };
        Ok((target, stored))
    }
}

/// The store and the path within it that `url` names.
fn open_store(url: &str) -> Result<(Arc<dyn ObjectStore>, Path), BackupError> {
    let bad = |problem: String| BackupError::Target {
        url: url.to_owned(),
        problem,
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(e.to_string()))?;
    let prefix = Path::parse(path).map_err(|e| bad(e.to_string()))?;
    // reqwest is built without a crypto provider of its own: HTTPS to the store uses the
    // process-wide one (ring), installed here for callers that have not done so yet.
    crate::security::tls::install_default_provider();
    // The object store's own retries are kept short: the scheduler retries a failed
    // backup with its own backoff, and a restore is retried by the caller.
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    // Timeouts as config keys rather than `with_client_options`, which would replace the
    // client options read from the environment (AWS_ALLOW_HTTP among them).
    use object_store::ClientConfigKey::{ConnectTimeout, Timeout};
    let timeouts = [(ConnectTimeout, "5s"), (Timeout, "120s")];
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::Local => Arc::new(object_store::local::LocalFileSystem::new()),
        ObjectStoreScheme::AmazonS3 => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry);
            for (key, value) in timeouts {
                b = b.with_config(object_store::aws::AmazonS3ConfigKey::Client(key), value);
            }
            Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry);
            for (key, value) in timeouts {
                b = b.with_config(object_store::gcp::GoogleConfigKey::Client(key), value);
            }
            Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
        }
        other => {
            return Err(bad(format!(
                "{other:?} is not supported: use s3://, gs:// or file://"
            )));
        }
    };
    Ok((store, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_revision() {
        let a = BackupName {
            revision: 9,
            taken_ms: 1_700_000_000_000,
            crc32: 0xdead_beef,
        };
        let b = BackupName { revision: 10, ..a };
        assert_eq!(BackupName::parse(&a.file_name()), Some(a));
        assert!(
            a.file_name() < b.file_name(),
            "zero-padded: text order is revision order"
        );
        assert_eq!(
            a.file_name(),
            "openraft-memory-00000000000000000009-1700000000000-deadbeef.snapshot"
        );
        for other in [
            "openraft-memory-9.snapshot",
            "openraft-memory-x-1-00000000.snapshot",
            "openraft-memory-1-2-3-4.snapshot",
            "notes.txt",
        ] {
            assert_eq!(BackupName::parse(other), None, "{other}");
        }
    }

    #[test]
    fn targets_need_a_known_scheme() {
        assert!(Target::open("file:///tmp/backups").is_ok());
        let e = Target::open("ftp://host/x").expect_err("refused");
        assert!(e.to_string().contains("ftp://host/x"), "{e}");
    }
}

//! `ctl backup ...`: a backup saved to a file or uploaded to object storage, restored from
//! either into a new cluster (client-side creates), and the backups under a target listed.

use reqwest::Method;
use serde_json::{Value, json};

use super::BackupCmd;
use super::Output;
use super::client::{self, Client, CtlError};
use crate::backup::{Target, fetch_for_restore};
use crate::config::RestoreSource;
use crate::model::Record;

/// Runs one `backup` subcommand.
pub(super) async fn run(c: &Client, cmd: &BackupCmd, out: Output) -> Result<(), CtlError> {
    match cmd {
        BackupCmd::Save { file: Some(file), .. } => backup_save(c, file).await,
        BackupCmd::Save { file: None, target } => {
            save_to_target(c, target.as_deref().unwrap_or_default()).await
        }
        BackupCmd::Restore {
            file: Some(file),
            parallel,
            ..
        } => {
            let records = crate::store::read_backup(file)
                .map_err(|e| CtlError::Local(format!("{}: {e}", file.display())))?;
            restore_records(c, records, &file.display().to_string(), *parallel).await
        }
        BackupCmd::Restore {
            file: None,
            target,
            name,
            parallel,
        } => {
            let target = target.as_deref().unwrap_or_default();
            let source = match name {
                Some(n) => RestoreSource::Object(format!("{}/{n}", target.trim_end_matches('/'))),
                None => RestoreSource::Latest,
            };
            let fetched = fetch_for_restore(&source, target, &std::env::temp_dir())
                .await
                .map_err(|e| CtlError::Unreachable(e.to_string()))?
                .ok_or_else(|| CtlError::Api {
                    status: reqwest::StatusCode::NOT_FOUND,
                    detail: format!("no backups under {target}"),
                    problem: Value::Null,
                })?;
            restore_records(c, fetched.records, &fetched.url, *parallel).await
        }
        BackupCmd::List { target } => list(target, out).await,
    }
}

fn open(target: &str) -> Result<Target, CtlError> {
    Target::open(target).map_err(|e| CtlError::Usage(e.to_string()))
}

async fn list(target: &str, out: Output) -> Result<(), CtlError> {
    let all = open(target)?
        .list()
        .await
        .map_err(|e| CtlError::Unreachable(e.to_string()))?;
    let rows: Vec<Value> = all
        .iter()
        .map(|s| {
            json!({
                "name": s.name.file_name(),
                "revision": s.name.revision,
                "taken_unix_ms": s.name.taken_ms,
                "bytes": s.size,
            })
        })
        .collect();
    match out {
        Output::Json => println!("{}", Value::Array(rows)),
        Output::Table => {
            println!(
                "{:<70} {:>10} {:>14} {:>12}",
                "NAME", "REVISION", "TAKEN (UNIX)", "BYTES"
            );
            for s in &all {
                println!(
                    "{:<70} {:>10} {:>14} {:>12}",
                    s.name.file_name(),
                    s.name.revision,
                    s.name.taken_ms / 1000,
                    s.size
                );
            }
        }
    }
    Ok(())
}

/// Saves the cluster's backup to a scratch file, checks it, and uploads it to `target`.
async fn save_to_target(c: &Client, target: &str) -> Result<(), CtlError> {
    let t = open(target)?;
    let file = std::env::temp_dir().join(format!("openraft-memory-ctl-{}.snapshot", std::process::id()));
    backup_save(c, &file).await?;
    let taken_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let stored = t.upload_file(&file, taken_ms).await;
    let _ = std::fs::remove_file(&file);
    let stored = stored.map_err(|e| CtlError::Unreachable(e.to_string()))?;
    println!("uploaded {} ({} bytes)", stored.location, stored.size);
    Ok(())
}

/// Streams the backup to `FILE.partial` and renames it into place once complete.
async fn backup_save(c: &Client, file: &std::path::Path) -> Result<(), CtlError> {
    // Plain std::fs: the CLI's runtime serves nothing else, so blocking writes stall no one.
    use std::io::Write;
    let mut resp = c.send(Method::GET, "/cluster/snapshot", None, &[], true).await?;
    let partial = file.with_extension("partial");
    let local = |e: std::io::Error| CtlError::Local(format!("{}: {e}", partial.display()));
    let mut f = std::fs::File::create(&partial).map_err(local)?;
    let mut bytes = 0u64;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                bytes += chunk.len() as u64;
                f.write_all(&chunk).map_err(local)?;
            }
            Ok(None) => break,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(CtlError::Unreachable(format!(
                    "the backup broke off after {bytes} bytes: {}",
                    client::describe(&e)
                )));
            }
        }
    }
    f.sync_all().map_err(local)?;
    drop(f);
    // A truncated or damaged stream must not pass for a backup.
    let records = crate::store::read_backup(&partial).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        CtlError::Local(format!("the backup received does not check out: {e}"))
    })?;
    std::fs::rename(&partial, file).map_err(|e| CtlError::Local(format!("{}: {e}", file.display())))?;
    println!(
        "saved {} records ({bytes} bytes) to {}",
        records.len(),
        file.display()
    );
    Ok(())
}

/// Writes every record of a backup into an empty cluster.
async fn restore_records(
    c: &Client,
    records: Vec<Record>,
    from: &str,
    parallel: usize,
) -> Result<(), CtlError> {
    use futures::StreamExt;
    let page = c.json(Method::GET, "/students?limit=1", None, &[]).await?;
    if page["students"].as_array().is_some_and(|s| !s.is_empty()) {
        return Err(CtlError::Usage(
            "the cluster has records already: restore into a new cluster (or start one with storage.restore_from)".into(),
        ));
    }
    let total = records.len();
    let results: Vec<Result<Value, CtlError>> = futures::stream::iter(records)
        .map(|r| async move {
            let body = json!({"id": r.student.id, "name": r.student.name, "score": r.student.score});
            c.json(Method::POST, "/students", Some(&body), &[]).await
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let failed: Vec<CtlError> = results.into_iter().filter_map(Result::err).collect();
    if let Some(first) = failed.into_iter().next() {
        return Err(first);
    }
    println!("restored {total} records from {from}");
    Ok(())
}

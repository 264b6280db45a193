//! Backup and restore: a backup seeds a new cluster (a damaged one is refused), readiness
//! reports a restore's progress, and a backup damaged after start-up keeps ordinal 0
//! running and unready with the reason.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::durable::all_records;
use crate::util::{Cluster, Node, client as http, fresh_ip, json_student, wait_for};

/// A backup taken from one cluster seeds a new three-node cluster through its ordinal 0,
/// and every member ends up with every record; other ordinals ignore the setting; a damaged
/// backup stops start-up with a message naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_seeds_a_new_cluster_and_a_damaged_one_is_refused() {
    let mut source = Node::new("source", fresh_ip(), vec![], vec![]);
    source.start();
    source.wait_ready().await;
    for i in 1..=2500 {
        let r = http()
            .post(format!("{}/students", source.http()))
            .json(&json_student(i, &format!("s{i}"), (i % 100) as f32))
            .send()
            .await
            .expect("write");
        assert_eq!(r.status(), 201);
    }
    let resp = http()
        .get(format!("{}/cluster/snapshot", source.http()))
        .send()
        .await
        .expect("backup");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-openraft-memory-records"], "2500");
    // Streamed, yet its length is declared up front (so a client sees its progress).
    let declared = resp.content_length();
    let bytes = resp.bytes().await.expect("backup body");
    assert_eq!(declared, Some(bytes.len() as u64));
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("backup.snapshot");
    std::fs::write(&backup, &bytes).expect("save backup");
    let expected = all_records(source.http()).await.expect("source records");
    drop(source);

    let mut cluster = Cluster::new(3, vec![]);
    cluster.nodes[0]
        .args
        .extend(["--restore-from".to_owned(), backup.display().to_string()]);
    // The same setting reaching every pod (the chart's `restore`): the other ordinals never
    // read the file, so one that is absent on their machine does not stop them.
    let absent = dir.path().join("not-on-this-node.snapshot");
    cluster.nodes[1]
        .args
        .extend(["--restore-from".to_owned(), absent.display().to_string()]);
    cluster.start_all();
    cluster.wait_stable(&[0, 1, 2], 3).await;
    for n in &cluster.nodes {
        wait_for(
            &format!("{} holds every restored record", n.name),
            Duration::from_secs(20),
            || async { (all_records(n.http()).await? == expected).then_some(()) },
        )
        .await;
    }

    // A damaged backup: start-up fails at once, naming the file.
    let mut damaged = bytes.to_vec();
    let n = damaged.len();
    damaged[n / 2] ^= 0xff;
    let bad = dir.path().join("damaged.snapshot");
    std::fs::write(&bad, &damaged).expect("save damaged");
    let mut refused = Node::new("db-0", fresh_ip(), vec![], vec![]);
    refused
        .args
        .extend(["--restore-from".to_owned(), bad.display().to_string()]);
    refused.start();
    let code = refused.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(2));
    let log = std::fs::read_to_string(&refused.log).expect("log");
    assert!(
        log.contains("damaged.snapshot") && log.contains("checksum"),
        "{log}"
    );
}

/// While ordinal 0 loads a backup, readiness fails with the restore's progress (a load
/// balancer must not send it clients yet); once done it is ready and holds every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_a_restore_in_progress_until_every_record_is_loaded() {
    // Big enough that loading takes far longer than one readiness poll; written straight in
    // the backup format, so the test does not spend minutes creating the records.
    const RECORDS: i64 = 400_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("big.snapshot");
    write_backup(&backup, RECORDS);

    let mut node = Node::new("restore-0", fresh_ip(), vec![], vec![]);
    node.args
        .extend(["--restore-from".to_owned(), backup.display().to_string()]);
    node.start();
    let progress = Mutex::new(Vec::new());
    wait_for(
        "the node to finish restoring and become ready",
        Duration::from_secs(120),
        || async {
            let resp = http().get(format!("{}/readyz", node.http())).send().await.ok()?;
            if resp.status() == 200 {
                return Some(());
            }
            let body: Value = resp.json().await.ok()?;
            if let Some(reason) = body["reason"].as_str() {
                progress.lock().expect("lock").push(reason.to_owned());
            }
            None
        },
    )
    .await;
    let progress = progress.into_inner().expect("lock");
    assert!(
        progress
            .iter()
            .any(|r| r.contains("restoring the backup") && r.contains("records")),
        "readiness never reported the restore; reasons seen: {progress:?}"
    );
    let records = all_records(node.http()).await.expect("records");
    assert_eq!(records.len(), RECORDS as usize);
    assert_eq!(records[&RECORDS], (RECORDS % 100) as f64);
}

/// A backup that went bad after start-up (it is checked then, and read again when ordinal 0
/// initialises) leaves the node running but never ready, with a reason naming the failure,
/// and no half-loaded records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_damaged_after_start_up_keeps_the_node_unready_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("backup.snapshot");
    write_backup(&backup, 10);

    // Ordinal 0 does not initialise while its peer is silent: that holds it between the
    // start-up check and the restore.
    let mut cluster = Cluster::new(2, vec![]);
    cluster.nodes[0]
        .args
        .extend(["--restore-from".to_owned(), backup.display().to_string()]);
    cluster.nodes[0].start();
    let first = &cluster.nodes[0];
    wait_for("ordinal 0 to serve /readyz", Duration::from_secs(30), || async {
        http()
            .get(format!("{}/readyz", first.http()))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let mut damaged = std::fs::read(&backup).expect("read backup");
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&backup, damaged).expect("damage backup");

    cluster.nodes[1].start();
    let first = &cluster.nodes[0];
    let reason = wait_for(
        "readiness to report the failed restore",
        Duration::from_secs(60),
        || async {
            let body: Value = http()
                .get(format!("{}/readyz", first.http()))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let reason = body["reason"].as_str()?.to_owned();
            reason.contains("restore failed").then_some(reason)
        },
    )
    .await;
    assert!(
        reason.contains("backup.snapshot"),
        "the reason should name the file: {reason}"
    );
    assert!(
        cluster.nodes[0].is_running(),
        "a failed restore must not stop the node"
    );
    let records = all_records(cluster.nodes[0].http()).await.expect("records");
    assert!(
        records.is_empty(),
        "nothing of a damaged backup is loaded: {records:?}"
    );
}

/// Writes a backup of records 1..=n (name `s<id>`, score id % 100) straight in the snapshot
/// file format, as `GET /cluster/snapshot` would.
fn write_backup(path: &std::path::Path, n: i64) {
    use openraft_memory::pb::{client, peer};
    use prost::Message;
    let data = peer::StateSnapshot {
        students: (1..=n)
            .map(|i| client::Student {
                id: i,
                name: format!("s{i}"),
                score: (i % 100) as f32,
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec();
    let file =
        openraft_memory::store::disk::encode_snapshot(&openraft_memory::SnapshotMeta::default(), &data)
            .expect("a small backup");
    std::fs::write(path, file).expect("write backup");
}

//! Scheduled backups to a real S3-compatible server (moto in server mode, started by the
//! test on its own loopback address): backups appear at the interval, retention keeps the
//! newest, a new three-node cluster restores the newest usable one (skipping a damaged
//! newest, named in the log), a large backup uploads with flat memory, and the server going
//! away is retried while writes keep committing.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use openraft_memory::backup::BackupName;

use super::durable::all_records;
use super::limits::metrics_text;
use crate::metrics::{samples, value};
use crate::util::{Cluster, Node, client as http, fresh_ip, json_student, wait_for};

const MOTO_PORT: u16 = 5000;

/// A moto S3 server on its own loopback address.
struct Moto {
    ip: Ipv4Addr,
    child: Option<Child>,
}

impl Moto {
    async fn start(ip: Ipv4Addr) -> Moto {
        let mut m = Moto { ip, child: None };
        m.restart().await;
        m
    }

    /// (Re)starts the server (empty: moto keeps everything in memory) and waits until it answers.
    async fn restart(&mut self) {
        self.stop();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                &self.ip.to_string(),
                "-p",
                &MOTO_PORT.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto must be installed (.ci/run: pip install 'moto[server]')");
        self.child = Some(child);
        let url = self.endpoint();
        wait_for("moto answers", Duration::from_secs(30), || async {
            http().get(&url).send().await.ok().map(|_| ())
        })
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}:{MOTO_PORT}", self.ip)
    }

    /// Creates a bucket (moto takes unsigned requests).
    async fn create_bucket(&self, bucket: &str) {
        let r = http()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// What a node needs in its environment to back up to `s3://<bucket>/<prefix>` here.
    fn node_env(&self, target: &str, interval: &str, keep: usize) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("OPENRAFT_MEMORY__BACKUP__TARGET", target.into()),
            ("OPENRAFT_MEMORY__BACKUP__INTERVAL", interval.into()),
            ("OPENRAFT_MEMORY__BACKUP__KEEP", keep.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The test's own client of `bucket`.
    fn bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_region("us-east-1")
                .with_bucket_name(bucket)
                .build()
                .expect("s3 client"),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The backups under `prefix`, oldest first.
async fn backups(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<(Path, BackupName)> {
    let mut out = Vec::new();
    let mut list = store.list(Some(&Path::from(prefix)));
    while let Some(meta) = list.next().await {
        let Ok(meta) = meta else { return Vec::new() };
        if let Some(name) = meta.location.filename().and_then(BackupName::parse) {
            out.push((meta.location, name));
        }
    }
    out.sort_by_key(|(_, n)| *n);
    out
}

async fn metric(node: &Node, key: &str) -> f64 {
    value(&samples(&metrics_text(node).await), key).unwrap_or(0.0)
}

async fn write_all(node: &Node, students: impl IntoIterator<Item = (i64, f32)>) {
    for (id, score) in students {
        let r = http()
            .put(format!("{}/students/{id}", node.http()))
            .json(&serde_json::json!({"name": format!("s{id}"), "score": score}))
            .send()
            .await
            .expect("update");
        if r.status() == 404 {
            let r = http()
                .post(format!("{}/students", node.http()))
                .json(&json_student(id, &format!("s{id}"), score))
                .send()
                .await
                .expect("create");
            assert_eq!(r.status(), 201);
        } else {
            assert_eq!(r.status(), 200);
        }
    }
}

/// The node's current revision (`/cluster`).
async fn revision(node: &Node) -> u64 {
    node.cluster()
        .await
        .and_then(|c| c["revision"].as_u64())
        .unwrap_or(0)
}

/// Backups appear at the interval, retention keeps the newest `keep`, the metrics report the
/// newest; a new three-node cluster started with `restore_from = latest` holds exactly the
/// records of the newest usable backup, after skipping a damaged newest one it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_keep_the_newest_and_a_new_cluster_restores_the_latest_usable_one() {
    let moto = Moto::start(fresh_ip()).await;
    moto.create_bucket("backups").await;
    let store = moto.bucket("backups");
    let target = "s3://backups/db";

    let mut source = Node::new("source", fresh_ip(), vec![], moto.node_env(target, "1s", 4));
    source.start();
    source.wait_ready().await;
    write_all(&source, (1..=150).map(|i| (i, (i % 100) as f32))).await;
    let rev_a = revision(&source).await;
    let expected = all_records(source.http()).await.expect("records");

    // Several backups of that state: spaced by the interval, at most `keep` kept.
    wait_for(
        "more backups of the first state than are kept",
        Duration::from_secs(30),
        || async {
            let total = metric(&source, "openraft_memory_backups_total").await;
            let all = backups(&store, "db").await;
            let of_a = all.iter().filter(|(_, n)| n.revision == rev_a).count();
            (total >= 6.0 && of_a >= 4).then_some(())
        },
    )
    .await;
    // Each upload is followed by its pruning: the listing settles at exactly the newest 4,
    // all of the first state (the earlier ones, taken while it was written, are gone).
    let listed = wait_for(
        "retention keeps the newest 4",
        Duration::from_secs(10),
        || async {
            let all = backups(&store, "db").await;
            (all.len() == 4 && all.iter().all(|(_, n)| n.revision == rev_a)).then_some(all)
        },
    )
    .await;
    let taken: Vec<u64> = listed.iter().map(|(_, n)| n.taken_ms).collect();
    for gap in taken.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            (900..5000).contains(&gap),
            "backups should be about the 1s interval apart: {taken:?}"
        );
    }
    assert_eq!(
        metric(&source, "openraft_memory_backup_last_success_revision").await as u64,
        listed.last().expect("a backup").1.revision
    );
    assert_eq!(
        metric(&source, "openraft_memory_backup_interval_seconds").await,
        1.0
    );

    // A second state, one write away (so at most a backup or two of it push the first
    // state's out); the node stops right after its first backup is listed.
    write_all(&source, [(1, 7.0)]).await;
    let rev_b = revision(&source).await;
    wait_for(
        "a backup of the second state",
        Duration::from_secs(20),
        || async {
            backups(&store, "db")
                .await
                .iter()
                .any(|(_, n)| n.revision == rev_b)
                .then_some(())
        },
    )
    .await;
    source.kill();
    let all = backups(&store, "db").await;
    assert!(
        all.iter().any(|(_, n)| n.revision == rev_a),
        "a backup of the first state is kept: {all:?}"
    );
    // Damage every backup of the second state: the restore must fall back to the first.
    let mut damaged = Vec::new();
    for (loc, name) in all.iter().filter(|(_, n)| n.revision == rev_b) {
        let mut bytes = store
            .get(loc)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body")
            .to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        store
            .put(loc, PutPayload::from(bytes))
            .await
            .expect("put damaged");
        damaged.push(name.file_name());
    }

    let mut cluster = Cluster::new(3, moto.node_env(target, "1h", 4));
    for n in &mut cluster.nodes {
        n.args.extend(["--restore-from".to_owned(), "latest".to_owned()]);
    }
    cluster.start_all();
    cluster.wait_stable(&[0, 1, 2], 3).await;
    for n in &cluster.nodes {
        wait_for(
            &format!("{} holds the first state's records", n.name),
            Duration::from_secs(30),
            || async {
                let got: BTreeMap<i64, f64> = all_records(n.http()).await?;
                (got == expected).then_some(())
            },
        )
        .await;
    }
    let log = std::fs::read_to_string(&cluster.nodes[0].log).expect("log");
    for name in &damaged {
        assert!(
            log.contains(name.as_str()) && log.contains("skipping a damaged backup"),
            "the log should name the damaged backup {name}"
        );
    }
}

/// A backup much larger than one part uploads with flat memory; with the server gone, the
/// upload fails and is retried, writes keep committing, the failure metric counts it, and
/// once the server is back the next backup succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backup_uploads_with_flat_memory_and_a_lost_server_is_retried() {
    let mut moto = Moto::start(fresh_ip()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.snapshot");
    let records = 200_000;
    write_backup(&seed, records);
    let backup_bytes = std::fs::metadata(&seed).expect("seed").len();

    // No bucket yet: every attempt fails until the test creates it.
    let mut node = Node::new("big", fresh_ip(), vec![], moto.node_env("s3://big/db", "2s", 2));
    node.args
        .extend(["--restore-from".to_owned(), seed.display().to_string()]);
    node.start();
    wait_for("the seed is restored", Duration::from_secs(120), || async {
        node.ready().await.then_some(())
    })
    .await;
    wait_for(
        "a failed attempt (no bucket)",
        Duration::from_secs(20),
        || async {
            (metric(&node, "openraft_memory_backup_failures_total{reason=\"upload\"}").await >= 1.0)
                .then_some(())
        },
    )
    .await;
    let pid = node.pid().expect("running");
    // The peak from here on: reset the high-water mark to the current resident size.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    let before = proc_kib(pid, "VmRSS:");
    moto.create_bucket("big").await;
    let store = moto.bucket("big");
    wait_for("two full backups", Duration::from_secs(60), || async {
        (metric(&node, "openraft_memory_backups_total").await >= 2.0).then_some(())
    })
    .await;
    let peak = proc_kib(pid, "VmHWM:");
    let grown = peak.saturating_sub(before) * 1024;
    let listed = backups(&store, "db").await;
    let newest = listed.last().expect("a backup").clone();
    let size = store.head(&newest.0).await.expect("head").size;
    assert_eq!(
        size,
        metric(&node, "openraft_memory_backup_last_size_bytes").await as u64
    );
    assert!(
        size > backup_bytes / 2,
        "the backup holds every record: {size} bytes"
    );
    eprintln!("a {size}-byte backup uploaded twice: the node's peak memory grew by {grown} bytes");
    assert!(
        grown < size / 2,
        "uploading a {size}-byte backup grew the node's peak memory by {grown} bytes"
    );

    // The server goes away in the middle of an upload: one is listed as in progress
    // (ListMultipartUploads) when it is killed.
    let failures = metric(&node, "openraft_memory_backup_failures_total{reason=\"upload\"}").await;
    let uploads = format!("{}/big?uploads", moto.endpoint());
    wait_for_upload_in_progress(&uploads).await;
    moto.stop();
    for i in 0..50 {
        let r = http()
            .post(format!("{}/students", node.http()))
            .json(&json_student(records + 1 + i, "during the outage", 1.0))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("write while the store is gone");
        assert_eq!(r.status(), 201, "writes commit while backups fail");
    }
    wait_for(
        "the lost server is counted as a failure",
        Duration::from_secs(60),
        || async {
            (metric(&node, "openraft_memory_backup_failures_total{reason=\"upload\"}").await > failures)
                .then_some(())
        },
    )
    .await;
    let after_writes = revision(&node).await;
    let done = metric(&node, "openraft_memory_backups_total").await;
    moto.restart().await;
    moto.create_bucket("big").await;
    let store = moto.bucket("big");
    wait_for(
        "a backup succeeds once the server is back",
        Duration::from_secs(60),
        || async {
            let ok = metric(&node, "openraft_memory_backups_total").await > done;
            let listed = backups(&store, "db").await;
            (ok && listed.iter().any(|(_, n)| n.revision >= after_writes)).then_some(())
        },
    )
    .await;

    // SIGTERM in the middle of an upload: the node aborts it (no parts left behind in the
    // bucket, no partial backup listed) and still exits 0.
    let complete = backups(&store, "db").await;
    wait_for_upload_in_progress(&uploads).await;
    node.signal("TERM");
    assert_eq!(
        node.wait_exit(Duration::from_secs(30)).await,
        Some(0),
        "a node stopping mid-upload exits 0: {}",
        node.log_tail()
    );
    let listing = multipart_uploads(&uploads).await.expect("list uploads");
    assert!(
        !listing.contains("<UploadId>"),
        "the cut upload is aborted, not left in progress: {listing}"
    );
    // The stop may land while the last part is being completed (then the backup finishes);
    // anywhere before that, the upload is aborted and the log says so.
    let after = backups(&store, "db").await;
    let finished = after.iter().any(|b| !complete.contains(b));
    let log = std::fs::read_to_string(&node.log).expect("log");
    eprintln!(
        "SIGTERM mid-upload: the upload {}",
        if finished {
            "was completing and finished"
        } else {
            "was aborted"
        }
    );
    assert!(
        finished || log.contains("backup upload aborted: the node is stopping"),
        "the log says the upload was aborted: {complete:?} then {after:?}"
    );
}

/// The bucket's ListMultipartUploads answer (XML) at `uploads` (`<bucket>?uploads`).
async fn multipart_uploads(uploads: &str) -> Option<String> {
    http().get(uploads).send().await.ok()?.text().await.ok()
}

/// Waits until the bucket lists a multipart upload in progress.
async fn wait_for_upload_in_progress(uploads: &str) {
    wait_for(
        "a multipart upload in progress",
        Duration::from_secs(30),
        || async {
            multipart_uploads(uploads)
                .await?
                .contains("<UploadId>")
                .then_some(())
        },
    )
    .await;
}

/// `/proc/<pid>/status` field in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// A backup of `n` records with 200-character names, in the snapshot file format.
fn write_backup(path: &std::path::Path, n: i64) {
    use openraft_memory::pb::{client, peer};
    use prost::Message;
    let pad = "x".repeat(190);
    let data = peer::StateSnapshot {
        students: (1..=n)
            .map(|i| client::Student {
                id: i,
                name: format!("{i:09}{pad}"),
                score: (i % 100) as f32,
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec();
    let file =
        openraft_memory::store::disk::encode_snapshot(&openraft_memory::SnapshotMeta::default(), &data)
            .expect("the seed backup");
    std::fs::write(path, file).expect("write seed");
}

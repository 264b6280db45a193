//! Disk mode: kill -9 of every node under load, repeated crashes of one node, switching a
//! memory cluster to disk by rolling restart, a removed node returning with its data, the
//! data directory lock. Backups and restore are in `restore.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::util::{Cluster, Node, client as http, fresh_ip, json_student, wait_for};

/// What concurrent writers saw: ids whose create was acknowledged, and for each id the
/// scores of updates acknowledged (in order) and attempted without an answer.
#[derive(Default)]
struct Seen {
    created: BTreeSet<i64>,
    /// id → (last acknowledged score, scores sent later without an acknowledgement).
    scores: BTreeMap<i64, (f64, Vec<f64>)>,
}

/// Writers creating new records and updating their own earlier ones, against random
/// nodes, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(urls: Vec<String>, writers: usize, first_id: i64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tasks = (0..writers)
            .map(|w| {
                let (stop, acked, seen, urls) = (stop.clone(), acked.clone(), seen.clone(), urls.clone());
                tokio::spawn(async move {
                    openraft_memory::security::tls::install_default_provider();
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(3))
                        .build()
                        .expect("client");
                    let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
                    let mut mine: Vec<i64> = Vec::new();
                    let mut next = first_id + (w as i64) * 1_000_000;
                    while !stop.load(Ordering::SeqCst) {
                        let url = &urls[rng.random_range(0..urls.len())];
                        if !mine.is_empty() && rng.random_bool(0.3) {
                            let id = mine[rng.random_range(0..mine.len())];
                            let score = f64::from(rng.random_range(0..=100u8));
                            let ok = matches!(client
                                .put(format!("{url}/students/{id}"))
                                .json(&serde_json::json!({"name": "u", "score": score}))
                                .send()
                                .await, Ok(r) if r.status() == 200);
                            let mut seen = seen.lock().expect("seen");
                            let entry = seen.scores.get_mut(&id).expect("own id");
                            if ok {
                                *entry = (score, Vec::new());
                                acked.fetch_add(1, Ordering::SeqCst);
                            } else {
                                entry.1.push(score);
                            }
                        } else {
                            next += 1;
                            let ok = matches!(client
                                .post(format!("{url}/students"))
                                .json(&json_student(next, "c", 1.0))
                                .send()
                                .await, Ok(r) if r.status() == 201);
                            if ok {
                                mine.push(next);
                                let mut seen = seen.lock().expect("seen");
                                seen.created.insert(next);
                                seen.scores.insert(next, (1.0, Vec::new()));
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            seen,
            tasks,
        }
    }

    async fn wait_acked(&self, n: usize) {
        let acked = self.acked.clone();
        wait_for(
            &format!("{n} acknowledged writes"),
            Duration::from_secs(60),
            || {
                let acked = acked.clone();
                async move { (acked.load(Ordering::SeqCst) >= n).then_some(()) }
            },
        )
        .await;
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("writer");
        }
        Arc::try_unwrap(self.seen)
            .ok()
            .expect("writers done")
            .into_inner()
            .expect("seen")
    }
}

/// Every record through `url`, read page by page (linearizably).
pub(crate) async fn all_records(url: String) -> Option<BTreeMap<i64, f64>> {
    let mut out = BTreeMap::new();
    let mut after: Option<i64> = None;
    loop {
        let mut req = http().get(format!("{url}/students")).query(&[("limit", "1000")]);
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        let page: Value = req.send().await.ok()?.json().await.ok()?;
        for s in page["students"].as_array()? {
            out.insert(s["id"].as_i64()?, s["score"].as_f64()?);
        }
        match page["next_after"].as_i64() {
            Some(a) => after = Some(a),
            None => return Some(out),
        }
    }
}

/// Every acknowledged create is present, and every record's score is its last acknowledged
/// one or one sent after it without an answer (that write may have been applied).
fn assert_nothing_lost(seen: &Seen, records: &BTreeMap<i64, f64>) {
    let missing: Vec<&i64> = seen
        .created
        .iter()
        .filter(|id| !records.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "acknowledged creates lost: {missing:?}");
    for (id, (acked, later)) in &seen.scores {
        let got = records[id];
        assert!(
            got == *acked || later.contains(&got),
            "record {id} has score {got}; last acknowledged {acked}, unanswered later {later:?}"
        );
    }
}

fn node_id(info: &Value) -> u64 {
    info["node"]["id"].as_u64().expect("node id")
}

async fn ids_of(cluster: &Cluster) -> Vec<u64> {
    let mut ids = Vec::new();
    for n in &cluster.nodes {
        let info = wait_for("node answers /cluster", Duration::from_secs(10), || n.cluster()).await;
        ids.push(node_id(&info));
    }
    ids
}

fn count(node: &Node, needle: &str) -> usize {
    std::fs::read_to_string(&node.log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// The acceptance test: kill -9 every node of a disk-mode cluster in the middle of
/// a write load, restart them, and find every acknowledged write, the same node ids, and a
/// cluster that serves again — without anyone rejoining or initialising anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cluster_keeps_every_acknowledged_write_through_kill_9_of_all_nodes() {
    let mut cluster = Cluster::new(3, vec![]);
    for n in &mut cluster.nodes {
        n.use_disk();
    }
    cluster.start_all();
    cluster.wait_stable(&[0, 1, 2], 3).await;
    let ids = ids_of(&cluster).await;
    let urls = cluster.nodes.iter().map(Node::http).collect();

    let joins: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| count(n, "joined the cluster as a voter"))
        .collect();
    let load = Load::start(urls, 8, 1);
    load.wait_acked(400).await;
    for n in &mut cluster.nodes {
        n.kill();
    }
    let seen = load.finish().await;
    assert!(seen.created.len() >= 100, "too few writes to mean anything");

    cluster.start_all();
    cluster.wait_stable(&[0, 1, 2], 3).await;
    assert_eq!(
        ids_of(&cluster).await,
        ids,
        "a restarted disk-mode node keeps its Raft id"
    );
    let records = wait_for(
        "a linearizable read of every record",
        Duration::from_secs(20),
        || all_records(cluster.nodes[1].http()),
    )
    .await;
    assert_nothing_lost(&seen, &records);
    assert_eq!(count(&cluster.nodes[0], "initialised a new cluster"), 1);
    for (n, before) in cluster.nodes.iter().zip(joins) {
        assert_eq!(
            count(n, "joined the cluster as a voter"),
            before,
            "{} rejoined",
            n.name
        );
        assert_eq!(count(n, "keeping the persisted Raft id"), 1, "{}", n.name);
    }
    // It serves writes again.
    let r = http()
        .post(format!("{}/students", cluster.nodes[2].http()))
        .json(&json_student(99_999_999, "after", 5.0))
        .send()
        .await
        .expect("write after restart");
    assert_eq!(r.status(), 201);
}

/// Crash consistency: one disk-mode node, snapshots and journal compaction every few
/// entries, killed at a random point of a write load again and again; after every restart
/// everything acknowledged before the kill is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_node_killed_at_random_points_recovers_every_acknowledged_write() {
    let env = vec![
        (
            "OPENRAFT_MEMORY__RAFT__SNAPSHOT_AFTER_LOGS".to_owned(),
            "20".to_owned(),
        ),
        ("OPENRAFT_MEMORY__RAFT__LOGS_TO_KEEP".to_owned(), "5".to_owned()),
    ];
    let mut node = Node::new("solo", fresh_ip(), vec![], env);
    node.use_disk();
    let seed: u64 = rand::random();
    eprintln!("crash-consistency seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut id = None;
    let mut all = Seen::default();
    for round in 0..8i64 {
        node.start();
        node.wait_ready().await;
        let info = node.cluster().await.expect("cluster info");
        assert_eq!(
            *id.get_or_insert(node_id(&info)),
            node_id(&info),
            "the id survives restarts"
        );
        let records = all_records(node.http()).await.expect("read all");
        assert_nothing_lost(&all, &records);

        let load = Load::start(vec![node.http()], 4, 1 + round * 10_000_000);
        load.wait_acked(rng.random_range(5..150)).await;
        node.kill();
        let seen = load.finish().await;
        all.created.extend(seen.created);
        all.scores.extend(seen.scores);
    }
    node.start();
    node.wait_ready().await;
    let records = all_records(node.http()).await.expect("read all");
    assert_nothing_lost(&all, &records);
    assert!(
        count(&node, "built snapshot") > 0,
        "the rounds crossed snapshots (and log purges)"
    );
}

/// Switching a running memory-mode cluster to disk mode by rolling restart: each node
/// rejoins once as a new member; afterwards a kill -9 of every node loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_cluster_switches_to_disk_by_rolling_restart() {
    let mut cluster = Cluster::new(3, vec![]);
    cluster.start_all();
    cluster.wait_stable(&[0, 1, 2], 3).await;
    let leader = cluster.wait_stable(&[0, 1, 2], 3).await;
    for i in 0..100 {
        let r = http()
            .post(format!("{}/students", cluster.nodes[leader].http()))
            .json(&json_student(i + 1, "m", 2.0))
            .send()
            .await
            .expect("write");
        assert_eq!(r.status(), 201);
    }
    for i in [2, 1, 0] {
        cluster.nodes[i].signal("TERM");
        cluster.nodes[i].wait_exit(Duration::from_secs(25)).await;
        cluster.nodes[i].use_disk();
        cluster.nodes[i].start();
        cluster.wait_stable(&[0, 1, 2], 3).await;
    }
    for n in &cluster.nodes {
        assert!(
            n.data_dir().join("raft-log").exists(),
            "{} writes its journal",
            n.name
        );
    }
    for n in &mut cluster.nodes {
        n.kill();
    }
    cluster.start_all();
    cluster.wait_stable(&[0, 1, 2], 3).await;
    let records = wait_for("read every record", Duration::from_secs(20), || {
        all_records(cluster.nodes[0].http())
    })
    .await;
    assert_eq!(
        records.keys().copied().collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
}

/// Two processes never share a data directory: the second one exits with a clear message
/// and the first keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_a_locked_data_dir() {
    let mut first = Node::new("one", fresh_ip(), vec![], vec![]);
    first.use_disk();
    first.start();
    first.wait_ready().await;
    let mut second = Node::new("two", fresh_ip(), vec![], vec![]);
    second.args.extend([
        "--storage".to_owned(),
        "disk".to_owned(),
        "--data-dir".to_owned(),
        first.data_dir().display().to_string(),
    ]);
    second.start();
    assert_eq!(second.wait_exit(Duration::from_secs(10)).await, Some(2));
    let log = std::fs::read_to_string(&second.log).expect("log");
    assert!(log.contains("in use by another process"), "{log}");
    assert!(first.is_running() && first.ready().await);
}

/// A disk-mode node removed from the cluster while it was down (scaled down, then back on
/// its old volume) hears from no leader when it returns with its data; it asks to join
/// again under its own id and becomes a voter, with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_disk_node_that_returns_with_its_data_rejoins_under_its_id() {
    let mut cluster = Cluster::new(3, vec![]);
    for n in &mut cluster.nodes {
        n.use_disk();
    }
    cluster.start_all();
    let leader = cluster.wait_stable(&[0, 1, 2], 3).await;
    let gone = if leader == 2 { 1 } else { 2 };
    let rest: Vec<usize> = (0..3).filter(|i| *i != gone).collect();
    let gone_id = node_id(&cluster.nodes[gone].cluster().await.expect("cluster info"));
    cluster.nodes[gone].kill();
    let r = http()
        .delete(format!(
            "{}/cluster/members/{gone_id}",
            cluster.nodes[leader].http()
        ))
        .send()
        .await
        .expect("remove");
    assert_eq!(r.status(), 204);
    cluster.wait_stable(&rest, 2).await;
    for i in 1..=20 {
        let r = http()
            .post(format!("{}/students", cluster.nodes[leader].http()))
            .json(&json_student(i, "while away", 3.0))
            .send()
            .await
            .expect("write");
        assert_eq!(r.status(), 201);
    }

    cluster.nodes[gone].start();
    cluster.wait_stable(&[0, 1, 2], 3).await;
    let info = cluster.nodes[gone].cluster().await.expect("cluster info");
    assert_eq!(node_id(&info), gone_id, "same id, same data directory");
    assert!(crate::util::voter_ids(&info).contains(&gone_id));
    let records = wait_for(
        "the returned node reads every record",
        Duration::from_secs(20),
        || all_records(cluster.nodes[gone].http()),
    )
    .await;
    assert_eq!(records.len(), 20);
}

//! Failover time, measured (issue 20): starts a 3-node in-memory cluster of the given binary
//! on loopback, keeps a few clients writing (each write a new record, sent to a random
//! surviving node, one at a time per client), then stops the leader `--rounds` times and
//! reports, per round:
//! - `kill` (`kill -9`): from the kill to the first acknowledged write that was sent after it;
//! - `term` (SIGTERM, the graceful path with leadership hand-over): the longest time any
//!   client waited between a write it sent and its acknowledgement, or between failures,
//!   from the signal until the cluster is whole again, and how many writes failed.
//!
//! The stopped node is restarted (it rejoins empty under a new id) and the cluster is
//! waited on until it is whole before the next round. Raft timing comes from the
//! environment the nodes inherit (`OPENRAFT_MEMORY__RAFT__*`), so defaults and shorter
//! timeouts can be compared in one session. Not part of the test suite: the numbers depend
//! on the machine.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example failover -- --binary target/release/openraft-memory --rounds 10 --signal kill
//! ```

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::RwLock;

#[derive(Parser, Debug)]
struct Args {
    /// The openraft-memory binary.
    #[arg(long, default_value = "target/release/openraft-memory")]
    binary: String,
    /// Leader stops to measure.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// How the leader is stopped.
    #[arg(long, value_parser = ["kill", "term"], default_value = "kill")]
    signal: String,
    /// Concurrent writing clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Each write's own deadline, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

const HTTP_PORT: u16 = 8080;
const RAFT_PORT: u16 = 50052;

struct Node {
    ip: Ipv4Addr,
    child: Option<Child>,
}

impl Node {
    fn http(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.ip)
    }
}

struct Cluster {
    binary: String,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(binary: &str) -> Cluster {
        let pid = std::process::id();
        let (a, b) = (100 + (pid % 100) as u8, ((pid / 100) % 250) as u8);
        Cluster {
            binary: binary.to_owned(),
            nodes: (1..=3)
                .map(|i| Node {
                    ip: Ipv4Addr::new(127, a, b, i),
                    child: None,
                })
                .collect(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn start(&mut self, i: usize) {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}:{RAFT_PORT}", n.ip))
            .collect();
        let ip = self.nodes[i].ip;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("db-{i}.log")))
            .expect("log");
        let child = Command::new(&self.binary)
            .arg("serve")
            .args(["--node-name", &format!("db-{i}")])
            .args(["--http-addr", &format!("{ip}:{HTTP_PORT}")])
            .args(["--grpc-addr", &format!("{ip}:50051")])
            .args(["--raft-addr", &format!("{ip}:{RAFT_PORT}")])
            .args(["--peers", &peers.join(",")])
            .args(["--worker-threads", "1"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a node");
        self.nodes[i].child = Some(child);
    }

    fn stop(&mut self, i: usize, signal: &str) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .arg(format!("-{}", if signal == "kill" { "KILL" } else { "TERM" }))
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// The leader's index once every node is ready and all three are voters.
    async fn whole(&self, http: &reqwest::Client, deadline: Duration) -> Option<usize> {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            let mut leader = None;
            let mut ready = 0;
            for (i, n) in self.nodes.iter().enumerate() {
                let ok = http
                    .get(format!("{}/readyz", n.http()))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let info: Option<Value> = match http.get(format!("{}/cluster", n.http())).send().await {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
                if ok
                    && info
                        .as_ref()
                        .and_then(|v| v["voters"].as_array())
                        .is_some_and(|v| v.len() == 3)
                {
                    ready += 1;
                }
                if info.as_ref().and_then(|v| v["node"]["state"].as_str()) == Some("Leader") {
                    leader = Some(i);
                }
            }
            if ready == 3 && leader.is_some() {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i, "kill");
        }
    }
}

/// One write's record: when it was sent and when (and whether) it was acknowledged, in µs
/// since the start.
#[derive(Clone, Copy)]
struct Write {
    sent: u64,
    done: u64,
    ok: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    openraft_memory::security::tls::install_default_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()
        .expect("http client");
    let mut cluster = Cluster::new(&args.binary);
    for i in 0..3 {
        cluster.start(i);
    }
    if cluster.whole(&http, Duration::from_secs(30)).await.is_none() {
        eprintln!(
            "the cluster did not form; logs in {}",
            cluster.dir.path().display()
        );
        std::process::exit(1);
    }
    let t0 = Instant::now();
    let us = move || t0.elapsed().as_micros() as u64;
    // The nodes clients may write to: every node but the one being stopped.
    let targets: Arc<RwLock<Vec<String>>> =
        Arc::new(RwLock::new(cluster.nodes.iter().map(Node::http).collect()));
    let log: Arc<std::sync::Mutex<Vec<Write>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1));
    let mut writers = Vec::new();
    for c in 0..args.clients {
        let (http, targets, log, stop, next_id) = (
            http.clone(),
            targets.clone(),
            log.clone(),
            stop.clone(),
            next_id.clone(),
        );
        let timeout = Duration::from_millis(args.timeout_ms);
        writers.push(tokio::spawn(async move {
            let mut k = c;
            while !stop.load(Ordering::Relaxed) {
                let url = {
                    let t = targets.read().await;
                    k += 1;
                    t[k % t.len()].clone()
                };
                let id = next_id.fetch_add(1, Ordering::Relaxed) as i64;
                let sent = us();
                let ok = http
                    .post(format!("{url}/students"))
                    .json(&json!({"id": id, "name": "failover", "score": 1.0}))
                    .timeout(timeout)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 201);
                log.lock().expect("log").push(Write { sent, done: us(), ok });
                if !ok {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }

    let mut measured = Vec::new();
    for round in 1..=args.rounds {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let Some(leader) = cluster.whole(&http, Duration::from_secs(30)).await else {
            eprintln!(
                "round {round}: the cluster is not whole; logs in {}",
                cluster.dir.path().display()
            );
            break;
        };
        let survivors: Vec<String> = (0..3)
            .filter(|&i| i != leader)
            .map(|i| cluster.nodes[i].http())
            .collect();
        *targets.write().await = survivors;
        // From the moment the process is gone (SIGTERM: from the signal).
        let signalled = us();
        cluster.stop(leader, &args.signal);
        let at = if args.signal == "kill" { us() } else { signalled };
        // Settle: long enough for any write sent around the stop to end.
        tokio::time::sleep(Duration::from_millis(args.timeout_ms + 1000)).await;
        let mut writes: Vec<Write> = log
            .lock()
            .expect("log")
            .iter()
            .filter(|w| w.done >= at)
            .copied()
            .collect();
        writes.sort_by_key(|w| w.done);
        // The first acknowledged write sent after the stop, and the longest stretch from
        // the stop on without any acknowledgement.
        let first = writes
            .iter()
            .filter(|w| w.ok && w.sent >= at)
            .map(|w| w.done - at)
            .min();
        let mut gap = 0;
        let mut last = at;
        for w in writes.iter().filter(|w| w.ok) {
            gap = gap.max(w.done - last);
            last = w.done;
        }
        let failed = writes.iter().filter(|w| !w.ok).count();
        let ms = |v: u64| v as f64 / 1000.0;
        match first {
            Some(f) => {
                println!(
                    "round {round}: {}: first write sent after it acknowledged in {:.0} ms; longest stretch without an acknowledgement {:.0} ms; {failed} writes failed",
                    args.signal,
                    ms(f),
                    ms(gap)
                );
                measured.push(if args.signal == "kill" { f } else { gap });
            }
            None => println!("round {round}: no write succeeded after the stop"),
        }
        cluster.start(leader);
        *targets.write().await = cluster.nodes.iter().map(Node::http).collect();
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    measured.sort_unstable();
    if measured.is_empty() {
        std::process::exit(1);
    }
    let ms = |v: u64| v as f64 / 1000.0;
    let pick = |q: f64| measured[((measured.len() - 1) as f64 * q).round() as usize];
    let what = if args.signal == "kill" {
        "kill -9 to the first acknowledged write sent after it"
    } else {
        "SIGTERM: longest stretch without an acknowledged write"
    };
    println!(
        "{what}, {} rounds: min {:.0} ms, median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        measured.len(),
        ms(measured[0]),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(*measured.last().expect("one")),
    );
}

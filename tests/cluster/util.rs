//! Test harness: real `openraft-memory` processes on loopback, each on its own 127.x.y.z
//! address with the default ports (like pods with their own IPs), plus clients and
//! condition waits with deadlines.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use openraft_memory::pb::client::student_service_client::StudentServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

pub const HTTP_PORT: u16 = 8080;
pub const GRPC_PORT: u16 = 50051;
pub const RAFT_PORT: u16 = 50052;

static NEXT_HOST: AtomicU8 = AtomicU8::new(1);

/// A fresh loopback address no other test in this run uses. The second octet comes from
/// the process id so that two test runs on one machine do not collide either.
pub fn fresh_ip() -> Ipv4Addr {
    let n = NEXT_HOST.fetch_add(1, Ordering::SeqCst);
    assert!(n < 250, "out of test addresses");
    let pid = std::process::id();
    Ipv4Addr::new(127, 10 + (pid % 200) as u8, ((pid / 200) % 250) as u8, n)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One node process.
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub peers: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    /// Extra command-line flags.
    pub args: Vec<String>,
    pub log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// Fast Raft timing for loopback tests.
pub fn fast_env() -> Vec<(String, String)> {
    [
        ("OPENRAFT_MEMORY__RAFT__HEARTBEAT_INTERVAL", "50ms"),
        ("OPENRAFT_MEMORY__RAFT__ELECTION_TIMEOUT_MIN", "300ms"),
        ("OPENRAFT_MEMORY__RAFT__ELECTION_TIMEOUT_MAX", "600ms"),
        ("OPENRAFT_MEMORY__RAFT__WRITE_TIMEOUT", "3s"),
        ("OPENRAFT_MEMORY__CLUSTER__BOOTSTRAP_PROBE", "1s"),
        ("OPENRAFT_MEMORY__CLUSTER__JOIN_BACKOFF_MAX", "1s"),
        ("RUST_LOG", "info,openraft=warn,openraft_memory=info"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Node {
    /// Prepares (does not start) a node.
    pub fn new(name: &str, ip: Ipv4Addr, peers: Vec<String>, extra_env: Vec<(String, String)>) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        Node {
            name: name.to_owned(),
            ip,
            peers,
            extra_env,
            args: Vec::new(),
            log: dir.path().join(format!("{name}.log")),
            child: None,
            _dir: dir,
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openraft-memory"));
        cmd.arg("serve")
            .arg("--node-name")
            .arg(&self.name)
            .arg("--http-addr")
            .arg(format!("{}:{HTTP_PORT}", self.ip))
            .arg("--grpc-addr")
            .arg(format!("{}:{GRPC_PORT}", self.ip))
            .arg("--raft-addr")
            .arg(format!("{}:{RAFT_PORT}", self.ip));
        if !self.peers.is_empty() {
            cmd.arg("--peers").arg(self.peers.join(","));
        }
        cmd.args(&self.args);
        cmd.envs(fast_env())
            .envs(self.extra_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn node"));
    }

    /// A data directory that lives as long as this `Node` (across kills and restarts).
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// Runs this node in disk mode from its next start on.
    pub fn use_disk(&mut self) {
        let dir = self.data_dir();
        if self.args.iter().any(|a| a == "--storage") {
            return;
        }
        self.args.extend([
            "--storage".to_owned(),
            "disk".to_owned(),
            "--data-dir".to_owned(),
            dir.display().to_string(),
        ]);
    }

    /// True while the process runs (false once it exited by itself).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn http(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.ip)
    }

    pub async fn grpc(&self) -> StudentServiceClient<Channel> {
        StudentServiceClient::connect(format!("http://{}:{GRPC_PORT}", self.ip))
            .await
            .expect("grpc connect")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (TERM, STOP, CONT) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("running");
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill command");
        assert!(ok.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {timeout:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub async fn cluster(&self) -> Option<Value> {
        let r = client()
            .get(format!("{}/cluster", self.http()))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Waits (up to 20 s) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        wait_for(
            &format!("{} ready", self.name),
            Duration::from_secs(20),
            || async { self.ready().await.then_some(()) },
        )
        .await;
    }

    pub async fn ready(&self) -> bool {
        matches!(client().get(format!("{}/readyz", self.http())).send().await, Ok(r) if r.status() == 200)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            // A crash of the node itself is the first thing to see, wherever it is in the log.
            for (i, _) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| l.contains("panicked at"))
            {
                let context: Vec<&str> = text.lines().skip(i).take(6).collect();
                eprintln!(
                    "--- {} crashed (log line {i}) ---\n{}",
                    self.name,
                    context.join("\n")
                );
            }
            eprintln!("--- log of {} ---\n{}", self.name, self.log_tail());
        }
        self.kill();
    }
}

pub fn client() -> reqwest::Client {
    openraft_memory::security::tls::install_default_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// A cluster of `n` nodes named `db-0..`, each on its own address.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn new(n: usize, extra_env: Vec<(String, String)>) -> Cluster {
        let ips: Vec<Ipv4Addr> = (0..n).map(|_| fresh_ip()).collect();
        let peers: Vec<String> = ips.iter().map(|ip| format!("{ip}:{RAFT_PORT}")).collect();
        let nodes = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let others = peers
                    .iter()
                    .filter(|p| !p.starts_with(&format!("{ip}:")))
                    .cloned()
                    .collect();
                Node::new(&format!("db-{i}"), *ip, others, extra_env.clone())
            })
            .collect();
        Cluster { nodes }
    }

    pub fn start_all(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
    }

    /// Waits until every running node listed in `idx` sees `voters` voters, one agreed
    /// leader and is ready; returns the leader's index in `nodes`.
    pub async fn wait_stable(&self, idx: &[usize], voters: usize) -> usize {
        wait_for(
            &format!("{voters} voters, one leader, all ready"),
            Duration::from_secs(30),
            || async {
                let mut leader = None;
                for &i in idx {
                    let c = self.nodes[i].cluster().await?;
                    if c["voters"].as_array()?.len() != voters || !c["learners"].as_array()?.is_empty() {
                        return None;
                    }
                    let l = c["leader"]["name"].as_str()?.to_owned();
                    if leader.get_or_insert(l.clone()) != &l || !self.nodes[i].ready().await {
                        return None;
                    }
                }
                let name = leader?;
                self.nodes.iter().position(|n| n.name == name)
            },
        )
        .await
    }
}

/// The voter ids in a `GET /cluster` answer, sorted.
pub fn voter_ids(info: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = info["voters"]
        .as_array()
        .expect("voters")
        .iter()
        .filter_map(|v| v["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids
}

pub fn json_student(id: i64, name: &str, score: f32) -> Value {
    serde_json::json!({"id": id, "name": name, "score": score})
}

/// A record as the API answers it, without its `revision`: the fields a client wrote.
pub fn fields(record: &Value) -> Value {
    let mut r = record.clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("revision");
    }
    r
}

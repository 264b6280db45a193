//! The cluster under test: real `openraft-memory` processes, each on its own loopback
//! address and running as its own uid, so that iptables' owner match can cut the peer
//! traffic between any two nodes, in one direction or both. Nothing in the product knows
//! about this: the faults are real signals and real dropped packets.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const HTTP_PORT: u16 = 8080;
pub const GRPC_PORT: u16 = 50051;
pub const RAFT_PORT: u16 = 50052;
/// The nodes' `raft.election_timeout_max`; the partition gap bound is a multiple of it.
pub const ELECTION_TIMEOUT_MAX: std::time::Duration = std::time::Duration::from_millis(600);

/// One node slot (an ordinal); its process may be running, paused, killed or removed.
pub struct Node {
    pub ordinal: usize,
    pub ip: Ipv4Addr,
    pub uid: u32,
    pub child: Option<Child>,
    pub paused: bool,
    /// Removed from the membership (and stopped) by a membership fault.
    pub removed: bool,
    pub log: PathBuf,
    /// Its ports speak TLS.
    pub tls: bool,
}

impl Node {
    pub fn name(&self) -> String {
        format!("chaos-{}", self.ordinal)
    }
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
    pub fn http(&self) -> String {
        format!("{}://{}:{HTTP_PORT}", self.scheme(), self.ip)
    }
    pub fn grpc(&self) -> String {
        format!("{}://{}:{GRPC_PORT}", self.scheme(), self.ip)
    }
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// The nodes plus the firewall chain used for partitions.
pub struct Cluster {
    pub binary: PathBuf,
    pub nodes: Vec<Node>,
    pub dir: PathBuf,
    net_base: [u8; 2],
    pub firewall: Option<Firewall>,
    /// Disk mode: each node keeps its data in `dir/chaos-N.data` across kills.
    pub disk: bool,
    /// `--tls`: the run's CA.
    pub tls: Option<crate::tls::Tls>,
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Cluster {
    pub fn new(binary: &Path, dir: &Path, initial: usize) -> Cluster {
        let pid = std::process::id();
        let net_base = [30 + (pid % 200) as u8, ((pid / 200) % 250) as u8];
        let firewall = Firewall::create(pid)
            .map_err(|e| eprintln!("chaos: partitions disabled: {e}"))
            .ok();
        let mut c = Cluster {
            binary: binary.to_owned(),
            nodes: Vec::new(),
            dir: dir.to_owned(),
            net_base,
            firewall,
            disk: false,
            tls: None,
        };
        for _ in 0..initial {
            c.add_slot();
        }
        c
    }

    /// A new ordinal (not started).
    pub fn add_slot(&mut self) -> usize {
        let ordinal = self.nodes.len();
        let [a, b] = self.net_base;
        self.nodes.push(Node {
            ordinal,
            ip: Ipv4Addr::new(127, a, b, ordinal as u8 + 1),
            uid: 41000 + (self.net_base[1] as u32) * 16 + ordinal as u32,
            child: None,
            paused: false,
            removed: false,
            log: self.dir.join(format!("chaos-{ordinal}.log")),
            tls: self.tls.is_some(),
        });
        ordinal
    }

    fn peers(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| !n.removed)
            .map(|n| format!("{}:{RAFT_PORT}", n.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start(&mut self, i: usize) {
        let peers = self.peers();
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let election_max = format!("{}ms", ELECTION_TIMEOUT_MAX.as_millis());
        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve")
            .args(["--node-name", &node.name()])
            .args(["--http-addr", &format!("{}:{HTTP_PORT}", node.ip)])
            .args(["--grpc-addr", &format!("{}:{GRPC_PORT}", node.ip)])
            .args(["--raft-addr", &format!("{}:{RAFT_PORT}", node.ip)])
            .args(["--peers", &peers])
            .envs([
                ("OPENRAFT_MEMORY__RAFT__HEARTBEAT_INTERVAL", "50ms"),
                ("OPENRAFT_MEMORY__RAFT__ELECTION_TIMEOUT_MIN", "300ms"),
                ("OPENRAFT_MEMORY__RAFT__ELECTION_TIMEOUT_MAX", &election_max),
                ("OPENRAFT_MEMORY__RAFT__WRITE_TIMEOUT", "2s"),
                ("OPENRAFT_MEMORY__RAFT__SNAPSHOT_AFTER_LOGS", "300"),
                ("OPENRAFT_MEMORY__RAFT__LOGS_TO_KEEP", "50"),
                ("OPENRAFT_MEMORY__CLUSTER__BOOTSTRAP_PROBE", "1s"),
                ("OPENRAFT_MEMORY__CLUSTER__JOIN_BACKOFF_MAX", "1s"),
            ])
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_NODE_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn,openraft_memory=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(tls) = &self.tls {
            cmd.envs(tls.node_env(node.ordinal, node.ip.into()));
        }
        if self.disk {
            let data = self.dir.join(format!("chaos-{}.data", node.ordinal));
            std::fs::create_dir_all(&data).expect("data dir");
            if self.firewall.is_some() {
                // The nodes run under their own uids: let them through the run's directory.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o711))
                    .expect("chmod run dir");
                std::os::unix::fs::chown(&data, Some(node.uid), Some(node.uid)).expect("chown data dir");
            }
            cmd.args(["--storage", "disk"]).arg("--data-dir").arg(&data);
        }
        if self.firewall.is_some() {
            // Its own uid, so iptables can tell its packets from the others'; it reaches
            // its files (TLS, data) through the run's directory.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o711))
                .expect("chmod run dir");
            cmd.uid(node.uid).gid(node.uid);
        }
        node.child = Some(cmd.spawn().expect("spawn node"));
        node.paused = false;
    }

    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut c) = node.child.take() {
            if node.paused {
                signal(c.id(), "CONT");
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        node.paused = false;
    }

    pub fn pause(&mut self, i: usize) {
        if let Some(c) = &self.nodes[i].child {
            signal(c.id(), "STOP");
            self.nodes[i].paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if let Some(c) = &self.nodes[i].child {
            signal(c.id(), "CONT");
        }
        self.nodes[i].paused = false;
    }

    /// Ordinals of nodes that are members (not removed).
    pub fn members(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| !n.removed)
            .map(|n| n.ordinal)
            .collect()
    }

    /// Ordinals with a running, unpaused process.
    pub fn live(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| !n.removed && n.running() && !n.paused)
            .map(|n| n.ordinal)
            .collect()
    }

    /// The leader as seen by any live node, as an ordinal.
    pub async fn leader(&self, http: &reqwest::Client) -> Option<usize> {
        for i in self.live() {
            let Some(info) = cluster_info(http, &self.nodes[i].http()).await else {
                continue;
            };
            if let Some(addr) = info["leader"]["addr"].as_str() {
                return self
                    .nodes
                    .iter()
                    .position(|n| addr.starts_with(&format!("{}:", n.ip)));
            }
        }
        None
    }

    /// Waits until every member is running, ready, and agrees on the voters.
    pub async fn wait_healthy(&self, http: &reqwest::Client, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let want: BTreeSet<String> = self.members().iter().map(|&i| self.nodes[i].name()).collect();
        loop {
            let mut ok = true;
            for &i in &self.members() {
                let n = &self.nodes[i];
                let ready = matches!(http.get(format!("{}/readyz", n.http())).send().await, Ok(r) if r.status() == 200);
                // By name, and one id per name: during a replacement the joint membership
                // lists the dead predecessor and its successor under the same name.
                let voters: Option<Vec<String>> = cluster_info(http, &n.http()).await.and_then(|c| {
                    c["voters"].as_array().map(|v| {
                        v.iter()
                            .filter_map(|x| x["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                });
                let agreed = voters.as_ref().is_some_and(|v| {
                    v.len() == want.len() && v.iter().cloned().collect::<BTreeSet<_>>() == want
                });
                if !ready || !agreed {
                    ok = false;
                    break;
                }
            }
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let mut views = Vec::new();
                for &i in &self.members() {
                    let n = &self.nodes[i];
                    let info = cluster_info(http, &n.http()).await.map(|c| {
                        let names = |k: &str| -> Vec<String> {
                            c[k].as_array()
                                .map(|v| v.iter().map(|x| x["name"].to_string()).collect())
                                .unwrap_or_default()
                        };
                        format!(
                            "leader {} voters {:?} learners {:?}",
                            c["leader"]["name"],
                            names("voters"),
                            names("learners")
                        )
                    });
                    views.push(format!(
                        "{}: {}",
                        n.name(),
                        info.unwrap_or_else(|| "not answering".into())
                    ));
                }
                return Err(format!(
                    "cluster not healthy with voters {want:?} after {timeout:?} [{}]",
                    views.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if let Some(fw) = self.firewall.take() {
            fw.destroy();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub async fn cluster_info(http: &reqwest::Client, base: &str) -> Option<Value> {
    http.get(format!("{base}/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// An iptables chain of this run, jumped to from OUTPUT, holding the current cuts.
pub struct Firewall {
    chain: String,
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Firewall {
    /// Removes the chains of earlier runs that died without cleaning up (SIGKILL skips
    /// `Drop`), so cuts from a dead run can never leak into this one. Chains of runs that
    /// are still alive are left alone: two runs may share a machine.
    fn sweep_stale() {
        let Ok(out) = Command::new("iptables").arg("-S").output() else {
            return;
        };
        let listing = String::from_utf8_lossy(&out.stdout);
        let stale: BTreeSet<&str> = listing
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("ORMEM-CHAOS-").map(|pid| (w, pid)))
            .filter(|(_, pid)| !Path::new(&format!("/proc/{pid}")).exists())
            .map(|(chain, _)| chain)
            .collect();
        for chain in stale {
            let _ = iptables(&["-D", "OUTPUT", "-j", chain]);
            let _ = iptables(&["-F", chain]);
            let _ = iptables(&["-X", chain]);
            eprintln!("chaos: removed {chain}, left behind by a run that no longer exists");
        }
    }

    fn create(pid: u32) -> Result<Firewall, String> {
        Self::sweep_stale();
        let chain = format!("ORMEM-CHAOS-{pid}");
        iptables(&["-N", &chain])?;
        if let Err(e) = iptables(&["-I", "OUTPUT", "-j", &chain]) {
            let _ = iptables(&["-X", &chain]);
            return Err(e);
        }
        Ok(Firewall { chain })
    }

    /// Drops every packet `from` sends to `to`'s peer port: `from` can no longer reach
    /// `to`, while `to`'s own connections to `from` still work (a one-way cut).
    pub fn cut(&self, from: &Node, to: &Node) {
        let uid = from.uid.to_string();
        let dst = format!("{}/32", to.ip);
        let port = RAFT_PORT.to_string();
        if let Err(e) = iptables(&[
            "-A",
            &self.chain,
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "-d",
            &dst,
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "DROP",
        ]) {
            eprintln!("chaos: {e}");
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        if let Err(e) = iptables(&["-F", &self.chain]) {
            eprintln!("chaos: {e}");
        }
    }

    fn destroy(self) {
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}

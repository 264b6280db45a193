//! A StatefulSet on one machine: a real DNS server (dnsmasq) serves the headless Service's
//! SRV and A records, and each "pod" is a process on its own loopback address with the
//! flags a pod gets from the chart.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{Node, RAFT_PORT, fresh_ip, wait_for};

/// The headless Service's name.
pub const SERVICE: &str = "db.test.svc.cluster.local";
const DNS_PORT: u16 = 5353;

/// A dnsmasq process serving `_raft._tcp.<SERVICE>` and the pods' A records.
pub struct Dns {
    pub ip: Ipv4Addr,
    child: Option<Child>,
}

impl Dns {
    pub fn new() -> Dns {
        Dns {
            ip: fresh_ip(),
            child: None,
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{DNS_PORT}", self.ip)
    }

    /// (Re)starts the server publishing exactly `pods` (name, ip). dnsmasq reads SRV
    /// records only at start, so a change is a restart, as a record update in a real
    /// cluster DNS is a new answer.
    pub fn publish(&mut self, pods: &[(String, Ipv4Addr)]) {
        self.stop();
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
            "--local-ttl=0",
        ])
        .arg(format!("--listen-address={}", self.ip))
        .arg(format!("--port={DNS_PORT}"))
        .arg(format!("--local=/{SERVICE}/"));
        for (name, ip) in pods {
            cmd.arg(format!(
                "--srv-host=_raft._tcp.{SERVICE},{name}.{SERVICE},{RAFT_PORT}"
            ));
            cmd.arg(format!("--host-record={name}.{SERVICE},{ip}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(
            cmd.spawn()
                .expect("dnsmasq must be installed (.ci/run installs it)"),
        );
        // Ready when it answers on its port; a TCP connect proves the listener is up.
        let addr = self.addr();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pods `db-0..` with DNS discovery, and the DNS server that lists them.
pub struct StatefulSet {
    pub dns: Dns,
    pub pods: Vec<Node>,
    env: Vec<(String, String)>,
}

impl StatefulSet {
    pub fn new(replicas: usize, env: Vec<(String, String)>) -> StatefulSet {
        let mut sts = StatefulSet {
            dns: Dns::new(),
            pods: Vec::new(),
            env,
        };
        for _ in 0..replicas {
            sts.add_pod();
        }
        sts
    }

    /// Adds the next ordinal (not started, not published).
    pub fn add_pod(&mut self) -> usize {
        let i = self.pods.len();
        let mut pod = Node::new(&format!("db-{i}"), fresh_ip(), vec![], self.env.clone());
        pod.args = vec![
            "--discovery".into(),
            "dns".into(),
            "--dns-name".into(),
            SERVICE.into(),
            "--dns-server".into(),
            self.dns.addr(),
        ];
        self.pods.push(pod);
        i
    }

    /// Publishes DNS records for the given ordinals.
    pub fn publish(&mut self, ordinals: &[usize]) {
        let records: Vec<(String, Ipv4Addr)> = ordinals
            .iter()
            .map(|&i| (self.pods[i].name.clone(), self.pods[i].ip))
            .collect();
        self.dns.publish(&records);
    }

    /// Voter names as `pod` sees them.
    pub async fn voter_names(&self, pod: usize) -> Option<Vec<String>> {
        let info = self.pods[pod].cluster().await?;
        let mut names: Vec<String> = info["voters"]
            .as_array()?
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        Some(names)
    }

    /// Waits until every pod in `ordinals` reports exactly those pods as voters, one
    /// leader, no learners, and is ready. Returns the leader's ordinal.
    pub async fn wait_members(&self, ordinals: &[usize]) -> usize {
        let mut want: Vec<String> = ordinals.iter().map(|&i| self.pods[i].name.clone()).collect();
        want.sort();
        wait_for(
            &format!("voters {want:?}, one leader, all ready"),
            Duration::from_secs(40),
            || {
                let want = want.clone();
                async move {
                    let mut leader = None;
                    for &i in ordinals {
                        let info = self.pods[i].cluster().await?;
                        if !info["learners"].as_array()?.is_empty() {
                            return None;
                        }
                        if self.voter_names(i).await? != want {
                            return None;
                        }
                        let l = info["leader"]["name"].as_str()?.to_owned();
                        if leader.get_or_insert(l.clone()) != &l || !self.pods[i].ready().await {
                            return None;
                        }
                    }
                    let name = leader?;
                    self.pods.iter().position(|p| p.name == name)
                }
            },
        )
        .await
    }

    /// Counts log lines containing `needle` in pod `i`'s log.
    pub fn log_count(&self, i: usize, needle: &str) -> usize {
        std::fs::read_to_string(&self.pods[i].log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

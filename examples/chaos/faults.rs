//! The faults: kill -9 and restart, pause (SIGSTOP/SIGCONT), peer-network partitions with
//! iptables, and membership changes; each injected and then healed.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::cluster::Cluster;
use crate::workload;

pub fn refresh_targets(cluster: &Cluster, targets: &workload::Targets) {
    let list = cluster
        .members()
        .into_iter()
        .map(|i| (cluster.nodes[i].http(), cluster.nodes[i].grpc()))
        .collect();
    *targets.write().expect("targets") = list;
}

pub async fn sleep_ms(rng: &mut StdRng, lo: u64, hi: u64) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(lo..=hi))).await;
}

/// Injects one fault and heals it; returns a description.
pub async fn inject(
    kind: &'static str,
    cluster: &mut Cluster,
    rng: &mut StdRng,
    http: &reqwest::Client,
    targets: &workload::Targets,
    max_nodes: usize,
) -> String {
    let leader = cluster.leader(http).await;
    let live = cluster.live();
    let pick = |rng: &mut StdRng| -> Option<usize> {
        match leader {
            Some(l) if rng.random_bool(0.6) && live.contains(&l) => Some(l),
            _ => live.get(rng.random_range(0..live.len().max(1))).copied(),
        }
    };
    match kind {
        "kill" => {
            // In memory mode a killed node comes back empty: killing another before the last
            // victim rejoined could wipe a majority, which no Raft cluster survives. Wait.
            if let Err(e) = cluster.wait_healthy(http, Duration::from_secs(20)).await {
                return format!("kill: skipped, the last victim has not rejoined ({e})");
            }
            if cluster.disk && rng.random_bool(0.25) {
                // Only disk mode survives this: a whole-cluster crash (a node-pool outage).
                let live = cluster.live();
                for &i in &live {
                    cluster.kill(i);
                }
                sleep_ms(rng, 500, 2000).await;
                for &i in &live {
                    cluster.start(i);
                }
                return format!("kill -9 every node ({live:?}) and restart them with their data");
            }
            let Some(i) = pick(rng) else {
                return "kill: no live node".into();
            };
            cluster.kill(i);
            sleep_ms(rng, 500, 2000).await;
            cluster.start(i);
            format!(
                "kill -9 chaos-{i}{} and restart it {}",
                if Some(i) == leader { " (leader)" } else { "" },
                if cluster.disk { "with its data" } else { "empty" }
            )
        }
        "pause" => {
            let Some(i) = pick(rng) else {
                return "pause: no live node".into();
            };
            cluster.pause(i);
            sleep_ms(rng, 1000, 2500).await;
            cluster.resume(i);
            format!(
                "SIGSTOP chaos-{i}{} for a while, then SIGCONT",
                if Some(i) == leader { " (leader)" } else { "" }
            )
        }
        "partition" => {
            let Some(fw) = &cluster.firewall else {
                return "partition: skipped (no iptables)".into();
            };
            let mut members = cluster.members();
            members.shuffle(rng);
            let variant = rng.random_range(0..5);
            let what = match (variant, leader) {
                (0, _) | (1 | 3 | 4, None) => {
                    let minority = (members.len() - 1) / 2;
                    let (small, big) = members.split_at(minority.max(1));
                    for &a in small {
                        for &b in big {
                            fw.cut(&cluster.nodes[a], &cluster.nodes[b]);
                            fw.cut(&cluster.nodes[b], &cluster.nodes[a]);
                        }
                    }
                    format!("partition {small:?} | {big:?}")
                }
                (1, Some(l)) => {
                    for &b in members.iter().filter(|&&b| b != l) {
                        fw.cut(&cluster.nodes[l], &cluster.nodes[b]);
                        fw.cut(&cluster.nodes[b], &cluster.nodes[l]);
                    }
                    format!("isolate the leader chaos-{l}")
                }
                (3, Some(l)) => {
                    // The leader's requests are dropped, the others' reach it: followers
                    // stop hearing it while it still hears their candidates.
                    for &b in members.iter().filter(|&&b| b != l) {
                        fw.cut(&cluster.nodes[l], &cluster.nodes[b]);
                    }
                    format!("cut every link from the leader chaos-{l} (one-way)")
                }
                (4, Some(l)) => {
                    // The others' requests to the leader are dropped: its heartbeats still
                    // arrive, but forwarded writes and reads cannot reach it.
                    for &b in members.iter().filter(|&&b| b != l) {
                        fw.cut(&cluster.nodes[b], &cluster.nodes[l]);
                    }
                    format!("cut every link to the leader chaos-{l} (one-way)")
                }
                _ => {
                    let (a, b) = (members[0], members[1 % members.len()]);
                    fw.cut(&cluster.nodes[a], &cluster.nodes[b]);
                    format!("one-way cut chaos-{a} -> chaos-{b}")
                }
            };
            sleep_ms(rng, 1500, 3000).await;
            fw.heal();
            format!("{what}, then heal")
        }
        "membership" => {
            let members = cluster.members();
            if members.len() < max_nodes && (members.len() <= 3 || rng.random_bool(0.5)) {
                let i = cluster.add_slot();
                cluster.start(i);
                refresh_targets(cluster, targets);
                // Give it a chance to join under load before the next fault.
                let deadline = Instant::now() + Duration::from_secs(15);
                while Instant::now() < deadline {
                    if let Some(info) = crate::cluster::cluster_info(http, &cluster.nodes[i].http()).await
                        && info["voters"]
                            .as_array()
                            .is_some_and(|v| v.iter().any(|x| x["name"] == cluster.nodes[i].name()))
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                format!("add chaos-{i}")
            } else {
                if let Err(e) = cluster.wait_healthy(http, Duration::from_secs(20)).await {
                    return format!("remove: skipped, the cluster is still recovering ({e})");
                }
                let candidates: Vec<usize> = members.iter().copied().filter(|&m| Some(m) != leader).collect();
                let Some(&victim) = candidates.get(rng.random_range(0..candidates.len().max(1))) else {
                    return "remove: no candidate".into();
                };
                let Some(info) = crate::cluster::cluster_info(http, &cluster.nodes[victim].http()).await
                else {
                    return format!("remove chaos-{victim}: not answering, skipped");
                };
                let Some(id) = info["node"]["id"].as_u64() else {
                    return format!("remove chaos-{victim}: no id, skipped");
                };
                let via = cluster.live().into_iter().find(|&x| x != victim);
                let Some(via) = via else {
                    return "remove: no live node to ask".into();
                };
                let resp = http
                    .delete(format!("{}/cluster/members/{id}", cluster.nodes[via].http()))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 204 => {
                        cluster.nodes[victim].removed = true;
                        refresh_targets(cluster, targets);
                        cluster.kill(victim);
                        format!("remove chaos-{victim} (admin call), stop it")
                    }
                    Ok(r) => format!("remove chaos-{victim}: refused with {}", r.status()),
                    Err(e) => format!("remove chaos-{victim}: {e}"),
                }
            }
        }
        _ => format!("unknown fault {kind}"),
    }
}

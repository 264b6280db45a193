//! Fault injection with a linearizability checker.
//!
//! Runs a real cluster of `openraft-memory` processes, drives concurrent clients against it
//! while a seeded schedule kills (-9) and restarts nodes, pauses them (SIGSTOP/SIGCONT),
//! partitions the peer network with iptables (majority/minority, isolated leader, one-way
//! cuts) and adds or removes members, then checks the recorded history:
//! linearizability per id (which covers lost acknowledged writes, stale and impossible
//! reads), and that every node converges to the same state.
//!
//!   cargo run --example chaos -- --nodes 3 --duration 60 --seed 7
//!
//! Partitions need root (iptables and per-node uids); without it they are skipped with a
//! message and the other faults still run.

mod checker;
mod cluster;
mod faults;
mod tls;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use checker::{Call, Op, Ret};
use cluster::Cluster;
use faults::{inject, refresh_targets, sleep_ms};

#[derive(Parser, Debug)]
#[command(about = "Fault injection and linearizability checking for openraft-memory")]
struct Args {
    /// Nodes at the start (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of faults and load.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seed of the fault schedule and the workload (random when absent; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds to inject: kill, pause, partition, membership.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,partition,membership"
    )]
    faults: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Distinct student ids the clients work on (small: more contention).
    #[arg(long, default_value_t = 5)]
    ids: i64,
    /// Read with consistency=local instead of linearizable reads. Not linearizable under
    /// faults: a run with this flag is expected to report stale reads.
    #[arg(long)]
    local_reads: bool,
    /// Node storage: memory (a killed node restarts empty) or disk (it restarts with its
    /// data, and kill faults sometimes kill every node at once).
    #[arg(long, default_value = "memory", value_parser = ["memory", "disk"])]
    storage: String,
    /// Mutual TLS between the nodes and TLS for the clients, from a CA made for the run.
    #[arg(long)]
    tls: bool,
    /// Fail the run when a partition injected into a serving cluster leaves no write
    /// acknowledged for longer than this many election timeouts (`raft.election_timeout_max`);
    /// 0 turns the bound off.
    #[arg(long, default_value_t = 3.0)]
    partition_gap_bound: f64,
    /// Write every recorded operation (times, client, id, call, outcome) to this file, to
    /// line a gap up with the node logs.
    #[arg(long)]
    history: Option<PathBuf>,
    /// The openraft-memory binary (default: next to this example's executable).
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// One injected fault, for the summary and for replaying a failure.
struct FaultRecord {
    at: Duration,
    /// When `inject` returned: the fault was healed by then.
    healed: Duration,
    kind: &'static str,
    what: String,
}

fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/examples/chaos → target/<profile>/openraft-memory
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("openraft-memory"))
        .unwrap_or_else(|| PathBuf::from("target/debug/openraft-memory"))
}

/// Copies the binary where the per-node uids can execute it.
fn stage_binary(src: &std::path::Path, dir: &std::path::Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let dst = dir.join("openraft-memory");
    std::fs::copy(src, &dst)?;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))?;
    Ok(dst)
}

/// Linearizable reads of every id at the end, and the records each node holds.
async fn final_state(
    cluster: &Cluster,
    http: &reqwest::Client,
    ids: i64,
    t0: Instant,
) -> (Vec<Op>, Vec<String>) {
    let mut ops = Vec::new();
    let members = cluster.members();
    for id in 1..=ids {
        let node = &cluster.nodes[members[(id as usize) % members.len()]];
        let start = t0.elapsed().as_micros() as u64;
        let Ok(resp) = http.get(format!("{}/students/{id}", node.http())).send().await else {
            continue;
        };
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let ret = match status {
            404 => Ret::NotFound,
            200 => Ret::Found(
                (
                    body["name"].as_str().unwrap_or_default().to_owned(),
                    (body["score"].as_f64().unwrap_or_default() as f32).to_bits(),
                ),
                body["revision"].as_u64().unwrap_or_default(),
            ),
            _ => continue,
        };
        ops.push(Op {
            client: usize::MAX,
            id,
            call: Call::Get,
            ret,
            start,
            end: t0.elapsed().as_micros() as u64,
        });
    }
    let mut problems = Vec::new();
    let mut views: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for &i in &members {
        // The list is linearizable: each node first catches up to the leader's commit.
        let url = format!("{}/students?limit=1000", cluster.nodes[i].http());
        match http.get(url).send().await {
            Ok(r) if r.status() == 200 => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let records = body["students"]
                    .as_array()
                    .map(|a| a.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default();
                views.insert(cluster.nodes[i].name(), records);
            }
            other => problems.push(format!(
                "{} could not list its records: {other:?}",
                cluster.nodes[i].name()
            )),
        }
    }
    let distinct: std::collections::BTreeSet<&Vec<String>> = views.values().collect();
    if distinct.len() > 1 {
        problems.push(format!("nodes did not converge: {views:?}"));
    }
    (ops, problems)
}

/// How available the cluster was to the clients during the run.
struct Availability {
    /// Operations with a definite answer, over all attempted ones (refusals, timeouts,
    /// unanswered reads and connection failures count as failures).
    success_share: f64,
    /// The longest time without any acknowledged write, in µs, and when it began.
    longest_gap: (u64, u64),
    /// Acknowledged writes' end times (µs), sorted, for gaps per fault.
    acked: Vec<u64>,
    load_end: u64,
}

impl Availability {
    fn of(history: &[Op], attempts: u64, load_end: u64) -> Availability {
        let definite = history.iter().filter(|o| o.ret != Ret::Unknown).count();
        let mut acked: Vec<u64> = history
            .iter()
            .filter(|o| o.call != Call::Get && o.ret != Ret::Unknown)
            .map(|o| o.end)
            .collect();
        acked.sort_unstable();
        let mut longest = (0, 0);
        let mut prev = 0;
        for &t in acked.iter().chain([&load_end]) {
            if t.saturating_sub(prev) > longest.0 {
                longest = (t - prev, prev);
            }
            prev = prev.max(t);
        }
        Availability {
            success_share: definite as f64 / attempts.max(1) as f64,
            longest_gap: longest,
            acked,
            load_end,
        }
    }

    /// Stretches without an acknowledged write, as (from, to) in µs.
    fn gaps(&self) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut prev = 0;
        for &t in self.acked.iter().chain([&self.load_end]) {
            if t > prev {
                gaps.push((prev, t));
            }
            prev = prev.max(t);
        }
        gaps
    }

    /// Per fault (`faults` are (injected at µs, kind), in order): the longest stretch
    /// without an acknowledged write that overlaps its window (from its injection to the
    /// next fault's), and whether the cluster was serving writes when it was injected (a
    /// write acknowledged within [`SERVING`] before). A gap that began while an earlier
    /// fault still held writes up is that fault's too, so only a fault injected into a
    /// serving cluster can be held to a bound.
    fn gap_per_fault(&self, faults: &[(u64, &str)]) -> Vec<FaultGap> {
        self.gap_per_fault_healed(faults, &[])
    }

    /// [`Availability::gap_per_fault`], with each fault's window also ending
    /// [`HEAL_SETTLE`] after it was healed (`healed[i]`, when known): a stretch that begins
    /// later belongs to what came after (a pause injected just after the heal).
    fn gap_per_fault_healed(&self, faults: &[(u64, &str)], healed: &[u64]) -> Vec<FaultGap> {
        let gaps = self.gaps();
        let settle = HEAL_SETTLE.as_micros() as u64;
        let serving: Vec<bool> = faults
            .iter()
            .map(|&(from, _)| {
                self.acked
                    .iter()
                    .any(|&t| t <= from && from - t <= SERVING.as_micros() as u64)
            })
            .collect();
        faults
            .iter()
            .enumerate()
            .map(|(i, &(from, _))| {
                let next = faults.get(i + 1).map_or(self.load_end, |f| f.0);
                let until = healed
                    .get(i)
                    .map_or(next, |h| next.min(h.saturating_add(settle)))
                    .max(from + 1);
                // When the next fault found the cluster serving, the stretch after its
                // injection is its doing (a leader paused just as writes resumed).
                let charged_until = if serving.get(i + 1).copied().unwrap_or(false) {
                    next
                } else {
                    u64::MAX
                };
                let overlapping = || gaps.iter().filter(|(start, end)| *start < until && *end > from);
                let longest = overlapping().map(|(start, end)| end - start).max().unwrap_or(0);
                let (since_injection, begins) = overlapping()
                    .map(|(start, end)| {
                        let begins = (*start).max(from);
                        ((*end).min(charged_until).saturating_sub(begins), begins - from)
                    })
                    .max()
                    .unwrap_or((0, 0));
                let serving = serving[i];
                FaultGap {
                    longest,
                    since_injection,
                    begins,
                    serving,
                }
            })
            .collect()
    }

    /// Per fault kind, the worst of [`Availability::gap_per_fault`].
    fn gaps_by_kind<'a>(&self, faults: &[(u64, &'a str)]) -> BTreeMap<&'a str, u64> {
        let mut worst: BTreeMap<&str, u64> = BTreeMap::new();
        for (gap, &(_, kind)) in self.gap_per_fault(faults).iter().zip(faults) {
            let entry = worst.entry(kind).or_default();
            *entry = (*entry).max(gap.longest);
        }
        worst
    }
}

/// How long after a heal a stretch without writes may still begin and be the healed
/// fault's (the heal itself can cost an election).
const HEAL_SETTLE: Duration = Duration::from_millis(2 * cluster::ELECTION_TIMEOUT_MAX.as_millis() as u64);

/// A write acknowledged this recently before a fault means the cluster was serving.
const SERVING: Duration = Duration::from_millis(500);

/// One fault's effect on writes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FaultGap {
    /// The longest stretch without an acknowledged write overlapping its window, in µs.
    longest: u64,
    /// The same stretch counted from the injection only (what the partition bound checks:
    /// a stretch that began under the previous fault is not all this one's doing), in µs.
    since_injection: u64,
    /// How long after the injection that stretch began, in µs.
    begins: u64,
    /// Whether a write was acknowledged shortly before it was injected.
    serving: bool,
}

fn format_op(op: &Op) -> String {
    let end = if op.ret == Ret::Unknown {
        "?".to_owned()
    } else {
        format!("{:.3}", op.end as f64 / 1e6)
    };
    format!(
        "  [{:.3}s .. {end}s] client {:>3} id {} {:?} -> {:?}",
        op.start as f64 / 1e6,
        if op.client == usize::MAX {
            "end".to_owned()
        } else {
            op.client.to_string()
        },
        op.id,
        op.call,
        op.ret
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    println!(
        "chaos: seed {seed}, {} nodes, {} storage, {} s, faults {:?}",
        args.nodes, args.storage, args.duration, args.faults
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("chaos: no temp dir: {e}");
            return ExitCode::from(2);
        }
    };
    let binary = match stage_binary(&args.binary.clone().unwrap_or_else(default_binary), dir.path()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("chaos: cannot stage the openraft-memory binary (build it first): {e}");
            return ExitCode::from(2);
        }
    };
    let tls = args.tls.then(|| tls::Tls::new(dir.path()));
    let ca = tls.as_ref().map(tls::Tls::ca_pem);
    let http = tls::http_client(ca.as_deref(), Some(Duration::from_secs(5)));
    let mut cluster = Cluster::new(&binary, dir.path(), 0);
    cluster.disk = args.storage == "disk";
    cluster.tls = tls;
    for _ in 0..args.nodes {
        cluster.add_slot();
    }
    for i in 0..args.nodes {
        cluster.start(i);
    }
    if let Err(e) = cluster.wait_healthy(&http, Duration::from_secs(60)).await {
        eprintln!("chaos: the cluster did not form: {e}");
        return ExitCode::from(1);
    }
    let t0 = Instant::now();
    // The node logs carry UTC wall-clock times: this lines the schedule up with them.
    println!(
        "chaos: schedule times count from {} (UTC, as in the node logs)",
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
    );
    let targets: workload::Targets = Arc::default();
    refresh_targets(&cluster, &targets);
    let stop = Arc::new(AtomicBool::new(false));
    let w = workload::Workload {
        clients: args.clients,
        ids: args.ids,
        seed,
        local_reads: args.local_reads,
        ca,
    };
    let load = {
        let (targets, stop) = (targets.clone(), stop.clone());
        tokio::spawn(async move { workload::run(&w, targets, stop, t0).await })
    };

    let kinds: Vec<&'static str> = ["kill", "pause", "partition", "membership"]
        .into_iter()
        .filter(|k| args.faults.iter().any(|f| f == k))
        .collect();
    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut leaders: Vec<usize> = Vec::new();
    let deadline = t0 + Duration::from_secs(args.duration);
    let max_nodes = args.nodes + 1;
    // Every kind once first (in a seeded order), then a seeded random mix.
    let mut queue: Vec<&'static str> = kinds.clone();
    queue.shuffle(&mut rng);
    while Instant::now() < deadline && !kinds.is_empty() {
        let kind = if queue.is_empty() {
            kinds[rng.random_range(0..kinds.len())]
        } else {
            queue.remove(0)
        };
        let at = t0.elapsed();
        let what = inject(kind, &mut cluster, &mut rng, &http, &targets, max_nodes).await;
        println!("chaos: {:>7.2}s {kind}: {what}", at.as_secs_f64());
        let healed = t0.elapsed();
        faults.push(FaultRecord {
            at,
            healed,
            kind,
            what,
        });
        if let Some(l) = cluster.leader(&http).await
            && leaders.last() != Some(&l)
        {
            leaders.push(l);
        }
        sleep_ms(&mut rng, 300, 1200).await;
    }

    // Heal everything and let the cluster recover before the final checks.
    if let Some(fw) = &cluster.firewall {
        fw.heal();
    }
    for i in cluster.members() {
        if cluster.nodes[i].paused {
            cluster.resume(i);
        }
        if !cluster.nodes[i].running() {
            cluster.start(i);
        }
    }
    println!("chaos: faults healed; waiting for the cluster to recover");
    let recovered = cluster.wait_healthy(&http, Duration::from_secs(60)).await;
    stop.store(true, Ordering::SeqCst);
    let load_end = t0.elapsed().as_micros() as u64;
    let workload::Load {
        mut history,
        attempts,
    } = load.await.unwrap_or(workload::Load {
        history: Vec::new(),
        attempts: 0,
    });
    let availability = Availability::of(&history, attempts, load_end);
    if let Some(path) = &args.history {
        let text: String = history.iter().map(|o| format_op(o) + "\n").collect();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("chaos: cannot write the history to {}: {e}", path.display());
        }
    }
    println!(
        "chaos: load stopped; {} operations recorded; final reads and checks",
        history.len()
    );
    let mut problems = Vec::new();
    if let Err(e) = &recovered {
        problems.push(format!(
            "the cluster did not recover after the faults were healed: {e}"
        ));
    } else {
        let (final_reads, convergence) = final_state(&cluster, &http, args.ids, t0).await;
        history.extend(final_reads);
        problems.extend(convergence);
    }

    let anomalies = checker::check(&history);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for op in &history {
        let call = match op.call {
            Call::Create(_) => "create",
            Call::Update(_) => "update",
            Call::UpdateIf(..) => "conditional update",
            Call::Delete => "delete",
            Call::Get => "get",
        };
        let ret = match op.ret {
            Ret::Unknown => "unknown",
            Ret::Done | Ret::Written(_) | Ret::Found(..) => "ok",
            Ret::Exists | Ret::NotFound => "ok (exists/not found)",
            Ret::Mismatch(_) => "ok (revision mismatch)",
        };
        *outcomes.entry(format!("{call} {ret}")).or_default() += 1;
    }
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &faults {
        *by_kind.entry(f.kind).or_default() += 1;
    }
    println!("\n== chaos summary (seed {seed}, {} nodes)", args.nodes);
    println!("operations: {} recorded", history.len());
    for (k, v) in &outcomes {
        println!("  {k:<28} {v}");
    }
    println!(
        "availability: {:.1} % of {} attempted operations succeeded; longest stretch without an acknowledged write: {:.2} s (from {:.2} s)",
        availability.success_share * 100.0,
        attempts,
        availability.longest_gap.0 as f64 / 1e6,
        availability.longest_gap.1 as f64 / 1e6,
    );
    println!("faults injected: {by_kind:?}");
    let fault_times: Vec<(u64, &str)> = faults.iter().map(|f| (f.at.as_micros() as u64, f.kind)).collect();
    let bound = cluster::ELECTION_TIMEOUT_MAX.mul_f64(args.partition_gap_bound.max(0.0));
    let healed: Vec<u64> = faults.iter().map(|f| f.healed.as_micros() as u64).collect();
    let per_fault = availability.gap_per_fault_healed(&fault_times, &healed);
    let partitions: Vec<String> = faults
        .iter()
        .zip(&per_fault)
        .filter(|(f, _)| f.kind == "partition" && !f.what.contains("skipped"))
        .map(|(f, g)| {
            let over = g.serving && !bound.is_zero() && g.since_injection > bound.as_micros() as u64;
            if over {
                problems.push(format!(
                    "the partition at {:.2} s ({}) left no write acknowledged for {:.2} s, over the bound of {:.2} s ({} x election_timeout_max)",
                    f.at.as_secs_f64(),
                    f.what,
                    g.since_injection as f64 / 1e6,
                    bound.as_secs_f64(),
                    args.partition_gap_bound
                ));
            }
            format!(
                "  {:>6.2} s {}: {:.2} s (began +{:.2} s){}",
                f.at.as_secs_f64(),
                f.what.trim_end_matches(", then heal"),
                g.since_injection as f64 / 1e6,
                g.begins as f64 / 1e6,
                if g.serving { "" } else { ", not serving at injection" }
            )
        })
        .collect();
    if !partitions.is_empty() {
        println!(
            "write gap after each partition, from its injection (bound {:.2} s):\n{}",
            bound.as_secs_f64(),
            partitions.join("\n")
        );
    }
    let gaps: Vec<String> = availability
        .gaps_by_kind(&fault_times)
        .into_iter()
        .map(|(kind, us)| format!("{kind} {:.2} s", us as f64 / 1e6))
        .collect();
    println!(
        "longest write gap overlapping each fault kind: {}",
        gaps.join(", ")
    );
    println!(
        "leaders seen in turn: {} (changes: {})",
        leaders.len(),
        leaders.len().saturating_sub(1)
    );
    let unverified = checker::UNVERIFIED.load(std::sync::atomic::Ordering::Relaxed);
    if unverified > 0 {
        println!("unverified ids: {unverified} (the checker's search budget ran out; use more --ids)");
    }
    println!("anomalies: {}", anomalies.len() + problems.len());
    for p in &problems {
        println!("  {p}");
    }
    for a in &anomalies {
        println!("  id {}: no linearization; operations around the failure:", a.id);
        for op in &a.slice {
            println!("{}", format_op(op));
        }
    }
    if anomalies.is_empty() && problems.is_empty() {
        println!("result: OK");
        cluster.shutdown();
        ExitCode::SUCCESS
    } else {
        println!(
            "result: FAILED — replay with --seed {seed} --nodes {}; fault schedule:",
            args.nodes
        );
        for f in &faults {
            println!("  {:>7.2}s {}: {}", f.at.as_secs_f64(), f.kind, f.what);
        }
        println!("node logs kept in {}", dir.keep().display());
        cluster.shutdown();
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_gaps_are_charged_to_the_faults_they_overlap() {
        // Writes acknowledged at 1, 2, 6, 7 and 12 s; the load ends at 13 s.
        let s = 1_000_000;
        let a = Availability {
            success_share: 1.0,
            longest_gap: (0, 0),
            acked: vec![s, 2 * s, 6 * s, 7 * s, 12 * s],
            load_end: 13 * s,
        };
        // A kill at 2.5 s (its window runs to the partition at 6.5 s), a partition at
        // 6.5 s, a pause at 11 s.
        let faults = [
            (2 * s + s / 2, "kill"),
            (6 * s + s / 2, "partition"),
            (11 * s, "pause"),
        ];
        let gaps = a.gaps_by_kind(&faults);
        assert_eq!(gaps["kill"], 4 * s, "the 2 s → 6 s gap");
        assert_eq!(
            gaps["partition"],
            5 * s,
            "the 7 s → 12 s gap begins in its window"
        );
        assert_eq!(gaps["pause"], 5 * s, "the same gap overlaps the pause too");
        let again = [(2 * s + s / 2, "kill"), (6 * s + s / 2, "kill")];
        assert_eq!(
            a.gaps_by_kind(&again)["kill"],
            5 * s,
            "the worst of a kind's faults"
        );
    }

    #[test]
    fn a_stretch_that_begins_well_after_a_heal_is_not_the_healed_faults() {
        let s = 1_000_000;
        let a = Availability {
            success_share: 1.0,
            longest_gap: (0, 0),
            acked: vec![s, 2 * s, 3 * s, 4 * s + s / 2, 9 * s],
            load_end: 10 * s,
        };
        // A partition at 1.5 s healed at 2.5 s; the next fault only at 8 s.
        let faults = [(s + s / 2, "partition"), (8 * s, "pause")];
        let unhealed = a.gap_per_fault(&faults);
        assert_eq!(
            unhealed[0].since_injection,
            4 * s + s / 2,
            "4.5 s → 9 s begins in the window"
        );
        let healed = a.gap_per_fault_healed(&faults, &[2 * s + s / 2, 9 * s]);
        assert_eq!(
            healed[0].since_injection,
            s + s / 2,
            "3 s → 4.5 s began within the settle time of the heal; 4.5 s → 9 s did not"
        );
    }

    #[test]
    fn a_stretch_past_the_next_fault_injected_into_a_serving_cluster_is_charged_to_it() {
        let s = 1_000_000;
        let ms = 1_000;
        // Writes flow through a partition at 1 s; the last one before a pause of the new
        // leader at 3.27 s is acknowledged 2 ms before it, the next at 5.8 s.
        let a = Availability {
            success_share: 1.0,
            longest_gap: (0, 0),
            acked: vec![s / 2, 2 * s, 3 * s + 268 * ms, 5 * s + 800 * ms],
            load_end: 6 * s,
        };
        let faults = [(s, "partition"), (3 * s + 270 * ms, "pause")];
        let per_fault = a.gap_per_fault_healed(&faults, &[2 * s + 900 * ms, 4 * s]);
        assert_eq!(
            per_fault[0].since_injection,
            s + 268 * ms,
            "the 2 s → 3.268 s stretch; the pause owns what follows it"
        );
        assert_eq!(per_fault[1].since_injection, 2 * s + 530 * ms);
        assert!(per_fault[1].serving);
    }

    #[test]
    fn only_a_fault_injected_into_a_serving_cluster_is_held_to_the_bound() {
        let s = 1_000_000;
        let a = Availability {
            success_share: 1.0,
            longest_gap: (0, 0),
            acked: vec![s, 2 * s, 6 * s],
            load_end: 7 * s,
        };
        // Injected 0.2 s after a write (serving), then 2 s after the last one (not).
        let faults = [(2 * s + s / 5, "partition"), (4 * s, "partition")];
        let per_fault = a.gap_per_fault(&faults);
        assert_eq!(
            per_fault,
            vec![
                FaultGap {
                    longest: 4 * s,
                    since_injection: 4 * s - s / 5,
                    begins: 0,
                    serving: true
                },
                FaultGap {
                    longest: 4 * s,
                    since_injection: 2 * s,
                    begins: 0,
                    serving: false
                },
            ]
        );
    }
}

//! The `bench` subcommand: a load driver for a running cluster.
//!
//! It owns workload generation (create / update / get / mixed over REST or gRPC), the two
//! load models, and the latency report:
//! - closed loop: each connection sends its next request when the previous one answered;
//!   shows the most a given concurrency can push, but hides queueing delay;
//! - open loop (`--rate`): requests are due on a fixed schedule and latency counts from the
//!   moment a request was *due*, not sent, so a stall shows up in the percentiles instead of
//!   silently lowering the send rate (no coordinated omission, as in wrk2).
//!
//! REST goes over one HTTP/1.1 keep-alive connection per worker (hyper's connection API, as
//! `wrk -cN` does); gRPC over one HTTP/2 channel per worker. Latencies go into HDR
//! histograms (microsecond resolution), merged at the end.

mod ops;
mod watchers;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use ops::{Conn, Dial, Op, OpSource};

/// What the driver sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Creates of fresh ids (every request is a Raft write).
    Create,
    /// Updates of pre-created records (Raft writes).
    Update,
    /// Gets of pre-created records (linearizable unless `--local-reads`).
    Get,
    /// Gets and updates of pre-created records, `--read-percent` of them gets.
    Mixed,
}

/// Which API the driver talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// REST (JSON over HTTP/1.1).
    Rest,
    /// gRPC (`StudentService`).
    Grpc,
}

/// A bench run's parameters (the `bench` subcommand's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Node addresses (host:port of the REST or client gRPC port, per --protocol);
    /// connections are spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8080")]
    pub targets: Vec<String>,
    /// The API to load.
    #[arg(long, value_enum, default_value_t = Protocol::Rest)]
    pub protocol: Protocol,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Workload::Create)]
    pub workload: Workload,
    /// Concurrent connections (one outstanding request each).
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// How long to measure, e.g. 10s (ignored when --requests is given).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Stop after this many requests instead of after --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open loop: total requests per second on a fixed schedule (default: closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Records created before an update/get/mixed run (ids are this run's own).
    #[arg(long, default_value_t = 1000)]
    pub records: u64,
    /// Share of gets in the mixed workload, in percent.
    #[arg(long, default_value_t = 50)]
    pub read_percent: u8,
    /// Read with consistency=local instead of linearizable reads.
    #[arg(long)]
    pub local_reads: bool,
    /// Unmeasured warm-up before the measured run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Speak TLS, trusting this CA bundle (PEM); the targets' IPs or names must be in the
    /// nodes' certificates.
    #[arg(long)]
    pub cacert: Option<std::path::PathBuf>,
    /// Bearer token for nodes with auth.tokens_file.
    #[arg(long, env = "OPENRAFT_MEMORY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Watch streams to hold open (and read) during the run, to measure their cost.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Client gRPC addresses the watchers connect to, round-robin.
    #[arg(long, value_delimiter = ',')]
    pub watch_targets: Vec<String>,
    /// The watchers follow only this record (an id nobody writes: idle watchers).
    #[arg(long)]
    pub watch_id: Option<i64>,
}

/// Why a bench run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments make no sense together.
    #[error("{0}")]
    Usage(String),
    /// Pre-creating the records failed: the cluster is not serving writes.
    #[error("could not pre-create records: {0}")]
    Setup(String),
}

/// The outcome of a run, as printed (table) or serialised (`--json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// The workload sent.
    pub workload: Workload,
    /// The API used.
    pub protocol: Protocol,
    /// Concurrent connections.
    pub connections: usize,
    /// Open-loop target rate, if any.
    pub rate: Option<f64>,
    /// Measured wall time, seconds.
    pub seconds: f64,
    /// Requests answered with success.
    pub ok: u64,
    /// Requests that failed, by reason (HTTP status, gRPC code or transport error).
    pub errors: BTreeMap<String, u64>,
    /// Successful requests per second.
    pub throughput: f64,
    /// Latency percentiles of successful requests, milliseconds.
    pub latency_ms: Latency,
    /// Watch streams held open during the run (`--watchers`).
    pub watchers: usize,
    /// Watch streams still open when the run ended.
    pub watchers_open: usize,
    /// Changes the watchers received during the measured run.
    pub watch_events: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Report {
    /// A fixed-width table, one header line and one result line.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let model = match self.rate {
            Some(r) => format!("open loop at {r:.0} req/s"),
            None => "closed loop".into(),
        };
        let name =
            |v: Option<clap::builder::PossibleValue>| v.map(|p| p.get_name().to_owned()).unwrap_or_default();
        let _ = writeln!(
            s,
            "{} over {}, {} connections, {model}, {:.1} s",
            name(clap::ValueEnum::to_possible_value(&self.workload)),
            name(clap::ValueEnum::to_possible_value(&self.protocol)),
            self.connections,
            self.seconds
        );
        let _ = writeln!(
            s,
            "{:>10} {:>8} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "ok", "errors", "req/s", "mean ms", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let l = &self.latency_ms;
        let errors: u64 = self.errors.values().sum();
        let _ = writeln!(
            s,
            "{:>10} {:>8} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            self.ok, errors, self.throughput, l.mean, l.p50, l.p90, l.p99, l.p999, l.max
        );
        if self.watchers > 0 {
            let _ = writeln!(
                s,
                "  watchers: {} opened, {} open at the end, {} changes received",
                self.watchers, self.watchers_open, self.watch_events
            );
        }
        for (reason, n) in &self.errors {
            let _ = writeln!(s, "  error {reason}: {n}");
        }
        s
    }
}

/// Per-worker tallies, merged at the end.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // 1 µs .. 60 s at 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// Shared run state: when to stop, and how many requests remain (for --requests).
struct Plan {
    end: Option<Instant>,
    remaining: Option<AtomicU64>,
}

impl Plan {
    /// Claims the next request; false once the run is over.
    fn take(&self) -> bool {
        if let Some(r) = &self.remaining {
            return r
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
        }
        self.end.is_none_or(|e| Instant::now() < e)
    }
}

async fn worker(
    mut conn: Conn,
    mut ops: OpSource,
    plan: Arc<Plan>,
    interval: Option<Duration>,
    local_reads: bool,
    dial: Dial,
    target: String,
) -> Tally {
    let mut tally = Tally::new();
    // ThreadRng is not Send; each worker owns a seeded StdRng instead.
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mut due = Instant::now();
    while plan.take() {
        let op = ops.next(&mut rng);
        let started = match interval {
            Some(every) => {
                // Open loop: wait for the slot; if we are late, the lateness counts.
                tokio::time::sleep_until(due.into()).await;
                let slot = due;
                due += every;
                slot
            }
            None => Instant::now(),
        };
        match conn.send(op, local_reads).await {
            Ok(()) => {
                let us = started.elapsed().as_micros().max(1) as u64;
                let _ = tally.hist.record(us.min(60_000_000));
                tally.ok += 1;
            }
            Err(reason) => {
                *tally.errors.entry(reason.clone()).or_default() += 1;
                if reason.starts_with("transport") || reason.starts_with("connection") {
                    // The connection is gone (node restarted?): open a fresh one.
                    match dial.open(&target).await {
                        Ok(c) => conn = c,
                        Err(e) => {
                            *tally.errors.entry(e).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
    }
    tally
}

/// Creates `records` records with ids from `base` so update/get runs find them.
async fn precreate(args: &BenchArgs, base: i64) -> Result<(), BenchError> {
    if args.records == 0 {
        return Err(BenchError::Usage(
            "update, get and mixed need --records of at least 1".into(),
        ));
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let dial = Dial::new(args)?;
    for w in 0..args.connections.min(64) {
        let target = args.targets[w % args.targets.len()].clone();
        let next = next.clone();
        let (dial, records) = (dial.clone(), args.records);
        tasks.push(tokio::spawn(async move {
            let mut conn = dial.open(&target).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= records {
                    return Ok::<(), String>(());
                }
                conn.send(Op::Create(base + i as i64), false)
                    .await
                    .map_err(|e| format!("create {}: {e}", base + i as i64))?;
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Setup(e.to_string()))?
            .map_err(BenchError::Setup)?;
    }
    Ok(())
}

/// Runs one measured phase with fresh connections.
async fn phase(
    args: &BenchArgs,
    base: i64,
    plan: Plan,
    worker_offset: i64,
) -> Result<(Tally, f64), BenchError> {
    let plan = Arc::new(plan);
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r));
    let mut tasks = Vec::new();
    let dial = Dial::new(args)?;
    for w in 0..args.connections {
        let target = args.targets[w % args.targets.len()].clone();
        let conn = dial.open(&target).await.map_err(BenchError::Setup)?;
        let ops = OpSource {
            workload: args.workload,
            base,
            worker: worker_offset + w as i64,
            seq: 0,
            records: args.records as i64,
            read_percent: args.read_percent,
        };
        tasks.push(tokio::spawn(worker(
            conn,
            ops,
            plan.clone(),
            interval,
            args.local_reads,
            dial.clone(),
            target,
        )));
    }
    let started = Instant::now();
    let mut total = Tally::new();
    for t in tasks {
        let t = t.await.map_err(|e| BenchError::Setup(e.to_string()))?;
        let _ = total.hist.add(&t.hist);
        total.ok += t.ok;
        for (k, v) in t.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// Runs the benchmark described by `args` and returns its report.
pub async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    if args.connections == 0 {
        return Err(BenchError::Usage("--connections must be at least 1".into()));
    }
    if args.targets.is_empty() {
        return Err(BenchError::Usage("--targets needs at least one address".into()));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(BenchError::Usage("--rate must be a positive number".into()));
    }
    if args.read_percent > 100 {
        return Err(BenchError::Usage("--read-percent must be 0..=100".into()));
    }
    // This run's own id space: concurrent or repeated runs never collide on creates.
    let base = rand::rng().random_range(1..(1i64 << 20)) << 40;
    if args.workload != Workload::Create {
        precreate(args, base).await?;
    }
    if !args.warmup.is_zero() {
        let warm = Plan {
            end: Some(Instant::now() + args.warmup),
            remaining: None,
        };
        // Warm-up workers use other id blocks than the measured ones.
        phase(args, base, warm, args.connections as i64).await?;
    }
    let watchers = watchers::Watchers::open(args).await?;
    let plan = Plan {
        end: args.requests.is_none().then(|| Instant::now() + args.duration),
        remaining: args.requests.map(AtomicU64::new),
    };
    let received_before = watchers.received();
    let (tally, seconds) = phase(args, base, plan, 0).await?;
    let watch_events = watchers.received() - received_before;
    let h = &tally.hist;
    let ms = |us: u64| us as f64 / 1000.0;
    let empty = h.is_empty();
    let pct = |q: f64| if empty { 0.0 } else { ms(h.value_at_quantile(q)) };
    Ok(Report {
        workload: args.workload,
        protocol: args.protocol,
        connections: args.connections,
        rate: args.rate,
        seconds,
        ok: tally.ok,
        throughput: tally.ok as f64 / seconds.max(f64::EPSILON),
        latency_ms: Latency {
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            p999: pct(0.999),
            max: if empty { 0.0 } else { ms(h.max()) },
            mean: if empty { 0.0 } else { h.mean() / 1000.0 },
        },
        errors: tally.errors,
        watchers: args.watchers,
        watchers_open: watchers.open_count(),
        watch_events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_budget_is_shared_exactly() {
        let plan = Plan {
            end: None,
            remaining: Some(AtomicU64::new(3)),
        };
        assert_eq!((0..10).filter(|_| plan.take()).count(), 3);
    }
}

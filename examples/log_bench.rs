//! Disk mode's journal (`store::disk`) against redb for the same Raft-log workload: `N`
//! entries of `SIZE` bytes appended in order, every group of `G` made durable together
//! (G = 1: one sync per entry; larger G: group commit, as under concurrent writes). Prints
//! durable appends per second for both, measured in one run on the same disk.
//!
//! `cargo run --release --example log_bench [N] [SIZE] [DIR]` (DIR defaults to `target/`, so
//! the files sit on the disk a node's data directory would use).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use openraft_memory::store::disk::{self, Done, Journal, LiveState, Op};
use redb::{Database, TableDefinition};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// Time the writer spent in write + sync, and how many syncs, to tell the journal's own cost
/// from the hand-off between threads.
struct Syncs(std::sync::Arc<std::sync::Mutex<(f64, u64)>>);

impl disk::SyncObserver for Syncs {
    fn synced(&self, _records: usize, seconds: f64) {
        let mut s = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0 += seconds;
        s.1 += 1;
    }
}

fn journal(
    dir: &std::path::Path,
    n: u64,
    payload: &[u8],
    group: u64,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let path = dir.join("raft-log");
    let replayed = disk::replay_journal(&path)?;
    let no_compaction = || {
        Ok(LiveState {
            seq: 0,
            framed: Vec::new(),
        })
    };
    let stats = std::sync::Arc::new(std::sync::Mutex::new((0.0, 0)));
    let j = Journal::start(
        path,
        replayed.valid_len,
        u64::MAX,
        no_compaction,
        Syncs(stats.clone()),
    )?;
    let mut framed = Vec::new();
    disk::frame(payload, &mut framed)?;
    let started = Instant::now();
    let mut seq = 0;
    while seq < n {
        let mut last = None;
        for _ in 0..group.min(n - seq) {
            seq += 1;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let room = j.blocking_room(framed.len());
            j.send(
                Op {
                    seq,
                    framed: framed.clone(),
                    done: Done::Reply(tx),
                },
                room,
            );
            last = Some(rx);
        }
        // The journal syncs in order: the group's last reply means all of it is durable.
        if let Some(rx) = last {
            rx.blocking_recv()??;
        }
    }
    let elapsed = started.elapsed();
    let (secs, syncs) = *stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    eprintln!(
        "  journal, groups of {group}: {syncs} syncs, {:.3} ms each in write + sync",
        secs * 1000.0 / syncs.max(1) as f64
    );
    Ok(elapsed)
}

fn redb(
    dir: &std::path::Path,
    n: u64,
    payload: &[u8],
    group: u64,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let db = Database::create(dir.join("raft-log.redb"))?;
    let started = Instant::now();
    let mut index = 0;
    while index < n {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(LOG)?;
            for _ in 0..group.min(n - index) {
                index += 1;
                table.insert(index, payload)?;
            }
        }
        // Durability::Immediate (the default): durable when commit returns.
        txn.commit()?;
    }
    Ok(started.elapsed())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).map_or(Ok(5000), |s| s.parse())?;
    let size: usize = args.get(2).map_or(Ok(1024), |s| s.parse())?;
    let base = args.get(3).map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let payload = vec![0x5a_u8; size];
    println!("{n} entries of {size} bytes, durable per group (appends/s; higher is better)");
    println!("{:>6} {:>12} {:>12} {:>7}", "group", "journal", "redb", "ratio");
    for group in [1, 4, 16, 64] {
        let j_dir = tempfile::tempdir_in(&base)?;
        let r_dir = tempfile::tempdir_in(&base)?;
        let j = journal(j_dir.path(), n, &payload, group)?;
        let r = redb(r_dir.path(), n, &payload, group)?;
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "{group:>6} {:>12.0} {:>12.0} {:>6.2}×",
            rate(j),
            rate(r),
            rate(j) / rate(r)
        );
    }
    Ok(())
}

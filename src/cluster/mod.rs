//! Cluster formation and upkeep: who initialises, how others join, how members that are
//! gone for good are removed, and how a leader hands over before it stops.
//!
//! The rules:
//! - With no peers the node initialises a single-node cluster by itself.
//! - Only ordinal 0 may initialise, and only after it has been able to list its peers for
//!   `cluster.bootstrap_probe`, every listed peer has answered, and none of them reported
//!   belonging to a cluster. Everyone else only ever joins. A DNS outage, a partition or a
//!   paused peer therefore delays bootstrap; it never causes one. (A restarted, empty
//!   ordinal 0 that took silence for "no cluster" would found a second cluster beside the
//!   one its silent peers still run: split brain, found by the fault-injection checker.)
//! - Joining is idempotent and retried with capped exponential backoff and jitter until this
//!   node is a voter. The leader replaces any older member with the same name.
//! - The leader removes a member whose name has been missing from DNS discovery for longer
//!   than `cluster.scale_down_grace`, one at a time, never below `cluster.min_voters`. A
//!   SIGTERM alone never removes anyone: rolling restarts must not shrink the cluster.
//!
//! Files: `form` (bootstrap and join), `restore` (seeding a new cluster from a backup),
//! `reconcile` (scale-down removals), `handover` (leadership transfer on shutdown); this
//! module holds the pacing helpers they share.

mod form;
mod handover;
mod reconcile;
mod restore;

use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;

pub use form::form;
pub use handover::hand_over_leadership;
pub use reconcile::{prune_channels, reconcile};

/// Lets a repeated warning through at most once per period, and only once the condition
/// has lasted past a grace period: peers that have not started yet, no leader during the
/// first election and late DNS records are part of every normal formation, and the log
/// should show an operator only what outlasts one. Long outages stay visible without
/// flooding the log.
struct Throttle {
    every: Duration,
    quiet_until: Instant,
    last: Option<Instant>,
}

impl Throttle {
    /// At most one warning per `every`, the first once `grace` has passed.
    fn new(every: Duration, grace: Duration) -> Self {
        Throttle {
            every,
            quiet_until: Instant::now() + grace,
            last: None,
        }
    }

    fn ready(&mut self) -> bool {
        if Instant::now() < self.quiet_until {
            return false;
        }
        let due = self.last.is_none_or(|t| t.elapsed() >= self.every);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }
}

/// Capped exponential backoff with up to 50 % jitter, so joiners do not retry in lockstep.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(200),
            max,
        }
    }

    fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0..=base.as_millis() as u64 / 2);
        base + Duration::from_millis(jitter)
    }
}

/// Sleeps `d`; returns false if `stop` fired first.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

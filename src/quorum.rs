//! Majority arithmetic over (possibly joint) voter configurations: the one place that
//! decides what "a quorum has reached X" means. During a membership change Raft needs a
//! majority of *each* configuration, so every question here is asked per configuration and
//! the answers combined with `min`.

use std::collections::BTreeSet;

use crate::NodeId;

/// The number of voters that make a majority of `voters` voters.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The greatest value that a majority of every configuration in `configs` has reached:
/// for the commit index, each voter's matched log index; for the leader lease, each
/// voter's newest accepted send time. `value` is None for a voter that has reached nothing.
/// None when a configuration is empty or has no majority with a value, or `configs` is
/// empty.
///
/// Quadratic in the size of a configuration (a handful of voters) and allocation-free, as
/// it runs on the read path.
pub fn joint_quorum_value<T: Ord + Copy>(
    configs: &[BTreeSet<NodeId>],
    value: impl Fn(NodeId) -> Option<T>,
) -> Option<T> {
    let mut lowest: Option<T> = None;
    for voters in configs {
        let need = majority(voters.len());
        let reached_by_majority =
            |t: &T| voters.iter().filter_map(|v| value(*v)).filter(|u| u >= t).count() >= need;
        let this = voters
            .iter()
            .filter_map(|v| value(*v))
            .filter(reached_by_majority)
            .max()?;
        lowest = Some(lowest.map_or(this, |l| l.min(this)));
    }
    lowest
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cfgs(configs: &[&[NodeId]]) -> Vec<BTreeSet<NodeId>> {
        configs.iter().map(|c| c.iter().copied().collect()).collect()
    }

    #[test]
    fn majority_of_n() {
        for (n, m) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)] {
            assert_eq!(majority(n), m, "majority of {n}");
        }
    }

    /// Configurations, each voter's value, the expected quorum value.
    type Case = (
        &'static [&'static [NodeId]],
        &'static [(NodeId, u64)],
        Option<u64>,
    );

    #[test]
    fn quorum_values_table() {
        // (configurations, per-voter values, expected)
        let cases: &[Case] = &[
            (&[&[1]], &[(1, 7)], Some(7)),
            (&[&[1]], &[], None),
            (&[&[1, 2, 3]], &[(1, 10), (2, 8), (3, 3)], Some(8)),
            (&[&[1, 2, 3]], &[(1, 10)], None),
            (&[&[1, 2, 3]], &[(1, 10), (3, 4)], Some(4)),
            (&[&[1, 2, 3, 4]], &[(1, 10), (2, 9), (3, 8), (4, 1)], Some(8)),
            (
                &[&[1, 2, 3, 4, 5]],
                &[(1, 10), (2, 9), (3, 8), (4, 7), (5, 6)],
                Some(8),
            ),
            // Ties count for everyone holding the value.
            (&[&[1, 2, 3]], &[(1, 5), (2, 5), (3, 5)], Some(5)),
            // Joint: the old {1,2,3} has reached 9, the new {3,4,5} only 2.
            (
                &[&[1, 2, 3], &[3, 4, 5]],
                &[(1, 9), (2, 9), (3, 2), (4, 1), (5, 2)],
                Some(2),
            ),
            // Joint, the new configuration has no majority at all.
            (&[&[1, 2, 3], &[4, 5, 6]], &[(1, 9), (2, 9), (4, 3)], None),
            // Voters outside every configuration count for nothing.
            (&[&[2, 3, 4]], &[(1, 100), (2, 5), (3, 1)], Some(1)),
            (&[&[]], &[(1, 1)], None),
            (&[], &[(1, 1)], None),
        ];
        for (configs, values, expected) in cases {
            let values: BTreeMap<NodeId, u64> = values.iter().copied().collect();
            let got = joint_quorum_value(&cfgs(configs), |v| values.get(&v).copied());
            assert_eq!(got, *expected, "configs {configs:?}, values {values:?}");
        }
    }

    #[test]
    fn a_lumped_majority_differs_from_the_joint_one() {
        // Treating {1,2,3} ∪ {3,4,5} as one five-voter set would answer 9 (1, 2 and 3 hold
        // at least 9 — three of five); the joint rule says the new configuration has only 2.
        let configs = cfgs(&[&[1, 2, 3], &[3, 4, 5]]);
        let values = BTreeMap::from([(1, 9u64), (2, 9), (3, 9), (4, 2), (5, 1)]);
        assert_eq!(joint_quorum_value(&configs, |v| values.get(&v).copied()), Some(2));
    }
}

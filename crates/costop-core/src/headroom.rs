//! Headroom and warm-pool sizing.
//!
//! A pool reclaim can take every node of that pool at once, so the loss to
//! plan for is the largest number of Spot nodes in any pool that can be
//! reclaimed. Part of it is covered by free room on running nodes, held by
//! placeholder pods (instant, billed at Spot price); the rest by warm
//! standbys (stopped ones cost only their volumes, and start in tens of seconds).

use crate::model::PoolId;
use crate::policy::Policy;
use std::collections::BTreeMap;

/// How much spare capacity to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpareCapacity {
    /// Node-equivalents of free room held by placeholder pods.
    pub headroom_nodes: u32,
    /// Warm standby nodes.
    pub standby_nodes: u32,
}

/// Size headroom and the warm pool from the Spot layout (nodes per pool) and
/// each pool's expected interruptions per day. Pools with no interruption
/// risk do not count towards the worst case.
pub fn size_spare_capacity(
    layout: &BTreeMap<PoolId, u32>,
    interruptions_per_day: impl Fn(&PoolId) -> f64,
    policy: &Policy,
) -> SpareCapacity {
    let worst = layout
        .iter()
        .filter(|(pool, _)| interruptions_per_day(pool) > 0.0)
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    let share = |s: f64| (s * f64::from(worst)).ceil() as u32;
    let headroom_nodes = share(policy.headroom_share_of_worst_pool);
    let standby_nodes = share(policy.standby_share_of_worst_pool).min(worst);
    SpareCapacity { headroom_nodes, standby_nodes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_from_the_largest_risky_pool() {
        let mut layout = BTreeMap::new();
        layout.insert(PoolId::new("a", "1"), 10);
        layout.insert(PoolId::new("b", "1"), 40); // no risk: ignored
        layout.insert(PoolId::new("c", "1"), 7);
        let policy = Policy {
            headroom_share_of_worst_pool: 0.2,
            standby_share_of_worst_pool: 0.5,
            ..Policy::default()
        };
        let rate = |p: &PoolId| if p.instance_type == "b" { 0.0 } else { 1.0 };
        let got = size_spare_capacity(&layout, rate, &policy);
        assert_eq!(got, SpareCapacity { headroom_nodes: 2, standby_nodes: 5 });
    }

    #[test]
    fn no_risk_needs_no_spare() {
        let mut layout = BTreeMap::new();
        layout.insert(PoolId::new("a", "1"), 10);
        let got = size_spare_capacity(&layout, |_| 0.0, &Policy::default());
        assert_eq!(got, SpareCapacity { headroom_nodes: 0, standby_nodes: 0 });
    }
}

//! Spare capacity sized from the shortfall.
//!
//! A reclaim of pool `p` takes (up to) the workload pods on `p`'s nodes. The
//! free room on the other nodes takes them at once; what it cannot take is
//! the pool's **shortfall**. Replacement capacity launched at the notice is
//! Ready within about a minute, well inside the two-minute notice, so the
//! shortfall only has to be covered ahead of time where speed matters
//! (placeholders: room at once, billed at the Spot price) or where no
//! replacement can launch (warm standbys: stopped ones cost only a small
//! root volume).
//!
//! spare = max over pools p of (load on p × share of p one reclaim takes)
//!         − free room outside p,
//! and standbys only for the part no other Spot pool can launch.

use crate::model::{CapacityType, ClusterView, PoolId, Resources};
use crate::policy::Policy;
use std::collections::{BTreeMap, HashMap};

/// How much spare capacity to keep, in nodes of the cluster's typical size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpareCapacity {
    /// Node-equivalents of free room held by placeholder pods.
    pub headroom_nodes: u32,
    /// Warm standby nodes.
    pub standby_nodes: u32,
}

/// What one reclaim of each pool would leave without room: its workload
/// load (times `event_share(pool)`, the share of the pool one reclaim
/// takes) less the free room on the nodes outside it. Placeholders do not
/// count as free: they are the headroom being sized.
pub fn shortfall_per_pool(
    view: &ClusterView,
    event_share: impl Fn(&PoolId) -> f64,
) -> BTreeMap<PoolId, Resources> {
    // Requests of workload pods per node, by the node's index in the view.
    let index: HashMap<&str, usize> =
        view.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    let mut used = vec![Resources::default(); view.nodes.len()];
    let mut has_pods = vec![false; view.nodes.len()];
    for p in view.pods.iter().filter(|p| !p.placeholder) {
        if let Some(&i) = p.node.as_deref().and_then(|n| index.get(n)) {
            used[i] = used[i].plus(&p.requests);
            has_pods[i] = true;
        }
    }
    // Per pool: the load on its Spot nodes and the free room on its nodes
    // that take pods; the room outside a pool is the total less its own.
    let mut load: BTreeMap<&PoolId, Resources> = BTreeMap::new();
    let mut free_in: BTreeMap<&PoolId, Resources> = BTreeMap::new();
    let mut free_total = Resources::default();
    for ((n, used), has_pods) in view.nodes.iter().zip(&used).zip(has_pods) {
        if n.capacity_type == CapacityType::Spot && has_pods {
            let l = load.entry(&n.pool).or_default();
            *l = l.plus(used);
        }
        if n.accepts_pods() && !n.capacity_type.is_standby() {
            let free = n.allocatable.minus(used);
            free_total = free_total.plus(&free);
            let f = free_in.entry(&n.pool).or_default();
            *f = f.plus(&free);
        }
    }
    load.into_iter()
        .map(|(pool, l)| {
            let share = event_share(pool).clamp(0.0, 1.0);
            let lost = Resources::new(
                (l.cpu_millis as f64 * share).ceil() as u64,
                (l.memory_mib as f64 * share).ceil() as u64,
            );
            let free = free_total.minus(free_in.get(pool).unwrap_or(&Resources::default()));
            (pool.clone(), lost.minus(&free))
        })
        .collect()
}

/// How many other Spot pools must be able to launch before a replacement
/// launched at the notice is counted on: with one, a single capacity
/// error leaves the displaced pods without room.
pub const POOLS_FOR_A_TRUSTED_REPLACEMENT: usize = 2;

/// Whether a replacement for a node of `pool` can be counted on: enough
/// other pools can launch.
pub fn replacement_trusted(view: &ClusterView, pool: &PoolId) -> bool {
    view.pools.iter().filter(|p| p.launchable && &p.id != pool).count() >= POOLS_FOR_A_TRUSTED_REPLACEMENT
}

/// The node size shortfalls are counted in: the largest Spot node's allocatable.
fn unit(view: &ClusterView) -> Resources {
    view.nodes
        .iter()
        .filter(|n| n.capacity_type == CapacityType::Spot)
        .map(|n| n.allocatable)
        .max_by_key(|a| (a.cpu_millis, a.memory_mib))
        .unwrap_or(Resources::new(1000, 1024))
}

/// Nodes of size `unit` it takes to hold `r`.
fn in_nodes(r: Resources, unit: Resources) -> f64 {
    let cpu = r.cpu_millis as f64 / unit.cpu_millis.max(1) as f64;
    let mem = r.memory_mib as f64 / unit.memory_mib.max(1) as f64;
    cpu.max(mem)
}

/// Size placeholders and standbys for the worst pool's shortfall.
/// Standbys are kept only while fewer than two Spot pools outside the worst
/// one can launch (a replacement is otherwise on its way within a minute).
pub fn size_spare_capacity(
    view: &ClusterView,
    event_share: impl Fn(&PoolId) -> f64,
    policy: &Policy,
) -> SpareCapacity {
    let unit = unit(view);
    let worst = shortfall_per_pool(view, event_share)
        .into_iter()
        .map(|(pool, r)| (in_nodes(r, unit), pool))
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
    let Some((nodes, pool)) = worst else { return SpareCapacity { headroom_nodes: 0, standby_nodes: 0 } };
    let share = |s: f64| (s * nodes - 1e-9).ceil().max(0.0) as u32;
    SpareCapacity {
        headroom_nodes: share(policy.headroom_share_of_shortfall),
        standby_nodes: if replacement_trusted(view, &pool) {
            0
        } else {
            share(policy.standby_share_of_shortfall)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeView, PodView, PoolView};

    fn node(name: &str, pool: &PoolId) -> NodeView {
        NodeView {
            name: name.into(),
            instance_id: format!("i-{name}").into(),
            pool: pool.clone(),
            capacity_type: CapacityType::Spot,
            allocatable: Resources::new(4000, 16000),
            price_per_hour: 0.1,
            unschedulable: false,
            taints: vec![],
            ready: true,
            in_load_balancer: true,
        }
    }

    fn pod(name: &str, node: &str, cpu: u64) -> PodView {
        PodView {
            name: name.into(),
            workload: Some("w".into()),
            node: Some(node.into()),
            requests: Resources::new(cpu, 1000),
            priority: 0,
            ready: true,
            placeholder: false,
            daemon: false,
            volumes: vec![],
        }
    }

    /// Pool a: 2 nodes at 3,500 m each; pool b: 1 node at 1,000 m.
    fn view(launchable: bool) -> ClusterView {
        let (a, b) = (PoolId::new("m5.xlarge", "z1"), PoolId::new("m5.xlarge", "z2"));
        let pool = |id: &PoolId| PoolView {
            id: id.clone(),
            spot_price: 0.07,
            on_demand_price: 0.19,
            interruptions_per_day: 0.1,
            launchable,
            last_interruption: None,
        };
        ClusterView {
            nodes: vec![node("a1", &a), node("a2", &a), node("b1", &b)].into(),
            pods: vec![pod("p1", "a1", 3500), pod("p2", "a2", 3500), pod("p3", "b1", 1000)].into(),
            pools: vec![pool(&a), pool(&b), pool(&PoolId::new("c5.xlarge", "z3"))],
            ..ClusterView::default()
        }
    }

    #[test]
    fn the_shortfall_is_the_load_the_free_room_outside_cannot_take() {
        let s = shortfall_per_pool(&view(true), |_| 1.0);
        // Losing a: 7,000 m against 3,000 m free on b. Losing b: 1,000 m against 1,000 m free on a.
        assert_eq!(s[&PoolId::new("m5.xlarge", "z1")].cpu_millis, 4000);
        assert_eq!(s[&PoolId::new("m5.xlarge", "z2")].cpu_millis, 0);
        // A reclaim that takes half the pool leaves 3,500 − 3,000.
        let half = shortfall_per_pool(&view(true), |_| 0.5);
        assert_eq!(half[&PoolId::new("m5.xlarge", "z1")].cpu_millis, 500);
    }

    #[test]
    fn placeholders_cover_the_shortfall_and_standbys_only_when_nothing_can_launch() {
        let policy =
            Policy { headroom_share_of_shortfall: 1.0, standby_share_of_shortfall: 1.0, ..Policy::default() };
        let got = size_spare_capacity(&view(true), |_| 1.0, &policy);
        assert_eq!(got, SpareCapacity { headroom_nodes: 1, standby_nodes: 0 });
        let stuck = size_spare_capacity(&view(false), |_| 1.0, &policy);
        assert_eq!(stuck, SpareCapacity { headroom_nodes: 1, standby_nodes: 1 });
        let none = Policy::default();
        assert_eq!(size_spare_capacity(&view(true), |_| 1.0, &none).headroom_nodes, 0);
        assert_eq!(
            size_spare_capacity(&view(false), |_| 1.0, &none).standby_nodes,
            0,
            "no standbys by default"
        );
    }
}

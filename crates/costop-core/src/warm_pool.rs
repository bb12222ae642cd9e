//! Keeping the warm pool: how many standbys each zone needs, which to
//! launch, which are surplus, and when a woken standby can go back.
//!
//! A reclaim takes (up to) a whole pool, and a pool lives in one zone.
//! Standbys in the same zone are preferred (zonal volumes, zone balance), so
//! each zone keeps standbys for the worst shortfall of the pools it holds
//! (`costop_core::headroom`): `standby_share_of_shortfall` of it, and only
//! while fewer than two other Spot pools can launch a replacement; or,
//! with `spare_sizing = "cost"`, the standbys of the cheapest tier mix.

use crate::headroom::shortfall_per_pool;
use crate::model::{CapacityType, ClusterView, NodeView, Resources};
use crate::policy::Policy;
use std::collections::BTreeMap;

/// A standby launched but not yet joined as a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStandby {
    /// EC2 instance id.
    pub instance_id: String,
    /// Availability zone.
    pub zone: String,
}

/// One standby to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyLaunch {
    /// Availability zone.
    pub zone: String,
    /// Instance type: the largest Spot type of the zone, so it can stand in
    /// for any node there (a stopped one is re-typed to match anyway).
    pub instance_type: String,
    /// A live Spot node of the zone whose instance the standby is a twin of.
    pub twin_of: String,
}

/// What the warm-pool keeper should do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WarmPoolPlan {
    /// Standbys to launch.
    pub launch: Vec<StandbyLaunch>,
    /// Launched standbys not joined yet that their zone no longer needs
    /// (instance ids): terminated before any joined one, which is warm already.
    pub surplus_pending: Vec<String>,
    /// Standby nodes beyond what their zone needs (no workload pods on
    /// them): to be terminated.
    pub surplus: Vec<String>,
}

/// Standbys each zone needs: for the worst shortfall among its pools, in
/// nodes of the zone's largest Spot size, while fewer than two Spot pools
/// outside that pool can launch. A reclaim is assumed to take the whole pool.
/// With `spare_sizing = "cost"`: the standby units of
/// [`crate::headroom::size_tiers`] (shipped inputs), by zone.
pub fn standbys_wanted(view: &ClusterView, policy: &Policy) -> BTreeMap<String, u32> {
    if policy.spare_sizing == crate::policy::SpareSizing::Cost {
        let inputs = crate::headroom::TierInputs::shipped(&costop_facts::timings::Timings::default());
        return crate::headroom::size_tiers(view, |_| 1.0, policy, &inputs).standby_units_by_zone;
    }
    let shortfall = shortfall_per_pool(view, |_| 1.0);
    let mut wanted: BTreeMap<String, u32> = BTreeMap::new();
    for (pool, short) in &shortfall {
        let Some(unit) = largest_spot_node(view, &pool.zone).map(|n| n.allocatable) else { continue };
        let nodes = (short.cpu_millis as f64 / unit.cpu_millis.max(1) as f64)
            .max(short.memory_mib as f64 / unit.memory_mib.max(1) as f64);
        let want = if !crate::headroom::replacement_trusted(view, pool) {
            (policy.standby_share_of_shortfall * nodes - 1e-9).ceil().max(0.0) as u32
        } else {
            0
        };
        let e = wanted.entry(pool.zone.clone()).or_insert(0);
        *e = (*e).max(want);
    }
    wanted
}

/// Compare the standbys there are (joined, and `pending` launches) with
/// what each zone needs.
pub fn plan_warm_pool(view: &ClusterView, pending: &[PendingStandby], policy: &Policy) -> WarmPoolPlan {
    let wanted = standbys_wanted(view, policy);
    let mut plan = WarmPoolPlan::default();
    let mut zones: Vec<&str> = wanted.keys().map(String::as_str).collect();
    zones.extend(view.nodes.iter().filter(|n| n.capacity_type.is_standby()).map(|n| n.pool.zone.as_str()));
    zones.sort_unstable();
    zones.dedup();
    for zone in zones {
        let want = wanted.get(zone).copied().unwrap_or(0) as usize;
        let mut joined: Vec<&NodeView> =
            view.nodes.iter().filter(|n| n.capacity_type.is_standby() && n.pool.zone == zone).collect();
        let waiting = pending.iter().filter(|p| p.zone == zone).count();
        let have = joined.len() + waiting;
        if have < want {
            if let Some(twin) = largest_spot_node(view, zone) {
                for _ in have..want {
                    plan.launch.push(StandbyLaunch {
                        zone: zone.to_string(),
                        instance_type: twin.pool.instance_type.clone(),
                        twin_of: twin.name.to_string(),
                    });
                }
            }
        } else if have > want {
            let mut extra = have - want;
            let mut waiting: Vec<&PendingStandby> = pending.iter().filter(|p| p.zone == zone).collect();
            waiting.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
            for p in waiting.into_iter().take(extra) {
                plan.surplus_pending.push(p.instance_id.clone());
                extra -= 1;
            }
            // Running standbys cost the most: they go first, then the smallest.
            joined.retain(|n| !hosts_workloads(view, n));
            joined.sort_by_key(|n| {
                (n.capacity_type != CapacityType::StandbyRunning, n.allocatable.cpu_millis, n.name.clone())
            });
            plan.surplus.extend(joined.iter().take(extra).map(|n| n.name.to_string()));
        }
    }
    plan
}

fn largest_spot_node<'a>(view: &'a ClusterView, zone: &str) -> Option<&'a NodeView> {
    view.nodes
        .iter()
        .filter(|n| n.capacity_type == CapacityType::Spot && n.pool.zone == zone && n.ready)
        .max_by_key(|n| (n.allocatable.cpu_millis, n.allocatable.memory_mib, std::cmp::Reverse(&n.name)))
}

fn hosts_workloads(view: &ClusterView, node: &NodeView) -> bool {
    view.workload_pods_on(&node.name).next().is_some()
}

/// Whether a woken standby (`node`, back in service as on-demand capacity)
/// can return to the warm pool: every workload pod on it fits in the free
/// room of the other nodes that accept pods (Spot capacity restored), and
/// pods with EBS volumes fit in their volume's zone.
pub fn can_return_standby(view: &ClusterView, node: &NodeView) -> bool {
    let moving: Vec<_> = view.workload_pods_on(&node.name).collect();
    // Free room per zone; placeholders give way to workloads by preemption.
    let mut room: BTreeMap<&str, Resources> = BTreeMap::new();
    for n in
        view.nodes.iter().filter(|n| n.name != node.name && n.accepts_pods() && !n.capacity_type.is_standby())
    {
        let held = view
            .pods_on(&n.name)
            .filter(|p| p.placeholder)
            .fold(Resources::default(), |a, p| a.plus(&p.requests));
        let r = room.entry(&n.pool.zone).or_default();
        *r = r.plus(&view.free_on(n)).plus(&held);
    }
    let total = room.values().fold(Resources::default(), |a, r| a.plus(r));
    let need = moving.iter().fold(Resources::default(), |a, p| a.plus(&p.requests));
    let mut zonal: BTreeMap<&str, Resources> = BTreeMap::new();
    for p in &moving {
        if let Some(v) = p.volumes.first() {
            let z = zonal.entry(&v.zone).or_default();
            *z = z.plus(&p.requests);
        }
    }
    total.fits(&need) && zonal.iter().all(|(zone, need)| room.get(zone).is_some_and(|r| r.fits(need)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PoolId;
    use crate::model::{PodView, Taint};

    fn node(name: &str, zone: &str, ty: &str, capacity: CapacityType, cpu: u64) -> NodeView {
        NodeView {
            name: name.into(),
            instance_id: format!("i-{name}").into(),
            pool: PoolId::new(ty, zone),
            capacity_type: capacity,
            allocatable: Resources::new(cpu, cpu * 4),
            price_per_hour: 0.0,
            unschedulable: false,
            taints: if capacity.is_standby() {
                vec![Taint { key: crate::model::STANDBY_TAINT.into(), effect: "NoSchedule".into() }]
            } else {
                Vec::new()
            },
            ready: true,
            in_load_balancer: true,
            fallback: false,
        }
    }

    fn pod(name: &str, on: &str, cpu: u64) -> PodView {
        PodView {
            name: format!("default/{name}").into(),
            workload: Some("default/web".into()),
            node: Some(on.into()),
            requests: Resources::new(cpu, cpu),
            priority: 0,
            ready: true,
            placeholder: false,
            daemon: false,
            volumes: Vec::new(),
        }
    }

    /// Busy Spot nodes in z-a (three m5.xlarge, one m5.2xlarge) and z-b,
    /// an idle on-demand node in z-c; no pool can launch.
    fn spot_cluster() -> ClusterView {
        let mut view = ClusterView::default();
        for i in 0..3 {
            view.nodes.push(node(&format!("a{i}"), "z-a", "m5.xlarge", CapacityType::Spot, 4000));
            view.pods.push(pod(&format!("a{i}-pod"), &format!("a{i}"), 3500).into());
        }
        view.nodes.push(node("a-big", "z-a", "m5.2xlarge", CapacityType::Spot, 8000));
        view.pods.push(pod("big-pod", "a-big", 7000).into());
        view.nodes.push(node("b0", "z-b", "c5.xlarge", CapacityType::Spot, 4000));
        view.pods.push(pod("b0-pod", "b0", 3500).into());
        view.nodes.push(node("od", "z-c", "m5.xlarge", CapacityType::OnDemand, 4000));
        view
    }

    #[test]
    fn each_zone_keeps_standbys_for_its_worst_shortfall_while_nothing_launches() {
        let mut view = spot_cluster();
        let policy = Policy { standby_share_of_shortfall: 1.0, ..Policy::default() };
        let wanted = standbys_wanted(&view, &policy);
        // Losing the three m5.xlarge: 10,500 m against 6,000 m free
        // elsewhere, 4,500 m = 0.56 of an m5.2xlarge: one standby.
        assert_eq!(wanted.get("z-a"), Some(&1));
        assert_eq!(wanted.get("z-b"), Some(&0)); // 3,500 m fits in the free room
        assert_eq!(wanted.get("z-c"), None); // on-demand only
        let plan = plan_warm_pool(&view, &[], &policy);
        let zones: Vec<_> = plan.launch.iter().map(|l| (l.zone.as_str(), l.instance_type.as_str())).collect();
        assert_eq!(zones, [("z-a", "m5.2xlarge")]);
        assert_eq!(plan.launch[0].twin_of, "a-big");
        assert!(plan.surplus.is_empty());
        // Two other pools that can launch: the replacement is on its way, no standby.
        for (t, z) in [("c5.xlarge", "z-b"), ("m5.xlarge", "z-c"), ("m5.xlarge", "z-a")] {
            view.pools.push(crate::model::PoolView {
                id: PoolId::new(t, z),
                spot_price: 0.07,
                on_demand_price: 0.19,
                interruptions_per_day: 0.1,
                launchable: true,
                last_interruption: None,
            });
        }
        assert!(standbys_wanted(&view, &policy).values().all(|n| *n == 0));
    }

    #[test]
    fn pending_launches_and_joined_standbys_count() {
        let mut view = spot_cluster();
        let policy = Policy { standby_share_of_shortfall: 1.0, ..Policy::default() };
        let pending = [PendingStandby { instance_id: "i-new".into(), zone: "z-a".into() }];
        let plan = plan_warm_pool(&view, &pending, &policy);
        assert!(plan.launch.is_empty(), "the pending launch is z-a's one standby");
        view.nodes.push(node("sb-a", "z-a", "m5.2xlarge", CapacityType::StandbyStopped, 8000));
        let plan = plan_warm_pool(&view, &pending, &policy);
        assert_eq!(plan.surplus_pending, ["i-new"]);
    }

    #[test]
    fn surplus_standbys_without_workloads_go_running_first() {
        let mut view = spot_cluster();
        let policy = Policy { standby_share_of_shortfall: 1.0, ..Policy::default() };
        view.nodes.push(node("sb-stopped", "z-a", "m5.xlarge", CapacityType::StandbyStopped, 4000));
        view.nodes.push(node("sb-running", "z-a", "m5.xlarge", CapacityType::StandbyRunning, 4000));
        view.nodes.push(node("sb-busy", "z-a", "m5.xlarge", CapacityType::StandbyRunning, 4000));
        view.pods.push(pod("web-1", "sb-busy", 500).into());
        // z-a wants one and has three; the busy one is never surplus.
        let plan = plan_warm_pool(&view, &[], &policy);
        assert_eq!(plan.surplus, ["sb-running", "sb-stopped"]);
        // A zone with no Spot left needs none.
        view.nodes.retain(|n| n.pool.zone != "z-a" || n.capacity_type.is_standby());
        let plan = plan_warm_pool(&view, &[], &policy);
        assert_eq!(plan.surplus, ["sb-running", "sb-stopped"]);
    }

    #[test]
    fn a_standby_returns_only_when_its_pods_fit_elsewhere() {
        let mut view = ClusterView::default();
        view.nodes.push(node("woken", "z-a", "m5.xlarge", CapacityType::OnDemand, 4000));
        view.nodes.push(node("spot", "z-a", "m5.xlarge", CapacityType::Spot, 4000));
        view.pods.push(pod("web-1", "woken", 3000).into());
        view.pods.push(pod("web-2", "spot", 2000).into());
        assert!(!can_return_standby(&view, &view.nodes[0].clone()));
        view.nodes.push(node("restored", "z-b", "m5.xlarge", CapacityType::Spot, 4000));
        assert!(can_return_standby(&view, &view.nodes[0].clone()));
        view.nodes[2].ready = false;
        assert!(!can_return_standby(&view, &view.nodes[0].clone()));
        // A pod with a volume in z-a needs room in z-a, not just anywhere.
        view.nodes[2].ready = true;
        std::sync::Arc::make_mut(&mut view.pods[0]).volumes.push(crate::model::VolumeView {
            volume_id: "vol-1".into(),
            zone: "z-a".into(),
            attached_to: Some("woken".into()),
        });
        assert!(!can_return_standby(&view, &view.nodes[0].clone()));
        view.nodes[2].pool.zone = "z-a".into();
        assert!(can_return_standby(&view, &view.nodes[0].clone()));
    }

    #[test]
    fn launches_not_yet_joined_are_surplus_first() {
        let mut view = spot_cluster();
        let policy = Policy { standby_share_of_shortfall: 1.0, ..Policy::default() };
        view.nodes.push(node("sb-1", "z-a", "m5.xlarge", CapacityType::StandbyStopped, 4000));
        let pending = [PendingStandby { instance_id: "i-late".into(), zone: "z-a".into() }];
        let plan = plan_warm_pool(&view, &pending, &policy);
        assert_eq!(plan.surplus_pending, ["i-late"]);
        assert!(plan.surplus.is_empty());
    }
}

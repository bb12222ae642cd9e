//! Burstable room in a response: running burstable (T-family) nodes held
//! as spare capacity (capacity type [`CapacityType::Burstable`], tainted
//! `costop.io/standby:NoSchedule` while idle, earning CPU credits) take
//! displaced pods the moment their taint comes off.
//!
//! Which room a displaced pod gets, by how soon it takes pods: the room
//! already there (free room and placeholders, claimed first), then
//! burstable room (ready at once: the node runs and has joined), and only
//! then room that must start first (the replacement launched at the
//! notice, about a minute and a half; a stopped standby, half a minute
//! and more). So burstable nodes cover what the room already there does
//! not, whether or not a replacement is on its way: they carry the pods
//! through the gap until it is Ready. The response then hands them back
//! ([`crate::plan::Step::ReturnStandby`]): once the other nodes can hold
//! their pods (the replacement has joined), the warm-pool keeper taints
//! them again and moves the pods on, so their credits drain only for the
//! gap. Pure.

use crate::model::{CapacityType, ClusterView, NodeView, Resources, STANDBY_TAINT};

/// Whether `node` is idle burstable spare a response may take: a Ready
/// burstable node still carrying the standby taint.
pub fn is_idle_burstable(node: &NodeView) -> bool {
    node.capacity_type == CapacityType::Burstable && node.ready && node.has_taint(STANDBY_TAINT)
}

/// The burstable nodes a response takes and the room they give.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BurstableRoom {
    /// Node names, in the order taken.
    pub nodes: Vec<String>,
    /// Their allocatable room, summed.
    pub room: Resources,
}

/// Idle burstable nodes for `short` (what the room already there cannot
/// hold of the displaced pods), the lost node's zone first (zonal volumes
/// and traffic stay near), then by name; as many as it takes to cover
/// `short`, or every one there is. Nothing when `short` is zero.
pub fn burstable_room(view: &ClusterView, lost: &NodeView, short: Resources) -> BurstableRoom {
    let mut idle: Vec<&NodeView> =
        view.nodes.iter().filter(|n| n.name != lost.name && is_idle_burstable(n)).collect();
    idle.sort_by(|a, b| {
        (a.pool.zone != lost.pool.zone, &a.name).cmp(&(b.pool.zone != lost.pool.zone, &b.name))
    });
    let mut taken = BurstableRoom::default();
    for n in idle {
        if taken.room.fits(&short) {
            break;
        }
        taken.room = taken.room.plus(&n.allocatable);
        taken.nodes.push(n.name.to_string());
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PoolId, Taint};

    fn node(name: &str, zone: &str, capacity_type: CapacityType, tainted: bool) -> NodeView {
        NodeView {
            name: name.into(),
            instance_id: format!("i-{name}").into(),
            pool: PoolId::new("t3.xlarge", zone),
            capacity_type,
            allocatable: Resources::new(3680, 14000),
            price_per_hour: 0.1664,
            unschedulable: false,
            taints: if tainted {
                vec![Taint { key: STANDBY_TAINT.into(), effect: "NoSchedule".into() }]
            } else {
                vec![]
            },
            ready: true,
            in_load_balancer: false,
            fallback: false,
        }
    }

    #[test]
    fn idle_burstable_nodes_cover_the_shortfall_own_zone_first() {
        let lost =
            NodeView { pool: PoolId::new("m5.xlarge", "b"), ..node("lost", "b", CapacityType::Spot, false) };
        let view = ClusterView {
            nodes: vec![
                lost.clone(),
                node("t-a1", "a", CapacityType::Burstable, true),
                node("t-a2", "a", CapacityType::Burstable, true),
                node("t-b1", "b", CapacityType::Burstable, true),
                // In service already (no taint), or a standby: not taken.
                node("t-b2", "b", CapacityType::Burstable, false),
                node("sb-b", "b", CapacityType::StandbyRunning, true),
            ]
            .into(),
            ..ClusterView::default()
        };
        assert_eq!(burstable_room(&view, &lost, Resources::default()), BurstableRoom::default());
        let one = burstable_room(&view, &lost, Resources::new(1000, 1000));
        assert_eq!(one.nodes, ["t-b1"]);
        assert_eq!(one.room, Resources::new(3680, 14000));
        let two = burstable_room(&view, &lost, Resources::new(5000, 1000));
        assert_eq!(two.nodes, ["t-b1", "t-a1"]);
        // More than there is: every idle one.
        let all = burstable_room(&view, &lost, Resources::new(50_000, 1000));
        assert_eq!(all.nodes, ["t-b1", "t-a1", "t-a2"]);
    }

    /// A response sends the displaced pods to the idle burstable node
    /// (its taint off before the evictions) though a replacement is
    /// launched, and hands the node back once that is done.
    #[test]
    fn a_response_takes_burstable_room_before_the_replacement_and_hands_it_back() {
        use crate::model::{PodView, PoolView, WorkloadView};
        use crate::notice::{InstanceAction, Notice, NoticeKind, NoticeSource};
        use crate::plan::Step;
        let spot = |name: &str, zone: &str| NodeView {
            pool: PoolId::new("m5.xlarge", zone),
            in_load_balancer: true,
            fallback: false,
            ..node(name, zone, CapacityType::Spot, false)
        };
        let pod = |name: &str, node: &str| PodView {
            name: name.into(),
            workload: Some("w".into()),
            node: Some(node.into()),
            requests: Resources::new(1800, 2000),
            priority: 0,
            ready: true,
            placeholder: false,
            daemon: false,
            volumes: vec![],
        };
        let pools = ["a", "b", "c"].map(|z| PoolView {
            id: PoolId::new("m5.xlarge", z),
            spot_price: 0.07,
            on_demand_price: 0.192,
            interruptions_per_day: 1.0,
            launchable: true,
            last_interruption: None,
        });
        let view = ClusterView {
            nodes: vec![spot("s-a", "a"), spot("s-b", "b"), node("t-a", "a", CapacityType::Burstable, true)]
                .into(),
            pods: vec![pod("p1", "s-a"), pod("p2", "s-a"), pod("p3", "s-b"), pod("p4", "s-b")].into(),
            pools: pools.to_vec(),
            workloads: vec![WorkloadView {
                name: "w".into(),
                replicas: 4,
                min_available: 2,
                bridged: false,
                surgeable: false,
            }],
            ..ClusterView::default()
        };
        let notice = Notice {
            instance_id: "i-s-b".into(),
            kind: NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: 120_000 },
            received_at: 1_000,
            source: NoticeSource::Simulator,
        };
        let plan = crate::respond(&view, &notice, &crate::Policy::default(), 1_000).unwrap();
        let at = |f: &dyn Fn(&Step) -> bool| plan.steps.iter().position(f);
        let wake = at(&|s| matches!(s, Step::WakeStandby { node, retype_to: None } if node == "t-a"));
        let evict = at(&|s| matches!(s, Step::Evict { .. }));
        let back = at(&|s| matches!(s, Step::ReturnStandby { node } if node == "t-a"));
        assert!(at(&|s| matches!(s, Step::RestoreCapacity { .. })).is_some(), "{:?}", plan.steps);
        assert!(wake.is_some() && wake < evict && evict < back, "{:?}", plan.steps);
        // Without a burstable node: no such steps.
        let mut bare = view.clone();
        bare.nodes = vec![spot("s-a", "a"), spot("s-b", "b")].into();
        let plan = crate::respond(&bare, &notice, &crate::Policy::default(), 1_000).unwrap();
        assert!(!plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::WakeStandby { .. } | Step::ReturnStandby { .. })));
    }
}

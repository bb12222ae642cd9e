//! Properties of `respond` over random clusters.

use costop_core::effects::apply_plan;
use costop_core::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::collections::{BTreeMap, BTreeSet};

const POOLS: [(&str, &str); 4] = [
    ("m5.xlarge", "us-east-1a"),
    ("m5.xlarge", "us-east-1b"),
    ("c5.xlarge", "us-east-1a"),
    ("r5.xlarge", "us-east-1c"),
];

/// A random cluster: spot nodes over four pools, a few standbys, idle
/// burstable nodes, workloads with budgets, pods spread over nodes,
/// placeholders.
fn cluster() -> impl Strategy<Value = ClusterView> {
    (
        2usize..12,
        0usize..3,
        prop::collection::vec((1u32..8, 0u32..8), 1..6),
        prop::collection::vec((0usize..64, 0usize..64, any::<bool>(), any::<bool>()), 0..60),
        0usize..12,
        0usize..3,
    )
        .prop_map(|(nodes, standbys, workloads, pods, placeholders, burstables)| {
            let mut view = ClusterView::default();
            for (i, (t, z)) in POOLS.iter().enumerate() {
                view.pools.push(PoolView {
                    id: PoolId::new(*t, *z),
                    spot_price: 0.05 + i as f64 * 0.01,
                    on_demand_price: 0.19,
                    interruptions_per_day: i as f64 * 0.3,
                    launchable: true,
                    last_interruption: None,
                });
            }
            for i in 0..nodes + standbys {
                let (t, z) = POOLS[i % POOLS.len()];
                let standby = i >= nodes;
                view.nodes.push(NodeView {
                    name: format!("node-{i}").into(),
                    instance_id: format!("i-{i:04}").into(),
                    pool: PoolId::new(t, z),
                    capacity_type: if standby { CapacityType::StandbyStopped } else { CapacityType::Spot },
                    allocatable: Resources::new(4000, 15000),
                    price_per_hour: 0.07,
                    unschedulable: false,
                    taints: if standby {
                        vec![Taint { key: "costop.io/standby".into(), effect: "NoSchedule".into() }]
                    } else {
                        vec![]
                    },
                    ready: !standby,
                    in_load_balancer: !standby,
                    fallback: false,
                });
            }
            for i in 0..burstables {
                view.nodes.push(NodeView {
                    name: format!("burst-{i}").into(),
                    instance_id: format!("i-b{i:03}").into(),
                    pool: PoolId::new("t3.xlarge", POOLS[i % POOLS.len()].1),
                    capacity_type: CapacityType::Burstable,
                    allocatable: Resources::new(3680, 14000),
                    price_per_hour: 0.1664,
                    unschedulable: false,
                    taints: vec![Taint { key: "costop.io/standby".into(), effect: "NoSchedule".into() }],
                    ready: true,
                    in_load_balancer: false,
                    fallback: false,
                });
            }
            for (i, (replicas, min_available)) in workloads.iter().enumerate() {
                view.workloads.push(WorkloadView {
                    name: format!("w{i}").into(),
                    replicas: *replicas,
                    min_available: (*min_available).min(*replicas),
                    bridged: false,
                    // Deployments and StatefulSets, alternately.
                    surgeable: i % 2 == 0,
                });
            }
            for (i, (w, n, ready, volume)) in pods.iter().enumerate() {
                let workload = &view.workloads[w % view.workloads.len()].name;
                let node = format!("node-{}", n % nodes);
                view.pods.push(
                    PodView {
                        name: format!("pod-{i}").into(),
                        workload: Some(workload.clone()),
                        node: Some(node.into()),
                        requests: Resources::new(500, 1024),
                        priority: 0,
                        ready: *ready,
                        placeholder: false,
                        daemon: false,
                        volumes: if *volume {
                            vec![VolumeView {
                                volume_id: format!("vol-{i}").into(),
                                zone: "us-east-1a".into(),
                                attached_to: None,
                            }]
                        } else {
                            vec![]
                        },
                    }
                    .into(),
                );
            }
            for i in 0..placeholders {
                view.pods.push(
                    PodView {
                        name: format!("placeholder-{i}").into(),
                        workload: None,
                        node: Some(format!("node-{}", i % nodes).into()),
                        requests: Resources::new(1000, 2048),
                        priority: -10,
                        ready: true,
                        placeholder: true,
                        daemon: false,
                        volumes: vec![],
                    }
                    .into(),
                );
            }
            view.headroom_target = placeholders as u32;
            view
        })
}

fn interruption(instance: &str) -> Notice {
    Notice {
        instance_id: instance.into(),
        kind: NoticeKind::SpotInterruption {
            action: notice::InstanceAction::Terminate,
            effective_at: 120_000,
        },
        received_at: 1_000,
        source: NoticeSource::Simulator,
    }
}

proptest! {
    #[test]
    fn no_plan_breaks_a_disruption_budget(view in cluster(), pick in 0usize..64) {
        let spot: Vec<_> = view.nodes.iter().filter(|n| n.capacity_type == CapacityType::Spot).collect();
        let node = spot[pick % spot.len()];
        let plan = respond(&view, &interruption(&node.instance_id), &Policy::default(), 1_000).unwrap();
        // A surge adds, to each Deployment, as many replicas as the node
        // holds of its pods; the evictions may count on them.
        let surge: BTreeMap<String, u32> = plan.steps.iter().filter_map(|s| match s {
            Step::Surge { workloads } => Some(workloads.clone()),
            _ => None,
        }).flatten().collect();
        for w in &view.workloads {
            let on_node = view.workload_pods_on(&node.name).filter(|p| p.workload.as_deref() == Some(&*w.name)).count();
            let want = if w.surgeable { on_node as u32 } else { 0 };
            prop_assert_eq!(surge.get(&*w.name).copied().unwrap_or(0), want, "surge of {}", w.name);
        }
        let mut seen = BTreeSet::new();
        for step in &plan.steps {
            if let Step::Evict { pods, wave } = step {
                let mut per_workload: BTreeMap<String, usize> = BTreeMap::new();
                for name in pods {
                    prop_assert!(seen.insert(name.clone()), "pod {} evicted twice", name);
                    let pod = view.pods.iter().find(|p| &p.name == name).unwrap();
                    prop_assert_eq!(pod.node.as_deref(), Some(node.name.as_str()));
                    *per_workload.entry(pod.workload.clone().unwrap().to_string()).or_default() += 1;
                }
                for (w, count) in per_workload {
                    let wl = view.workload(&w).unwrap();
                    if wl.min_available == 0 { continue; }
                    let limit = if *wave == 0 {
                        let extra = surge.get(&w).copied().unwrap_or(0) as usize;
                        (view.ready_pods_of(&w) + extra).saturating_sub(wl.min_available as usize)
                    } else {
                        (wl.replicas + surge.get(&w).copied().unwrap_or(0) - wl.min_available) as usize
                    };
                    prop_assert!(count <= limit, "wave {} evicts {} of {} (limit {})", wave, count, w, limit);
                }
            }
        }
        // Every displaced pod is either evicted in some wave or named unevictable.
        for p in view.workload_pods_on(&node.name) {
            prop_assert!(seen.contains(p.name.as_str()) ^ plan.unevictable.iter().any(|u| *u == p.name));
        }
    }

    #[test]
    fn steps_applied_together_equal_steps_applied_one_by_one(view in cluster(), pick in 0usize..64) {
        let node = &view.nodes[pick % view.nodes.len()];
        if let Ok(plan) = respond(&view, &interruption(&node.instance_id), &Policy::default(), 1_000) {
            let mut one_by_one = view.clone();
            apply_plan(&mut one_by_one, &plan);
            let mut together = view.clone();
            effects::apply_steps(&mut together, &plan.steps);
            prop_assert_eq!(one_by_one, together);
        }
    }

    #[test]
    fn a_plan_applied_twice_equals_once(view in cluster(), pick in 0usize..64) {
        let node = &view.nodes[pick % view.nodes.len()];
        if let Ok(plan) = respond(&view, &interruption(&node.instance_id), &Policy::default(), 1_000) {
            let mut once = view.clone();
            apply_plan(&mut once, &plan);
            let mut twice = once.clone();
            apply_plan(&mut twice, &plan);
            prop_assert_eq!(once, twice);
        }
    }

    #[test]
    fn burstable_nodes_taken_are_idle_ones_and_handed_back_after_the_evictions(view in cluster(), pick in 0usize..64) {
        let spot: Vec<_> = view.nodes.iter().filter(|n| n.capacity_type == CapacityType::Spot).collect();
        let node = spot[pick % spot.len()];
        let plan = respond(&view, &interruption(&node.instance_id), &Policy::default(), 1_000).unwrap();
        let first_evict = plan.steps.iter().position(|s| s.kind() == "evict");
        let last_evict = plan.steps.iter().rposition(|s| s.kind() == "evict");
        for (i, step) in plan.steps.iter().enumerate() {
            let Step::WakeStandby { node: taken, retype_to } = step else { continue };
            let n = view.node(taken).expect("a node of the view");
            if n.capacity_type != CapacityType::Burstable {
                continue;
            }
            prop_assert!(retype_to.is_none() && n.has_taint("costop.io/standby"), "{:?}", step);
            prop_assert!(first_evict.is_none_or(|e| i < e), "{} taken after the first eviction", taken);
            let back = plan.steps.iter().position(|s| matches!(s, Step::ReturnStandby { node } if node == taken));
            prop_assert!(back.is_some_and(|r| last_evict.is_none_or(|e| r > e)), "{} not handed back after the evictions", taken);
        }
    }

    #[test]
    fn plans_start_with_cordon_and_never_restore_into_the_lost_pool(view in cluster(), pick in 0usize..64) {
        let spot: Vec<_> = view.nodes.iter().filter(|n| n.capacity_type == CapacityType::Spot).collect();
        let node = spot[pick % spot.len()];
        let plan = respond(&view, &interruption(&node.instance_id), &Policy::default(), 1_000).unwrap();
        prop_assert_eq!(&plan.steps[0], &Step::TaintAndCordon { node: node.name.to_string() });
        // Serving capacity is never taken away before its replacement is
        // under way: the bridge and the restore come before any eviction,
        // and the node leaves the load balancer only after its evictions.
        let at = |kind: &str| plan.steps.iter().position(|s| s.kind() == kind);
        let first_evict = at("evict");
        for before in ["bridge-traffic", "restore-capacity", "wake-standby", "claim-headroom"] {
            if let (Some(b), Some(e)) = (at(before), first_evict) {
                prop_assert!(b < e, "{} after the first eviction", before);
            }
        }
        let last_evict = plan.steps.iter().rposition(|s| s.kind() == "evict");
        // Every plan has a wave, even for a node with nothing to evict: the
        // last one takes the pods bound there after the plan.
        prop_assert!(last_evict.is_some(), "no eviction wave: {:?}", plan.steps);
        if view.workload_pods_on(&node.name).next().is_none() {
            prop_assert!(plan.steps.contains(&Step::Evict { pods: vec![], wave: 0 }), "{:?}", plan.steps);
        }
        // Surge, then evict, then take the surge back.
        if let (Some(s), Some(e)) = (at("surge"), first_evict) {
            prop_assert!(s < e, "surged after the first eviction");
        }
        if let (Some(s), Some(e)) = (at("end-surge"), last_evict) {
            prop_assert!(s > e, "surge ended before the last eviction");
        }
        prop_assert_eq!(at("surge").is_some(), at("end-surge").is_some());
        let unsurged = Policy { surge_before_evict: false, ..Policy::default() };
        let plan = respond(&view, &interruption(&node.instance_id), &unsurged, 1_000).unwrap();
        let surges = plan.steps.iter().filter(|s| matches!(s, Step::Surge { .. } | Step::EndSurge { .. })).count();
        prop_assert_eq!(surges, 0);
        if let (Some(d), Some(e)) = (at("deregister-targets"), last_evict) {
            prop_assert!(d > e, "deregistered before the evictions");
        }
        for step in &plan.steps {
            if let Step::RestoreCapacity { pools, .. } = step {
                prop_assert!(pools.iter().all(|(p, _)| p != &node.pool));
                prop_assert_eq!(pools.iter().map(|(_, n)| n).sum::<u32>(), 1);
            }
            if let Step::ClaimHeadroom { placeholders } = step {
                for name in placeholders {
                    let p = view.pods.iter().find(|p| &p.name == name).unwrap();
                    prop_assert!(p.placeholder);
                    let host = view.node(p.node.as_deref().unwrap()).unwrap();
                    prop_assert!(host.pool != node.pool, "claimed room in the doomed pool");
                }
            }
        }
    }
}

#[test]
fn unknown_instance_is_an_error_not_a_panic() {
    let err = respond(&ClusterView::default(), &interruption("i-nope"), &Policy::default(), 0).unwrap_err();
    assert_eq!(err.to_string(), "notice for instance i-nope, which is not a node of this cluster");
}

#[test]
fn rebalance_prelaunches_and_retires_the_node_once_there_is_room() {
    let view = {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        cluster().new_tree(&mut runner).unwrap().current()
    };
    let node = view.nodes.iter().find(|n| n.capacity_type == CapacityType::Spot).unwrap();
    let notice = Notice {
        instance_id: node.instance_id.to_string(),
        kind: NoticeKind::RebalanceRecommendation { notice_time: 5 },
        received_at: 5,
        source: NoticeSource::Agent,
    };
    let plan = respond(&view, &notice, &Policy::default(), 5).unwrap();
    // The node's Deployments, by their pods on it: what its drain surges.
    let mut surges: Vec<(String, u32)> = Vec::new();
    for p in view.workload_pods_on(&node.name) {
        let Some(w) = p.workload.as_deref().filter(|w| view.workload(w).is_some_and(|w| w.surgeable)) else {
            continue;
        };
        match surges.iter_mut().find(|(s, _)| s == w) {
            Some((_, n)) => *n += 1,
            None => surges.push((w.to_string(), 1)),
        }
    }
    surges.sort();
    let kinds: Vec<_> = plan.steps.iter().map(|s| s.kind()).collect();
    if surges.is_empty() {
        assert_eq!(kinds, vec!["restore-capacity", "retire-node"]);
    } else {
        assert_eq!(kinds, vec!["restore-capacity", "retire-node", "end-surge"]);
        assert_eq!(plan.steps[2], Step::EndSurge { workloads: surges.clone() });
    }
    // No cordon at the recommendation: the node is drained once its
    // replacement has joined (the others have room for its pods), within
    // the window, surged first, and ended.
    assert_eq!(
        plan.steps[1],
        Step::RetireNode {
            node: node.name.to_string(),
            after: 5 + 15 * 60_000,
            bridge: true,
            once_room: true,
            surges
        }
    );
    let off = Policy { act_on_rebalance: false, ..Policy::default() };
    assert!(respond(&view, &notice, &off, 5).unwrap().steps.is_empty());
    let no_surge = Policy { surge_before_evict: false, ..Policy::default() };
    let plan = respond(&view, &notice, &no_surge, 5).unwrap();
    assert!(matches!(&plan.steps[1], Step::RetireNode { surges, .. } if surges.is_empty()));
    assert_eq!(plan.steps.len(), 2);
}

proptest! {
    #[test]
    fn an_instance_already_going_is_forgotten_not_drained(view in cluster(), pick in 0usize..64, state in 0usize..4) {
        let node = &view.nodes[pick % view.nodes.len()];
        let code = ["instance-shutting-down", "instance-terminated", "instance-stopping", "instance-stopped"][state];
        let notice = Notice {
            instance_id: node.instance_id.to_string(),
            kind: NoticeKind::ScheduledEvent { code: code.into(), not_before: 1_000 },
            received_at: 4_000,
            source: NoticeSource::Queue,
        };
        prop_assert!(notice.kind.instance_gone());
        let plan = respond(&view, &notice, &Policy::default(), 4_000).unwrap();
        let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind()).collect();
        prop_assert_eq!(kinds[0], "taint-and-cordon");
        // Nothing to evict gracefully and nothing launched: it is forgotten.
        prop_assert!(!kinds.iter().any(|k| ["evict", "surge", "restore-capacity", "wake-standby"].contains(k)), "{:?}", kinds);
        let forget = kinds.iter().position(|k| *k == "forget-node");
        prop_assert!(forget.is_some(), "{:?}", kinds);
        if node.in_load_balancer {
            let dereg = kinds.iter().position(|k| *k == "deregister-targets");
            prop_assert!(dereg.is_some_and(|d| Some(d) < forget), "{:?}", kinds);
        }
        // Its pods wait for room elsewhere in the expected view.
        let mut after = view.clone();
        effects::apply_plan(&mut after, &plan);
        prop_assert!(after.node(&node.name).is_none());
        prop_assert_eq!(after.workload_pods_on(&node.name).count(), 0);
        // A scheduled retirement is still answered in full.
        let retire = Notice { kind: NoticeKind::ScheduledEvent { code: "instance-retirement".into(), not_before: 600_000 }, ..notice };
        prop_assert!(!retire.kind.instance_gone());
        let plan = respond(&view, &retire, &Policy::default(), 4_000).unwrap();
        prop_assert!(!plan.steps.iter().any(|s| s.kind() == "forget-node"));
    }
}

/// A node whose replacement was launched early, on its rebalance
/// recommendation, gets a second one on its interruption when that first
/// one no longer gives the room (it was reclaimed too, or moved): here its
/// volume-bound pods find no room in their zone.
#[test]
fn an_early_replacement_that_no_longer_gives_room_is_launched_again() {
    let pool = |t: &str, z: &str| PoolView {
        id: PoolId::new(t, z),
        spot_price: 0.05,
        on_demand_price: 0.19,
        interruptions_per_day: 0.1,
        launchable: true,
        last_interruption: None,
    };
    let node = |i: usize, t: &str, z: &str| NodeView {
        name: format!("node-{i}").into(),
        instance_id: format!("i-{i}").into(),
        pool: PoolId::new(t, z),
        capacity_type: CapacityType::Spot,
        allocatable: Resources::new(4000, 15000),
        price_per_hour: 0.05,
        unschedulable: false,
        taints: vec![],
        ready: true,
        in_load_balancer: true,
        fallback: false,
    };
    let pod = |i: usize| PodView {
        name: format!("db-{i}").into(),
        workload: Some("db".into()),
        node: Some("node-0".into()),
        requests: Resources::new(1500, 2048),
        priority: 0,
        ready: true,
        placeholder: false,
        daemon: false,
        volumes: vec![VolumeView {
            volume_id: format!("vol-{i}").into(),
            zone: "us-east-1a".into(),
            attached_to: Some("node-0".into()),
        }],
    };
    let mut view = ClusterView {
        nodes: vec![node(0, "m5.xlarge", "us-east-1a"), node(1, "m5.xlarge", "us-east-1b")].into(),
        pods: vec![pod(0), pod(1)].into(),
        workloads: vec![WorkloadView {
            name: "db".into(),
            replicas: 2,
            min_available: 1,
            bridged: false,
            surgeable: false,
        }],
        pools: vec![
            pool("m5.xlarge", "us-east-1a"),
            pool("c5.xlarge", "us-east-1a"),
            pool("m5.xlarge", "us-east-1b"),
            pool("r5.xlarge", "us-east-1c"),
        ],
        ..ClusterView::default()
    };
    let restores = |view: &ClusterView| -> Vec<(String, Vec<(PoolId, u32)>)> {
        let plan = respond(view, &interruption("i-0"), &Policy::default(), 1_000).unwrap();
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::RestoreCapacity { key, pools } => Some((key.clone(), pools.clone())),
                _ => None,
            })
            .collect()
    };
    // Nothing launched before: the replacement goes to the volumes' zone,
    // and a second with it: the zone has no other node, and one node's
    // room holds the pinned pods but not a node's slack besides.
    let in_zone_a = vec![(PoolId::new("c5.xlarge", "us-east-1a"), 1)];
    let first = restores(&view);
    assert_eq!(
        first,
        vec![
            (respond::restore_key("i-0"), in_zone_a.clone()),
            (respond::second_restore_key("i-0"), in_zone_a.clone())
        ]
    );
    // With two replacements on their way to the zone (another response's
    // launches, not nodes yet), the zone has room: one replacement only.
    let mut with_sibling = view.clone();
    with_sibling.launching.insert(respond::restore_key("i-4"), in_zone_a.clone());
    with_sibling.launching.insert(respond::second_restore_key("i-4"), in_zone_a.clone());
    assert_eq!(restores(&with_sibling), vec![(respond::restore_key("i-0"), in_zone_a.clone())]);
    // Launches to another zone give this one no room.
    let mut elsewhere = view.clone();
    let in_zone_b = vec![(PoolId::new("m5.xlarge", "us-east-1b"), 2)];
    elsewhere.launching.insert(respond::restore_key("i-4"), in_zone_b);
    assert_eq!(restores(&elsewhere), first);
    // Nor does a move-back's launch: it replaces a node that stays, not
    // tainted for an interruption, until it is drained.
    let mut moving = with_sibling.clone();
    moving.nodes =
        (view.nodes.iter().cloned()).chain([node(4, "m5.xlarge", "us-east-1a")]).collect::<Vec<_>>().into();
    let moving = moving.with_lookups();
    assert_eq!(restores(&moving), first);
    // No pool of the zone can launch: the first goes elsewhere, and no
    // second follows it there.
    let mut closed = view.clone();
    closed.pools.iter_mut().filter(|p| p.id.zone == "us-east-1a").for_each(|p| p.launchable = false);
    let closed = restores(&closed);
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_ne!(closed[0].1[0].0.zone, "us-east-1a", "{closed:?}");
    // Launched early, and gone: the zone has no room for the pinned pods
    // (node-1 is in another zone), so a second one is launched there.
    view.capacity_requests.insert(respond::restore_key("i-0"));
    let again = restores(&view);
    assert_eq!(
        again,
        vec![(respond::second_restore_key("i-0"), vec![(PoolId::new("c5.xlarge", "us-east-1a"), 1)])]
    );
    // Launched early and there, in the zone, with room for the pinned pods
    // (3 of its 4 cores) but not for a node's slack besides: one more.
    view.nodes.push(node(2, "c5.xlarge", "us-east-1a"));
    view = view.with_lookups();
    assert_eq!(restores(&view), again);
    // Two there: room for the pods and the slack; nothing more.
    view.nodes.push(node(3, "c5.xlarge", "us-east-1a"));
    view = view.with_lookups();
    assert_eq!(restores(&view), vec![]);
    // Pods that could run anywhere, on the node or waiting, count too: the
    // scheduler puts them on the emptiest nodes, the zone's fresh ones.
    let mut web = pod(9);
    web.name = "web-0".into();
    web.workload = Some("web".into());
    web.node = None;
    web.volumes.clear();
    // A pod waiting whose volume is in another zone cannot run here, and
    // does not count.
    let mut elsewhere_db = pod(8);
    elsewhere_db.node = None;
    elsewhere_db.volumes[0].zone = "us-east-1b".into();
    let mut others = view.clone();
    others.pods = view.pods.iter().cloned().chain([elsewhere_db.into()]).collect::<Vec<_>>().into();
    assert_eq!(restores(&others.with_lookups()), vec![]);
    // A Deployment surged for the node counts twice (its surge's pods and
    // those started for the evicted ones): 3 + 2 × 0.6 cores and a node's
    // slack do not fit the 8 cores there; once only, they would.
    let mut api = pod(7);
    api.name = "api-0".into();
    api.workload = Some("api".into());
    api.requests = Resources::new(600, 512);
    api.volumes.clear();
    let mut surging = view.clone();
    surging.pods = view.pods.iter().cloned().chain([api.into()]).collect::<Vec<_>>().into();
    surging.workloads.push(WorkloadView {
        name: "api".into(),
        replicas: 3,
        min_available: 2,
        bridged: false,
        surgeable: true,
    });
    assert_eq!(restores(&surging.with_lookups()), again);
    view.pods = view.pods.iter().cloned().chain([web.into()]).collect::<Vec<_>>().into();
    view = view.with_lookups();
    assert_eq!(restores(&view), again);
}

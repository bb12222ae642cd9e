//! Moving Spot capacity back to cheap pools.
//!
//! A replacement goes where it can launch when it is needed: after a
//! reclaim, or while the cheap pools cannot launch, that is often a dear
//! pool, and nothing else brings it back. Between responses costop moves
//! one node at a time from a pool whose risk-adjusted price is well above
//! the best pool that can take it now, or every on-demand fallback node at
//! once when Spot can take them again: the replacement is launched first,
//! and the node is drained within its budgets (surged first) and ended
//! only once the other nodes have room for its pods (the steps a
//! rebalance recommendation uses).

use crate::model::{CapacityType, ClusterView, NodeView, PoolId, Resources, INTERRUPTION_TAINT};
use crate::notice::NoticeKey;
use crate::plan::{Plan, Step};
use crate::policy::Policy;
use crate::pools::{choose_pools, in_cooldown, pool_cap, pool_score};
use crate::respond::{restore_key, retirement};
use crate::time::{Millis, MINUTE};
use std::collections::BTreeMap;

/// The notice kind label of a move: the plan is recorded and resumed like
/// a response to a notice, under this kind.
pub const MOVE_BACK_KIND: &str = "move-back";

/// Longest a moved node waits for its replacement to join (a Spot node
/// joins in well under a minute; 30–40 s on EKS): without room for its
/// pods on the other nodes by then, the node stays where it is.
pub const MOVE_SETTLE: Millis = 5 * MINUTE;

/// What holds moves back besides the cluster itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Held<'a> {
    /// Nodes open responses are retiring: while one stands nothing moves
    /// (see `moves_allowed`).
    pub retiring: &'a [String],
    /// Nodes whose last move ended without them (no room in time, or the
    /// drain was refused and the node given back): not moved again for a
    /// while, so a move that cannot finish is not tried every round.
    pub resting: &'a [String],
}

/// One move: a Spot node, the pool it leaves and the pool it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The node to replace.
    pub node: String,
    /// Its EC2 instance id.
    pub instance_id: String,
    /// Its pool.
    pub from: PoolId,
    /// The pool its replacement goes to.
    pub to: PoolId,
    /// Risk-adjusted price of `to` over that of `from` (below 1).
    pub score_ratio: f64,
}

/// Whether the nodes that take pods, other than `node` and the other
/// nodes being retired (`retiring`), have free room for the workload pods
/// on `node`, the pods waiting for room, and those still on the retiring
/// nodes already cordoned (both CPU and memory, summed: a move waits for
/// its replacement by this). A pool whose nodes all got a rebalance
/// recommendation so drains onto its replacements, not onto its own
/// nodes' room.
pub fn room_elsewhere(view: &ClusterView, node: &str, retiring: &[String]) -> bool {
    let retiring_here = |name: &str| retiring.iter().any(|r| r == name);
    let free = (view.nodes.iter())
        .filter(|n| n.name != node && n.accepts_pods() && !retiring_here(&n.name))
        .fold(Resources::default(), |acc, n| acc.plus(&view.free_on(n)));
    let waiting = view.unbound_pods().filter(|p| !p.daemon && !p.placeholder);
    let draining = (view.nodes.iter())
        .filter(|n| n.name != node && n.unschedulable && retiring_here(&n.name))
        .flat_map(|n| view.workload_pods_on(&n.name));
    let need = (view.workload_pods_on(node).chain(waiting).chain(draining))
        .fold(Resources::default(), |acc, p| acc.plus(&p.requests));
    free.fits(&need)
}

/// The one Spot node whose move saves the most, if any saves at least
/// `policy.move_back_saving` of its pool's risk-adjusted price.
///
/// Nothing moves while a pod waits for room (the cluster is short, not
/// dear) or while a node an open response retires still stands (see
/// `moves_allowed`), from a node that is cordoned, being answered or not Ready, or
/// into a pool that cannot launch, is cooling down after a reclaim, is
/// dearer than on-demand, or would go over the cap on one pool's share. A
/// node holding a pod with a volume only moves within its zone.
pub fn choose_move(view: &ClusterView, policy: &Policy, now: Millis, held: Held) -> Option<Move> {
    if !moves_allowed(view, policy, held.retiring) || view.unbound_pods().any(|p| !p.placeholder && !p.daemon)
    {
        return None;
    }
    let spot = |n: &&NodeView| n.capacity_type == CapacityType::Spot && !n.unschedulable;
    let layout = spot_layout(view);
    let targets: Vec<crate::PoolView> =
        view.pools.iter().filter(|p| p.launchable && !in_cooldown(p, policy, now)).cloned().collect();
    if targets.is_empty() {
        return None;
    }
    let cheapest = targets.iter().map(|p| pool_score(p, policy)).fold(f64::INFINITY, f64::min);
    let worth = |n: &NodeView| {
        view.pool(&n.pool)
            .is_some_and(|p| cheapest <= pool_score(p, policy) * (1.0 - policy.move_back_saving))
    };
    let candidates: Vec<&NodeView> = view
        .nodes
        .iter()
        .filter(spot)
        .filter(|n| {
            n.ready && !n.has_taint(INTERRUPTION_TAINT) && !held.resting.contains(&n.name.to_string())
        })
        .filter(|n| worth(n))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    // Pods per candidate node, and whether one has a volume.
    let mut candidates: Vec<(&NodeView, usize, bool)> = (candidates.into_iter())
        .map(|n| {
            let pods = view.workload_pods_on(&n.name);
            let (count, zonal) = pods.fold((0, false), |(c, z), p| (c + 1, z || !p.volumes.is_empty()));
            (n, count, zonal)
        })
        .collect();
    candidates.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.name.cmp(&b.0.name)));
    let cap = pool_cap(policy, layout.values().sum());
    let mut best: Option<Move> = None;
    // Nodes of one pool are alike but for their volumes: one look per
    // pool and kind, the node with the fewest pods moves.
    let mut seen: Vec<(&PoolId, bool)> = Vec::new();
    for (node, _, zonal) in candidates {
        if seen.contains(&(&node.pool, zonal)) {
            continue;
        }
        seen.push((&node.pool, zonal));
        let Some(from) = view.pool(&node.pool) else { continue };
        let from_score = pool_score(from, policy);
        let mut others = layout.clone();
        if let Some(c) = others.get_mut(&node.pool) {
            *c -= 1;
        }
        let allowed: Vec<crate::PoolView> =
            targets.iter().filter(|p| !zonal || p.id.zone == node.pool.zone).cloned().collect();
        let chosen = choose_pools(&allowed, &others, 1, std::slice::from_ref(&node.pool), policy, now);
        let Some(to) = chosen.keys().next().and_then(|id| view.pool(id)) else { continue };
        if others.get(&to.id).copied().unwrap_or(0) >= cap {
            continue;
        }
        let ratio = pool_score(to, policy) / from_score.max(f64::MIN_POSITIVE);
        if ratio > 1.0 - policy.move_back_saving {
            continue;
        }
        if best.as_ref().is_none_or(|b| ratio < b.score_ratio) {
            best = Some(Move {
                node: node.name.to_string(),
                instance_id: node.instance_id.to_string(),
                from: node.pool.clone(),
                to: to.id.clone(),
                score_ratio: ratio,
            });
        }
    }
    best
}

/// Whether anything may move now: moves are on, and no node an open
/// response is retiring (`retiring`: a rebalance recommendation's, whose
/// replacement was launched ahead of its end, or a move's) still stands:
/// the replacement's room is spoken for, and an empty replacement is
/// exactly what a move would pick first. A retirement that ended without
/// its node (no room in time) no longer holds moves back.
fn moves_allowed(view: &ClusterView, policy: &Policy, retiring: &[String]) -> bool {
    policy.move_back_saving < 1.0 && !retiring.iter().any(|r| view.node(r).is_some())
}

/// The moves worth making now: every on-demand fallback node that can go
/// back to Spot (see [`choose_fallback_moves`]), all at once, or else the
/// one Spot move (see [`choose_move`]).
pub fn choose_moves(view: &ClusterView, policy: &Policy, now: Millis, held: Held) -> Vec<Move> {
    let fallbacks = choose_fallback_moves(view, policy, now, held);
    if !fallbacks.is_empty() {
        return fallbacks;
    }
    choose_move(view, policy, now, held).into_iter().collect()
}

/// On-demand nodes launched when no Spot pool could take the pods (the
/// node autoscaler's fallback: [`NodeView::fallback`]), moved back to Spot as soon as pools can
/// launch again, all at once: each to the pool a replacement would go to
/// (`choose_pools`, the others' moves counted), when that pool's
/// risk-adjusted price is at least `move_back_saving` below the node's
/// on-demand price. The cluster autoscaler never does this (it only
/// removes nodes it finds unneeded), and a drain within budgets alone
/// fails requests of workloads that run close to their capacity: a move
/// surges first (see [`Step::RetireNode`]). Other on-demand nodes (the
/// floor under critical pods, warm standbys) stay; so do cordoned nodes,
/// nodes being answered, nodes not Ready and nodes resting after a move
/// that could not finish. A node holding a pod with a
/// volume moves only within its zone. Pods waiting for room do not hold
/// these moves back (as they do a Spot move): the Spot node comes first
/// and is room for them, and the on-demand node goes only once the other
/// nodes can hold its pods and the waiting ones.
pub fn choose_fallback_moves(view: &ClusterView, policy: &Policy, now: Millis, held: Held) -> Vec<Move> {
    let fallback = |n: &&NodeView| {
        n.capacity_type == CapacityType::OnDemand
            && n.fallback
            && n.ready
            && !n.unschedulable
            && !n.has_taint(INTERRUPTION_TAINT)
            && !held.resting.iter().any(|r| *r == n.name.as_str())
    };
    if !view.nodes.iter().any(|n| fallback(&n)) || !moves_allowed(view, policy, held.retiring) {
        return Vec::new();
    }
    let mut layout = spot_layout(view);
    let mut moves = Vec::new();
    for node in view.nodes.iter().filter(fallback) {
        let on_demand = view.pool(&node.pool).map_or(node.price_per_hour, |p| p.on_demand_price);
        let zonal = view.workload_pods_on(&node.name).any(|p| !p.volumes.is_empty());
        let allowed: Vec<crate::PoolView> =
            view.pools.iter().filter(|p| !zonal || p.id.zone == node.pool.zone).cloned().collect();
        // Where a replacement would go: under the cap where a pool can
        // take it, the other moves counted.
        let chosen = choose_pools(&allowed, &layout, 1, &[], policy, now);
        let Some(to) = chosen.keys().next().and_then(|id| view.pool(id)) else { continue };
        let ratio = pool_score(to, policy) / on_demand.max(f64::MIN_POSITIVE);
        if ratio > 1.0 - policy.move_back_saving {
            continue;
        }
        *layout.entry(to.id.clone()).or_default() += 1;
        moves.push(Move {
            node: node.name.to_string(),
            instance_id: node.instance_id.to_string(),
            from: node.pool.clone(),
            to: to.id.clone(),
            score_ratio: ratio,
        });
    }
    moves
}

/// Spot nodes that take pods, per pool.
fn spot_layout(view: &ClusterView) -> BTreeMap<PoolId, u32> {
    let mut layout: BTreeMap<PoolId, u32> = BTreeMap::new();
    for n in view.nodes.iter().filter(|n| n.capacity_type == CapacityType::Spot && !n.unschedulable) {
        *layout.entry(n.pool.clone()).or_default() += 1;
    }
    layout
}

/// The plan that carries a move out: launch the replacement in the
/// cheaper pool (under the node's restore key, so an interruption of the
/// node meanwhile launches nothing more), then, once the other nodes have
/// room for its pods (within [`MOVE_SETTLE`]), drain the node within
/// budgets (its Deployments surged first, see [`Step::RetireNode`]) and
/// end it, unless an interruption is being answered for it.
pub fn move_plan(m: &Move, view: &ClusterView, policy: &Policy, now: Millis) -> Plan {
    let mut steps =
        vec![Step::RestoreCapacity { key: restore_key(&m.instance_id), pools: vec![(m.to.clone(), 1)] }];
    steps.extend(retirement(view, &m.node, now + MOVE_SETTLE, policy));
    Plan {
        notice: NoticeKey {
            instance_id: m.instance_id.clone(),
            kind: MOVE_BACK_KIND.into(),
            stated_time: now,
        },
        node: m.node.clone(),
        deadline: None,
        steps,
        unevictable: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodView, PoolView, Resources, VolumeView};
    use crate::Name;

    fn pool(t: &str, z: &str, price: f64) -> PoolView {
        PoolView {
            id: PoolId::new(t, z),
            spot_price: price,
            on_demand_price: 1.0,
            interruptions_per_day: 0.0,
            launchable: true,
            last_interruption: None,
        }
    }

    fn node(i: u32, pool: &PoolView) -> NodeView {
        NodeView {
            name: Name::from(format!("n{i}")),
            instance_id: Name::from(format!("i-{i}")),
            pool: pool.id.clone(),
            capacity_type: CapacityType::Spot,
            allocatable: Resources::new(4000, 16384),
            price_per_hour: pool.spot_price,
            unschedulable: false,
            taints: vec![],
            ready: true,
            in_load_balancer: true,
            fallback: false,
        }
    }

    fn pod(name: &str, node: Option<&str>) -> PodView {
        PodView {
            name: Name::from(name),
            workload: Some(Name::from("web")),
            node: node.map(Name::from),
            requests: Resources::new(1000, 1024),
            priority: 0,
            ready: node.is_some(),
            placeholder: false,
            daemon: false,
            volumes: vec![],
        }
    }

    /// Six nodes: four in a cheap pool, two in a dear one; a third pool as cheap as the first.
    fn drifted() -> ClusterView {
        let (cheap, cheap2, dear) = (pool("a", "z1", 0.3), pool("a", "z2", 0.3), pool("a", "z3", 0.9));
        let mut nodes: Vec<NodeView> = (0..2).map(|i| node(i, &cheap)).collect();
        nodes.extend((2..4).map(|i| node(i, &cheap2)));
        nodes.extend((4..6).map(|i| node(i, &dear)));
        let pods = vec![pod("p4", Some("n4")), pod("p5a", Some("n5")), pod("p5b", Some("n5"))];
        ClusterView {
            nodes: nodes.into(),
            pods: pods.into(),
            pools: vec![cheap, cheap2, dear],
            ..ClusterView::default()
        }
    }

    fn policy() -> Policy {
        Policy { max_pool_share: 0.5, ..Policy::default() }
    }

    #[test]
    fn a_node_in_a_dear_pool_moves_to_the_cheapest_pool_with_room() {
        let m = choose_move(&drifted(), &policy(), 0, Held::default()).expect("a move");
        // The dear pool's node with the fewest pods moves, to a cheap pool under the cap (3 of 6).
        assert_eq!(m.node, "n4");
        assert_eq!(m.from, PoolId::new("a", "z3"));
        assert!(m.to.zone == "z1" || m.to.zone == "z2", "{m:?}");
        assert!((m.score_ratio - 1.0 / 3.0).abs() < 1e-9);
        let plan = move_plan(&m, &drifted(), &policy(), 1_000);
        assert_eq!(plan.notice.kind, MOVE_BACK_KIND);
        assert!(
            matches!(&plan.steps[0], Step::RestoreCapacity { key, pools } if key == "restore:i-4" && pools == &vec![(m.to.clone(), 1)])
        );
        assert!(
            matches!(&plan.steps[1], Step::RetireNode { node, after, .. } if node == "n4" && *after == 1_000 + MOVE_SETTLE)
        );
    }

    #[test]
    fn nothing_moves_for_a_small_saving_or_into_a_full_pool() {
        let mut view = drifted();
        view.pools[2].spot_price = 0.33;
        for n in view.nodes.iter_mut().filter(|n| n.pool.zone == "z3") {
            n.price_per_hour = 0.33;
        }
        assert_eq!(
            choose_move(&view, &policy(), 0, Held::default()),
            None,
            "a 9 % saving is under the 15 % default"
        );
        // Cap of one pool at a third of six: both cheap pools hold two already.
        let tight = Policy { max_pool_share: 0.34, ..Policy::default() };
        assert_eq!(choose_move(&drifted(), &tight, 0, Held::default()), None);
    }

    #[test]
    fn nothing_moves_while_pods_wait_or_into_pools_that_cannot_take_it() {
        let mut waiting = drifted();
        waiting.pods.push(pod("pending", None).into());
        assert_eq!(choose_move(&waiting, &policy(), 0, Held::default()), None);

        let mut closed = drifted();
        closed.pools[0].launchable = false;
        closed.pools[1].last_interruption = Some(0);
        assert_eq!(
            choose_move(&closed, &policy(), MINUTE, Held::default()),
            None,
            "one pool cannot launch, the other cools down"
        );
        assert!(
            choose_move(&closed, &policy(), 10 * MINUTE, Held::default()).is_some(),
            "after the cooldown it can"
        );

        let off = Policy { move_back_saving: 1.0, ..policy() };
        assert_eq!(choose_move(&drifted(), &off, 0, Held::default()), None);
    }

    #[test]
    fn a_node_being_answered_or_already_replaced_stays() {
        let mut view = drifted();
        for n in view.nodes.iter_mut().filter(|n| n.pool.zone == "z3") {
            n.taints.push(crate::Taint { key: INTERRUPTION_TAINT.into(), effect: "NoSchedule".into() });
        }
        assert_eq!(choose_move(&view, &policy(), 0, Held::default()), None);
        // Being retired by open responses (moves of theirs, say).
        let view = drifted();
        let retiring = ["n4".to_string(), "n5".to_string()];
        assert_eq!(choose_move(&view, &policy(), 0, Held { retiring: &retiring, ..Held::default() }), None);
    }

    #[test]
    fn nothing_moves_while_a_replacement_launched_early_waits_for_its_node() {
        // n0, in a cheap pool, had a rebalance recommendation: its
        // replacement runs, empty, and is spoken for until n0 is gone.
        let mut view = drifted();
        let retiring = ["n0".to_string()];
        let held = Held { retiring: &retiring, ..Held::default() };
        assert_eq!(choose_move(&view, &policy(), 0, held), None);
        // Once n0 is gone the dear pool's nodes may move again.
        view.nodes = view.nodes.iter().filter(|n| n.name != "n0").cloned().collect::<Vec<_>>().into();
        assert!(choose_move(&view, &policy(), 0, held).is_some());
        // So they may once its retirement ended without it (no room in
        // time): its restore key alone holds nothing back.
        let mut view = drifted();
        view.capacity_requests.insert(restore_key("i-0"));
        assert!(choose_move(&view, &policy(), 0, Held::default()).is_some());
    }

    #[test]
    fn room_elsewhere_counts_free_room_on_the_nodes_that_take_pods() {
        let mut view = drifted();
        // n5's two pods (2 CPU) fit in the five other nodes' room.
        assert!(room_elsewhere(&view, "n5", &[]));
        for n in view.nodes.iter_mut().filter(|n| n.name != "n5") {
            n.unschedulable = true;
        }
        assert!(!room_elsewhere(&view, "n5", &[]), "cordoned nodes take no pods");
        view.nodes[0].unschedulable = false;
        assert!(room_elsewhere(&view, "n5", &[]));
        // A pending pod needs room too: 4 CPU free on n0, 3 wanted, then 5.
        view.pods.push(pod("waiting", None).into());
        assert!(room_elsewhere(&view, "n5", &[]));
        view.pods.push(pod("waiting2", None).into());
        view.pods.push(pod("waiting3", None).into());
        assert!(!room_elsewhere(&view, "n5", &[]));
    }

    #[test]
    fn room_elsewhere_leaves_out_the_other_nodes_being_retired() {
        let view = drifted();
        assert!(room_elsewhere(&view, "n5", &[]));
        // Every other node is being retired too: none of their room counts.
        let others: Vec<String> =
            (view.nodes.iter()).filter(|n| n.name != "n5").map(|n| n.name.to_string()).collect();
        assert!(!room_elsewhere(&view, "n5", &others));
        // One node left out of the retirements: its room counts again, but
        // a retiring node already cordoned brings its pods as need.
        let all_but_n0: Vec<String> = others.iter().filter(|n| *n != "n0").cloned().collect();
        assert!(room_elsewhere(&view, "n5", &all_but_n0));
        // n4 drains three pods of 1 CPU: with n5's two, more than n0's 4 free.
        let mut draining = view.clone();
        draining.pods.push(pod("p4b", Some("n4")).into());
        draining.pods.push(pod("p4c", Some("n4")).into());
        assert!(room_elsewhere(&draining, "n5", &all_but_n0), "n4 not cordoned yet: it looks for itself");
        for n in draining.nodes.iter_mut().filter(|n| n.name != "n0" && n.name != "n5") {
            n.unschedulable = true;
        }
        assert!(!room_elsewhere(&draining, "n5", &all_but_n0));
    }

    /// `drifted` with n4 and n5 on-demand fallbacks (same type and zones),
    /// and n3 an on-demand node of another kind (a standby woken, or the
    /// floor under critical pods).
    fn with_fallbacks() -> ClusterView {
        let mut view = drifted();
        for n in view.nodes.iter_mut() {
            if n.name == "n4" || n.name == "n5" || n.name == "n3" {
                n.capacity_type = CapacityType::OnDemand;
                n.price_per_hour = 1.0;
            }
            n.fallback = n.name == "n4" || n.name == "n5";
        }
        view
    }

    #[test]
    fn on_demand_fallbacks_all_move_back_to_spot_at_once_but_no_other_on_demand_node() {
        let view = with_fallbacks();
        // Spot nodes z1 2, z2 1; with the two fallbacks a cap of 3 (0.7 of
        // five): both move, one to each cheap pool.
        let roomy = Policy { max_pool_share: 0.7, ..Policy::default() };
        let moves = choose_moves(&view, &roomy, 0, Held::default());
        let nodes: Vec<&str> = moves.iter().map(|m| m.node.as_str()).collect();
        assert_eq!(nodes, ["n4", "n5"], "{moves:?}");
        assert!(moves.iter().all(|m| m.to.zone != "z3" && m.score_ratio < 0.5), "{moves:?}");
        // At half of five (2), z1 is full and z2 takes one: n5 stays, the
        // dear pool (0.9 of 1.0 on demand) saving too little.
        let moved: Vec<String> =
            choose_moves(&view, &policy(), 0, Held::default()).into_iter().map(|m| m.node).collect();
        assert_eq!(moved, ["n4"]);
        // Each plan launches in Spot and retires its node, surged first.
        let plan = move_plan(&moves[0], &view, &policy(), 0);
        assert!(matches!(&plan.steps[0], Step::RestoreCapacity { key, .. } if key == "restore:i-4"));
        assert!(matches!(&plan.steps[1], Step::RetireNode { node, once_room: true, .. } if node == "n4"));
    }

    #[test]
    fn fallbacks_wait_for_retirements_and_launchable_pools_not_for_pending_pods() {
        // A pod waiting for room holds a Spot move back, not a fallback's.
        let mut waiting = with_fallbacks();
        waiting.pods.push(pod("pending", None).into());
        assert_eq!(choose_fallback_moves(&waiting, &policy(), 0, Held::default()).len(), 1);
        let retiring = ["n2".to_string()];
        let held = Held { retiring: &retiring, ..Held::default() };
        assert!(choose_fallback_moves(&waiting, &policy(), 0, held).is_empty());
        // A fallback resting after a move that could not finish stays;
        // the other takes its place under the cap.
        let resting = ["n4".to_string()];
        let held = Held { resting: &resting, ..Held::default() };
        let moved: Vec<String> =
            choose_fallback_moves(&waiting, &policy(), 0, held).into_iter().map(|m| m.node).collect();
        assert_eq!(moved, ["n5"]);
        let mut closed = with_fallbacks();
        for p in closed.pools.iter_mut() {
            p.launchable = false;
        }
        assert!(choose_fallback_moves(&closed, &policy(), 0, Held::default()).is_empty());
        // A fallback whose pods hold volumes stays in its zone: z3 has only
        // the dear pool (0.9 of 1.0 on demand, under the 15 % saving).
        let mut zonal = with_fallbacks();
        pin_pods_to_z3(&mut zonal);
        assert!(choose_fallback_moves(&zonal, &policy(), 0, Held::default()).is_empty());
    }

    /// Give every pod of `view` a volume in zone z3.
    fn pin_pods_to_z3(view: &mut ClusterView) {
        for p in view.pods.iter_mut() {
            std::sync::Arc::make_mut(p).volumes.push(VolumeView {
                volume_id: "vol-1".into(),
                zone: "z3".into(),
                attached_to: None,
            });
        }
    }

    #[test]
    fn a_node_holding_a_volume_moves_only_within_its_zone() {
        let mut view = drifted();
        pin_pods_to_z3(&mut view);
        assert_eq!(choose_move(&view, &policy(), 0, Held::default()), None, "no cheaper pool in z3");
        let cheap_z3 = pool("b", "z3", 0.3);
        view.pools.push(cheap_z3);
        let m = choose_move(&view, &policy(), 0, Held::default()).expect("a move within z3");
        assert_eq!(m.to, PoolId::new("b", "z3"));
    }
}

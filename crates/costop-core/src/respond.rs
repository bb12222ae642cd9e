//! `respond`: from a notice to a plan.

use crate::model::{CapacityType, ClusterView, NodeView, PodView, PoolId, Resources, INTERRUPTION_TAINT};
use crate::notice::{Notice, NoticeKind};
use crate::plan::{Plan, Step};
use crate::policy::Policy;
use crate::pools::choose_pools;
use crate::time::{Millis, MINUTE};
use rustc_hash::FxHashSet as HashSet;
use std::collections::BTreeMap;

/// Why no plan could be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// The notice names an instance the cluster does not know.
    #[error("notice for instance {0}, which is not a node of this cluster")]
    UnknownInstance(String),
}

/// Plan the response to `notice`.
///
/// An interruption or scheduled event gets the full response, in an order
/// that never takes serving capacity away before its replacement is on the
/// way: taint and cordon; bridge traffic to functions; restore capacity in
/// another pool; take idle burstable nodes for what the room already there
/// cannot hold (`crate::burstable`); wake warm standbys for what neither
/// free room, burstable room nor the restored capacity covers; claim
/// placeholder room; move volumes; evict in
/// waves that keep every disruption budget; only then deregister the node
/// from load balancers; return standbys and burstable nodes, shift
/// traffic back, restore headroom. A rebalance recommendation, if the
/// policy acts on it, launches the replacement and retires the node as
/// soon as the replacement gives its pods room (see [`Step::RetireNode`]):
/// no cordon before the replacement has joined.
pub fn respond(view: &ClusterView, notice: &Notice, policy: &Policy, now: Millis) -> Result<Plan, PlanError> {
    let node = view
        .node_by_instance(&notice.instance_id)
        .ok_or_else(|| PlanError::UnknownInstance(notice.instance_id.clone()))?;
    let mut plan = Plan {
        notice: notice.key(),
        node: node.name.to_string(),
        deadline: notice.deadline(),
        steps: Vec::new(),
        unevictable: Vec::new(),
    };
    match notice.kind {
        NoticeKind::RebalanceRecommendation { .. } => {
            if policy.act_on_rebalance && node.capacity_type == CapacityType::Spot {
                push_restore_capacity(&mut plan, view, node, &restore_key(&node.instance_id), policy, now);
                if plan.steps_of("restore-capacity").next().is_some() {
                    let after = now.saturating_add(policy.rebalance_window_minutes * MINUTE);
                    plan.steps.extend(retirement(view, &node.name, after, policy));
                }
            }
        }
        NoticeKind::ScheduledEvent { .. } if notice.kind.instance_gone() => {
            plan_gone_instance(&mut plan, view, node, policy);
        }
        NoticeKind::SpotInterruption { .. } | NoticeKind::ScheduledEvent { .. } => {
            plan_full_response(&mut plan, view, node, policy, now);
        }
    }
    Ok(plan)
}

/// The instance is already going (the state change came, the notice did
/// not): nothing is left to evict gracefully. Cordon (the Node still takes
/// pods until it is deleted), bridge the displaced workloads, take the node
/// out of the load balancers at once (its targets fail), and forget it so
/// its pods are replaced now. No capacity is launched: a node lost without
/// notice is replaced as any lost node is, by its Auto Scaling group or the
/// node autoscaler for the pending pods.
fn plan_gone_instance(plan: &mut Plan, view: &ClusterView, node: &NodeView, policy: &Policy) {
    plan.steps.push(Step::TaintAndCordon { node: node.name.to_string() });
    let displaced: Vec<&PodView> = view.workload_pods_on(&node.name).collect();
    plan_bridge(plan, view, &displaced, policy);
    if node.in_load_balancer {
        plan.steps.push(Step::DeregisterTargets { node: node.name.to_string() });
    }
    plan.steps.push(Step::ForgetNode { node: node.name.to_string() });
    push_unbridge(plan);
}

/// Shift back what the plan bridged, once its workloads are whole.
fn push_unbridge(plan: &mut Plan) {
    let bridged: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::BridgeTraffic { workloads } => Some(workloads.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    if !bridged.is_empty() {
        plan.steps.push(Step::UnbridgeTraffic { workloads: bridged });
    }
}

fn plan_full_response(plan: &mut Plan, view: &ClusterView, node: &NodeView, policy: &Policy, now: Millis) {
    plan.steps.push(Step::TaintAndCordon { node: node.name.to_string() });
    let displaced: Vec<&PodView> = view.workload_pods_on(&node.name).collect();
    plan_bridge(plan, view, &displaced, policy);
    let need = displaced.iter().fold(Resources::default(), |acc, p| acc.plus(&p.requests));

    // Room elsewhere: free space plus placeholders, on nodes outside the
    // doomed pool (a reclaim can take the whole pool), less what pods
    // already waiting (evicted by this or other responses) will take first.
    let safe_nodes: Vec<&NodeView> = view
        .nodes
        .iter()
        .filter(|n| n.name != node.name && n.pool != node.pool && n.accepts_pods())
        .collect();
    let safe_names: HashSet<&str> = safe_nodes.iter().map(|n| n.name.as_str()).collect();
    let free = safe_nodes.iter().fold(Resources::default(), |acc, n| acc.plus(&view.free_on(n)));
    let waiting = view
        .unbound_pods()
        .filter(|p| !p.placeholder && !p.daemon)
        .fold(Resources::default(), |acc, p| acc.plus(&p.requests));
    let mut room = free.minus(&waiting);
    let mut placeholders: Vec<&PodView> = view
        .placeholder_pods()
        .filter(|p| p.node.as_deref().is_some_and(|n| safe_names.contains(n)))
        .collect();
    placeholders.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));

    // A replacement launched early (on a rebalance recommendation) is a
    // node of the cluster by now, its room counted above, or it is gone
    // (reclaimed too, often: recommendations come pool by pool). So a
    // second one is launched when the room left cannot hold the node's
    // pods, or its zone cannot hold the pods its volumes pin there. With
    // no early one, the first is launched now, and a second with it when
    // the zone is short even counting the replacements on their way.
    let early = view.capacity_requests.contains(&restore_key(&node.instance_id));
    let surged = if policy.surge_before_evict { surge_counts(view, &displaced) } else { Vec::new() };
    let zone_short_with =
        |coming| zone_short(view, node, &displaced, &surged, &safe_nodes, &placeholders, coming);
    let restored = if node.capacity_type != CapacityType::Spot {
        false
    } else if !early {
        let first = push_restore_capacity(plan, view, node, &restore_key(&node.instance_id), policy, now);
        // The zone's pods may need more than one node for each lost one
        // (see `zone_short`): the replacements on their way to the zone
        // count as room, this one's too. A second one is launched only
        // where the first could go: a zone where no pool can launch gains
        // nothing from it.
        let own = match plan.steps.last() {
            Some(Step::RestoreCapacity { pools, .. }) if first => room_in_zone(pools, node),
            _ => Resources::default(),
        };
        let zone_coming = coming_in_zone(view, node).plus(&own);
        if !own.is_zero() && zone_short_with(zone_coming) {
            push_restore_capacity(plan, view, node, &second_restore_key(&node.instance_id), policy, now);
        }
        first
    } else if !room.plus(&placeholder_room(&placeholders)).fits(&need)
        || zone_short_with(coming_in_zone(view, node))
    {
        push_restore_capacity(plan, view, node, &second_restore_key(&node.instance_id), policy, now)
    } else {
        false
    };
    // The replacement launched now holds what the lost node held, within
    // about a minute, if enough pools can launch that one capacity error
    // does not stop it.
    let coming = if restored && crate::headroom::replacement_trusted(view, &node.pool) {
        node.allocatable
    } else {
        Resources::default()
    };
    // Placeholders give room at once; standbys cover what neither room nor
    // the replacement will.
    let mut claimed = Vec::new();
    for p in placeholders {
        if room.fits(&need) {
            break;
        }
        room = room.plus(&p.requests);
        claimed.push(p.name.to_string());
    }
    // Idle burstable nodes take what the room already there cannot, at
    // once, before the replacement is Ready (`crate::burstable`).
    let burst = crate::burstable::burstable_room(view, node, need.minus(&room));
    for b in &burst.nodes {
        plan.steps.push(Step::WakeStandby { node: b.clone(), retype_to: None });
    }
    let woken = plan_standbys(plan, view, node, need.minus(&room.plus(&coming).plus(&burst.room)));
    if !claimed.is_empty() {
        plan.steps.push(Step::ClaimHeadroom { placeholders: claimed });
    }
    plan_volumes(plan, node, &displaced, &woken, &safe_nodes);
    if !surged.is_empty() {
        plan.steps.push(Step::Surge { workloads: surged.clone() });
    }
    plan_evictions(plan, view, &displaced, &surged);
    if !surged.is_empty() {
        plan.steps.push(Step::EndSurge { workloads: surged });
    }
    if policy.deregister_on_notice && node.in_load_balancer {
        plan.steps.push(Step::DeregisterTargets { node: node.name.to_string() });
    }
    for standby in &woken {
        plan.steps.push(Step::ReturnStandby { node: standby.name.to_string() });
    }
    for b in burst.nodes {
        plan.steps.push(Step::ReturnStandby { node: b });
    }
    push_unbridge(plan);
    if view.headroom_target > 0 {
        plan.steps.push(Step::RestoreHeadroom { placeholders: view.headroom_target });
    }
}

/// Wake standbys until `deficit` is covered: running ones first (ready at
/// once), the doomed node's zone first (volumes can follow). Returns the woken nodes.
fn plan_standbys<'a>(
    plan: &mut Plan,
    view: &'a ClusterView,
    node: &NodeView,
    deficit: Resources,
) -> Vec<&'a NodeView> {
    let mut standbys: Vec<&NodeView> =
        view.nodes.iter().filter(|n| n.capacity_type.is_standby() && n.name != node.name).collect();
    standbys.sort_by_key(|n| {
        (n.capacity_type != CapacityType::StandbyRunning, n.pool.zone != node.pool.zone, n.name.clone())
    });
    let mut left = deficit;
    let mut woken = Vec::new();
    for standby in standbys {
        if left.is_zero() {
            break;
        }
        let retype = standby.capacity_type == CapacityType::StandbyStopped
            && standby.pool.instance_type != node.pool.instance_type;
        // A re-typed standby becomes the lost node's twin.
        let gives = if retype { node.allocatable } else { standby.allocatable };
        left = left.minus(&gives);
        plan.steps.push(Step::WakeStandby {
            node: standby.name.to_string(),
            retype_to: retype.then(|| node.pool.instance_type.clone()),
        });
        woken.push(standby);
    }
    woken
}

fn plan_bridge(plan: &mut Plan, view: &ClusterView, displaced: &[&PodView], policy: &Policy) {
    if !policy.bridge_enabled {
        return;
    }
    let mut per_workload: BTreeMap<&str, usize> = BTreeMap::new();
    for p in displaced {
        if let Some(w) = p.workload.as_deref() {
            *per_workload.entry(w).or_default() += 1;
        }
    }
    let workloads: Vec<String> = per_workload
        .into_iter()
        .filter(|(w, n)| {
            let ready = view.ready_pods_of(w).max(1);
            *n as f64 / ready as f64 > policy.bridge_threshold || policy.bridge_threshold == 0.0
        })
        .map(|(w, _)| w.to_string())
        .collect();
    if !workloads.is_empty() {
        plan.steps.push(Step::BridgeTraffic { workloads });
    }
}

fn plan_volumes(
    plan: &mut Plan,
    node: &NodeView,
    displaced: &[&PodView],
    woken: &[&NodeView],
    safe_nodes: &[&NodeView],
) {
    let same_zone = woken
        .iter()
        .chain(safe_nodes.iter())
        .find(|n| n.pool.zone == node.pool.zone)
        .or_else(|| woken.first())
        .or_else(|| safe_nodes.first());
    let Some(target) = same_zone else { return };
    for pod in displaced {
        for v in &pod.volumes {
            plan.steps.push(Step::MoveVolume {
                volume_id: v.volume_id.to_string(),
                from_node: node.name.to_string(),
                to_node: target.name.to_string(),
                to_zone: target.pool.zone.clone(),
                via_snapshot: target.pool.zone != v.zone,
            });
        }
    }
}

/// The steps that retire `node` once other nodes have room for its pods
/// (its replacement has joined), by `after` at the latest (or it stays):
/// [`Step::RetireNode`], its Deployments surged first when the policy
/// surges, then the [`Step::EndSurge`] that makes sure they are lowered.
pub(crate) fn retirement(view: &ClusterView, node: &str, after: Millis, policy: &Policy) -> Vec<Step> {
    let surges = if policy.surge_before_evict {
        surge_counts(view, &view.workload_pods_on(node).collect::<Vec<_>>())
    } else {
        Vec::new()
    };
    let mut steps = vec![Step::RetireNode {
        node: node.to_string(),
        after,
        bridge: policy.bridge_enabled,
        once_room: true,
        surges: surges.clone(),
    }];
    if !surges.is_empty() {
        steps.push(Step::EndSurge { workloads: surges });
    }
    steps
}

/// The Deployments among the displaced pods' workloads and how many of
/// their pods the node holds: what a surge adds, by name.
fn surge_counts(view: &ClusterView, displaced: &[&PodView]) -> Vec<(String, u32)> {
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for p in displaced {
        if let Some(w) = p.workload.as_deref().filter(|w| view.workload(w).is_some_and(|w| w.surgeable)) {
            *counts.entry(w).or_default() += 1;
        }
    }
    counts.into_iter().map(|(w, n)| (w.to_string(), n)).collect()
}

/// Evict in waves that keep every budget: wave 0 takes what each budget
/// allows now; later waves at most `replicas - min_available` each, once the
/// previous wave's replacements are Ready. A surged workload's extra pods
/// count as Ready and as replicas (the evictions wait for them), so its
/// pods mostly go in wave 0. Pods whose budget allows no disruption at all
/// are left unevicted.
fn plan_evictions(plan: &mut Plan, view: &ClusterView, displaced: &[&PodView], surged: &[(String, u32)]) {
    let mut waves: Vec<Vec<String>> = Vec::new();
    let mut by_workload: BTreeMap<Option<&str>, Vec<&PodView>> = BTreeMap::new();
    for p in displaced {
        by_workload.entry(p.workload.as_deref()).or_default().push(p);
    }
    for (workload, pods) in by_workload {
        let budget = workload.and_then(|w| view.workload(w)).filter(|w| w.min_available > 0);
        let Some(w) = budget else {
            waves.resize_with(waves.len().max(1), Vec::new);
            waves[0].extend(pods.iter().map(|p| p.name.to_string()));
            continue;
        };
        // The surge's pods count: the evictions wait for them Ready.
        let extra = surged.iter().find(|(s, _)| *s == *w.name).map_or(0, |(_, n)| *n);
        let per_wave = (w.replicas + extra).saturating_sub(w.min_available) as usize;
        let ready = view.ready_pods_of(&w.name) + extra as usize;
        let now_allowed = ready.saturating_sub(w.min_available as usize);
        if per_wave == 0 {
            plan.unevictable.extend(pods.iter().map(|p| p.name.to_string()));
            continue;
        }
        let mut rest = pods.as_slice();
        let first = now_allowed.min(rest.len());
        let mut wave = 0usize;
        if first > 0 {
            waves.resize_with(waves.len().max(1), Vec::new);
            waves[0].extend(rest[..first].iter().map(|p| p.name.to_string()));
            rest = &rest[first..];
        }
        while !rest.is_empty() {
            wave += 1;
            let take = per_wave.min(rest.len());
            waves.resize_with(waves.len().max(wave + 1), Vec::new);
            waves[wave].extend(rest[..take].iter().map(|p| p.name.to_string()));
            rest = &rest[take..];
        }
    }
    for (i, pods) in waves.into_iter().enumerate() {
        if !pods.is_empty() {
            plan.steps.push(Step::Evict { pods, wave: i as u32 });
        }
    }
    // A node with nothing to evict still gets a (last) wave: it takes the
    // pods bound to the node between the plan and the cordon (see the
    // executor's late arrivals), which would otherwise die with it.
    if !plan.steps.iter().any(|s| matches!(s, Step::Evict { .. })) {
        plan.steps.push(Step::Evict { pods: Vec::new(), wave: 0 });
    }
}

/// Idempotency key of the capacity that replaces a node: the same for the
/// rebalance recommendation and the interruption of one instance, so the
/// replacement is launched once.
pub fn restore_key(instance_id: &str) -> String {
    format!("{RESTORE_PREFIX}{instance_id}")
}

/// What [`restore_key`] puts before the instance id.
const RESTORE_PREFIX: &str = "restore:";

/// What [`second_restore_key`] puts before the instance id.
const RESTORE_AGAIN_PREFIX: &str = "restore-again:";

/// Idempotency key of a second replacement for a node: when its first was
/// launched early, on its rebalance recommendation, and no longer gives
/// the room it was launched for, or when one node for each node lost
/// leaves its zone short of room (see `zone_short`).
pub fn second_restore_key(instance_id: &str) -> String {
    format!("{RESTORE_AGAIN_PREFIX}{instance_id}")
}

/// Room the placeholder pods hold.
fn placeholder_room(placeholders: &[&PodView]) -> Resources {
    placeholders.iter().fold(Resources::default(), |acc, p| acc.plus(&p.requests))
}

/// Whether the zone of `node` is short of room for a response whose node
/// holds pods that volumes pin to that zone. Room: the free room on the
/// zone's safe nodes, the `placeholders` on them, and the room `coming`
/// (replacements on their way to the zone). Demand: every pod of the
/// node (those of a Deployment the plan `surged`, twice) and every pod waiting (evicted by
/// this or another response) that can run in the zone, pinned there or
/// not pinned at all. Pods that could run anywhere count because
/// the scheduler favours the emptiest nodes (kube-scheduler's default
/// `LeastAllocated` scoring), and the emptiest are the zone's fresh
/// replacements: at stop 30, in the slowest built-in incidents of seeds
/// 1 and 2, such pods took 11–46 cores of the 33–51 a reclaimed zone's
/// replacements held, and the pinned pods left waited for nodes the
/// autoscaler launched a minute later. The room must also keep
/// [`ZONE_SLACK_NODES`] of the node's size free: pods do not pack whole
/// nodes.
fn zone_short(
    view: &ClusterView,
    node: &NodeView,
    displaced: &[&PodView],
    surged: &[(String, u32)],
    safe_nodes: &[&NodeView],
    placeholders: &[&PodView],
    coming: Resources,
) -> bool {
    let zone = &node.pool.zone;
    let pinned_here = |p: &PodView| p.volumes.iter().any(|v| &v.zone == zone);
    if !displaced.iter().any(|p| pinned_here(p)) {
        return false;
    }
    // Pods waiting that can run here: pinned here, or anywhere.
    let waiting = (view.unbound_pods().filter(|p| !p.placeholder && !p.daemon))
        .filter(|p| p.volumes.is_empty() || pinned_here(p));
    // A surged Deployment's pods count twice: until the surge ends it runs
    // both the surge's pods and the pods its ReplicaSet starts for those
    // evicted.
    let surging = displaced
        .iter()
        .copied()
        .filter(|p| p.workload.as_deref().is_some_and(|w| surged.iter().any(|(s, _)| s.as_str() == w)));
    let demand = (displaced.iter().copied().chain(waiting).chain(surging))
        .fold(Resources::default(), |acc, p| acc.plus(&p.requests));
    let slack = Resources::new(
        (node.allocatable.cpu_millis as f64 * ZONE_SLACK_NODES) as u64,
        (node.allocatable.memory_mib as f64 * ZONE_SLACK_NODES) as u64,
    );
    let in_zone: Vec<&NodeView> = safe_nodes.iter().copied().filter(|n| &n.pool.zone == zone).collect();
    let free = in_zone.iter().fold(Resources::default(), |acc, n| acc.plus(&view.free_on(n)));
    let held: Vec<&PodView> = (placeholders.iter().copied())
        .filter(|p| p.node.as_deref().is_some_and(|at| in_zone.iter().any(|n| n.name == at)))
        .collect();
    !free.plus(&placeholder_room(&held)).plus(&coming).fits(&demand.plus(&slack))
}

/// Room on its way to `node`'s zone: the replacements the responses of
/// a reclaim asked for there and that are not nodes yet
/// (`ClusterView::launching`; a move-back's launch, which replaces a node
/// that stays until it is drained, is not room). The node's own launches
/// are left out (its plan counts them itself).
fn coming_in_zone(view: &ClusterView, node: &NodeView) -> Resources {
    let own = [restore_key(&node.instance_id), second_restore_key(&node.instance_id)];
    let for_a_lost_node = |key: &str| {
        let instance = key.strip_prefix(RESTORE_PREFIX).or_else(|| key.strip_prefix(RESTORE_AGAIN_PREFIX));
        instance.is_some_and(|id| view.node_by_instance(id).is_none_or(|n| n.has_taint(INTERRUPTION_TAINT)))
    };
    (view.launching.iter())
        .filter(|(key, _)| !own.contains(key) && for_a_lost_node(key))
        .fold(Resources::default(), |acc, (_, pools)| acc.plus(&room_in_zone(pools, node)))
}

/// The room the launches into `pools` add to `node`'s zone. Each node
/// launched counts at `node`'s size: a replacement is chosen to hold
/// what the node held, though its type may differ.
fn room_in_zone(pools: &[(PoolId, u32)], node: &NodeView) -> Resources {
    let count: u64 =
        (pools.iter()).filter(|(pool, _)| pool.zone == node.pool.zone).map(|(_, n)| u64::from(*n)).sum();
    Resources::new(node.allocatable.cpu_millis * count, node.allocatable.memory_mib * count)
}

/// Room a zone keeps free beyond the pods that will look for room there,
/// in nodes of the doomed node's size (see `zone_short`): pods of half a
/// core or more leave part of each node unused. Chosen at stop 30
/// (`13642d1`, before the second replacement at the notice) among 0.5, 1
/// and 2 on the built-in market's seeds 1–5 (30 days, 200 nodes): 48
/// incidents over 120 s instead of 90, for 1.0 % more cost. On seeds
/// 6–10, not used to choose it: 54 instead of 90, for 0.9 % more cost.
pub const ZONE_SLACK_NODES: f64 = 1.0;

/// Add the launch of the node's replacement under `key`, unless one was
/// launched under it already (the rebalance recommendation's and the
/// interruption's share a key). Whether a step was added.
fn push_restore_capacity(
    plan: &mut Plan,
    view: &ClusterView,
    node: &NodeView,
    key: &str,
    policy: &Policy,
    now: Millis,
) -> bool {
    let key = key.to_string();
    if view.capacity_requests.contains(&key) {
        return false;
    }
    let mut layout: BTreeMap<PoolId, u32> = BTreeMap::new();
    for n in view.nodes.iter().filter(|n| n.capacity_type == CapacityType::Spot && !n.unschedulable) {
        *layout.entry(n.pool.clone()).or_default() += 1;
    }
    // Pods whose EBS volumes live in the node's zone can only start there:
    // the replacement goes to that zone when a pool there can launch.
    let zonal = view.workload_pods_on(&node.name).any(|p| p.volumes.iter().any(|v| v.zone == node.pool.zone));
    let in_zone: Vec<crate::PoolView> =
        view.pools.iter().filter(|p| p.id.zone == node.pool.zone).cloned().collect();
    let exclude = std::slice::from_ref(&node.pool);
    let mut chosen = BTreeMap::new();
    if zonal {
        chosen = choose_pools(&in_zone, &layout, 1, exclude, policy, now);
    }
    if chosen.is_empty() {
        chosen = choose_pools(&view.pools, &layout, 1, exclude, policy, now);
    }
    if chosen.is_empty() {
        return false;
    }
    plan.steps.push(Step::RestoreCapacity { key, pools: chosen.into_iter().collect() });
    true
}

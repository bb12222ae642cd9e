//! The scheduling decision: which node a pending pod goes to and, when no
//! node has room, which lower-priority pods to preempt and where.
//!
//! It follows kube-scheduler (kubernetes `pkg/scheduler`, v1.33) with its
//! default profile, as far as the world models pods and nodes:
//!
//! - filters (`framework/plugins`): `NodeUnschedulable` (a cordoned node
//!   takes only pods tolerating `node.kubernetes.io/unschedulable`),
//!   `TaintToleration` (every `NoSchedule`/`NoExecute` taint tolerated; a
//!   NotReady node carries `node.kubernetes.io/not-ready:NoSchedule`, put by
//!   the node lifecycle controller's taint-by-condition), `NodeAffinity`
//!   (`nodeSelector`), `VolumeZone`/`VolumeBinding` (a pod with a
//!   zone-bound volume runs only in that zone) and `NodeResourcesFit`
//!   (CPU, memory and the pod count);
//! - score: `NodeResourcesFit` with its default `LeastAllocated` strategy
//!   (CPU and memory, weight 1 each; requests of pods without one count as
//!   100m CPU / 200 MiB, `schedutil.GetNonzeroRequests`). The other default
//!   scorers look at things the world does not model (affinities, spread
//!   constraints, image sizes). Among equal scores kube-scheduler picks at
//!   random (`selectHost`); here the first candidate in the caller's order
//!   wins, so runs are deterministic;
//! - preemption: `DefaultPreemption` (`framework/preemption`,
//!   `plugins/defaultpreemption`): on each node that fails only for
//!   resources, remove every lower-priority pod, then reprieve as many as
//!   still let the pod fit (budget-violating ones first, the most important
//!   first); pick the node by fewest budget violations, lowest highest
//!   victim priority, smallest priority sum, fewest victims, latest start
//!   of the highest-priority victims, then the first.

use costop_core::Resources;
use std::cmp::Reverse;

/// The taint a cordoned node is treated as having (`NodeUnschedulable`).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// The taint of a node whose Ready condition is not True.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// Pods scheduled per node at most, by default (kubelet `maxPods`).
pub const DEFAULT_MAX_PODS: u32 = 110;
/// CPU a container without a CPU request counts for when scoring
/// (`DefaultMilliCPURequest`, kubernetes `pkg/scheduler/util`).
pub const NONZERO_CPU_MILLIS: u64 = 100;
/// Memory a container without a memory request counts for when scoring
/// (`DefaultMemoryRequest`: 200 MiB).
pub const NONZERO_MEMORY_MIB: u64 = 200;
/// The best node score (`framework.MaxNodeScore`).
const MAX_NODE_SCORE: u64 = 100;

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// New pods are not scheduled on the node.
    NoSchedule,
    /// The scheduler avoids the node if it can (a score, not a filter).
    PreferNoSchedule,
    /// New pods are not scheduled and running ones are evicted.
    NoExecute,
}

impl Effect {
    /// Parse `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub fn parse(s: &str) -> Option<Effect> {
        match s {
            "NoSchedule" => Some(Effect::NoSchedule),
            "PreferNoSchedule" => Some(Effect::PreferNoSchedule),
            "NoExecute" => Some(Effect::NoExecute),
            _ => None,
        }
    }
}

/// A node taint, `key[=value]:effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taint<'a> {
    /// Taint key.
    pub key: &'a str,
    /// Taint value (empty when none).
    pub value: &'a str,
    /// Effect.
    pub effect: Effect,
}

/// A pod's toleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toleration<'a> {
    /// The taint key it tolerates; empty with `exists` tolerates every key.
    pub key: &'a str,
    /// `operator: Exists` (any value), else `Equal`.
    pub exists: bool,
    /// The value compared with `Equal`.
    pub value: &'a str,
    /// The effect it tolerates; `None` tolerates every effect.
    pub effect: Option<Effect>,
}

impl Toleration<'_> {
    /// Whether this toleration tolerates `taint`
    /// (`Toleration.ToleratesTaint`, k8s.io/api core/v1 `toleration.go`).
    pub fn tolerates(&self, taint: &Taint<'_>) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        self.exists || self.value == taint.value
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration<'_>], taint: &Taint<'_>) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// A pod to place, as the scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub struct PodFit<'a> {
    /// Priority (from its PriorityClass).
    pub priority: i32,
    /// Sum of its containers' requests.
    pub requests: Resources,
    /// Requests as counted for scoring (see [`nonzero`]).
    pub score_requests: Resources,
    /// Tolerations.
    pub tolerations: &'a [Toleration<'a>],
    /// `nodeSelector` pairs; every one must be a node label.
    pub node_selector: &'a [(&'a str, &'a str)],
    /// The zone its volumes are bound to, if any.
    pub zone: Option<&'a str>,
    /// Whether it may preempt (`preemptionPolicy` is not `Never`).
    pub may_preempt: bool,
}

impl<'a> PodFit<'a> {
    /// A pod with these requests and priority, no constraints.
    pub fn new(requests: Resources, priority: i32) -> Self {
        PodFit {
            priority,
            requests,
            score_requests: requests,
            tolerations: &[],
            node_selector: &[],
            zone: None,
            may_preempt: true,
        }
    }
}

/// One container's request as counted for scoring: a missing CPU or memory
/// request counts as 100m / 200 MiB (`GetNonzeroRequestForResource`).
pub fn nonzero(container: Resources) -> Resources {
    Resources::new(
        if container.cpu_millis == 0 { NONZERO_CPU_MILLIS } else { container.cpu_millis },
        if container.memory_mib == 0 { NONZERO_MEMORY_MIB } else { container.memory_mib },
    )
}

/// A candidate node, as the scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeFit<'a> {
    /// Its Ready condition is True.
    pub ready: bool,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Its taints.
    pub taints: &'a [Taint<'a>],
    /// Its labels (for `nodeSelector`).
    pub labels: &'a [(&'a str, &'a str)],
    /// Its `topology.kubernetes.io/zone`.
    pub zone: &'a str,
    /// Allocatable resources.
    pub allocatable: Resources,
    /// Pods it may hold (`status.allocatable.pods`).
    pub max_pods: u32,
    /// Requests of the pods bound to it that are not gone (terminating
    /// ones hold their room until they are).
    pub requested: Resources,
    /// Those requests as counted for scoring (see [`nonzero`]).
    pub score_requested: Resources,
    /// Pods bound to it that are not gone.
    pub pods: u32,
}

/// Whether the pod passes every filter except resources: the node is one
/// preemption could make room on.
#[inline(always)]
pub fn passes_filters(pod: &PodFit<'_>, node: &NodeFit<'_>) -> bool {
    if pod.zone.is_some_and(|z| !same_str(z, node.zone)) {
        return false;
    }
    let untolerated =
        |key: &str| !tolerated(pod.tolerations, &Taint { key, value: "", effect: Effect::NoSchedule });
    if !node.ready && untolerated(NOT_READY_TAINT) {
        return false;
    }
    if node.unschedulable && untolerated(UNSCHEDULABLE_TAINT) {
        return false;
    }
    let blocking = |t: &&Taint<'_>| matches!(t.effect, Effect::NoSchedule | Effect::NoExecute);
    if node.taints.iter().filter(blocking).any(|t| !tolerated(pod.tolerations, t)) {
        return false;
    }
    pod.node_selector.iter().all(|(k, v)| node.labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

/// String equality, at once when both are the same slice (callers that
/// borrow zone names from one table, as the simulator does).
#[inline(always)]
fn same_str(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// Whether the pod's requests fit in `free` with `pods` pods already there.
#[inline(always)]
fn fits_in(pod: &PodFit<'_>, free: Resources, pods: u32, max_pods: u32) -> bool {
    free.fits(&pod.requests) && pods < max_pods
}

/// Whether the pod fits the node's free resources and pod slots.
#[inline(always)]
pub fn fits_resources(pod: &PodFit<'_>, node: &NodeFit<'_>) -> bool {
    fits_in(pod, node.allocatable.minus(&node.requested), node.pods, node.max_pods)
}

/// Whether the pod can be bound to the node now.
#[inline(always)]
pub fn feasible(pod: &PodFit<'_>, node: &NodeFit<'_>) -> bool {
    fits_resources(pod, node) && passes_filters(pod, node)
}

/// `LeastAllocated` score of one resource: the share left free once the
/// pod is placed, 0–100 (`leastRequestedScore`).
#[inline(always)]
fn least_requested(requested: u64, capacity: u64) -> u64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    let free = (capacity - requested) * MAX_NODE_SCORE;
    // The same quotient; a 32-bit division is the cheaper one.
    match (u32::try_from(free), u32::try_from(capacity)) {
        (Ok(f), Ok(c)) => u64::from(f / c),
        _ => free / capacity,
    }
}

/// The node's score for the pod, 0–100: the mean of the CPU and memory
/// `LeastAllocated` scores.
#[inline(always)]
pub fn score(pod: &PodFit<'_>, node: &NodeFit<'_>) -> u64 {
    let after = node.score_requested.plus(&pod.score_requests);
    (least_requested(after.cpu_millis, node.allocatable.cpu_millis)
        + least_requested(after.memory_mib, node.allocatable.memory_mib))
        / 2
}

/// The node the pod goes to: the feasible node with the highest score, the
/// first of equals. `nodes` are the candidates with the caller's key.
pub fn pick_node<'a, K>(pod: &PodFit<'_>, nodes: impl IntoIterator<Item = (K, NodeFit<'a>)>) -> Option<K> {
    let mut best: Option<(u64, K)> = None;
    for (key, node) in nodes {
        if !feasible(pod, &node) {
            continue;
        }
        let s = score(pod, &node);
        if best.as_ref().is_none_or(|b| s > b.0) {
            best = Some((s, key));
        }
    }
    best.map(|b| b.1)
}

/// A pod preemption could remove.
#[derive(Debug, Clone, Copy)]
pub struct Victim<V> {
    /// The caller's key.
    pub key: V,
    /// Priority.
    pub priority: i32,
    /// Its requests (freed when it goes).
    pub requests: Resources,
    /// Whether removing it breaks a disruption budget (the budget allows
    /// no disruption).
    pub violates_budget: bool,
    /// When it started, on any increasing scale (earlier is smaller).
    pub started: u64,
}

/// How good a preemption on one node is; smaller is better
/// (`pickOneNodeForPreemption`).
type Rank = (u32, i32, i64, usize, Reverse<u64>);

/// The victims on one node (into `victims`), and the node's rank; `None`
/// when removing every lower-priority pod would not make room
/// (`selectVictimsOnNode`).
fn victims_on<V: Copy>(
    pod: &PodFit<'_>,
    node: &NodeFit<'_>,
    candidates: impl IntoIterator<Item = Victim<V>>,
    potential: &mut Vec<Victim<V>>,
    victims: &mut Vec<V>,
) -> Option<Rank> {
    potential.clear();
    victims.clear();
    potential.extend(candidates.into_iter().filter(|v| v.priority < pod.priority));
    let mut requested = node.requested;
    let mut pods = node.pods;
    for v in potential.iter() {
        requested = requested.minus(&v.requests);
        pods = pods.saturating_sub(1);
    }
    if !fits_in(pod, node.allocatable.minus(&requested), pods, node.max_pods) {
        return None;
    }
    // The most important first (`MoreImportantPod`: higher priority, then
    // earlier start); violating ones are reprieved before the others.
    potential.sort_by_key(|v| (!v.violates_budget, Reverse(v.priority), v.started));
    let mut violations = 0u32;
    let (mut highest, mut sum, mut earliest_top) = (i32::MIN, 0i64, u64::MAX);
    for v in potential.iter() {
        let back = requested.plus(&v.requests);
        if fits_in(pod, node.allocatable.minus(&back), pods + 1, node.max_pods) {
            requested = back;
            pods += 1;
            continue;
        }
        violations += u32::from(v.violates_budget);
        // Priorities are shifted to be positive before summing, as kube does.
        sum += i64::from(v.priority) + i64::from(i32::MAX) + 1;
        if v.priority > highest {
            (highest, earliest_top) = (v.priority, v.started);
        } else if v.priority == highest {
            earliest_top = earliest_top.min(v.started);
        }
        victims.push(v.key);
    }
    Some((violations, highest, sum, victims.len(), Reverse(earliest_top)))
}

/// Where to preempt for the pod, and whom: the best node of `nodes` (each
/// with the pods on it preemption may remove: not terminating) and its
/// victims. `None` when the pod may not preempt or no node can make room.
pub fn pick_preemption<'a, K, V, I>(
    pod: &PodFit<'_>,
    nodes: impl IntoIterator<Item = (K, NodeFit<'a>, I)>,
) -> Option<(K, Vec<V>)>
where
    V: Copy,
    I: IntoIterator<Item = Victim<V>>,
{
    if !pod.may_preempt {
        return None;
    }
    let (mut potential, mut victims, mut best_victims) = (Vec::new(), Vec::new(), Vec::new());
    let mut best: Option<(Rank, K)> = None;
    for (key, node, candidates) in nodes {
        if !passes_filters(pod, &node) {
            continue;
        }
        let Some(rank) = victims_on(pod, &node, candidates, &mut potential, &mut victims) else { continue };
        if victims.is_empty() {
            // It fits without preempting anyone.
            return Some((key, victims));
        }
        if best.as_ref().is_none_or(|b| rank < b.0) {
            best = Some((rank, key));
            std::mem::swap(&mut victims, &mut best_victims);
        }
    }
    best.map(|(_, k)| (k, best_victims))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOC: Resources = Resources::new(4000, 8192);

    fn node(requested: Resources, pods: u32) -> NodeFit<'static> {
        NodeFit {
            ready: true,
            unschedulable: false,
            taints: &[],
            labels: &[],
            zone: "us-east-1a",
            allocatable: ALLOC,
            max_pods: DEFAULT_MAX_PODS,
            requested,
            score_requested: requested,
            pods,
        }
    }

    fn victim(key: u32, priority: i32, cpu: u64) -> Victim<u32> {
        Victim {
            key,
            priority,
            requests: Resources::new(cpu, 0),
            violates_budget: false,
            started: u64::from(key),
        }
    }

    #[test]
    fn tolerations_follow_the_api_rules() {
        let standby = Taint { key: "costop.io/standby", value: "", effect: Effect::NoSchedule };
        let exists = |key| Toleration { key, exists: true, value: "", effect: None };
        assert!(exists("costop.io/standby").tolerates(&standby));
        assert!(exists("").tolerates(&standby), "an empty key with Exists tolerates everything");
        assert!(!exists("other").tolerates(&standby));
        let equal = Toleration { key: "k", exists: false, value: "v", effect: Some(Effect::NoExecute) };
        assert!(equal.tolerates(&Taint { key: "k", value: "v", effect: Effect::NoExecute }));
        assert!(!equal.tolerates(&Taint { key: "k", value: "w", effect: Effect::NoExecute }));
        assert!(!equal.tolerates(&Taint { key: "k", value: "v", effect: Effect::NoSchedule }));
        assert!(!tolerated(&[], &standby));
    }

    #[test]
    fn filters_cover_readiness_cordon_taints_selectors_and_zones() {
        let pod = PodFit::new(Resources::new(100, 100), 0);
        assert!(feasible(&pod, &node(Resources::default(), 0)));
        assert!(!feasible(&pod, &NodeFit { ready: false, ..node(Resources::default(), 0) }));
        assert!(!feasible(&pod, &NodeFit { unschedulable: true, ..node(Resources::default(), 0) }));
        let daemon = [Toleration { key: "", exists: true, value: "", effect: None }];
        let tolerant = PodFit { tolerations: &daemon, ..pod };
        assert!(feasible(
            &tolerant,
            &NodeFit { unschedulable: true, ready: false, ..node(Resources::default(), 0) }
        ));
        let taints = [
            Taint { key: "costop.io/standby", value: "", effect: Effect::NoSchedule },
            Taint { key: "soft", value: "", effect: Effect::PreferNoSchedule },
        ];
        let tainted = NodeFit { taints: &taints, ..node(Resources::default(), 0) };
        assert!(!feasible(&pod, &tainted));
        let standby = [Toleration { key: "costop.io/standby", exists: true, value: "", effect: None }];
        assert!(
            feasible(&PodFit { tolerations: &standby, ..pod }, &tainted),
            "PreferNoSchedule does not filter"
        );
        let labels = [("costop.io/capacity-type", "spot")];
        let selector = [("costop.io/capacity-type", "spot")];
        let picky = PodFit { node_selector: &selector, ..pod };
        assert!(!feasible(&picky, &node(Resources::default(), 0)));
        assert!(feasible(&picky, &NodeFit { labels: &labels, ..node(Resources::default(), 0) }));
        let zoned = PodFit { zone: Some("us-east-1b"), ..pod };
        assert!(!feasible(&zoned, &node(Resources::default(), 0)));
        assert!(feasible(&zoned, &NodeFit { zone: "us-east-1b", ..node(Resources::default(), 0) }));
    }

    #[test]
    fn resources_and_pod_slots_must_fit() {
        let pod = PodFit::new(Resources::new(1000, 1024), 0);
        assert!(feasible(&pod, &node(Resources::new(3000, 7168), 3)));
        assert!(!feasible(&pod, &node(Resources::new(3001, 0), 3)));
        assert!(!feasible(&pod, &node(Resources::new(0, 7169), 3)));
        assert!(!feasible(&pod, &node(Resources::default(), DEFAULT_MAX_PODS)));
    }

    #[test]
    fn the_least_allocated_node_wins_and_the_first_of_equals() {
        let pod = PodFit::new(Resources::new(500, 512), 0);
        let nodes = [
            node(Resources::new(2000, 1024), 2),
            node(Resources::new(1000, 4096), 2),
            node(Resources::new(1000, 1024), 2),
            node(Resources::new(1000, 1024), 2),
        ];
        assert_eq!(pick_node(&pod, nodes.iter().copied().enumerate()), Some(2));
        // Score: (4000-1500)/4000 → 62, (8192-1536)/8192 → 81; mean 71.
        assert_eq!(score(&pod, &nodes[2]), 71);
        let full = [node(ALLOC, 1)];
        assert_eq!(pick_node(&pod, full.iter().copied().enumerate()), None);
    }

    #[test]
    fn scores_of_huge_nodes_are_exact() {
        let big = u64::from(u32::MAX) * 4;
        assert_eq!(least_requested(big / 4, big), 75);
        assert_eq!(least_requested(1, 3), 66);
        assert_eq!(least_requested(4, 3), 0);
        assert_eq!(least_requested(0, 0), 0);
    }

    #[test]
    fn pods_without_requests_still_spread() {
        let zero = Resources::default();
        let pod = PodFit { score_requests: nonzero(zero), ..PodFit::new(zero, 0) };
        let busy = NodeFit { score_requested: Resources::new(1000, 2000), ..node(zero, 10) };
        let idle = node(zero, 0);
        assert_eq!(pick_node(&pod, [(0, busy), (1, idle)]), Some(1));
        assert_eq!(nonzero(zero), Resources::new(100, 200));
        assert_eq!(nonzero(Resources::new(5, 0)), Resources::new(5, 200));
    }

    #[test]
    fn preemption_reprieves_what_it_can_and_picks_the_cheapest_node() {
        let pod = PodFit::new(Resources::new(2000, 0), 10);
        // Node 0: four 1000m pods of priority -10 fill it; two must go, the
        // two started last (the earlier ones are reprieved first).
        // Node 1: one 3000m pod of priority 0 and one 1000m of -10: the
        // -10 alone is not enough, so the priority-0 pod goes (and the -10
        // one is reprieved).
        let full = node(ALLOC, 4);
        let cands = |n: u32| -> Vec<Victim<u32>> {
            if n == 0 {
                (0..4).map(|i| victim(i, -10, 1000)).collect()
            } else {
                vec![victim(10, 0, 3000), victim(11, -10, 1000)]
            }
        };
        let got = pick_preemption(&pod, (0..2).map(|n| (n, full, cands(n))));
        assert_eq!(got, Some((0, vec![2, 3])), "lowest highest-priority victim wins over fewer victims");
        let only1 = pick_preemption(&pod, [(1, full, cands(1))]);
        assert_eq!(only1, Some((1, vec![10])));
        // Equal priorities: fewest victims.
        let big = vec![victim(20, -10, 2000)];
        let got = pick_preemption(&pod, [(0, full, cands(0)), (1, full, big)]);
        assert_eq!(got, Some((1, vec![20])));
    }

    #[test]
    fn preemption_respects_priority_filters_and_policy() {
        let pod = PodFit::new(Resources::new(2000, 0), 0);
        let full = node(ALLOC, 2);
        let same = vec![victim(0, 0, 2000), victim(1, 5, 2000)];
        assert_eq!(pick_preemption(&pod, [(0, full, same)]), None, "no lower-priority pod");
        let cordoned = NodeFit { unschedulable: true, ..full };
        assert_eq!(pick_preemption(&pod, [(0, cordoned, vec![victim(0, -1, 4000)])]), None);
        let never = PodFit { may_preempt: false, ..pod };
        assert_eq!(pick_preemption(&never, [(0, full, vec![victim(0, -1, 4000)])]), None);
        let too_small = vec![victim(0, -1, 1000)];
        assert_eq!(pick_preemption(&pod, [(0, node(Resources::new(3500, 0), 2), too_small)]), None);
    }

    #[test]
    fn preemption_avoids_breaking_budgets_and_prefers_recent_victims() {
        let pod = PodFit::new(Resources::new(2000, 0), 10);
        let full = node(ALLOC, 2);
        let guarded = vec![Victim { violates_budget: true, ..victim(0, 0, 2000) }, victim(1, 0, 2000)];
        assert_eq!(
            pick_preemption(&pod, [(0, full, guarded)]),
            Some((0, vec![1])),
            "the guarded pod is reprieved"
        );
        let old = vec![victim(0, 0, 4000)];
        let young = vec![victim(9, 0, 4000)];
        assert_eq!(pick_preemption(&pod, [(0, full, old), (1, full, young)]), Some((1, vec![9])));
    }
}

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
//!
//! How the spare is held follows `Policy::spare_sizing`: fixed shares of
//! the worst shortfall ([`size_spare_capacity`]), or by expected cost
//! ([`size_tiers`]): node by node of the shortfall, the first needed by
//! every pool whose shortfall reaches it, the deeper ones by fewer, each
//! goes to the tier of `costop_core::tiers` with the lowest expected cost
//! per core-second of the gaps it covers (or to none), at the pools'
//! reclaim rates and the tiers' start times ([`TierInputs`]).

use crate::model::{CapacityType, ClusterView, PoolId, Resources};
use crate::policy::{Policy, SpareSizing, StandbyMode};
use crate::tiers::{tier_costs_for, Exposure, Tier, TierOffer};
use costop_facts::catalog;
use costop_facts::timings::Timings;
use std::collections::{BTreeMap, HashMap};

/// How much spare capacity to keep, in nodes of the cluster's typical size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpareCapacity {
    /// Node-equivalents of free room held by placeholder pods.
    pub headroom_nodes: u32,
    /// Warm standby nodes (waiting as `Policy::standby_mode` says).
    pub standby_nodes: u32,
    /// Running burstable nodes (only `spare_sizing = "cost"` keeps them),
    /// of the type in [`TierInputs::burstable`].
    pub burstable_nodes: u32,
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
/// With `spare_sizing = "cost"`, the mix of [`size_tiers`] with the
/// shipped [`TierInputs`] instead.
pub fn size_spare_capacity(
    view: &ClusterView,
    event_share: impl Fn(&PoolId) -> f64,
    policy: &Policy,
) -> SpareCapacity {
    if policy.spare_sizing == SpareSizing::Cost {
        let mix = size_tiers(view, event_share, policy, &TierInputs::shipped(&Timings::default()));
        return mix.spare();
    }
    let unit = unit(view);
    let worst = shortfall_per_pool(view, event_share)
        .into_iter()
        .map(|(pool, r)| (in_nodes(r, unit), pool))
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
    let Some((nodes, pool)) = worst else {
        return SpareCapacity { headroom_nodes: 0, standby_nodes: 0, burstable_nodes: 0 };
    };
    let share = |s: f64| (s * nodes - 1e-9).ceil().max(0.0) as u32;
    SpareCapacity {
        headroom_nodes: share(policy.headroom_share_of_shortfall),
        standby_nodes: if replacement_trusted(view, &pool) {
            0
        } else {
            share(policy.standby_share_of_shortfall)
        },
        burstable_nodes: 0,
    }
}

/// A burstable (T-family) node the burstable tier would run.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstableNode {
    /// Its instance type.
    pub instance_type: String,
    /// USD per hour (on-demand).
    pub usd_hr: f64,
    /// vCPUs.
    pub vcpu: u32,
    /// Memory, GiB.
    pub memory_gib: u32,
    /// vCPUs its credit earnings pay for at all times.
    pub baseline_vcpu: f64,
    /// Credits it has when a reclaim comes (a standby idle a day holds its
    /// accrual limit; the AWS adapter reads the real one,
    /// `costop_aws::credits`).
    pub balance_credits: f64,
    /// USD per vCPU-hour of surplus credits (unlimited mode).
    pub surplus_usd_per_vcpu_hr: f64,
}

impl BurstableNode {
    /// A node of a catalog type, idle long enough to hold its accrual
    /// limit of credits; `None` for a type without credit facts or price.
    pub fn idle(instance_type: &str) -> Option<Self> {
        let b = catalog::burstable(instance_type)?;
        let t = catalog::instance_type(instance_type)?;
        Some(Self {
            instance_type: t.name.to_string(),
            usd_hr: t.on_demand_usd_hr,
            vcpu: b.vcpu,
            memory_gib: t.memory_gib,
            baseline_vcpu: b.baseline_vcpu(),
            balance_credits: b.max_credits,
            surplus_usd_per_vcpu_hr: b.surplus_usd_per_vcpu_hr,
        })
    }
}

/// Burstable type the shipped sizing offers: a t3.xlarge (4 vCPUs, 16 GiB,
/// the m5.xlarge's shape; x86, so it runs the images Spot nodes run).
pub const SHIPPED_BURSTABLE_TYPE: &str = "t3.xlarge";

/// What cost sizing needs besides the view and the policy: how soon each
/// tier and a replacement take pods, and what the view does not price.
/// Every duration runs from the notice, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct TierInputs {
    /// Until a replacement launched at the notice takes pods (measured, or
    /// the world's timings: boot, image pull, container start, readiness).
    pub replacement_ready_s: f64,
    /// Added to that where fewer than two other Spot pools can launch: a
    /// capacity error, then a launch elsewhere.
    pub untrusted_extra_s: f64,
    /// Until displaced pods run on room that is already there
    /// (placeholders, running nodes): preemption, container start, readiness.
    pub instant_ready_s: f64,
    /// Until displaced pods run on a stopped standby: its start, then the
    /// container start and readiness (its images are on its volume).
    pub standby_ready_s: f64,
    /// How long displaced pods stay on a standby or burstable node before
    /// they move to the replacement (at least the gap).
    pub stay_s: f64,
    /// USD per hour a stopped standby costs (its volumes).
    pub stopped_standby_usd_hr: f64,
    /// The burstable node offered, if the tier is to be considered.
    pub burstable: Option<BurstableNode>,
}

impl TierInputs {
    /// From the world's timings (`costop_facts::timings`, sources there),
    /// the catalog's stopped-standby price and an idle
    /// [`SHIPPED_BURSTABLE_TYPE`].
    pub fn shipped(t: &Timings) -> Self {
        let start = t.container_start_s + t.app_ready_s;
        let replacement_ready_s = t.node_ready_s + t.image_pull_s + start;
        Self {
            replacement_ready_s,
            untrusted_extra_s: t.launch_retry_s,
            instant_ready_s: t.preemption_s + start,
            standby_ready_s: t.standby_start_s + start,
            // Moved on once the replacement is Ready: its pods start there anew.
            stay_s: replacement_ready_s + start,
            stopped_standby_usd_hr: catalog::stopped_standby_usd_hr(),
            burstable: BurstableNode::idle(SHIPPED_BURSTABLE_TYPE),
        }
    }
}

/// How cost sizing holds the spare: nodes of the cluster's largest Spot
/// size per tier, and what it is expected to cost.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TierMix {
    /// Node-sized units of the shortfall held by each tier (units left
    /// open are in none).
    pub units: BTreeMap<Tier, u32>,
    /// Standby units by zone (the zone of the deepest pool each covers).
    pub standby_units_by_zone: BTreeMap<String, u32>,
    /// Burstable nodes it takes to hold the burstable tier's units.
    pub burstable_nodes: u32,
    /// Units no tier was worth holding for.
    pub open_units: u32,
    /// Expected USD per hour: holding, use and gaps left open, over every unit.
    pub expected_usd_per_hr: f64,
    /// The same had nothing been held.
    pub open_usd_per_hr: f64,
}

impl TierMix {
    /// Units of one tier.
    pub fn units_of(&self, tier: Tier) -> u32 {
        self.units.get(&tier).copied().unwrap_or(0)
    }

    /// As [`SpareCapacity`]: placeholders, standbys (either mode), burstable nodes.
    pub fn spare(&self) -> SpareCapacity {
        SpareCapacity {
            headroom_nodes: self.units_of(Tier::Placeholders),
            standby_nodes: self.units_of(Tier::StandbyStopped) + self.units_of(Tier::StandbyRunning),
            burstable_nodes: self.burstable_nodes,
        }
    }
}

/// Size the spare by expected cost (`spare_sizing = "cost"`). The unit is
/// the largest Spot node; unit k (1, 2, …) is needed by every pool whose
/// shortfall (in units) exceeds k − 1, at that pool's reclaim rate
/// (`PoolView::interruptions_per_day` / 24, as measured) and gap
/// (`replacement_ready_s`, plus `untrusted_extra_s` where the replacement
/// is not trusted). The offers, per vCPU: placeholders held at the
/// cheapest launchable pool's Spot price; with `policy.burstable_tier`
/// and a unit type without accelerators, the burstable node at its price,
/// spending its credits first, then surplus; standbys in
/// `policy.standby_mode` (stopped: their volumes, then the unit type's
/// on-demand price once woken; running: that price). Pure.
pub fn size_tiers(
    view: &ClusterView,
    event_share: impl Fn(&PoolId) -> f64,
    policy: &Policy,
    inputs: &TierInputs,
) -> TierMix {
    let unit = unit(view);
    let unit_type = view
        .nodes
        .iter()
        .filter(|n| n.capacity_type == CapacityType::Spot && n.allocatable == unit)
        .find_map(|n| catalog::instance_type(&n.pool.instance_type));
    let unit_vcpu = unit_type.map_or(unit.cpu_millis as f64 / 1000.0, |t| f64::from(t.vcpu)).max(1e-3);
    let unit_mem_gib = unit_type.map_or(unit.memory_mib as f64 / 1024.0, |t| f64::from(t.memory_gib));
    let vcpu_of = |id: &PoolId| catalog::instance_type(&id.instance_type).map(|t| f64::from(t.vcpu));
    let on_demand = view
        .nodes
        .iter()
        .find(|n| n.capacity_type == CapacityType::Spot && n.allocatable == unit)
        .and_then(|n| view.pools.iter().find(|p| p.id == n.pool).map(|p| p.on_demand_price))
        .or(unit_type.map(|t| t.on_demand_usd_hr))
        .unwrap_or(0.0);
    let mut offers = Vec::new();
    let spot_per_vcpu = view
        .pools
        .iter()
        .filter(|p| p.launchable && p.spot_price > 0.0)
        .filter_map(|p| vcpu_of(&p.id).map(|v| p.spot_price / v))
        .min_by(f64::total_cmp);
    if let Some(hold) = spot_per_vcpu {
        offers.push(TierOffer {
            tier: Tier::Placeholders,
            hold_usd_per_core_hr: hold,
            ready_after_s: inputs.instant_ready_s,
            use_usd_per_core_hr: 0.0,
            free_use_s: 0.0,
        });
    }
    // Burstable nodes only where the policy offers them and the cluster's
    // pods can run on them (not pods made for GPUs or other accelerators).
    let burstable = inputs
        .burstable
        .as_ref()
        .filter(|_| policy.burstable_tier && !unit_type.is_some_and(|t| catalog::has_accelerators(t.name)));
    if let Some(b) = burstable {
        let offer = TierOffer::burstable(
            b.usd_hr,
            b.vcpu,
            b.baseline_vcpu,
            b.balance_credits,
            b.surplus_usd_per_vcpu_hr,
        );
        offers.push(TierOffer { ready_after_s: inputs.instant_ready_s, ..offer });
    }
    offers.push(match policy.standby_mode {
        StandbyMode::Stopped => TierOffer {
            tier: Tier::StandbyStopped,
            hold_usd_per_core_hr: inputs.stopped_standby_usd_hr / unit_vcpu,
            ready_after_s: inputs.standby_ready_s,
            use_usd_per_core_hr: on_demand / unit_vcpu,
            free_use_s: 0.0,
        },
        StandbyMode::Running => TierOffer {
            tier: Tier::StandbyRunning,
            hold_usd_per_core_hr: on_demand / unit_vcpu,
            ready_after_s: inputs.instant_ready_s,
            use_usd_per_core_hr: 0.0,
            free_use_s: 0.0,
        },
    });

    // Each pool's shortfall in units, its reclaim rate and gap; deepest first.
    let mut pools: Vec<(f64, Exposure, &PoolId)> = shortfall_per_pool(view, event_share)
        .into_iter()
        .filter_map(|(id, r)| {
            let p = view.pools.iter().find(|p| p.id == id)?;
            let gap = inputs.replacement_ready_s
                + if replacement_trusted(view, &id) { 0.0 } else { inputs.untrusted_extra_s };
            let e = Exposure {
                reclaims_per_hr: p.interruptions_per_day.max(0.0) / 24.0,
                replacement_ready_s: gap.max(0.0),
                stay_s: inputs.stay_s.max(gap),
                gap_usd_per_core_s: policy.gap_usd_per_core_s,
            };
            Some((in_nodes(r, unit), e, &p.id))
        })
        .filter(|(units, _, _)| *units > 1e-9)
        .collect();
    pools.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.2.cmp(b.2)));
    let mut mix = TierMix::default();
    let deepest = pools.first().map_or(0, |p| (p.0 - 1e-9).ceil().max(0.0) as u32);
    for k in 1..=deepest {
        let needing: Vec<&(f64, Exposure, &PoolId)> =
            pools.iter().filter(|p| p.0 > f64::from(k - 1) + 1e-9).collect();
        let exposures: Vec<Exposure> = needing.iter().map(|p| p.1).collect();
        let rate: f64 = exposures.iter().map(|e| e.reclaims_per_hr).sum();
        let costs = tier_costs_for(&offers, &exposures);
        let per_hr = |usd_per_core_reclaim: f64| usd_per_core_reclaim * rate * unit_vcpu;
        let open = costs.iter().find(|c| c.tier.is_none()).map_or(0.0, |c| per_hr(c.usd_per_core_reclaim));
        mix.open_usd_per_hr += open;
        mix.expected_usd_per_hr += per_hr(costs[0].usd_per_core_reclaim);
        match costs[0].tier {
            None => mix.open_units += 1,
            Some(tier) => {
                *mix.units.entry(tier).or_insert(0) += 1;
                if matches!(tier, Tier::StandbyStopped | Tier::StandbyRunning) {
                    let zone = needing.first().map_or_else(String::new, |p| p.2.zone.clone());
                    *mix.standby_units_by_zone.entry(zone).or_insert(0) += 1;
                }
            }
        }
    }
    if let Some(b) = burstable {
        let units = f64::from(mix.units_of(Tier::BurstableRunning));
        let per_unit =
            (unit_vcpu / f64::from(b.vcpu.max(1))).max(unit_mem_gib / f64::from(b.memory_gib.max(1)));
        mix.burstable_nodes = (units * per_unit - 1e-9).ceil().max(0.0) as u32;
    }
    mix
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeView, PodView, PoolView};
    use crate::policy::{SpareSizing, StandbyMode};

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
            fallback: false,
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
        assert_eq!(got, SpareCapacity { headroom_nodes: 1, standby_nodes: 0, burstable_nodes: 0 });
        let stuck = size_spare_capacity(&view(false), |_| 1.0, &policy);
        assert_eq!(stuck, SpareCapacity { headroom_nodes: 1, standby_nodes: 1, burstable_nodes: 0 });
        let none = Policy::default();
        assert_eq!(size_spare_capacity(&view(true), |_| 1.0, &none).headroom_nodes, 0);
        assert_eq!(
            size_spare_capacity(&view(false), |_| 1.0, &none).standby_nodes,
            0,
            "no standbys by default"
        );
    }

    /// Pools a (3 full m5.xlarge nodes), b (2 full) and c (1 empty), all
    /// launchable: losing a leaves 2 nodes' worth without room, losing b 1.
    fn layered(interruptions_per_day: f64, spot_price: f64) -> ClusterView {
        let ids: Vec<PoolId> = ["a", "b", "c"].iter().map(|z| PoolId::new("m5.xlarge", *z)).collect();
        let mut nodes = Vec::new();
        let mut pods = Vec::new();
        for (pool, full) in [(&ids[0], 3), (&ids[1], 2), (&ids[2], 0)] {
            let count = full.max(1);
            for i in 0..count {
                let name = format!("{}{i}", pool.zone);
                nodes.push(node(&name, pool));
                if i < full {
                    pods.push(pod(&format!("p-{name}"), &name, 4000));
                }
            }
        }
        let pools = ids
            .iter()
            .map(|id| PoolView {
                id: id.clone(),
                spot_price,
                on_demand_price: 0.192,
                interruptions_per_day,
                launchable: true,
                last_interruption: None,
            })
            .collect();
        ClusterView { nodes: nodes.into(), pods: pods.into(), pools, ..ClusterView::default() }
    }

    fn cost(gap_usd_per_core_s: f64) -> Policy {
        Policy {
            spare_sizing: SpareSizing::Cost,
            gap_usd_per_core_s,
            burstable_tier: true,
            ..Policy::default()
        }
    }

    fn shipped() -> TierInputs {
        TierInputs::shipped(&Timings::default())
    }

    #[test]
    fn the_shipped_inputs_come_from_the_world_timings_and_the_catalog() {
        let i = shipped();
        // Boot 30 s, image pull 10, container start 1, readiness 5.
        assert_eq!(i.replacement_ready_s, 46.0);
        assert_eq!(i.instant_ready_s, 7.0);
        assert_eq!(i.standby_ready_s, 36.0);
        assert_eq!(i.untrusted_extra_s, 60.0);
        let b = i.burstable.unwrap();
        assert_eq!((b.instance_type.as_str(), b.vcpu, b.balance_credits), ("t3.xlarge", 4, 2304.0));
        assert!(BurstableNode::idle("m5.xlarge").is_none());
    }

    #[test]
    fn the_first_node_of_the_shortfall_serves_more_pools_than_the_deeper_ones() {
        // Eight reclaims a day per pool, an open core-second at 0.001 USD.
        // Node 1 of the shortfall covers a's and b's reclaims (16 a day):
        // placeholders' Spot room (0.07 USD / 4 vCPUs) costs 0.026 per
        // core and reclaim, against 0.046 for the open gap (46 s). Node 2
        // covers a's only (8 a day): Spot room would cost 0.053, a stopped
        // standby 0.0445 (its volume, 36 s left open, 16 s at on-demand),
        // under the open gap's 0.046.
        let view = layered(8.0, 0.07);
        let mix = size_tiers(&view, |_| 1.0, &cost(0.001), &shipped());
        assert_eq!(mix.units_of(Tier::Placeholders), 1, "{mix:?}");
        assert_eq!(mix.units_of(Tier::StandbyStopped), 1, "{mix:?}");
        assert_eq!(mix.standby_units_by_zone, BTreeMap::from([("a".to_string(), 1)]));
        assert_eq!(mix.open_units, 0);
        assert!(mix.expected_usd_per_hr < mix.open_usd_per_hr, "{mix:?}");
        // Through the policy knob, with the same shipped inputs.
        let spare = size_spare_capacity(&view, |_| 1.0, &cost(0.001));
        assert_eq!(spare, SpareCapacity { headroom_nodes: 1, standby_nodes: 1, burstable_nodes: 0 });
        assert_eq!(crate::warm_pool::standbys_wanted(&view, &cost(0.001)), mix.standby_units_by_zone);
        // The shares are not read with cost sizing; with shares, cost is not.
        let shares = Policy { headroom_share_of_shortfall: 1.0, ..Policy::default() };
        assert_eq!(
            size_spare_capacity(&view, |_| 1.0, &shares),
            SpareCapacity { headroom_nodes: 2, standby_nodes: 0, burstable_nodes: 0 }
        );
    }

    #[test]
    fn the_mix_follows_the_value_of_the_gap_the_reclaim_rate_and_the_prices() {
        let view = layered(8.0, 0.07);
        let mix = |view: &ClusterView, gap: f64| size_tiers(view, |_| 1.0, &cost(gap), &shipped());
        // A gap worth nothing, or the default (the function bridge's price): hold nothing.
        for gap in [0.0, crate::policy::GAP_USD_PER_CORE_S] {
            let m = mix(&view, gap);
            assert!(m.units.is_empty() && m.open_units == 2, "{gap}: {m:?}");
            assert_eq!(m.expected_usd_per_hr, m.open_usd_per_hr);
        }
        // Every second dear: instant room for both nodes, the cheapest to hold.
        assert_eq!(mix(&view, 0.1).units, BTreeMap::from([(Tier::Placeholders, 2)]));
        // With Spot room at 0.20 USD for 4 vCPUs, the t3.xlarge (0.1664,
        // its credits spent first) is cheaper to hold: one per node of
        // room (4 vCPUs, 16 GiB each).
        let dear_spot = layered(8.0, 0.20);
        let m = mix(&dear_spot, 0.1);
        assert_eq!(m.units, BTreeMap::from([(Tier::BurstableRunning, 2)]), "{m:?}");
        assert_eq!(m.spare(), SpareCapacity { headroom_nodes: 0, standby_nodes: 0, burstable_nodes: 2 });
        // Without the burstable tier, placeholders again: none offered,
        // or the policy's default, which does not offer it.
        let none = TierInputs { burstable: None, ..shipped() };
        let m = size_tiers(&dear_spot, |_| 1.0, &cost(0.1), &none);
        assert_eq!(m.units, BTreeMap::from([(Tier::Placeholders, 2)]));
        let off = Policy { burstable_tier: false, ..cost(0.1) };
        assert_eq!(size_tiers(&dear_spot, |_| 1.0, &off, &shipped()), m);
        // Rare reclaims: holding anything costs more than the gaps it closes.
        assert_eq!(mix(&layered(0.05, 0.07), 0.001).open_units, 2);
        // Running standbys (the policy's mode) are offered instead of stopped ones.
        let running = Policy { standby_mode: StandbyMode::Running, ..cost(0.1) };
        let m = size_tiers(&dear_spot, |_| 1.0, &running, &none);
        assert_eq!(m.units_of(Tier::StandbyStopped), 0, "{m:?}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// 2–5 pools of m5.xlarge nodes, each node's load, reclaim rates and prices.
        fn views() -> impl Strategy<Value = ClusterView> {
            let pool = (prop::collection::vec(0u64..=4000, 1..4), 0.0f64..30.0, 0.03f64..0.19, any::<bool>());
            prop::collection::vec(pool, 2..6).prop_map(|pools| {
                let mut nodes = Vec::new();
                let mut pods = Vec::new();
                let mut views = Vec::new();
                for (p, (loads, rate, price, launchable)) in pools.into_iter().enumerate() {
                    let id = PoolId::new("m5.xlarge", format!("z{p}"));
                    for (i, load) in loads.into_iter().enumerate() {
                        let name = format!("n{p}-{i}");
                        nodes.push(node(&name, &id));
                        if load > 0 {
                            pods.push(pod(&format!("p{p}-{i}"), &name, load));
                        }
                    }
                    views.push(PoolView {
                        id,
                        spot_price: price,
                        on_demand_price: 0.192,
                        interruptions_per_day: rate,
                        launchable,
                        last_interruption: None,
                    });
                }
                ClusterView { nodes: nodes.into(), pods: pods.into(), pools: views, ..ClusterView::default() }
            })
        }

        fn held(m: &TierMix) -> u32 {
            m.units.values().sum()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Every node of the worst shortfall is held by one tier or left
            /// open; the mix never costs more than holding nothing; the
            /// same state gives the same mix.
            #[test]
            fn every_unit_is_placed_once_and_never_dearer_than_nothing(view in views(), gap in 0.0f64..0.05) {
                let policy = cost(gap);
                let m = size_tiers(&view, |_| 1.0, &policy, &shipped());
                let worst = shortfall_per_pool(&view, |_| 1.0)
                    .values()
                    .map(|r| in_nodes(*r, unit(&view)))
                    .fold(0.0f64, f64::max);
                prop_assert_eq!(held(&m) + m.open_units, (worst - 1e-9).ceil().max(0.0) as u32);
                prop_assert!(m.expected_usd_per_hr <= m.open_usd_per_hr + 1e-12, "{:?}", m);
                prop_assert_eq!(m.standby_units_by_zone.values().sum::<u32>(), m.units_of(Tier::StandbyStopped));
                prop_assert_eq!(&m, &size_tiers(&view, |_| 1.0, &policy, &shipped()));
            }

            /// A dearer gap, or more frequent reclaims, never leave more of
            /// the shortfall open.
            #[test]
            fn dearer_gaps_and_more_reclaims_hold_no_less(view in views(), gap in 0.0f64..0.02, more in 1.0f64..10.0) {
                let open = |v: &ClusterView, g: f64| size_tiers(v, |_| 1.0, &cost(g), &shipped()).open_units;
                prop_assert!(open(&view, gap * more) <= open(&view, gap));
                let mut often = view.clone();
                for p in &mut often.pools {
                    p.interruptions_per_day *= more;
                }
                prop_assert!(open(&often, gap) <= open(&view, gap));
            }
        }
    }
}

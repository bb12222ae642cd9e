//! The world in virtual time: nodes, pods, scheduler, replica controller,
//! load balancer, market and accounting, driven by a queue of timed events.
//!
//! Between two events nothing changes, so cost and requests are integrated
//! exactly over each interval (a per-second tally without the per-second loop).

use crate::catalog::{self, InstanceType};
use crate::config::{PoolHit, SimConfig};
use crate::market::Market;
use crate::rng::Rng;
use crate::strategy::Strategy;
use crate::timings::ms;
use costop_core::listed::{Listed, Nodes, Pods};
use costop_core::model::{INTERRUPTION_TAINT, STANDBY_TAINT};
use costop_core::notice::InstanceAction;
use costop_core::ports::{Evicted, StandbyInstance, StandbyStage};
use costop_core::time::{Millis, DAY, MINUTE, SECOND, SPOT_NOTICE_LEAD};
use costop_core::Plan;
use costop_core::{
    CapacityType, ClusterView, Name, NodeView, Notice, NoticeKind, NoticeSource, PoolId, PoolView, Resources,
    Step, Taint, WorkloadView,
};
use costop_world::budget::{self, Amount, BudgetSpec, BudgetStatus, EvictedPod};
use costop_world::credits::CreditAccount;
use costop_world::kubelet::{self, PodStart};
use costop_world::replicas::{self, Controller, ReplicaDecision, ReplicaPod};
use costop_world::scheduler::{self, Effect, NodeFit, PodFit, Victim};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::sync::Arc;

mod debug;
mod live_requests;
mod pod_rows;

/// Karpenter keeps an interrupted offering out of launches for 3 minutes
/// (`UnavailableOfferingsTTL`, karpenter-provider-aws pkg/cache/cache.go).
const KARPENTER_UNAVAILABLE_TTL: Millis = 3 * MINUTE;
/// The agent polls instance metadata every 500 ms by default.
const COSTOP_POLL: Millis = 500;
/// aws-node-termination-handler polls instance metadata every 2 s.
const NTH_POLL: Millis = 2 * SECOND;
/// A fallback node consolidation could not move back to Spot is tried again after this.
const CONSOLIDATION_RETRY: Millis = 5 * MINUTE;
/// How far behind the world the ports' view may be (a watch cache's lag).
const WATCH_LAG: Millis = 100;
/// Priority of costop's placeholder pods.
const PLACEHOLDER_PRIORITY: i32 = -10;
/// The taint a warm standby carries.
const STANDBY_TAINTS: [scheduler::Taint<'static>; 1] =
    [scheduler::Taint { key: STANDBY_TAINT, value: "", effect: Effect::NoSchedule }];
/// Memory of the bridge function (GB) and its run time per request (s). Estimates.
const BRIDGE_FUNCTION_GB: f64 = 0.5;
const BRIDGE_FUNCTION_S: f64 = 0.1;
/// Account-level concurrent executions of Lambda by default (1,000,
/// shared by every function of the account), so all bridges together serve
/// at most 1,000 / 0.1 s requests per second.
const BRIDGE_MAX_RPS: f64 = 1000.0 / BRIDGE_FUNCTION_S;

/// Shares of the bill the world keeps apart (indices of `cost_kinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CostKind {
    Spot = 0,
    OnDemand = 1,
    StoppedStandby = 2,
    Burstable = 3,
    RunningStandby = 4,
    /// Placeholder pods' share of the Spot nodes they sit on (also in `Spot`).
    Placeholders = 5,
}
const COST_KINDS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Booting,
    Ready,
    Stopped,
    Gone,
}

#[derive(Debug, Clone)]
struct Node {
    /// `node-N` and `i-…`, made once.
    name: Name,
    instance_id: Name,
    itype: &'static InstanceType,
    zone: usize,
    pool: Option<usize>,
    capacity: CapacityType,
    state: NodeState,
    alloc: Resources,
    used: Resources,
    unschedulable: bool,
    standby_taint: bool,
    in_lb: bool,
    doomed: bool,
    /// Reclaimed without a notice reaching it.
    notice_missed: bool,
    /// On-demand capacity launched because no Spot pool could launch.
    fallback: bool,
    /// A warm-pool standby: its stage tag and launch time.
    standby_stage: Option<(StandbyStage, Millis)>,
    /// When consolidation last launched a Spot node to replace this fallback.
    consolidation_tried: Option<Millis>,
    /// Since when it has held no workload pod.
    empty_since: Option<Millis>,
    /// Marked scale-down-disabled (costop holds a rebalance
    /// recommendation's early replacement): the node autoscaler keeps it.
    scale_down_held: bool,
    pods: Vec<u32>,
    /// How many of `pods` are placeholders.
    placeholders: u32,
    /// When it was launched and when it went (for `COSTOP_DEBUG_SIM`).
    lifetime: (Millis, Option<Millis>),
    images: Vec<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodState {
    Free,
    Pending,
    Starting,
    Ready,
    Terminating,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    No,
    Live,
    Dead,
}

#[derive(Debug, Clone)]
struct Pod {
    /// `pod-N-GEN`, made when the pod is.
    name: Name,
    gen: u32,
    workload: u32,
    node: Option<u32>,
    state: PodState,
    serve: Serve,
    volume: Option<u32>,
    seq: u64,
    counted_safe: bool,
}

#[derive(Debug, Clone)]
struct Workload {
    name: Name,
    replicas: u32,
    requests: Resources,
    rate: f64,
    capacity_per_pod: f64,
    min_available: u32,
    placeholder: bool,
    priority: i32,
    active: u32,
    ready: u32,
    ready_safe: u32,
    live: u32,
    dead: u32,
    bridged: bool,
    /// Whether a function can serve its requests (not GPU work).
    bridgeable: bool,
    bridge_live_at: Millis,
    fail_rate: f64,
    fail_dead_rate: f64,
    bridge_rate: f64,
    volumes: Vec<u32>,
    /// Replicas added by costop's surges, by the key each was marked with
    /// (see `World::surge`); `replicas` includes them.
    surges: Vec<(String, u32)>,
}

impl Workload {
    /// The replicas its owner asked for: `replicas` without costop's
    /// surges. An incident is over when these are Ready off doomed nodes.
    fn wanted(&self) -> u32 {
        self.replicas - self.surges.iter().map(|(_, n)| n).sum::<u32>()
    }

    /// A workload with no traffic, no budget and nothing running yet.
    fn idle(name: String, replicas: u32, requests: Resources) -> Self {
        Workload {
            name: name.into(),
            replicas,
            requests,
            rate: 0.0,
            capacity_per_pod: 0.0,
            min_available: 0,
            placeholder: false,
            priority: 0,
            active: 0,
            ready: 0,
            ready_safe: 0,
            live: 0,
            dead: 0,
            bridged: false,
            bridgeable: true,
            bridge_live_at: 0,
            fail_rate: 0.0,
            fail_dead_rate: 0.0,
            bridge_rate: 0.0,
            volumes: Vec::new(),
            surges: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Volume {
    /// `vol-N`, made once.
    id: Name,
    zone: usize,
    holder: Option<u32>,
    available_at: Millis,
    move_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// A pool's Spot price moved.
    Price(usize),
    /// A pool started or stopped refusing launches.
    Availability(usize),
    MarketNotice(usize, u32),
    Reclaim(usize),
    Rebalance(usize),
    Detected {
        node: u32,
        signal: Signal,
        deadline: Millis,
    },
    /// EC2's state change of a node reclaimed without notice reaches the
    /// strategies that read EventBridge.
    StateChange(u32),
    /// The node controller deletes a lost node's Node object.
    NodeDeleted(u32),
    NodeReady(u32),
    PodReady(u32, u32),
    PodGone(u32, u32),
    LostRecreate(u32, u32),
    LbDetect(u32),
    LbRemove(u32),
    EndpointGone(u32, u32),
    Provision {
        zone: Option<usize>,
        exclude: Option<usize>,
    },
    Wake,
    Sample,
    Consolidate,
}

/// What a strategy's detector saw about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    /// A Spot interruption notice.
    Interruption,
    /// A rebalance recommendation.
    Rebalance,
    /// EC2's state change to `shutting-down` of an instance reclaimed
    /// without notice (EventBridge; the queue's `instance-shutting-down`).
    ShuttingDown,
}

/// A notice as the strategy's detector saw it, waiting to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// Node index.
    pub node: u32,
    /// What was seen.
    pub signal: Signal,
    /// When the node goes (interruptions), or went (state changes).
    pub deadline: Millis,
}

/// A node being drained back out of service.
#[derive(Debug, Clone)]
struct Drain {
    node: u32,
    replacement: Option<u32>,
    next_at: Millis,
    deadline: Millis,
}

struct Incident {
    start: Millis,
    workloads: Vec<u32>,
    done_at: Option<Millis>,
    /// How many of the nodes hit never got their notice.
    missed: u32,
    /// The latest any of its notices arrived, after the reclaim's notice time.
    latest: Millis,
    /// With `COSTOP_DEBUG_SIM`: when pods pinned to a zone by their volumes
    /// were first seen Pending while the incident was open, and the most
    /// CPU they requested at once (millicores).
    pinned_waits: Option<(Millis, u64)>,
    /// Requests failed while it was the latest open incident, and of
    /// those the ones sent to vanished targets.
    failed: (f64, f64),
}

/// One strategy's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StrategyResult {
    /// Strategy name.
    pub name: String,
    /// Total cost, USD.
    pub cost_usd: f64,
    /// Requests offered.
    pub requests_total: f64,
    /// Requests that failed.
    pub requests_failed: f64,
    /// Requests served by the function bridge.
    pub requests_bridged: f64,
    /// Nodes that received a reclaim notice.
    pub interruptions: u64,
    /// Recovery time (notice → every displaced workload Ready again) per
    /// finished reclaim event whose notices all arrived (late ones too,
    /// timed from when they were due), seconds.
    pub recoveries_s: Vec<f64>,
    /// Recovery time of the finished reclaim events in which a node got no
    /// notice at all (AWS does not promise one), timed from the reclaim:
    /// there was no notice to time them from. Seconds.
    pub unwarned_recoveries_s: Vec<f64>,
    /// Reclaim events whose workloads were not whole again by the end of the run.
    pub unfinished_incidents: u64,
    /// Samples (hours, cumulative USD, cumulative failed requests).
    pub series: Vec<(f64, f64, f64)>,
    /// costop's spare capacity by tier and what each cost, when it was
    /// sized by cost (`spare_sizing = "cost"`).
    pub spare: Option<crate::spare::SpareReport>,
}

/// The world of one strategy.
pub struct World {
    cfg: Arc<SimConfig>,
    market: Arc<Market>,
    strategy: Strategy,
    zones: Vec<Name>,
    now: Millis,
    end: Millis,
    rng: Rng,
    /// Draws about notices (missed, late), the same for every strategy.
    notice_rng: Rng,
    queue: BinaryHeap<Reverse<(Millis, u64, Ev)>>,
    seq: u64,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    free_pods: Vec<u32>,
    pending: Vec<u32>,
    new_pending: Vec<u32>,
    workloads: Vec<Workload>,
    volumes: Vec<Volume>,
    inbox: Vec<Detection>,
    drains: Vec<Drain>,
    version: u64,
    /// Indices of the nodes not gone, ascending: the only ones the
    /// controllers look at (over a month most nodes ever launched are gone).
    live: Vec<u32>,
    /// Nodes gone without notice whose Node object the API still shows
    /// (NotReady, their pods bound) until someone deletes it.
    lingering: Vec<u32>,
    /// Like `version`, but price moves do not count.
    version_but_prices: u64,
    rebuilds: u64,
    /// Of `rebuilds`, how many found the pods unchanged (debugging).
    pods_kept: u64,
    view_cache: Option<(u64, Millis, Arc<ClusterView>)>,
    /// Buffer for the next snapshot's node list (see [`World::view`]).
    spare_nodes: Vec<NodeView>,
    /// What the last snapshot's pod rows were made of (see [`pod_rows`]).
    pod_rows: pod_rows::PodRows,
    /// The live nodes' capacity requests the last snapshot showed.
    live_requests: live_requests::LiveRequests,
    /// Tasks waiting for the view to change ([`World::on_change`]).
    view_watchers: Vec<std::task::Waker>,
    incidents: Vec<Incident>,
    open_incidents: Vec<usize>,
    /// `COSTOP_DEBUG_SIM`'s period and the next time it prints (see
    /// [`World::settle`]); `None` when it is off.
    debug_print: Option<(Millis, Millis)>,
    schedule_dirty: bool,
    doomed_batches: Vec<Vec<u32>>,
    pool_reclaims_seen: Vec<u32>,
    pool_last_reclaim: Vec<Option<Millis>>,
    karpenter_unavailable: Vec<Millis>,
    capacity_requests: std::collections::BTreeSet<String>,
    /// Nodes launched under each capacity key (what EC2 lists by the
    /// launch's tag).
    launched_under: BTreeMap<String, Vec<u32>>,
    headroom_target: u32,
    cost_rate_dirty: bool,
    cost_per_s: f64,
    /// Shares of the bill, by [`CostKind`] (the report's tier costs, and
    /// debugging).
    cost_kinds_per_s: [f64; COST_KINDS],
    cost_kinds: [f64; COST_KINDS],
    /// Surplus credits charged for burstable nodes, USD (in `cost` and
    /// in `cost_kinds[CostKind::Burstable]`).
    surplus_usd: f64,
    /// Burstable node-seconds with workload pods on them, and of those,
    /// seconds held to the baseline (standard mode, no credits left).
    burstable_busy_s: f64,
    burstable_throttled_s: f64,
    /// costop's tier mix when sized by cost (`crate::spare::size`).
    spare_mix: Option<costop_core::headroom::TierMix>,
    /// The CPU credits of each burstable node not gone (node index,
    /// account); what EC2 charges for their surplus is in `cost`.
    credits: Vec<(u32, CreditAccount)>,
    fail_rate: f64,
    /// Of `fail_rate`, requests routed to targets that are gone (debugging).
    fail_dead_rate: f64,
    failed_dead: f64,
    bridge_rate: f64,
    total_rate: f64,
    cost: f64,
    requests_total: f64,
    requests_failed: f64,
    requests_bridged: f64,
    interruptions: u64,
    series: Vec<(f64, f64, f64)>,
}

impl World {
    /// Build the world for one strategy: the same workloads and market for
    /// every strategy; the node layout is the strategy's own.
    pub fn new(cfg: Arc<SimConfig>, market: Arc<Market>, strategy: Strategy) -> Self {
        // Launches fail once a reclaim's notices are out, for every strategy.
        let market = Arc::new(market.closed_from_notices(SPOT_NOTICE_LEAD));
        let end = market.duration.min((cfg.days * DAY as f64) as Millis);
        let mut zones: Vec<String> = market.pools.iter().map(|p| p.id.zone.clone()).collect();
        zones.sort();
        zones.dedup();
        let seed = cfg.seed;
        let pool_count = market.pools.len();
        let mut world = World {
            cfg,
            market,
            strategy,
            zones: zones.into_iter().map(Name::from).collect(),
            now: 0,
            end,
            rng: Rng::new(seed).fork(0xC0575),
            notice_rng: Rng::new(seed).fork(0x70_71CE),
            queue: BinaryHeap::new(),
            seq: 0,
            nodes: Vec::new(),
            pods: Vec::new(),
            free_pods: Vec::new(),
            pending: Vec::new(),
            new_pending: Vec::new(),
            workloads: Vec::new(),
            volumes: Vec::new(),
            inbox: Vec::new(),
            drains: Vec::new(),
            version: 0,
            live: Vec::new(),
            lingering: Vec::new(),
            version_but_prices: 0,
            rebuilds: 0,
            pods_kept: 0,
            view_cache: None,
            spare_nodes: Vec::new(),
            pod_rows: Default::default(),
            live_requests: Default::default(),
            view_watchers: Vec::new(),
            incidents: Vec::new(),
            open_incidents: Vec::new(),
            debug_print: debug::print_period().map(|every| (every, 0)),
            schedule_dirty: true,
            doomed_batches: Vec::new(),
            pool_reclaims_seen: vec![0; pool_count],
            pool_last_reclaim: vec![None; pool_count],
            karpenter_unavailable: vec![0; pool_count],
            capacity_requests: Default::default(),
            launched_under: BTreeMap::new(),
            headroom_target: 0,
            cost_rate_dirty: true,
            cost_per_s: 0.0,
            cost_kinds_per_s: [0.0; COST_KINDS],
            cost_kinds: [0.0; COST_KINDS],
            surplus_usd: 0.0,
            burstable_busy_s: 0.0,
            burstable_throttled_s: 0.0,
            spare_mix: None,
            credits: Vec::new(),
            fail_rate: 0.0,
            fail_dead_rate: 0.0,
            failed_dead: 0.0,
            bridge_rate: 0.0,
            total_rate: 0.0,
            cost: 0.0,
            requests_total: 0.0,
            requests_failed: 0.0,
            requests_bridged: 0.0,
            interruptions: 0,
            series: Vec::new(),
        };
        world.build_workloads();
        world.build_nodes();
        world.place_initial_pods();
        if world.strategy.is_costop() {
            world.size_costop_headroom();
        }
        world.schedule_market();
        world
    }

    /// costop's spare capacity as the policy sizes it (`crate::spare::size`):
    /// placeholders for the worst pool's shortfall (`costop_core::headroom`),
    /// held on extra Spot nodes where the free room is short, four
    /// placeholders (a quarter node each) per node; with cost sizing, the
    /// burstable nodes of the tier mix, running and tainted as idle spare,
    /// spread over the zones (warm standbys are the warm-pool keeper's).
    fn size_costop_headroom(&mut self) {
        let mut view = self.cluster_view();
        view.pools = self.pool_views();
        let (spare, mix) = crate::spare::size(&view, &self.cfg);
        self.spare_mix = mix;
        if spare.burstable_nodes > 0 {
            self.launch_burstable_spare(spare.burstable_nodes);
        }
        if spare.headroom_nodes == 0 {
            return;
        }
        let mut layout = BTreeMap::new();
        for n in self.nodes.iter().filter(|n| n.capacity == CapacityType::Spot) {
            if let Some(p) = n.pool {
                *layout.entry(self.market.pools[p].id.clone()).or_insert(0u32) += 1;
            }
        }
        let extra = costop_core::pools::choose_pools(
            &view.pools,
            &layout,
            spare.headroom_nodes,
            &[],
            &self.cfg.policy,
            0,
        );
        for (pool_id, count) in &extra {
            let idx = self.pool_index(pool_id);
            for _ in 0..*count {
                self.add_node(idx, CapacityType::Spot, NodeState::Ready);
            }
        }
        self.headroom_target = spare.headroom_nodes * 4;
        let ph = self.placeholder_workload();
        self.workloads[ph as usize].replicas = self.headroom_target;
        self.place_initial_pods();
    }

    /// Launch `count` burstable nodes of the shipped type as idle spare:
    /// running, joined, tainted `costop.io/standby:NoSchedule`, one zone
    /// after another.
    fn launch_burstable_spare(&mut self, count: u32) {
        let Some(itype) = catalog::instance_type(costop_core::headroom::SHIPPED_BURSTABLE_TYPE) else {
            return;
        };
        for i in 0..count as usize {
            let zone = &self.zones[i % self.zones.len().max(1)];
            let Some(pool) = self.market.pools.iter().position(|p| p.id.zone == **zone) else { continue };
            let n = self.add_node_of_type(pool, itype, CapacityType::Burstable, NodeState::Ready);
            let node = &mut self.nodes[n as usize];
            node.standby_taint = true;
            node.in_lb = false;
        }
    }

    // ----- set-up -------------------------------------------------------

    fn node_type(&self) -> &'static InstanceType {
        self.market
            .pools
            .first()
            .and_then(|p| catalog::instance_type(&p.id.instance_type))
            .unwrap_or(&FALLBACK_TYPE)
    }

    fn allocatable(t: &InstanceType) -> Resources {
        // System and kube reservations (estimate): 8 % of CPU, 12 % of memory.
        Resources::new(u64::from(t.vcpu) * 920, u64::from(t.memory_gib) * 1024 * 88 / 100)
    }

    fn build_workloads(&mut self) {
        let cfg = self.cfg.clone();
        let mut rng = Rng::new(cfg.seed).fork(0x3012);
        let alloc = Self::allocatable(self.node_type());
        let total_pods = cfg.nodes * cfg.pods_per_node;
        let count = total_pods.div_ceil(100).max(1);
        // Requests fill `utilisation` of each node's CPU (sizes vary ±40 %
        // around it) and a little less of its memory.
        let util = cfg.world.utilisation;
        let base_cpu = alloc.cpu_millis as f64 * util / f64::from(cfg.pods_per_node);
        let base_mem = alloc.memory_mib as f64 * util * 0.85 / f64::from(cfg.pods_per_node);
        let replicas_of = |i: u32| total_pods / count + u32::from(i < total_pods % count);
        let mut sizes: Vec<f64> = (0..count).map(|_| rng.range(0.6, 1.4)).collect();
        // Scaled so the cluster's requests are exactly `utilisation` of it.
        let mean = (0..count).map(|i| sizes[i as usize] * f64::from(replicas_of(i))).sum::<f64>()
            / f64::from(total_pods);
        for s in &mut sizes {
            *s /= mean;
        }
        for i in 0..count {
            let replicas = replicas_of(i);
            let size = sizes[i as usize];
            let stateful = i % 10 == 9;
            let mut w = Workload {
                rate: f64::from(replicas) * cfg.requests_per_pod_s,
                capacity_per_pod: cfg.requests_per_pod_s * cfg.pod_capacity_factor,
                min_available: replicas.saturating_sub((replicas / 10).max(1)),
                ..Workload::idle(
                    format!("svc-{i:03}"),
                    replicas,
                    Resources::new((base_cpu * size) as u64, (base_mem * size) as u64),
                )
            };
            // GPU work cannot run in a function.
            w.bridgeable = !self.node_type().name.starts_with('p') && !self.node_type().name.starts_with('g');
            if stateful {
                for r in 0..replicas {
                    w.volumes.push(self.volumes.len() as u32);
                    let zone = (r as usize + i as usize) % self.zones.len().max(1);
                    self.volumes.push(Volume {
                        id: format!("vol-{}", self.volumes.len()).into(),
                        zone,
                        holder: None,
                        available_at: 0,
                        move_requested: false,
                    });
                }
            }
            self.total_rate += w.rate;
            self.workloads.push(w);
        }
        // costop's placeholders: one workload, sized a quarter node each.
        self.workloads.push(Workload {
            placeholder: true,
            priority: PLACEHOLDER_PRIORITY,
            ..Workload::idle(
                "costop-headroom".into(),
                0,
                Resources::new(alloc.cpu_millis / 4, alloc.memory_mib / 4),
            )
        });
    }

    fn placeholder_workload(&self) -> u32 {
        (self.workloads.len() - 1) as u32
    }

    fn zone_index(&self, zone: &str) -> usize {
        self.zones.iter().position(|z| z == zone).unwrap_or(0)
    }

    fn add_node(&mut self, pool: usize, capacity: CapacityType, state: NodeState) -> u32 {
        let p = &self.market.pools[pool];
        let itype = catalog::instance_type(&p.id.instance_type).unwrap_or(self.node_type());
        self.add_node_of_type(pool, itype, capacity, state)
    }

    /// A node of `itype` in `pool`'s zone (its Spot pool when `capacity` is Spot).
    fn add_node_of_type(
        &mut self,
        pool: usize,
        itype: &'static InstanceType,
        capacity: CapacityType,
        state: NodeState,
    ) -> u32 {
        let p = &self.market.pools[pool];
        let index = self.nodes.len() as u32;
        let node = Node {
            name: node_name(index).into(),
            instance_id: instance_id(index).into(),
            itype,
            zone: self.zone_index(&p.id.zone),
            pool: Some(pool),
            capacity,
            state,
            alloc: Self::allocatable(itype),
            used: Resources::default(),
            unschedulable: false,
            standby_taint: capacity.is_standby(),
            in_lb: state == NodeState::Ready && !capacity.is_standby(),
            doomed: false,
            notice_missed: false,
            fallback: false,
            standby_stage: capacity.is_standby().then_some((StandbyStage::Kept, 0)),
            consolidation_tried: None,
            empty_since: None,
            scale_down_held: false,
            pods: Vec::new(),
            placeholders: 0,
            lifetime: (self.now, None),
            images: vec![state == NodeState::Ready; self.workloads.len()],
        };
        self.nodes.push(node);
        self.live.push(index);
        if let Some(facts) = catalog::burstable(itype.name).filter(|_| capacity == CapacityType::Burstable) {
            // Launched with RunInstances' default credit option.
            self.credits.push((index, CreditAccount::launch(facts, facts.default_mode)));
        }
        self.cost_rate_dirty = true;
        (self.nodes.len() - 1) as u32
    }

    fn build_nodes(&mut self) {
        let n = self.cfg.nodes;
        let pools = self.market.pools.len();
        match self.strategy {
            Strategy::Costop | Strategy::CostopBurstable => {
                // costop's pool choice; spare capacity is sized once the
                // pods are placed (`size_costop_headroom`).
                let view_pools = self.pool_views();
                let (layout, _) = costop_core::pools::recommend_layout(
                    &view_pools,
                    n,
                    self.cfg.world.utilisation,
                    &self.cfg.policy,
                    0,
                );
                for (pool_id, count) in &layout {
                    let idx = self.pool_index(pool_id);
                    for _ in 0..*count {
                        self.add_node(idx, CapacityType::Spot, NodeState::Ready);
                    }
                }
            }
            Strategy::ReplaceOnNotice => {
                // Karpenter provisions the pending pods spread over the zones
                // (topology spread), each zone's nodes in its
                // price-capacity-optimized pool.
                let zones = self.zones.len().max(1);
                for i in 0..n as usize {
                    let pool = self.karpenter_pick_pool(Some(i % zones)).unwrap_or(i % pools);
                    self.add_node(pool, CapacityType::Spot, NodeState::Ready);
                }
            }
            _ => {
                let capacity =
                    if self.strategy.uses_spot() { CapacityType::Spot } else { CapacityType::OnDemand };
                for i in 0..n as usize {
                    self.add_node(i % pools, capacity, NodeState::Ready);
                }
            }
        }
    }

    /// Karpenter's Spot choice: EC2 Fleet with the `price-capacity-optimized`
    /// allocation strategy (karpenter-provider-aws launches Spot with it):
    /// among the allowed offerings (launchable, and not in the 3-minute
    /// unavailable-offerings cache), the pools least likely to be
    /// interrupted, then the lowest price per vCPU among them. The zone of
    /// the pending pods first (their topology spread), any zone otherwise.
    /// Likelihood: the pool's public prior (Spot Advisor band), within 50 %.
    fn karpenter_pick_pool(&self, zone: Option<usize>) -> Option<usize> {
        let base = self.node_type();
        let allowed: Vec<usize> = (0..self.market.pools.len())
            .filter(|&i| {
                let p = &self.market.pools[i];
                p.launchable_at(self.now)
                    && self.karpenter_unavailable[i] <= self.now
                    && catalog::instance_type(&p.id.instance_type).is_some_and(|t| t.vcpu >= base.vcpu)
            })
            .collect();
        let in_zone: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|&i| Some(self.zone_index(&self.market.pools[i].id.zone)) == zone)
            .collect();
        let candidates = if in_zone.is_empty() { allowed } else { in_zone };
        let risk = |i: usize| self.market.pools[i].prior_interruptions_per_day;
        let least = candidates.iter().map(|&i| risk(i)).fold(f64::INFINITY, f64::min);
        let per_vcpu = |i: usize| {
            let p = &self.market.pools[i];
            let vcpu = catalog::instance_type(&p.id.instance_type).map_or(1.0, |t| f64::from(t.vcpu));
            p.price_at(self.now) / vcpu
        };
        candidates
            .into_iter()
            .filter(|&i| risk(i) <= least * 1.5 + 1e-9)
            .min_by(|&a, &b| per_vcpu(a).total_cmp(&per_vcpu(b)).then(a.cmp(&b)))
    }

    /// How often consolidation looks for nodes to move back to Spot.
    /// Karpenter's disruption controller polls every 10 s
    /// (pkg/controllers/disruption `pollingPeriod`); costop's node
    /// autoscaler model checks each minute.
    fn consolidate_every(&self) -> Millis {
        match self.strategy {
            Strategy::ReplaceOnNotice => 10 * SECOND,
            _ => MINUTE,
        }
    }

    fn pool_index(&self, id: &PoolId) -> usize {
        self.market.pools.iter().position(|p| &p.id == id).unwrap_or(0)
    }

    fn place_initial_pods(&mut self) {
        for w in 0..self.workloads.len() as u32 {
            self.reconcile(w);
        }
        self.schedule();
        // The cluster starts warm: every bound pod is Ready at time zero.
        for i in 0..self.pods.len() as u32 {
            if self.pods[i as usize].state == PodState::Starting {
                self.pod_ready(i);
            }
        }
        self.queue.clear();
    }

    fn schedule_market(&mut self) {
        let sample_every = (self.end / 240).max(MINUTE);
        let mut t = 0;
        while t <= self.end {
            self.push(t, Ev::Sample);
            t += sample_every;
        }
        if !self.strategy.uses_spot() {
            return;
        }
        let market = self.market.clone();
        if self.strategy == Strategy::Oracle {
            // The oracle's cost moves with prices, with which pools can
            // launch, and with reclaims.
            for (i, pool) in market.pools.iter().enumerate() {
                let changes = pool.prices.iter().skip(1).map(|(t, _)| *t);
                let spans = pool.unavailable.iter().flat_map(|(a, b)| [*a, *b]);
                let spans = spans.chain(pool.reclaims.iter().map(|r| r.at));
                let end = self.end;
                for t in changes.chain(spans).filter(|t| *t < end) {
                    self.push(t, Ev::Price(i));
                }
            }
            return;
        }
        if matches!(self.strategy, Strategy::Costop | Strategy::CostopBurstable | Strategy::ReplaceOnNotice) {
            self.push(self.consolidate_every(), Ev::Consolidate);
        }
        let mut rng = Rng::new(self.cfg.seed).fork(0x7EBA1);
        let lead = ms(self.cfg.rebalance_lead_s);
        for (i, pool) in market.pools.iter().enumerate() {
            // Prices and whether the pool can launch are what costop's view shows.
            let end = self.end;
            for (t, _) in pool.prices.iter().skip(1).filter(|(t, _)| *t < end) {
                self.push(*t, Ev::Price(i));
            }
            for t in pool.unavailable.iter().flat_map(|(a, b)| [*a, *b]).filter(|t| *t < end) {
                self.push(t, Ev::Availability(i));
            }
            for (k, r) in pool.reclaims.iter().enumerate() {
                if r.at >= self.end || r.at < SPOT_NOTICE_LEAD {
                    continue;
                }
                self.push(r.at - SPOT_NOTICE_LEAD, Ev::MarketNotice(i, k as u32));
                if rng.unit() < self.cfg.rebalance_probability && r.at > lead + SPOT_NOTICE_LEAD {
                    self.push(r.at - lead, Ev::Rebalance(i));
                }
            }
            // Recommendations that no reclaim follows.
            let per_day = self.cfg.world.false_rebalance_per_pool_day;
            if per_day > 0.0 {
                let mut t = rng.exponential(DAY as f64 / per_day) as Millis;
                while t < self.end {
                    self.push(t, Ev::Rebalance(i));
                    t += (rng.exponential(DAY as f64 / per_day) as Millis).max(SECOND);
                }
            }
        }
    }

    // ----- event loop ---------------------------------------------------

    fn push(&mut self, at: Millis, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at.max(self.now), self.seq, ev)));
    }

    /// When the next event is due.
    pub fn next_event_at(&self) -> Option<Millis> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// When the run ends.
    pub fn end(&self) -> Millis {
        self.end
    }

    /// Handle every event due at `t` (moving time there first).
    pub fn run_events_at(&mut self, t: Millis) {
        self.advance_to(t);
        while self.queue.peek().is_some_and(|Reverse((at, _, _))| *at <= t) {
            let Some(Reverse((_, _, ev))) = self.queue.pop() else { break };
            self.handle(ev);
        }
    }

    /// The outcome, once the run has reached its end.
    pub fn finish(&mut self) -> StrategyResult {
        if std::env::var_os("COSTOP_DEBUG_SIM").is_some() {
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for n in self.nodes.iter().filter(|n| n.state != NodeState::Gone) {
                *counts
                    .entry(format!(
                        "{:?}/{:?}{}",
                        n.state,
                        n.capacity,
                        if n.fallback { "/fallback" } else { "" }
                    ))
                    .or_default() += 1;
            }
            let mut launches: BTreeMap<String, u32> = BTreeMap::new();
            for n in &self.nodes {
                *launches
                    .entry(format!("{}/{}/{:?}", n.itype.name, self.zones[n.zone], n.capacity))
                    .or_default() += 1;
            }
            eprintln!("[{}] launches by type/zone/capacity {launches:?}", self.strategy.name());
            // On-demand node-hours by kind (fallback, woken standby, other).
            let mut od: BTreeMap<&str, (u32, f64)> = BTreeMap::new();
            for n in self.nodes.iter().filter(|n| n.capacity == CapacityType::OnDemand) {
                let kind = if n.fallback {
                    "fallback"
                } else if n.standby_stage.is_some() {
                    "standby"
                } else {
                    "other"
                };
                let e = od.entry(kind).or_default();
                e.0 += 1;
                e.1 += (n.lifetime.1.unwrap_or(self.now) - n.lifetime.0) as f64 / 3_600_000.0;
            }
            eprintln!("[{}] on-demand nodes and node-hours by kind {od:?}", self.strategy.name());
            // Spot node-hours and the money paid per pool (at each pool's mean price).
            let mut hours = vec![0.0; self.market.pools.len()];
            for n in self.nodes.iter().filter(|n| n.capacity == CapacityType::Spot) {
                if let Some(p) = n.pool {
                    hours[p] += (n.lifetime.1.unwrap_or(self.now) - n.lifetime.0) as f64 / 3_600_000.0;
                }
            }
            for (p, h) in hours.iter().enumerate().filter(|(_, h)| **h > 0.0) {
                let pool = &self.market.pools[p];
                let samples = 200;
                let mean =
                    (0..samples).map(|i| pool.price_at(self.end / samples * i)).sum::<f64>() / samples as f64;
                eprintln!(
                    "[{}] pool {} node-hours {h:.0} mean price {mean:.3} reclaims {}",
                    self.strategy.name(),
                    pool.id,
                    pool.reclaims.len()
                );
            }
            let pending = self.pods.iter().filter(|p| p.state == PodState::Pending).count();
            eprintln!(
                "[{}] nodes at the end {counts:?}, {} launched in all, {pending} pods pending",
                self.strategy.name(),
                self.nodes.len()
            );
            eprintln!(
                "[{}] view rebuilds {} (pods unchanged in {}), version {}, cost spot/on-demand/stopped/burstable/running standby/placeholders {:?}, bridged {:.0} failed {:.0} (to vanished targets {:.0})",
                self.strategy.name(),
                self.rebuilds,
                self.pods_kept,
                self.version,
                self.cost_kinds.map(|c| c.round()),
                self.requests_bridged,
                self.requests_failed,
                self.failed_dead
            );
        }
        self.advance_to(self.end);
        let end = self.end;
        let (mut recoveries_s, mut unwarned_recoveries_s, mut unfinished) = (Vec::new(), Vec::new(), 0);
        for i in &self.incidents {
            match i.done_at {
                Some(d) if i.missed > 0 => {
                    unwarned_recoveries_s.push(d.saturating_sub(i.start + SPOT_NOTICE_LEAD) as f64 / 1000.0)
                }
                Some(d) => recoveries_s.push((d - i.start) as f64 / 1000.0),
                None if i.start < end => unfinished += 1,
                None => {}
            }
        }
        StrategyResult {
            name: self.strategy.name().into(),
            cost_usd: self.cost,
            requests_total: self.requests_total,
            requests_failed: self.requests_failed,
            requests_bridged: self.requests_bridged,
            interruptions: self.interruptions,
            recoveries_s,
            unwarned_recoveries_s,
            unfinished_incidents: unfinished,
            series: std::mem::take(&mut self.series),
            spare: self.spare_mix.as_ref().map(|mix| crate::spare::SpareReport {
                mix: crate::spare::describe(mix),
                placeholder_pods: mix.spare().headroom_nodes * 4,
                burstable_nodes: mix.burstable_nodes,
                standby_units: mix.spare().standby_nodes,
                placeholders_usd: self.cost_kinds[CostKind::Placeholders as usize],
                burstable_usd: self.cost_kinds[CostKind::Burstable as usize],
                burstable_surplus_usd: self.surplus_usd,
                standbys_usd: self.cost_kinds[CostKind::StoppedStandby as usize]
                    + self.cost_kinds[CostKind::RunningStandby as usize],
                burstable_busy_s: self.burstable_busy_s,
                burstable_throttled_s: self.burstable_throttled_s,
            }),
        }
    }

    /// The controllers act on what happened: the scheduler binds, drains move on.
    pub fn settle(&mut self) {
        // Debug output rides on the steps the run takes anyway: an event
        // of its own would wake the world and the executor at times the
        // run without it does not, and change what it debugs.
        if let Some((every, next)) = self.debug_print {
            if self.now >= next {
                self.debug_open_incidents();
                self.debug_print = Some((every, (self.now / every + 1) * every));
            }
        }
        for _ in 0..8 {
            let dirty = self.schedule_dirty || !self.new_pending.is_empty();
            self.schedule();
            self.advance_drains();
            if dirty {
                self.changed();
            }
            if !self.schedule_dirty && self.new_pending.is_empty() {
                break;
            }
        }
    }

    /// Something a port can observe changed: the next view is rebuilt.
    fn changed(&mut self) {
        self.version_but_prices += 1;
        self.views_move();
    }

    /// The view shows something new: its version moves and those waiting
    /// for a change are woken.
    fn views_move(&mut self) {
        self.version += 1;
        for w in self.view_watchers.drain(..) {
            w.wake();
        }
    }

    /// When the view is behind the world by less than the watch lag, the
    /// milliseconds until [`World::view`] shows the change (`None` when
    /// the view is current).
    pub fn view_lag_left(&self) -> Option<Millis> {
        match &self.view_cache {
            Some((v, at, _)) if *v != self.version && self.now < at + WATCH_LAG => {
                Some(at + WATCH_LAG - self.now)
            }
            _ => None,
        }
    }

    /// Wake `waker` at the world's next change.
    pub fn on_change(&mut self, waker: std::task::Waker) {
        if !self.view_watchers.iter().any(|w| w.will_wake(&waker)) {
            self.view_watchers.push(waker);
        }
    }

    /// The cluster as costop's ports observe it, like a watch-backed cache:
    /// one snapshot until the world changes, and at most 100 ms behind it
    /// (a watch delivers changes with some lag too).
    ///
    /// A new snapshot whose node or pod list holds what the last one's did
    /// (a price move changes no pod; most changes touch no node) takes a
    /// [`costop_core::listed::Listed::reissue`] of it: the lookups readers
    /// built on the last one are not built again. It is a list of its own
    /// all the same, so whatever is keyed on a snapshot's lists (the claims
    /// applied to one) is as it would be with lists made afresh. Of a pod
    /// list that changed, only the changed pods' rows are built (the
    /// world's `pod_rows` module).
    pub fn view(&mut self) -> Arc<ClusterView> {
        if let Some((v, at, view)) = &self.view_cache {
            if *v == self.version || self.now < at + WATCH_LAG {
                return view.clone();
            }
        }
        let last = self.view_cache.take().map(|(_, _, view)| view);
        let mut nodes = std::mem::take(&mut self.spare_nodes);
        self.node_views(&mut nodes);
        let (nodes, _) = reissue_if_same(last.as_ref().map(|v| &v.nodes), nodes, &mut self.spare_nodes);
        let (pods, pods_kept) = self.pod_list(last.as_ref().map(|v| &v.pods));
        let requests = self.live_capacity_requests();
        debug_assert!(
            pods.iter().map(|p| &**p).eq(self.fresh_pod_list().iter()),
            "a snapshot's pods are what a fresh list shows"
        );
        debug_assert!(requests == self.find_live_capacity_requests());
        let view = Arc::new(self.view_with(nodes, pods, requests));
        self.rebuilds += 1;
        self.pods_kept += u64::from(pods_kept);
        self.view_cache = Some((self.version, self.now, view.clone()));
        view
    }

    /// A counter that moves whenever the observable world changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A counter that moves whenever the observable world changes in more
    /// than Spot prices (which the warm-pool keeper does not read).
    pub fn version_but_prices(&self) -> u64 {
        self.version_but_prices
    }

    /// Now, in the world.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The strategy this world runs.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    fn advance_to(&mut self, t: Millis) {
        if t <= self.now {
            return;
        }
        // A standard-mode burstable node that runs out of credits on the
        // way serves less from then on: stop there first.
        if let Some(at) = self.next_throttle().filter(|&at| at < t) {
            self.advance_to(at);
            self.refresh_burstable_traffic();
        }
        if self.cost_rate_dirty {
            self.recompute_cost_rate();
        }
        let dt = (t - self.now) as f64 / 1000.0;
        self.cost += self.cost_per_s * dt;
        for (c, r) in self.cost_kinds.iter_mut().zip(self.cost_kinds_per_s) {
            *c += r * dt;
        }
        self.requests_total += self.total_rate * dt;
        self.requests_failed += self.fail_rate * dt;
        // For `COSTOP_DEBUG_INCIDENTS`: what failed while incidents were
        // open goes to the latest one.
        if let Some(&i) = self.open_incidents.last() {
            self.incidents[i].failed.0 += self.fail_rate * dt;
            self.incidents[i].failed.1 += self.fail_dead_rate * dt;
        }
        self.failed_dead += self.fail_dead_rate * dt;
        self.requests_bridged += self.bridge_rate * dt;
        let per_request = catalog::LAMBDA_USD_PER_REQUEST
            + BRIDGE_FUNCTION_GB * BRIDGE_FUNCTION_S * catalog::LAMBDA_USD_PER_GB_SECOND;
        self.cost += self.bridge_rate * dt * per_request;
        if !self.credits.is_empty() {
            self.run_credits(dt, t >= self.end);
        }
        self.now = t;
    }

    /// When the first standard-mode burstable node asked for more than
    /// its baseline runs out of credits, if one does (at least a
    /// millisecond ahead, so time moves on).
    fn next_throttle(&self) -> Option<Millis> {
        self.credits
            .iter()
            .filter_map(|(n, account)| account.seconds_until_throttled(self.burstable_demand_vcpu(*n)))
            .filter(|s| *s > 0.0)
            .map(|s| self.now + ((s * 1000.0).ceil() as Millis).max(1))
            .min()
    }

    /// vCPUs a burstable node's workload asks for: the CPU requests of its
    /// workload pods starting or Ready (placeholders ask for none), pods
    /// busy up to their requests (the model's choice).
    fn burstable_demand_vcpu(&self, n: u32) -> f64 {
        let millis: u64 = self.nodes[n as usize]
            .pods
            .iter()
            .map(|&p| &self.pods[p as usize])
            .filter(|p| matches!(p.state, PodState::Starting | PodState::Ready))
            .map(|p| &self.workloads[p.workload as usize])
            .filter(|w| !w.placeholder)
            .map(|w| w.requests.cpu_millis)
            .sum();
        millis as f64 / 1000.0
    }

    /// Share of its requests each pod on burstable node `n` serves now
    /// (`CreditAccount::served_share`: below 1 only in standard mode with
    /// no credits left, held to the baseline).
    fn burstable_served_share(&self, n: u32) -> f64 {
        self.credits
            .iter()
            .find(|(c, _)| *c == n)
            .map_or(1.0, |(_, account)| account.served_share(self.burstable_demand_vcpu(n)))
    }

    /// Pod-equivalents of workload `w` lost to throttling: on each
    /// throttled burstable node, each of its serving pods gives up the
    /// share it cannot serve.
    fn throttled_pods(&self, w: usize) -> f64 {
        let mut lost = 0.0;
        for (n, _) in &self.credits {
            let share = self.burstable_served_share(*n);
            if share < 1.0 {
                let serving = self.nodes[*n as usize]
                    .pods
                    .iter()
                    .map(|&p| &self.pods[p as usize])
                    .filter(|p| p.workload as usize == w && p.serve == Serve::Live)
                    .count();
                lost += serving as f64 * (1.0 - share);
            }
        }
        lost
    }

    /// Recompute the traffic of every workload with pods on a burstable node.
    fn refresh_burstable_traffic(&mut self) {
        let mut ws: Vec<usize> = Vec::new();
        for (n, _) in &self.credits {
            ws.extend(self.nodes[*n as usize].pods.iter().map(|&p| self.pods[p as usize].workload as usize));
        }
        ws.sort_unstable();
        ws.dedup();
        for w in ws {
            self.refresh_traffic(w);
        }
    }

    /// Burstable nodes' CPU credits over the last `dt` seconds, and the
    /// surplus EC2 charges for them into the bill (on-demand's share). A
    /// running node is asked for the CPU requests of its workload pods
    /// (placeholders ask for none): the model's choice, pods busy up to
    /// their requests. At the end of the run the surplus still owed is
    /// charged, as it would be when the node stops; a node that goes is
    /// charged in `mark_gone`. A standard-mode node out of credits serves
    /// less ([`World::throttled_pods`]); `advance_to` stops where one runs
    /// out, so a step never crosses it.
    fn run_credits(&mut self, dt: f64, at_end: bool) {
        let mut usd = 0.0;
        let mut credits = std::mem::take(&mut self.credits);
        for (n, account) in &mut credits {
            let node = &self.nodes[*n as usize];
            if matches!(node.state, NodeState::Booting | NodeState::Ready) {
                let demand = self.burstable_demand_vcpu(*n);
                if demand > 0.0 {
                    self.burstable_busy_s += dt;
                    if account.served_share(demand) < 1.0 {
                        self.burstable_throttled_s += dt;
                    }
                }
                let step = account.advance(dt, demand);
                usd += account.facts().surplus_usd(step.charged_credits);
            }
            if at_end {
                usd += account.facts().surplus_usd(account.stop());
            }
        }
        self.credits = credits;
        self.cost += usd;
        self.surplus_usd += usd;
        self.cost_kinds[CostKind::Burstable as usize] += usd;
    }

    /// The oracle's bill per hour now: the nodes the workloads' requests
    /// fill, perfectly packed, in the cheapest pool it can run in (sized to
    /// that pool's instance type), or on-demand when none. A pod whose
    /// volume lives in a zone runs in that zone, for the oracle as for
    /// every strategy (EBS volumes attach in their own zone only): those
    /// pods fill the cheapest pool of their zone, the others the cheapest
    /// anywhere (each group rounded up to whole nodes: at most a node a
    /// zone above the exact floor). It moves pods ahead of every reclaim
    /// at no cost, so it is a floor for serving everything.
    fn oracle_usd_hr(&self) -> f64 {
        // What must run in each zone (pods with a volume there), and what
        // may run anywhere.
        let mut pinned = vec![Resources::default(); self.zones.len()];
        let mut free = Resources::default();
        for w in self.workloads.iter().filter(|w| !w.placeholder) {
            if w.volumes.is_empty() {
                let all = Resources::new(
                    w.requests.cpu_millis * u64::from(w.replicas),
                    w.requests.memory_mib * u64::from(w.replicas),
                );
                free = free.plus(&all);
            }
            // A StatefulSet has a volume per replica (it is never surged).
            debug_assert!(w.volumes.is_empty() || w.volumes.len() == w.replicas as usize);
            for &v in &w.volumes {
                let z = self.volumes[v as usize].zone;
                pinned[z] = pinned[z].plus(&w.requests);
            }
        }
        let cheapest = |want: Resources, zone: Option<&str>| {
            if want.is_zero() {
                return 0.0;
            }
            let needed = |t: &InstanceType| {
                let a = Self::allocatable(t);
                let by_cpu = want.cpu_millis as f64 / a.cpu_millis.max(1) as f64;
                let by_mem = want.memory_mib as f64 / a.memory_mib.max(1) as f64;
                by_cpu.max(by_mem).ceil()
            };
            let on_demand = needed(self.node_type()) * self.node_type().on_demand_usd_hr;
            self.market
                .pools
                .iter()
                .filter(|p| zone.is_none_or(|z| p.id.zone == z))
                .filter(|p| self.oracle_can_hold(p))
                .filter_map(|p| {
                    catalog::instance_type(&p.id.instance_type).map(|t| needed(t) * p.price_at(self.now))
                })
                .fold(on_demand, f64::min)
        };
        let zoned: f64 =
            (pinned.iter().enumerate()).map(|(z, want)| cheapest(*want, Some(&self.zones[z]))).sum();
        cheapest(free, None) + zoned
    }

    /// Whether the oracle can run in this pool now: nodes started before
    /// run on while the pool cannot launch, until a reclaim takes the whole
    /// pool (under `--pool-hit all`); after one, only once it can launch
    /// again. A partial reclaim never stops it (it foresaw which nodes go).
    fn oracle_can_hold(&self, pool: &crate::market::PoolMarket) -> bool {
        if pool.launchable_at(self.now) {
            return true;
        }
        let whole = |r: &&crate::market::Reclaim| self.cfg.pool_hit == PoolHit::All && r.share >= 1.0;
        // The last whole-pool reclaim, and whether the pool could launch
        // at any moment since (then it was entered again before this span).
        let Some(last) = pool.reclaims.iter().filter(whole).map(|r| r.at).filter(|&at| at <= self.now).max()
        else {
            return true;
        };
        let span_start = pool
            .unavailable
            .iter()
            .filter(|(a, b)| *a <= self.now && self.now < *b)
            .map(|(a, _)| *a)
            .min()
            .unwrap_or(self.now);
        span_start > last && pool.launchable_at(last)
    }

    fn recompute_cost_rate(&mut self) {
        if self.strategy == Strategy::Oracle {
            self.cost_per_s = self.oracle_usd_hr() / 3600.0;
            self.cost_rate_dirty = false;
            return;
        }
        let mut per_hour = 0.0;
        let mut by_kind = [0.0; COST_KINDS];
        let ph_cpu = self.workloads.last().filter(|w| w.placeholder).map_or(0, |w| w.requests.cpu_millis);
        for n in self.live.iter().map(|&i| &self.nodes[i as usize]) {
            let (kind, usd) = match (n.state, n.capacity) {
                (NodeState::Gone, _) => (CostKind::Spot, 0.0),
                (NodeState::Stopped, _) => (CostKind::StoppedStandby, catalog::stopped_standby_usd_hr()),
                (_, CapacityType::Spot) => {
                    let usd = n.pool.map_or(0.0, |p| self.market.pools[p].price_at(self.now));
                    if n.placeholders > 0 {
                        let share =
                            f64::from(n.placeholders) * ph_cpu as f64 / n.alloc.cpu_millis.max(1) as f64;
                        by_kind[CostKind::Placeholders as usize] += usd * share.min(1.0);
                    }
                    (CostKind::Spot, usd)
                }
                // Their surplus credits are charged as EC2 charges them (`run_credits`).
                (_, CapacityType::Burstable) => (CostKind::Burstable, n.itype.on_demand_usd_hr),
                (_, CapacityType::StandbyRunning) => (CostKind::RunningStandby, n.itype.on_demand_usd_hr),
                _ => (CostKind::OnDemand, n.itype.on_demand_usd_hr),
            };
            per_hour += usd;
            by_kind[kind as usize] += usd;
        }
        self.cost_per_s = per_hour / 3600.0;
        self.cost_kinds_per_s = by_kind.map(|u| u / 3600.0);
        self.cost_rate_dirty = false;
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Price(_) => {
                // Prices are part of what costop's view shows.
                self.cost_rate_dirty = true;
                self.views_move();
            }
            Ev::Availability(_) => {
                self.cost_rate_dirty = true;
                self.changed();
            }
            Ev::Sample => {
                let (h, c, f) = (self.now as f64 / 3_600_000.0, self.cost, self.requests_failed);
                self.series.push((h, c, f));
            }
            Ev::MarketNotice(pool, k) => self.market_notice(pool, k as usize),
            Ev::Reclaim(batch) => self.reclaim(batch),
            Ev::Rebalance(pool) => self.rebalance(pool),
            Ev::Detected { node, signal, deadline } => self.detected(node, signal, deadline),
            Ev::StateChange(n) => self.state_change(n),
            Ev::NodeDeleted(n) => self.node_deleted(n),
            Ev::NodeReady(n) => self.node_ready(n),
            Ev::PodReady(p, gen) => {
                if self.pods[p as usize].gen == gen && self.pods[p as usize].state == PodState::Starting {
                    self.pod_ready(p);
                }
            }
            Ev::PodGone(p, gen) => {
                if self.pods[p as usize].gen == gen && self.pods[p as usize].state == PodState::Terminating {
                    self.terminated(p);
                }
            }
            Ev::LostRecreate(p, gen) => {
                if self.pods[p as usize].gen == gen && self.pods[p as usize].state == PodState::Lost {
                    self.recreate_lost(p);
                }
            }
            Ev::EndpointGone(p, gen) => {
                if self.pods[p as usize].gen == gen && self.pods[p as usize].state == PodState::Terminating {
                    self.set_serve(p, Serve::No);
                }
            }
            Ev::LbRemove(n) => {
                for p in self.nodes[n as usize].pods.clone() {
                    self.set_serve(p, Serve::No);
                }
            }
            Ev::LbDetect(n) => {
                for p in self.nodes[n as usize].pods.clone() {
                    if self.pods[p as usize].serve == Serve::Dead {
                        self.set_serve(p, Serve::No);
                    }
                }
            }
            Ev::Provision { zone, exclude } => self.provision(zone, exclude),
            Ev::Wake => self.refresh_bridges(),
            Ev::Consolidate => self.consolidate(),
        }
    }

    // ----- market -------------------------------------------------------

    fn market_notice(&mut self, pool: usize, reclaim: usize) {
        let share = self.market.pools[pool].reclaims.get(reclaim).map_or(1.0, |r| r.share);
        self.pool_reclaims_seen[pool] += 1;
        self.pool_last_reclaim[pool] = Some(self.now);
        self.changed();
        let mut hit: Vec<u32> = (self.live.iter().copied())
            .filter(|&i| {
                let n = &self.nodes[i as usize];
                n.pool == Some(pool)
                    && n.capacity == CapacityType::Spot
                    && matches!(n.state, NodeState::Booting | NodeState::Ready)
                    && !n.doomed
            })
            .collect();
        let keep = match self.cfg.pool_hit {
            PoolHit::All => ((hit.len() as f64 * share).ceil() as usize).clamp(1, hit.len().max(1)),
            PoolHit::One => hit.len().min(1),
            PoolHit::Share(s) => ((hit.len() as f64 * s).ceil() as usize).min(hit.len()),
        };
        // A deterministic shuffle picks which nodes a partial hit takes.
        for i in (1..hit.len()).rev() {
            let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
            hit.swap(i, j);
        }
        hit.truncate(keep);
        if hit.is_empty() {
            return;
        }
        let deadline = self.now + SPOT_NOTICE_LEAD;
        let mut affected: Vec<u32> = Vec::new();
        let (mut missed_count, mut latest) = (0u32, 0);
        for (k, &n) in hit.iter().enumerate() {
            // Whether this instance's notice arrives, and how late: drawn
            // per (event, k-th node hit), so every strategy meets the same luck.
            let world = &self.cfg.world;
            let mut luck = self.notice_rng.fork(((pool as u64) << 40) ^ ((reclaim as u64) << 16) ^ k as u64);
            let missed = luck.unit() < world.missed_notice_rate;
            let late = if luck.unit() < world.late_notice_rate {
                ms(luck.unit() * world.late_notice_max_s)
            } else {
                0
            };
            self.interruptions += 1;
            self.nodes[n as usize].doomed = true;
            for p in self.nodes[n as usize].pods.clone() {
                let pod = self.pods[p as usize].clone();
                let w = pod.workload;
                if pod.counted_safe {
                    self.pods[p as usize].counted_safe = false;
                    self.workloads[w as usize].ready_safe -= 1;
                }
                if !self.workloads[w as usize].placeholder
                    && matches!(pod.state, PodState::Starting | PodState::Ready | PodState::Pending)
                    && !affected.contains(&w)
                {
                    affected.push(w);
                }
            }
            missed_count += missed as u32;
            self.nodes[n as usize].notice_missed = missed;
            latest = latest.max(late);
            if !missed {
                self.react_to_notice(n, deadline, late);
            }
        }
        if !affected.is_empty() {
            self.open_incidents.push(self.incidents.len());
            self.incidents.push(Incident {
                start: self.now,
                workloads: affected,
                done_at: None,
                missed: missed_count,
                latest,
                pinned_waits: None,
                failed: (0.0, 0.0),
            });
        }
        self.doomed_batches.push(hit);
        let batch = self.doomed_batches.len() - 1;
        self.push(deadline, Ev::Reclaim(batch));
    }

    fn react_to_notice(&mut self, node: u32, deadline: Millis, late: Millis) {
        let delay = late
            + match self.strategy {
                Strategy::OnDemand | Strategy::SpotNaive | Strategy::Oracle => return,
                Strategy::DrainOnNotice => (self.rng.unit() * NTH_POLL as f64) as Millis,
                Strategy::ReplaceOnNotice => ms(self.cfg.timings.eventbridge_delay_s),
                // Agent poll, then the fast path to the server.
                Strategy::Costop | Strategy::CostopBurstable => {
                    (self.rng.unit() * COSTOP_POLL as f64) as Millis + 20
                }
            };
        self.push(self.now + delay, Ev::Detected { node, signal: Signal::Interruption, deadline });
    }

    fn rebalance(&mut self, pool: usize) {
        if !self.strategy.is_costop() || !self.cfg.policy.act_on_rebalance {
            return;
        }
        let nodes: Vec<u32> = (self.live.iter().copied())
            .filter(|&i| {
                let n = &self.nodes[i as usize];
                n.pool == Some(pool) && n.capacity == CapacityType::Spot && n.state == NodeState::Ready
            })
            .collect();
        for n in nodes {
            let delay = (self.rng.unit() * COSTOP_POLL as f64) as Millis + 20;
            self.push(self.now + delay, Ev::Detected { node: n, signal: Signal::Rebalance, deadline: 0 });
        }
    }

    fn reclaim(&mut self, batch: usize) {
        let nodes = std::mem::take(&mut self.doomed_batches[batch]);
        for n in nodes {
            if self.nodes[n as usize].state == NodeState::Gone {
                continue;
            }
            self.node_gone(n);
            // Its Node stays, NotReady, with the pods its budgets or a
            // missed notice left on it, until the node controller deletes
            // it (node-monitor-grace-period 50 s, then 5 s). EC2 sends the
            // instance's state change for every reclaimed instance, noticed
            // or not (EventBridge "EC2 Instance State-change Notification").
            self.lingering.push(n);
            self.pod_rows.touch_all();
            let grace = ms(self.cfg.timings.lost_pod_recreate_s - self.cfg.timings.orphan_pod_gc_s);
            self.push(self.now + grace, Ev::NodeDeleted(n));
            self.push(self.now + ms(self.cfg.timings.eventbridge_delay_s), Ev::StateChange(n));
            // A node nobody replaced on notice (none came, or the strategy
            // does not act on one) is replaced once it is gone: by its Auto
            // Scaling group, or by Karpenter for the pods left pending
            // (within its 10 s batch window).
            let replaced = match self.strategy {
                Strategy::ReplaceOnNotice => {
                    self.capacity_requests.contains(&format!("karpenter:{}", node_name(n)))
                }
                Strategy::Costop | Strategy::CostopBurstable => {
                    self.capacity_requests.contains(&costop_core::respond::restore_key(&instance_id(n)))
                }
                _ => false,
            };
            if !replaced {
                let delay = match self.strategy {
                    Strategy::ReplaceOnNotice => 10 * SECOND,
                    _ => ms(self.cfg.timings.asg_replace_delay_s),
                };
                let zone = self.nodes[n as usize].zone;
                let exclude = self.nodes[n as usize].pool;
                self.push(self.now + delay, Ev::Provision { zone: Some(zone), exclude });
            }
        }
    }

    /// Node `n` no longer exists.
    fn mark_gone(&mut self, n: u32) {
        self.nodes[n as usize].lifetime.1 = Some(self.now);
        self.nodes[n as usize].state = NodeState::Gone;
        self.nodes[n as usize].in_lb = false;
        self.cost_rate_dirty = true;
        if let Ok(i) = self.live.binary_search(&n) {
            self.live.remove(i);
        }
        // A burstable node's surplus is charged when it goes.
        if let Some(i) = self.credits.iter().position(|(c, _)| *c == n) {
            let (_, mut account) = self.credits.remove(i);
            let usd = account.facts().surplus_usd(account.stop());
            self.cost += usd;
            self.surplus_usd += usd;
            self.cost_kinds[CostKind::Burstable as usize] += usd;
        }
    }

    fn node_gone(&mut self, n: u32) {
        let t = &self.cfg.timings;
        let (recreate, detect, force, moved) =
            (ms(t.lost_pod_recreate_s), ms(t.lb_failure_detect_s), ms(t.force_detach_s), ms(t.volume_move_s));
        self.mark_gone(n);
        for p in self.nodes[n as usize].pods.clone() {
            let pod = self.pods[p as usize].clone();
            match pod.state {
                PodState::Terminating => self.terminated(p),
                PodState::Starting | PodState::Ready => {
                    if std::env::var_os("COSTOP_DEBUG_SIM").is_some()
                        && pod.serve == Serve::Live
                        && !self.workloads[pod.workload as usize].placeholder
                    {
                        let node = &self.nodes[n as usize];
                        eprintln!(
                            "[{}] t={} live pod {} dies with node {} (doomed {}, unschedulable {}, capacity {:?})",
                            self.strategy.name(),
                            self.now / 1000,
                            pod.name,
                            node.name,
                            node.doomed,
                            node.unschedulable,
                            node.capacity
                        );
                    }
                    if pod.state == PodState::Ready {
                        self.set_unready(p);
                    }
                    let serve = if pod.serve == Serve::Live { Serve::Dead } else { Serve::No };
                    self.set_serve(p, serve);
                    self.pods[p as usize].state = PodState::Lost;
                    self.pod_rows.touch(p);
                    if let Some(v) = pod.volume {
                        let vol = &mut self.volumes[v as usize];
                        vol.available_at = self.now + if vol.move_requested { moved } else { force };
                    }
                    self.push(self.now + recreate, Ev::LostRecreate(p, pod.gen));
                }
                _ => {}
            }
        }
        self.push(self.now + detect, Ev::LbDetect(n));
    }

    /// The node provisioner's round: nodes for pending pods, unneeded
    /// nodes removed, and (Karpenter only) on-demand fallback nodes moved
    /// back to Spot: launch a Spot node, and once it is Ready drain the
    /// fallback node (budgets kept) and end it.
    fn consolidate(&mut self) {
        self.push(self.now + self.consolidate_every(), Ev::Consolidate);
        self.provision_for_pending();
        self.remove_empty_nodes();
        // Karpenter replaces an on-demand fallback node with Spot once Spot
        // can launch (consolidation). The cluster autoscaler of costop's
        // cluster never does (it only removes nodes it finds unneeded):
        // costop's own move-back does, surging first.
        if self.strategy != Strategy::ReplaceOnNotice {
            return;
        }
        let draining: Vec<u32> = self.drains.iter().map(|d| d.node).collect();
        let fallbacks: Vec<u32> = (self.live.iter().copied())
            .filter(|n| {
                let node = &self.nodes[*n as usize];
                node.fallback
                    && node.state == NodeState::Ready
                    && !draining.contains(n)
                    && node.consolidation_tried.is_none_or(|t| self.now >= t + CONSOLIDATION_RETRY)
            })
            .collect();
        for n in fallbacks {
            let pool = self.karpenter_pick_pool(Some(self.nodes[n as usize].zone));
            let Some(launched) = pool.and_then(|p| self.launch(p)) else { return };
            self.nodes[n as usize].consolidation_tried = Some(self.now);
            self.drains.push(Drain {
                node: n,
                replacement: Some(launched),
                next_at: self.now,
                deadline: self.now + 15 * MINUTE,
            });
        }
    }

    /// The node provisioner (Karpenter; the cluster autoscaler in costop's
    /// cluster): pods pending for want of room get new nodes, once per
    /// tick, unless nodes are already on their way.
    fn provision_for_pending(&mut self) {
        if self.live.iter().any(|&n| self.nodes[n as usize].state == NodeState::Booting) {
            return;
        }
        // Demand per zone a pod is bound to (by its volume), or anywhere.
        let mut demand: BTreeMap<Option<usize>, Resources> = BTreeMap::new();
        for &p in &self.pending {
            let pod = &self.pods[p as usize];
            let wl = &self.workloads[pod.workload as usize];
            if pod.state != PodState::Pending || wl.placeholder {
                continue;
            }
            let zone = pod.volume.map(|v| self.volumes[v as usize].zone);
            let d = demand.entry(zone).or_default();
            *d = d.plus(&wl.requests);
        }
        let alloc = Self::allocatable(self.node_type());
        for (zone, need) in demand {
            let count = (need.cpu_millis as f64 / alloc.cpu_millis.max(1) as f64)
                .max(need.memory_mib as f64 / alloc.memory_mib.max(1) as f64)
                .ceil() as u32;
            for _ in 0..count {
                match zone {
                    Some(z) => self.launch_in_zone(z),
                    None => self.provision(None, None),
                }
            }
        }
    }

    /// A node in this zone for pods bound to it: the cheapest Spot pool there
    /// that can launch, else on-demand there.
    fn launch_in_zone(&mut self, zone: usize) {
        let pools: Vec<usize> = (0..self.market.pools.len())
            .filter(|&i| self.zone_index(&self.market.pools[i].id.zone) == zone)
            .collect();
        let spot = pools
            .iter()
            .copied()
            .filter(|&i| {
                self.market.pools[i].launchable_at(self.now) && self.karpenter_unavailable[i] <= self.now
            })
            .min_by(|&a, &b| {
                self.market.pools[a].price_at(self.now).total_cmp(&self.market.pools[b].price_at(self.now))
            });
        if let Some(p) = spot {
            if self.launch(p).is_some() {
                return;
            }
        }
        if let Some(&p) = pools.first() {
            let n = self.add_node(p, CapacityType::OnDemand, NodeState::Booting);
            self.nodes[n as usize].fallback = true;
            self.push(self.now + ms(self.cfg.timings.node_ready_s), Ev::NodeReady(n));
        }
    }

    /// Nodes that are not needed go: empty ones, and underused ones (under
    /// half their CPU requested) whose pods fit on the other nodes, drained
    /// one at a time within budgets. Karpenter consolidates on its 10 s
    /// loop; the cluster autoscaler in costop's cluster scales down after a
    /// node has been unneeded for 10 minutes (`scale-down-unneeded-time`,
    /// `scale-down-utilization-threshold` 0.5).
    fn remove_empty_nodes(&mut self) {
        let after = match self.strategy {
            Strategy::ReplaceOnNotice => 30 * SECOND,
            _ => 10 * MINUTE,
        };
        let draining: Vec<u32> = self.drains.iter().map(|d| d.node).collect();
        // Only live nodes can be Ready (every node ever launched is kept).
        let free_total = self
            .live
            .iter()
            .map(|&i| &self.nodes[i as usize])
            .filter(|n| self.schedulable(n))
            .fold(Resources::default(), |a, n| a.plus(&n.alloc.minus(&n.used)));
        let mut drain_one: Option<u32> = None;
        for n in self.live.clone() {
            let node = &self.nodes[n as usize];
            let candidate = node.state == NodeState::Ready
                && !node.scale_down_held
                && !node.unschedulable
                && !node.capacity.is_standby()
                && node.capacity != CapacityType::Burstable
                && node.standby_stage.is_none()
                && !node.doomed
                && !draining.contains(&n);
            let empty = candidate && !self.has_workload_pods(n);
            let node = &self.nodes[n as usize];
            let underused = node.used.cpu_millis * 2 < node.alloc.cpu_millis;
            let free_elsewhere = free_total.minus(&node.alloc.minus(&node.used));
            let unneeded = candidate && (empty || (underused && free_elsewhere.fits(&node.used)));
            let node = &mut self.nodes[n as usize];
            if !unneeded {
                node.empty_since = None;
                continue;
            }
            let since = *node.empty_since.get_or_insert(self.now);
            if self.now < since + after {
                continue;
            }
            if empty {
                self.node_gone(n);
                self.changed();
            } else if drain_one.is_none() && draining.is_empty() {
                drain_one = Some(n);
            }
        }
        if let Some(n) = drain_one {
            self.drains.push(Drain {
                node: n,
                replacement: None,
                next_at: self.now,
                deadline: self.now + 10 * MINUTE,
            });
        }
    }

    /// Whether a workload pod (not a placeholder) is on node `n`.
    fn has_workload_pods(&self, n: u32) -> bool {
        self.nodes[n as usize].pods.iter().any(|&p| {
            let pod = &self.pods[p as usize];
            pod.state != PodState::Free && !self.workloads[pod.workload as usize].placeholder
        })
    }

    /// Replace one lost node, the strategy's way, retrying until it works.
    /// Auto Scaling groups (naive, drain-on-notice) stay on Spot and retry;
    /// Karpenter and costop fall back to on-demand when no Spot pool can
    /// launch (Karpenter does so when a NodePool allows both capacity types).
    fn provision(&mut self, zone: Option<usize>, exclude: Option<usize>) {
        let pool = match self.strategy {
            Strategy::Costop | Strategy::CostopBurstable => self.costop_pick_pool(exclude),
            _ => self.pick_pool(zone, exclude),
        };
        if let Some(pool) = pool {
            if self.launch(pool).is_some() {
                return;
            }
        }
        if matches!(self.strategy, Strategy::Costop | Strategy::CostopBurstable | Strategy::ReplaceOnNotice) {
            let pool = exclude
                .or_else(|| self.market.pools.iter().position(|p| Some(self.zone_index(&p.id.zone)) == zone));
            let n = self.add_node(pool.unwrap_or(0), CapacityType::OnDemand, NodeState::Booting);
            self.nodes[n as usize].fallback = true;
            self.push(self.now + ms(self.cfg.timings.node_ready_s), Ev::NodeReady(n));
            return;
        }
        let at = self.now + ms(self.cfg.timings.launch_retry_s);
        self.push(at, Ev::Provision { zone, exclude });
    }

    fn costop_pick_pool(&self, exclude: Option<usize>) -> Option<usize> {
        let mut layout = BTreeMap::new();
        for n in self.live.iter().map(|&i| &self.nodes[i as usize]) {
            let live = matches!(n.state, NodeState::Booting | NodeState::Ready);
            if let (true, CapacityType::Spot, false, Some(p)) = (live, n.capacity, n.unschedulable, n.pool) {
                *layout.entry(self.market.pools[p].id.clone()).or_insert(0u32) += 1;
            }
        }
        let excluded: Vec<PoolId> = exclude.map(|p| self.market.pools[p].id.clone()).into_iter().collect();
        let pools = self.pool_views();
        let chosen =
            costop_core::pools::choose_pools(&pools, &layout, 1, &excluded, &self.cfg.policy, self.now);
        chosen.keys().next().map(|id| self.pool_index(id))
    }

    /// Cheapest launchable pool, the given zone first (an Auto Scaling
    /// group keeps its zones balanced; Karpenter takes the cheapest offering).
    fn pick_pool(&self, zone: Option<usize>, exclude: Option<usize>) -> Option<usize> {
        let mut best: Option<(bool, f64, usize)> = None;
        for (i, p) in self.market.pools.iter().enumerate() {
            if Some(i) == exclude || !p.launchable_at(self.now) || self.karpenter_unavailable[i] > self.now {
                continue;
            }
            let key = (Some(self.zone_index(&p.id.zone)) != zone, p.price_at(self.now), i);
            if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                best = Some(key);
            }
        }
        best.map(|b| b.2)
    }

    fn launch(&mut self, pool: usize) -> Option<u32> {
        if !self.market.pools[pool].launchable_at(self.now) {
            return None;
        }
        let n = self.add_node(pool, CapacityType::Spot, NodeState::Booting);
        self.push(self.now + ms(self.cfg.timings.node_ready_s), Ev::NodeReady(n));
        Some(n)
    }

    fn node_ready(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        if node.state != NodeState::Booting {
            return;
        }
        node.state = NodeState::Ready;
        if node.capacity == CapacityType::OnDemand {
            // A woken standby: its standby taint comes off once it is Ready.
            node.standby_taint = false;
        }
        node.in_lb = !node.standby_taint;
        self.schedule_dirty = true;
    }

    // ----- pods ---------------------------------------------------------

    fn new_pod(&mut self, w: u32) -> u32 {
        self.seq += 1;
        let pod = Pod {
            name: String::new().into(),
            gen: 0,
            workload: w,
            node: None,
            state: PodState::Pending,
            serve: Serve::No,
            volume: None,
            seq: self.seq,
            counted_safe: false,
        };
        let idx = match self.free_pods.pop() {
            Some(i) => {
                let gen = self.pods[i as usize].gen + 1;
                self.pods[i as usize] = Pod { gen, name: pod_name(i, gen).into(), ..pod };
                i
            }
            None => {
                let i = self.pods.len() as u32;
                self.pods.push(Pod { name: pod_name(i, 0).into(), ..pod });
                i
            }
        };
        let volumes = self.workloads[w as usize].volumes.clone();
        if let Some(v) = volumes.into_iter().find(|v| self.volumes[*v as usize].holder.is_none()) {
            self.volumes[v as usize].holder = Some(idx);
            self.pods[idx as usize].volume = Some(v);
        }
        self.pod_rows.touch(idx);
        self.pending.push(idx);
        self.new_pending.push(idx);
        idx
    }

    /// The workload's controller: a StatefulSet when it has volumes.
    fn controller(&self, w: u32) -> Controller {
        if self.workloads[w as usize].volumes.is_empty() {
            Controller::Deployment
        } else {
            Controller::StatefulSet
        }
    }

    /// One sync of the replica controller (the shared decision): `active`
    /// counts the pods that hold a replica (terminating ones too for a
    /// StatefulSet, see `Controller::counts_terminating`).
    fn reconcile(&mut self, w: u32) {
        let wl = &self.workloads[w as usize];
        match replicas::decide(wl.replicas, wl.active) {
            ReplicaDecision::Create(n) => {
                for _ in 0..n {
                    self.workloads[w as usize].active += 1;
                    self.new_pod(w);
                }
            }
            ReplicaDecision::Delete(n) => {
                for p in self.scale_down_victims(w, n as usize) {
                    self.delete_now(p);
                }
            }
            ReplicaDecision::Steady => {}
        }
    }

    /// The `count` pods of workload `w` a scale-down deletes, in the
    /// controller's order (`replicas::pick_for_deletion`).
    fn scale_down_victims(&self, w: u32, count: usize) -> Vec<u32> {
        let placeholder = self.workloads[w as usize].placeholder;
        let mut keys: Vec<u32> = Vec::new();
        let mut ranked: Vec<ReplicaPod> = Vec::new();
        let rank = |pod: &Pod, colocated: u32| ReplicaPod {
            assigned: pod.node.is_some(),
            phase: phase_of(pod.state),
            ready: pod.state == PodState::Ready,
            deletion_cost: 0,
            colocated,
            ready_since: 0,
            restarts: 0,
            created: pod.seq,
        };
        let mut pending: Vec<u32> = self
            .pending
            .iter()
            .copied()
            .filter(|&p| {
                self.pods[p as usize].workload == w && self.pods[p as usize].state == PodState::Pending
            })
            .collect();
        pending.sort_unstable();
        pending.dedup();
        for p in pending {
            keys.push(p);
            ranked.push(rank(&self.pods[p as usize], 0));
        }
        for &n in &self.live {
            let node = &self.nodes[n as usize];
            if placeholder && node.placeholders == 0 {
                continue;
            }
            // The node's pods of the workload, found in one pass over its pods.
            let first = keys.len();
            keys.extend(node.pods.iter().copied().filter(|&p| {
                let pod = &self.pods[p as usize];
                pod.workload == w && matches!(pod.state, PodState::Starting | PodState::Ready)
            }));
            let colocated = (keys.len() - first) as u32;
            ranked.extend(keys[first..].iter().map(|&p| rank(&self.pods[p as usize], colocated)));
        }
        replicas::pick_for_deletion(&ranked, count).into_iter().map(|i| keys[i]).collect()
    }

    /// Remove a pod at once (grace period 0), as for placeholders.
    fn delete_now(&mut self, p: u32) {
        let w = self.pods[p as usize].workload;
        if matches!(self.pods[p as usize].state, PodState::Pending | PodState::Starting | PodState::Ready) {
            self.workloads[w as usize].active -= 1;
        }
        if self.pods[p as usize].state == PodState::Ready {
            self.set_unready(p);
        }
        self.set_serve(p, Serve::No);
        self.release_pod(p);
    }

    fn release_pod(&mut self, p: u32) {
        self.set_serve(p, Serve::No);
        let pod = self.pods[p as usize].clone();
        if let Some(n) = pod.node {
            let node = &mut self.nodes[n as usize];
            node.pods.retain(|&x| x != p);
            let w = &self.workloads[pod.workload as usize];
            node.used = node.used.minus(&w.requests);
            node.placeholders -= u32::from(w.placeholder);
            // Placeholders' share of the bill is reported by tier.
            self.cost_rate_dirty |= w.placeholder && self.spare_mix.is_some();
        }
        if let Some(v) = pod.volume {
            let vol = &mut self.volumes[v as usize];
            vol.holder = None;
            if vol.available_at < self.now {
                vol.available_at = self.now + ms(self.cfg.timings.volume_move_s);
            }
            vol.move_requested = false;
        }
        let gen = pod.gen;
        self.pods[p as usize] = Pod { gen, state: PodState::Free, node: None, volume: None, ..pod };
        self.pod_rows.touch(p);
        self.free_pods.push(p);
        self.schedule_dirty = true;
    }

    fn evict(&mut self, p: u32) {
        let pod = self.pods[p as usize].clone();
        let w = pod.workload;
        if pod.state == PodState::Ready {
            self.set_unready(p);
        }
        // A terminating pod keeps answering what the load balancer still
        // sends it until its endpoint is removed (or it is gone).
        if pod.serve == Serve::Live {
            self.push(self.now + ms(self.cfg.world.endpoint_removal_s), Ev::EndpointGone(p, pod.gen));
        } else {
            self.set_serve(p, Serve::No);
        }
        self.pods[p as usize].state = PodState::Terminating;
        self.pod_rows.touch(p);
        // A StatefulSet (a workload with volumes) recreates a pod, with the
        // same identity and volume, only once the old one is gone; a
        // Deployment replaces it at once.
        if !self.controller(w).counts_terminating() {
            self.workloads[w as usize].active -= 1;
        }
        if pod.state == PodState::Pending || pod.node.is_none() {
            self.terminated(p);
        } else {
            let gone = kubelet::shutdown_ms(&self.cfg.timings, None);
            self.push(self.now + gone, Ev::PodGone(p, pod.gen));
        }
        self.reconcile(w);
    }

    /// A terminating pod is gone: its room and volume are free; a
    /// StatefulSet's replacement starts now.
    fn terminated(&mut self, p: u32) {
        let w = self.pods[p as usize].workload;
        self.release_pod(p);
        if self.controller(w).counts_terminating() {
            self.workloads[w as usize].active -= 1;
            self.reconcile(w);
        }
    }

    fn pod_ready(&mut self, p: u32) {
        self.pod_rows.touch(p);
        let pod = &mut self.pods[p as usize];
        pod.state = PodState::Ready;
        let w = pod.workload;
        let node = &self.nodes[pod.node.unwrap_or(0) as usize];
        let (doomed, in_lb) = (node.doomed, node.in_lb);
        self.workloads[w as usize].ready += 1;
        if !doomed {
            self.pods[p as usize].counted_safe = true;
            self.workloads[w as usize].ready_safe += 1;
        }
        if in_lb {
            self.set_serve(p, Serve::Live);
        }
        self.check_incidents(w);
        // A watch shows a pod's Ready condition as it turns: costop's view
        // (and what waits on it) sees it too.
        self.changed();
    }

    fn set_unready(&mut self, p: u32) {
        let w = self.pods[p as usize].workload as usize;
        self.workloads[w].ready -= 1;
        if self.pods[p as usize].counted_safe {
            self.pods[p as usize].counted_safe = false;
            self.workloads[w].ready_safe -= 1;
        }
    }

    fn set_serve(&mut self, p: u32, to: Serve) {
        let from = self.pods[p as usize].serve;
        if from == to {
            return;
        }
        let w = self.pods[p as usize].workload as usize;
        match from {
            Serve::Live => self.workloads[w].live -= 1,
            Serve::Dead => self.workloads[w].dead -= 1,
            Serve::No => {}
        }
        match to {
            Serve::Live => self.workloads[w].live += 1,
            Serve::Dead => self.workloads[w].dead += 1,
            Serve::No => {}
        }
        self.pods[p as usize].serve = to;
        self.refresh_traffic(w);
        // On a burstable node the pods share its CPU: one more or fewer
        // changes what each of the others serves when it is throttled.
        let on_burstable =
            self.pods[p as usize].node.is_some_and(|n| self.credits.iter().any(|(c, _)| *c == n));
        if on_burstable {
            self.refresh_burstable_traffic();
        }
    }

    /// Recompute one workload's failing and bridged request rates.
    fn refresh_traffic(&mut self, w: usize) {
        let now = self.now;
        let throttled = if self.credits.is_empty() { 0.0 } else { self.throttled_pods(w) };
        let wl = &mut self.workloads[w];
        if wl.placeholder {
            return;
        }
        let targets = f64::from(wl.live + wl.dead);
        let (deficit, to_dead) = if targets == 0.0 {
            (wl.rate, 0.0)
        } else {
            let to_dead = wl.rate * f64::from(wl.dead) / targets;
            let to_live = wl.rate - to_dead;
            let serving = (f64::from(wl.live) - throttled).max(0.0);
            (to_dead + (to_live - serving * wl.capacity_per_pod).max(0.0), to_dead)
        };
        // The function's concurrency limit is the account's: what other
        // workloads already send through their bridges is not available.
        let others = (self.bridge_rate - wl.bridge_rate).max(0.0);
        let bridged = if wl.bridged && wl.bridgeable && now >= wl.bridge_live_at {
            deficit.min((BRIDGE_MAX_RPS - others).max(0.0))
        } else {
            0.0
        };
        let failed = deficit - bridged;
        let dead_failed = if deficit > 0.0 { failed * to_dead / deficit } else { 0.0 };
        self.fail_dead_rate += dead_failed - wl.fail_dead_rate;
        wl.fail_dead_rate = dead_failed;
        self.fail_rate += failed - wl.fail_rate;
        self.bridge_rate += bridged - wl.bridge_rate;
        wl.fail_rate = failed;
        wl.bridge_rate = bridged;
        if self.fail_rate.abs() < 1e-9 {
            self.fail_rate = 0.0;
        }
        if self.bridge_rate.abs() < 1e-9 {
            self.bridge_rate = 0.0;
        }
    }

    fn check_incidents(&mut self, w: u32) {
        let now = self.now;
        for &i in &self.open_incidents {
            let inc = &mut self.incidents[i];
            if inc.done_at.is_none()
                && inc.workloads.contains(&w)
                && inc
                    .workloads
                    .iter()
                    .all(|&x| self.workloads[x as usize].ready_safe >= self.workloads[x as usize].wanted())
            {
                inc.done_at = Some(now);
                if std::env::var_os("COSTOP_DEBUG_INCIDENTS").is_some() {
                    let waits = inc.pinned_waits.map_or(String::new(), |(from, most)| {
                        format!(
                            ", pinned pods pending from +{} s (up to {:.1} cores)",
                            from.saturating_sub(inc.start) / 1000,
                            most as f64 / 1000.0
                        )
                    });
                    eprintln!(
                        "[{}] incident t={} took {} s (missed {}, latest +{} s), last workload {}{waits}, failed {:.0} (to vanished targets {:.0})",
                        self.strategy.name(),
                        inc.start / 1000,
                        (now - inc.start) / 1000,
                        inc.missed,
                        inc.latest / 1000,
                        self.workloads[w as usize].name,
                        inc.failed.0,
                        inc.failed.1
                    );
                }
            }
        }
        let incidents = &self.incidents;
        self.open_incidents.retain(|&i| incidents[i].done_at.is_none());
    }

    // ----- scheduler ----------------------------------------------------

    fn schedulable(&self, n: &Node) -> bool {
        n.state == NodeState::Ready && !n.unschedulable && !n.standby_taint
    }

    /// A scheduling pass: every pending pod after capacity appeared, else
    /// only the pods created since the last pass.
    fn schedule(&mut self) {
        let full = self.schedule_dirty;
        if !full && self.new_pending.is_empty() {
            return;
        }
        self.schedule_dirty = false;
        let mut order = if full {
            // Compact the pending list: bound or deleted pods leave it here.
            let pods = &self.pods;
            let mut seen = HashSet::new();
            self.pending.retain(|&p| pods[p as usize].state == PodState::Pending && seen.insert(p));
            self.new_pending.clear();
            self.pending.clone()
        } else {
            std::mem::take(&mut self.new_pending)
        };
        order.sort_by_key(|&p| {
            let pod = &self.pods[p as usize];
            (Reverse(self.workloads[pod.workload as usize].priority), pod.seq)
        });
        let mut failed: HashSet<(u32, Option<usize>)> = HashSet::new();
        for p in order {
            let pod = &self.pods[p as usize];
            if pod.state != PodState::Pending {
                continue;
            }
            let w = pod.workload;
            let zone = pod.volume.map(|v| self.volumes[v as usize].zone);
            if failed.contains(&(w, zone)) {
                continue;
            }
            match self.find_node(w, zone) {
                Some(n) => self.bind(p, n, 0),
                None => match self.find_preemption(w, zone) {
                    Some((n, victims)) => {
                        for v in victims {
                            self.delete_now(v);
                        }
                        self.reconcile(self.placeholder_workload());
                        self.bind(p, n, ms(self.cfg.timings.preemption_s));
                    }
                    None => {
                        failed.insert((w, zone));
                    }
                },
            }
        }
        // Deleting victims freed room only for the pod that took it.
        self.schedule_dirty = false;
    }

    /// A pod of workload `w` (bound to a volume in `zone`), as the shared
    /// scheduler sees it. Workload pods have no tolerations or selectors.
    fn pod_fit(&self, w: u32, zone: Option<usize>) -> PodFit<'_> {
        let wl = &self.workloads[w as usize];
        PodFit { zone: zone.map(|z| &*self.zones[z]), ..PodFit::new(wl.requests, wl.priority) }
    }

    /// A node as the shared scheduler sees it.
    fn node_fit<'a>(&'a self, n: &'a Node) -> NodeFit<'a> {
        NodeFit {
            ready: n.state == NodeState::Ready,
            unschedulable: n.unschedulable,
            taints: if n.standby_taint { &STANDBY_TAINTS } else { &[] },
            labels: &[],
            zone: &self.zones[n.zone],
            allocatable: n.alloc,
            max_pods: scheduler::DEFAULT_MAX_PODS,
            requested: n.used,
            score_requested: n.used,
            pods: n.pods.len() as u32,
        }
    }

    /// Where the scheduler binds a pod of workload `w` (`scheduler::pick_node`
    /// over the live nodes).
    fn find_node(&self, w: u32, zone: Option<usize>) -> Option<u32> {
        let pod = self.pod_fit(w, zone);
        let nodes = self.live.iter().map(|&i| (i, self.node_fit(&self.nodes[i as usize])));
        scheduler::pick_node(&pod, nodes)
    }

    /// Where the scheduler preempts for a pod of workload `w`, and whom
    /// (`scheduler::pick_preemption` over the live nodes).
    fn find_preemption(&self, w: u32, zone: Option<usize>) -> Option<(u32, Vec<u32>)> {
        let wl = &self.workloads[w as usize];
        // Nothing ranks below a placeholder.
        if wl.priority <= PLACEHOLDER_PRIORITY {
            return None;
        }
        // When no workload ranks below this pod, only placeholders can make
        // room, and nodes without one need not be looked at.
        let only_placeholders =
            self.workloads.iter().filter(|w| !w.placeholder).all(|w| w.priority >= wl.priority);
        let pod = self.pod_fit(w, zone);
        let nodes = self
            .live
            .iter()
            .map(|&i| (i, &self.nodes[i as usize]))
            .filter(|(_, n)| !only_placeholders || n.placeholders > 0)
            .map(|(i, n)| (i, self.node_fit(n), n.pods.iter().filter_map(|&p| self.victim(p))));
        scheduler::pick_preemption(&pod, nodes)
    }

    /// A bound pod as preemption sees it; `None` when terminating.
    fn victim(&self, p: u32) -> Option<Victim<u32>> {
        let pod = &self.pods[p as usize];
        if pod.state == PodState::Terminating {
            return None;
        }
        let wl = &self.workloads[pod.workload as usize];
        Some(Victim {
            key: p,
            priority: wl.priority,
            requests: wl.requests,
            violates_budget: self.budget(pod.workload).is_some_and(|b| b.disruptions_allowed == 0),
            started: pod.seq,
        })
    }

    /// The status of workload `w`'s disruption budget (`minAvailable`),
    /// if it has one.
    fn budget(&self, w: u32) -> Option<BudgetStatus> {
        let wl = &self.workloads[w as usize];
        if wl.min_available == 0 {
            return None;
        }
        let spec = BudgetSpec { min_available: Some(Amount::Count(wl.min_available)), max_unavailable: None };
        Some(budget::status(&spec, wl.active, wl.ready))
    }

    fn bind(&mut self, p: u32, n: u32, extra: Millis) {
        let t = &self.cfg.timings;
        let pod = self.pods[p as usize].clone();
        let w = pod.workload as usize;
        let node = &mut self.nodes[n as usize];
        node.used = node.used.plus(&self.workloads[w].requests);
        node.pods.push(p);
        node.placeholders += u32::from(self.workloads[w].placeholder);
        self.cost_rate_dirty |= self.workloads[w].placeholder && self.spare_mix.is_some();
        let volumes_at = pod.volume.map_or(0, |v| self.volumes[v as usize].available_at);
        // Placeholders run the pause image (baked into the node image) and
        // have no readiness probe; workloads' apps do.
        let placeholder = self.workloads[w].placeholder;
        let start = PodStart { image_present: placeholder || node.images[w], readiness_probe: !placeholder };
        let ready_at = kubelet::ready_at(t, start, self.now + extra, volumes_at);
        node.images[w] = true;
        self.pods[p as usize].node = Some(n);
        self.pods[p as usize].state = PodState::Starting;
        self.pod_rows.touch(p);
        self.push(ready_at, Ev::PodReady(p, pod.gen));
    }

    // ----- notices and the peers' plans -----------------------------------

    fn detected(&mut self, node: u32, signal: Signal, deadline: Millis) {
        let gone = self.nodes[node as usize].state == NodeState::Gone;
        if (gone && signal != Signal::ShuttingDown)
            || matches!(self.strategy, Strategy::OnDemand | Strategy::SpotNaive | Strategy::Oracle)
        {
            return;
        }
        self.inbox.push(Detection { node, signal, deadline });
    }

    /// A node reclaimed without notice: EC2's state change reaches the
    /// strategies that read EventBridge. costop answers it with its own
    /// plan (it forgets the node); Karpenter deletes the node on it
    /// (karpenter.sh docs, "Disruption › Interruption": instance stopping
    /// and terminating events), after which the pod garbage collector
    /// deletes the pods bound to it and their controllers replace them.
    fn state_change(&mut self, n: u32) {
        match self.strategy {
            Strategy::Costop | Strategy::CostopBurstable => {
                let at = self.nodes[n as usize].lifetime.1.unwrap_or(self.now);
                self.detected(n, Signal::ShuttingDown, at);
            }
            Strategy::ReplaceOnNotice => {
                self.delete_lost_node(n, ms(self.cfg.timings.orphan_pod_gc_s));
            }
            _ => {}
        }
    }

    /// The node controller deletes the Node of a lost node (if nobody did).
    fn node_deleted(&mut self, n: u32) {
        let before = self.lingering.len();
        self.lingering.retain(|&x| x != n);
        self.pod_rows.touch_all();
        if self.lingering.len() != before {
            self.changed();
        }
    }

    /// costop forgets a node whose instance is gone: its Node is deleted and
    /// the pods still bound to it are deleted with no grace, so their
    /// controllers replace them now; a volume they held is free once EC2
    /// has detached it from the ended instance. How many pods were deleted.
    pub fn forget_node(&mut self, name: &str) -> Result<usize, String> {
        let n = self.node_index(name).ok_or_else(|| format!("node {name} not found"))?;
        if self.nodes[n as usize].state != NodeState::Gone {
            return Err(format!("{name}: its instance is still running"));
        }
        Ok(self.delete_lost_node(n, 0))
    }

    /// A lost node's Node object is deleted: the pods still bound to it go
    /// `after` from now (at once when costop deletes them; with the pod
    /// garbage collector otherwise), and a volume one held is free once it
    /// is detached after that. How many pods were lost on it.
    fn delete_lost_node(&mut self, n: u32, after: Millis) -> usize {
        self.lingering.retain(|&x| x != n);
        self.pod_rows.touch_all();
        let free_at = self.now + after + ms(self.cfg.timings.volume_move_s);
        let mut lost = 0;
        for p in self.nodes[n as usize].pods.clone() {
            let pod = &self.pods[p as usize];
            if pod.state != PodState::Lost {
                continue;
            }
            if let Some(v) = pod.volume {
                let vol = &mut self.volumes[v as usize];
                vol.available_at = vol.available_at.min(free_at);
            }
            if after == 0 {
                self.recreate_lost(p);
            } else {
                self.push(self.now + after, Ev::LostRecreate(p, pod.gen));
            }
            lost += 1;
        }
        self.changed();
        lost
    }

    /// A lost pod's object is deleted: its controller makes a new one.
    fn recreate_lost(&mut self, p: u32) {
        let w = self.pods[p as usize].workload;
        self.set_serve(p, Serve::No);
        self.workloads[w as usize].active -= 1;
        self.release_pod(p);
        self.reconcile(w);
    }

    /// Notices detected and not yet handed to a responder.
    pub fn take_detections(&mut self) -> Vec<Detection> {
        std::mem::take(&mut self.inbox)
    }

    /// The notice a detection is, as costop's agent or the peer receives it.
    pub fn notice_of(&self, d: &Detection) -> Notice {
        let kind = match d.signal {
            Signal::Interruption => {
                NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: d.deadline }
            }
            Signal::Rebalance => NoticeKind::RebalanceRecommendation { notice_time: self.now },
            Signal::ShuttingDown => {
                NoticeKind::ScheduledEvent { code: "instance-shutting-down".into(), not_before: d.deadline }
            }
        };
        Notice {
            instance_id: instance_id(d.node),
            kind,
            received_at: self.now,
            source: NoticeSource::Simulator,
        }
    }

    /// The plan a peer strategy runs for a detection, through the same
    /// executor costop's plans run on (so API latency, eviction retries and
    /// budgets are the same for everyone).
    pub fn peer_plan(&mut self, d: &Detection) -> Option<Plan> {
        let name = node_name(d.node);
        let steps = match self.strategy {
            Strategy::DrainOnNotice => {
                vec![Step::TaintAndCordon { node: name.clone() }, self.evict_all(d.node)]
            }
            Strategy::ReplaceOnNotice => {
                let pool = self.nodes[d.node as usize].pool;
                if let Some(p) = pool {
                    self.karpenter_unavailable[p] = self.now + KARPENTER_UNAVAILABLE_TTL;
                }
                let mut steps = vec![Step::TaintAndCordon { node: name.clone() }];
                match self.karpenter_pick_pool(Some(self.nodes[d.node as usize].zone)) {
                    Some(p) => steps.push(Step::RestoreCapacity {
                        key: format!("karpenter:{name}"),
                        pools: vec![(self.market.pools[p].id.clone(), 1)],
                    }),
                    None => self.push(self.now, Ev::Provision { zone: None, exclude: pool }),
                }
                steps.push(self.evict_all(d.node));
                steps
            }
            _ => return None,
        };
        let notice = self.notice_of(d);
        Some(Plan {
            notice: notice.key(),
            node: name,
            deadline: Some(d.deadline),
            steps,
            unevictable: Vec::new(),
        })
    }

    /// After costop planned a notice: when the plan restores no capacity
    /// (no Spot pool can launch now), the cluster's node autoscaler retries
    /// and falls back to on-demand, as it would for the pending pods.
    pub fn after_costop_plan(&mut self, d: &Detection, plan: &Plan) {
        let restores = plan.steps.iter().any(|s| matches!(s, Step::RestoreCapacity { .. }));
        let key = costop_core::respond::restore_key(&instance_id(d.node));
        let spot = self.nodes[d.node as usize].capacity == CapacityType::Spot;
        if d.signal == Signal::Interruption && spot && !restores && self.capacity_requests.insert(key) {
            let pool = self.nodes[d.node as usize].pool;
            self.push(self.now, Ev::Provision { zone: None, exclude: pool });
        }
    }

    fn evict_all(&self, node: u32) -> Step {
        let pods = self.nodes[node as usize]
            .pods
            .iter()
            .filter(|&&p| {
                let pod = &self.pods[p as usize];
                matches!(pod.state, PodState::Starting | PodState::Ready)
                    && !self.workloads[pod.workload as usize].placeholder
            })
            .map(|&p| pod_name(p, self.pods[p as usize].gen))
            .collect();
        Step::Evict { pods, wave: 0 }
    }

    // ----- what the ports do to the world -----------------------------------

    fn node_index(&self, name: &str) -> Option<u32> {
        parse_node_name(name).filter(|&n| (n as usize) < self.nodes.len())
    }

    fn workload_indices(&self, names: &[String]) -> Vec<usize> {
        names.iter().filter_map(|n| self.workloads.iter().position(|w| &w.name == n)).collect()
    }

    fn live_pod(&self, name: &str) -> Option<u32> {
        let (p, gen) = parse_pod_name(name)?;
        let pod = self.pods.get(p as usize)?;
        (pod.gen == gen && pod.state != PodState::Free).then_some(p)
    }

    /// Cordon a node and taint it for the interruption.
    pub fn taint_and_cordon(&mut self, name: &str) -> Result<(), String> {
        let n = self.node_index(name).ok_or_else(|| format!("node {name} not found"))?;
        self.nodes[n as usize].unschedulable = true;
        self.changed();
        Ok(())
    }

    /// Take the interruption taint off and uncordon: new pods may land again.
    pub fn untaint_and_uncordon(&mut self, name: &str) -> Result<(), String> {
        let n = self.node_index(name).ok_or_else(|| format!("node {name} not found"))?;
        self.nodes[n as usize].unschedulable = false;
        self.schedule_dirty = true;
        self.changed();
        Ok(())
    }

    /// Take the standby taint off (and uncordon): it serves as on-demand capacity.
    pub fn untaint_standby(&mut self, name: &str) -> Result<(), String> {
        let n = self.node_index(name).ok_or_else(|| format!("node {name} not found"))?;
        let node = &mut self.nodes[n as usize];
        node.standby_taint = false;
        node.unschedulable = false;
        if node.capacity.is_standby() {
            node.capacity = CapacityType::OnDemand;
        }
        node.in_lb = node.state == NodeState::Ready;
        self.schedule_dirty = true;
        self.cost_rate_dirty = true;
        self.changed();
        Ok(())
    }

    /// Put a node on standby (taint and label; stopping is the cloud's).
    pub fn taint_standby(&mut self, name: &str, mode: costop_core::StandbyMode) -> Result<(), String> {
        let n = self.node_index(name).ok_or_else(|| format!("node {name} not found"))?;
        let node = &mut self.nodes[n as usize];
        node.standby_taint = true;
        node.unschedulable = false;
        node.doomed = false;
        if node.capacity == CapacityType::Burstable {
            // Idle spare again, and still burstable: no new pods land, the
            // ones on it serve until they are moved off.
            self.schedule_dirty = true;
            self.changed();
            return Ok(());
        }
        node.in_lb = false;
        node.capacity = match mode {
            costop_core::StandbyMode::Running => CapacityType::StandbyRunning,
            costop_core::StandbyMode::Stopped => CapacityType::StandbyStopped,
        };
        for p in node.pods.clone() {
            self.set_serve(p, Serve::No);
        }
        self.changed();
        Ok(())
    }

    /// One eviction request, as the API server answers it
    /// (`budget::may_evict`): a Ready pod goes only if the rest of its
    /// workload still meet `minAvailable`; a starting one only while the
    /// budget is met.
    pub fn evict_request(&mut self, name: &str) -> Evicted {
        self.remove_pod(name, true)
    }

    /// A plain delete of a pod (its grace period kept, its budget not
    /// asked), as the API server answers it: what
    /// `ClusterPort::delete_doomed_pod` sends.
    pub fn delete_request(&mut self, name: &str) -> Evicted {
        self.remove_pod(name, false)
    }

    fn remove_pod(&mut self, name: &str, ask_budget: bool) -> Evicted {
        let Some(p) = self.live_pod(name) else { return Evicted::AlreadyGone };
        let pod = &self.pods[p as usize];
        if !matches!(pod.state, PodState::Starting | PodState::Ready | PodState::Pending) {
            return Evicted::AlreadyGone;
        }
        let evicted = match pod.state {
            PodState::Ready => EvictedPod::Ready,
            PodState::Starting => EvictedPod::Unready,
            _ => EvictedPod::Exempt,
        };
        if ask_budget && self.budget(pod.workload).is_some_and(|b| !budget::may_evict(evicted, &b)) {
            return Evicted::Refused;
        }
        self.evict(p);
        self.changed();
        Evicted::Accepted
    }

    /// Raise a Deployment's replicas by `by`, marked `key`: nothing when
    /// that mark is there already. Whether it raised them.
    pub fn surge(&mut self, workload: &str, key: &str, by: u32) -> Result<bool, String> {
        let w = self.deployment_index(workload)?;
        let wl = &mut self.workloads[w as usize];
        if wl.surges.iter().any(|(k, _)| k == key) {
            return Ok(false);
        }
        wl.surges.push((key.to_string(), by));
        wl.replicas += by;
        self.reconcile(w);
        self.changed();
        Ok(true)
    }

    /// Take back the surge marked `key`. Whether there was one.
    pub fn end_surge(&mut self, workload: &str, key: &str) -> Result<bool, String> {
        let w = self.deployment_index(workload)?;
        let wl = &mut self.workloads[w as usize];
        let Some(i) = wl.surges.iter().position(|(k, _)| k == key) else { return Ok(false) };
        let (_, by) = wl.surges.swap_remove(i);
        wl.replicas -= by;
        self.reconcile(w);
        self.changed();
        Ok(true)
    }

    /// The index of a workload run by a Deployment (one without volumes).
    fn deployment_index(&self, name: &str) -> Result<u32, String> {
        let w = (self.workloads.iter().position(|w| &*w.name == name && !w.placeholder))
            .ok_or_else(|| format!("deployment {name} not found"))? as u32;
        match self.controller(w) {
            Controller::Deployment => Ok(w),
            Controller::StatefulSet => Err(format!("{name} is a StatefulSet: its replicas are not surged")),
        }
    }

    /// Make the placeholder workload hold `count` pods.
    pub fn scale_placeholders(&mut self, count: u32) {
        let ph = self.placeholder_workload();
        self.workloads[ph as usize].replicas = count;
        self.headroom_target = count;
        self.reconcile(ph);
        self.changed();
    }

    /// Delete these placeholder pods now and shrink the workload by as many.
    pub fn claim_placeholders(&mut self, pods: &[String]) {
        let ph = self.placeholder_workload();
        for name in pods {
            if let Some(p) = self.live_pod(name) {
                if self.pods[p as usize].workload == ph {
                    self.workloads[ph as usize].replicas =
                        self.workloads[ph as usize].replicas.saturating_sub(1);
                    self.headroom_target = self.workloads[ph as usize].replicas;
                    self.delete_now(p);
                }
            }
        }
        self.changed();
    }

    /// Whether a pod on `node` still holds the volume.
    pub fn volume_in_use(&self, volume_id: &str, node: &str) -> bool {
        let Some(v) = volume_id.strip_prefix("vol-").and_then(|s| s.parse::<usize>().ok()) else {
            return false;
        };
        let Some(holder) = self.volumes.get(v).and_then(|v| v.holder) else { return false };
        let pod = &self.pods[holder as usize];
        pod.state != PodState::Free && pod.node.is_some_and(|n| Some(n) == self.node_index(node))
    }

    /// Workload pods bound to `node`, terminating ones included.
    pub fn workload_pods_bound(&self, node: &str) -> usize {
        let Some(n) = self.node_index(node) else { return 0 };
        self.nodes[n as usize]
            .pods
            .iter()
            .filter(|&&p| {
                let pod = &self.pods[p as usize];
                pod.state != PodState::Free && !self.workloads[pod.workload as usize].placeholder
            })
            .count()
    }

    /// Take a node out of the load balancer: no new request reaches its
    /// pods once the deregistration has propagated.
    pub fn deregister_targets(&mut self, name: &str) -> Result<String, String> {
        let n = self.node_index(name).ok_or_else(|| format!("node {name} not found"))?;
        self.nodes[n as usize].in_lb = false;
        let at = self.now + ms(self.cfg.world.endpoint_removal_s);
        self.push(at, Ev::LbRemove(n));
        self.changed();
        Ok(format!("ok: {name} deregistered"))
    }

    /// Start a standby (re-typed first if asked). Fails at the configured
    /// insufficient-capacity rate.
    pub fn wake_standby(&mut self, name: &str, retype: Option<&str>) -> Result<String, String> {
        let n = self.node_index(name).ok_or_else(|| format!("node {name} not found"))?;
        let node = &self.nodes[n as usize];
        if node.capacity == CapacityType::StandbyStopped && node.state == NodeState::Stopped {
            if self.rng.unit() < self.cfg.world.on_demand_ice_rate {
                return Err(format!("{name}: InsufficientInstanceCapacity"));
            }
            let node = &mut self.nodes[n as usize];
            if let Some(t) = retype.and_then(catalog::instance_type) {
                node.itype = t;
                node.alloc = Self::allocatable(t);
            }
            node.capacity = CapacityType::OnDemand;
            node.state = NodeState::Booting;
            let at = self.now + ms(self.cfg.timings.standby_start_s);
            self.push(at, Ev::NodeReady(n));
        } else if self.nodes[n as usize].capacity == CapacityType::StandbyRunning {
            self.nodes[n as usize].capacity = CapacityType::OnDemand;
        }
        self.cost_rate_dirty = true;
        self.changed();
        Ok(format!("ok: {name} started"))
    }

    /// Move a volume: it is available to its next pod after the move.
    pub fn move_volume(&mut self, volume_id: &str) -> Result<String, String> {
        let v = volume_id
            .strip_prefix("vol-")
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|v| *v < self.volumes.len())
            .ok_or_else(|| format!("volume {volume_id} not found"))?;
        let moved = self.now + ms(self.cfg.timings.volume_move_s);
        let vol = &mut self.volumes[v];
        vol.move_requested = true;
        if vol.holder.is_none() {
            vol.available_at = vol.available_at.min(moved);
        }
        Ok(format!("ok: {volume_id} moved"))
    }

    /// Shift traffic of workloads to their function, or back.
    pub fn bridge(&mut self, workloads: &[String], on: bool) -> String {
        let live_at = self.now + ms(self.cfg.timings.bridge_shift_s);
        for w in self.workload_indices(workloads) {
            self.workloads[w].bridged = on;
            self.workloads[w].bridge_live_at = live_at;
            self.refresh_traffic(w);
        }
        if on {
            self.push(live_at, Ev::Wake);
        }
        format!("ok: {} workloads {}", workloads.len(), if on { "bridged" } else { "back" })
    }

    /// Launch Spot capacity, once per key. A pool that cannot launch is
    /// left to the node autoscaler (retry, then on-demand).
    pub fn restore_capacity(&mut self, key: &str, pools: &[(PoolId, u32)]) -> String {
        if !self.capacity_requests.insert(key.to_string()) && !key.starts_with("karpenter:") {
            return format!("ok: {key} already launched");
        }
        let mut launched = 0;
        for (pool, count) in pools {
            let idx = self.pool_index(pool);
            for _ in 0..*count {
                match self.launch(idx) {
                    Some(n) => {
                        launched += 1;
                        self.launched_under.entry(key.to_string()).or_default().push(n);
                    }
                    None => {
                        let zone = Some(self.zone_index(&pool.zone));
                        self.push(self.now, Ev::Provision { zone, exclude: Some(idx) });
                    }
                }
            }
        }
        self.changed();
        format!("ok: {launched} launched")
    }

    /// Instance ids of the nodes launched under `key` that are booting or
    /// running.
    pub fn launched_under(&self, key: &str) -> Vec<String> {
        let nodes = self.launched_under.get(key).map(Vec::as_slice).unwrap_or_default();
        (nodes.iter())
            .filter(|&&n| self.nodes[n as usize].state != NodeState::Gone)
            .map(|&n| instance_id(n).to_string())
            .collect()
    }

    /// Mark a node scale-down-disabled for the node autoscaler, or unmark it.
    pub fn hold_from_scale_down(&mut self, name: &str, hold: bool) -> Result<(), String> {
        let n = self.node_index(name).ok_or_else(|| format!("node {name} not found"))?;
        self.nodes[n as usize].scale_down_held = hold;
        if !hold {
            self.nodes[n as usize].empty_since = None;
        }
        Ok(())
    }

    /// Delete a node object (its instance is ended with it in the world).
    pub fn delete_node(&mut self, name: &str) -> Result<(), String> {
        let n = self.node_index(name).ok_or_else(|| format!("node {name} not found"))?;
        if self.nodes[n as usize].state != NodeState::Gone {
            self.node_gone(n);
        }
        self.changed();
        Ok(())
    }

    fn node_of_instance(&self, id: &str) -> Option<u32> {
        let n = u32::from_str_radix(id.strip_prefix("i-")?, 16).ok()?;
        ((n as usize) < self.nodes.len()).then_some(n)
    }

    /// Standby instances that are not terminated, as the cloud lists them by tag.
    pub fn standby_instances(&self) -> Vec<StandbyInstance> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state != NodeState::Gone)
            .filter_map(|(i, n)| {
                n.standby_stage.map(|(stage, launched_at)| StandbyInstance {
                    instance_id: instance_id(i as u32),
                    zone: self.zones[n.zone].to_string(),
                    stage,
                    launched_at,
                })
            })
            .collect()
    }

    /// Launch an on-demand standby as a twin of a Spot node. Fails at the
    /// configured insufficient-capacity rate.
    pub fn launch_standby(
        &mut self,
        twin: &NodeView,
        zone: &str,
        instance_type: &str,
    ) -> Result<String, String> {
        if self.rng.unit() < self.cfg.world.on_demand_ice_rate {
            return Err(format!("{instance_type} in {zone}: InsufficientInstanceCapacity"));
        }
        let pool = self
            .market
            .pools
            .iter()
            .position(|p| p.id.zone == zone && p.id.instance_type == instance_type)
            .or_else(|| self.market.pools.iter().position(|p| p.id == twin.pool))
            .unwrap_or(0);
        let n = self.add_node(pool, CapacityType::OnDemand, NodeState::Booting);
        self.nodes[n as usize].standby_stage = Some((StandbyStage::New, self.now));
        self.nodes[n as usize].in_lb = false;
        self.push(self.now + ms(self.cfg.timings.node_ready_s), Ev::NodeReady(n));
        self.changed();
        Ok(instance_id(n))
    }

    /// Keep a joined standby: stopped when `stop` (its pods have gone).
    pub fn park_standby(&mut self, id: &str, stop: bool) -> Result<String, String> {
        let n = self.node_of_instance(id).ok_or_else(|| format!("instance {id} not found"))?;
        let node = &mut self.nodes[n as usize];
        node.standby_stage = Some((StandbyStage::Kept, node.standby_stage.map_or(self.now, |s| s.1)));
        if stop && node.state == NodeState::Ready {
            node.state = NodeState::Stopped;
            node.in_lb = false;
        }
        self.cost_rate_dirty = true;
        self.changed();
        Ok(format!("ok: {id} kept{}", if stop { " and stopped" } else { "" }))
    }

    /// Terminate a standby instance.
    pub fn terminate_standby(&mut self, id: &str) -> Result<(), String> {
        let n = self.node_of_instance(id).ok_or_else(|| format!("instance {id} not found"))?;
        if self.nodes[n as usize].state != NodeState::Gone {
            self.node_gone(n);
        }
        self.changed();
        Ok(())
    }

    /// Drains of unneeded nodes (the node autoscaler's scale-down) and of
    /// on-demand fallback nodes back to Spot (Karpenter's consolidation):
    /// evict within budgets, then end the node. One that cannot empty within its
    /// deadline is given back to service and tried again later.
    fn advance_drains(&mut self) {
        let mut i = 0;
        while i < self.drains.len() {
            let d = self.drains[i].clone();
            if self.now < d.next_at {
                i += 1;
                continue;
            }
            let n = d.node as usize;
            let replacement_ready =
                d.replacement.is_none_or(|r| self.nodes[r as usize].state != NodeState::Booting);
            if !replacement_ready {
                self.drains[i].next_at = self.now + SECOND;
                self.push(self.drains[i].next_at, Ev::Wake);
                i += 1;
                continue;
            }
            self.nodes[n].unschedulable = true;
            self.schedule_dirty = true;
            for p in self.nodes[n].pods.clone() {
                let name = pod_name(p, self.pods[p as usize].gen);
                let _ = self.evict_request(&name);
            }
            let left = self.nodes[n].pods.iter().any(|&p| self.pods[p as usize].state != PodState::Free);
            if !left {
                self.mark_gone(n as u32);
                self.changed();
                self.drains.swap_remove(i);
                continue;
            }
            if self.now >= d.deadline {
                self.nodes[n].unschedulable = false;
                self.schedule_dirty = true;
                self.drains.swap_remove(i);
                continue;
            }
            self.drains[i].next_at = self.now + ms(self.cfg.timings.eviction_retry_s).max(SECOND);
            self.push(self.drains[i].next_at, Ev::Wake);
            i += 1;
        }
    }

    // ----- costop's view -------------------------------------------------

    /// The Spot pools as costop sees them: prices now, reclaim rates learned so far.
    pub fn pool_views(&self) -> Vec<PoolView> {
        let days = self.now as f64 / DAY as f64;
        // A week of prior belief, then what the run has seen: no look-ahead.
        const PRIOR_DAYS: f64 = 7.0;
        self.market
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| PoolView {
                id: p.id.clone(),
                spot_price: p.price_at(self.now),
                on_demand_price: p.on_demand_usd_hr,
                interruptions_per_day: (p.prior_interruptions_per_day * PRIOR_DAYS
                    + f64::from(self.pool_reclaims_seen[i]))
                    / (PRIOR_DAYS + days),
                launchable: p.launchable_at(self.now),
                last_interruption: self.pool_last_reclaim[i],
            })
            .collect()
    }

    /// The cluster as it is now (what a fresh list would return).
    pub fn cluster_view(&self) -> ClusterView {
        let mut nodes = Vec::new();
        self.node_views(&mut nodes);
        self.view_with(nodes.into(), self.fresh_pod_list().into(), self.find_live_capacity_requests())
    }

    /// A node as the API shows it. A `lost` one (gone without notice, its
    /// Node not yet deleted) is NotReady, untainted and costs nothing.
    fn node_view(&self, n: &Node, lost: bool) -> NodeView {
        let mut taints = Vec::new();
        if n.standby_taint && !lost {
            taints.push(Taint { key: STANDBY_TAINT.into(), effect: "NoSchedule".into() });
        }
        if n.unschedulable && n.capacity == CapacityType::Spot && !lost {
            taints.push(Taint { key: INTERRUPTION_TAINT.into(), effect: "NoSchedule".into() });
        }
        let price_per_hour = match n.capacity {
            _ if lost => 0.0,
            CapacityType::Spot => n.pool.map_or(0.0, |p| self.market.pools[p].price_at(self.now)),
            _ => n.itype.on_demand_usd_hr,
        };
        NodeView {
            name: n.name.clone(),
            instance_id: n.instance_id.clone(),
            pool: PoolId::new(n.itype.name, self.zones[n.zone].clone()),
            capacity_type: n.capacity,
            allocatable: n.alloc,
            price_per_hour,
            unschedulable: n.unschedulable,
            taints,
            ready: !lost && n.state == NodeState::Ready,
            in_load_balancer: n.in_lb,
            fallback: n.fallback && n.capacity == CapacityType::OnDemand,
        }
    }

    /// The cluster as it is now around these node and pod lists and the
    /// live nodes' capacity requests.
    fn view_with(&self, nodes: Nodes, pods: Pods, capacity_requests: BTreeSet<String>) -> ClusterView {
        let workloads = self
            .workloads
            .iter()
            .filter(|w| !w.placeholder)
            .map(|w| WorkloadView {
                name: w.name.clone(),
                replicas: w.replicas,
                min_available: w.min_available,
                bridged: w.bridged,
                surgeable: !w.placeholder && w.volumes.is_empty(),
            })
            .collect();
        ClusterView {
            nodes,
            pods,
            workloads,
            pools: self.pool_views(),
            capacity_requests,
            // Filled by the open responses' claims, as in the server.
            launching: Default::default(),
            headroom_target: self.headroom_target,
        }
    }

    /// The nodes as the API lists them now, into `out` (emptied first).
    fn node_views(&self, out: &mut Vec<NodeView>) {
        out.clear();
        for &i in &self.live {
            out.push(self.node_view(&self.nodes[i as usize], false));
        }
        for &i in &self.lingering {
            out.push(self.node_view(&self.nodes[i as usize], true));
        }
    }

    /// Refresh traffic of bridged workloads (a bridge may have gone live).
    fn refresh_bridges(&mut self) {
        for w in 0..self.workloads.len() {
            if self.workloads[w].bridged {
                self.refresh_traffic(w);
            }
        }
    }
}

/// Used only if a pool names a type missing from the catalog (the trace
/// loader refuses those, so this is a guard, not a default).
static FALLBACK_TYPE: InstanceType =
    InstanceType { name: "m5.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.192 };

/// A pod's phase as the controllers rank it: Pending until bound (the sim
/// does not split image pull from container start), then Running.
fn phase_of(state: PodState) -> replicas::Phase {
    match state {
        PodState::Pending | PodState::Free => replicas::Phase::Pending,
        _ => replicas::Phase::Running,
    }
}

/// A new snapshot's list: `last` reissued when `fresh` holds the same
/// items (its lookups are shared, not built again), else `fresh`; and
/// whether it was `last`. The buffer not taken is left in `spare` for the
/// next snapshot.
fn reissue_if_same<T: Clone + PartialEq, I>(
    last: Option<&Listed<T, I>>,
    fresh: Vec<T>,
    spare: &mut Vec<T>,
) -> (Listed<T, I>, bool) {
    match last {
        Some(last) if **last == fresh => {
            *spare = fresh;
            (last.reissue(), true)
        }
        _ => {
            *spare = Vec::with_capacity(fresh.len());
            (fresh.into(), false)
        }
    }
}

fn node_name(n: u32) -> String {
    format!("node-{n}")
}

fn parse_node_name(name: &str) -> Option<u32> {
    name.strip_prefix("node-")?.parse().ok()
}

fn instance_id(n: u32) -> String {
    format!("i-{n:017x}")
}

fn pod_name(p: u32, gen: u32) -> String {
    format!("pod-{p}-{gen}")
}

fn parse_pod_name(name: &str) -> Option<(u32, u32)> {
    let (p, gen) = name.strip_prefix("pod-")?.split_once('-')?;
    Some((p.parse().ok()?, gen.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::PoolMarket;

    /// Two zones × one type; pool 0 reclaims once at 1 h.
    fn small_market() -> Market {
        let pool = |zone: &str, reclaims: Vec<Millis>| PoolMarket {
            id: PoolId::new("m5.xlarge", zone),
            on_demand_usd_hr: 0.192,
            prices: vec![(0, 0.07)],
            unavailable: reclaims.iter().map(|t| (*t, *t + 10 * MINUTE)).collect(),
            reclaims: reclaims.iter().map(|&at| crate::market::Reclaim { at, share: 1.0 }).collect(),
            prior_interruptions_per_day: 0.5,
        };
        Market {
            pools: vec![
                pool("us-east-1a", vec![3_600_000]),
                pool("us-east-1b", vec![]),
                pool("us-east-1c", vec![]),
            ],
            duration: 2 * 3_600_000,
            source: "test".into(),
        }
    }

    fn run(strategy: Strategy) -> StrategyResult {
        let cfg = SimConfig {
            days: 1.0,
            nodes: 6,
            pods_per_node: 10,
            rebalance_probability: 0.0,
            strategies: vec![strategy],
            ..SimConfig::default()
        };
        let market = small_market();
        crate::driver::run(Arc::new(cfg), Arc::new(market), strategy)
    }

    /// A pod whose volume lives in a zone runs there, for the oracle too:
    /// a dearer pool in a zone that holds volumes raises its bill, however
    /// cheap another zone is.
    #[test]
    fn the_oracle_runs_pinned_pods_in_their_volumes_zone() {
        // 1,000 pods: ten workloads, the tenth a StatefulSet with a volume
        // per replica, a third in each zone.
        let cfg = SimConfig { nodes: 100, pods_per_node: 10, ..SimConfig::default() };
        let priced = |b: f64| {
            let mut market = small_market();
            market.pools[0].prices = vec![(0, 0.03)];
            market.pools[1].prices = vec![(0, b)];
            market.pools[2].prices = vec![(0, 0.09)];
            World::new(Arc::new(cfg.clone()), Arc::new(market), Strategy::Oracle).oracle_usd_hr()
        };
        let (cheap_b, dear_b) = (priced(0.05), priced(0.09));
        // Zone b's pinned pods: about a thirtieth of the cluster's 85 %
        // requests, 3 nodes at 0.04 USD/h more each.
        assert!(dear_b - cheap_b > 0.1, "zone b at 0.05: {cheap_b} USD/h, at 0.09: {dear_b}");
        // The rest run in zone a, the cheapest: far below the whole cluster at b's price.
        assert!(dear_b < 100.0 * 0.85 * 0.09 * 0.5, "{dear_b}");
    }

    #[test]
    fn on_demand_is_never_interrupted_and_serves_everything() {
        let r = run(Strategy::OnDemand);
        assert_eq!(r.interruptions, 0);
        assert_eq!(r.requests_failed, 0.0);
        assert!(r.recoveries_s.is_empty());
        // 6 m5.xlarge for 2 h at the on-demand price.
        assert!((r.cost_usd - 6.0 * 2.0 * 0.192).abs() < 1e-6, "{}", r.cost_usd);
    }

    #[test]
    fn naive_spot_loses_requests_and_recovers_slowly() {
        let r = run(Strategy::SpotNaive);
        assert_eq!(r.interruptions, 2);
        assert!(r.requests_failed > 0.0);
        assert_eq!(r.recoveries_s.len(), 1);
        // Pods die at the reclaim (120 s after the notice) and come back only
        // after the node-loss detection (105 s) and a start-up.
        assert!(r.recoveries_s[0] > 225.0, "{:?}", r.recoveries_s);
    }

    #[test]
    fn handled_strategies_recover_before_the_reclaim() {
        // Drain-on-notice launches nothing: at 85 % utilisation the rest of
        // the cluster cannot hold a third of it, so it is not here.
        for s in [Strategy::ReplaceOnNotice, Strategy::Costop] {
            let r = run(s);
            assert!(r.interruptions >= 1, "{s:?}");
            assert_eq!(r.recoveries_s.len(), 1, "{s:?}");
            assert!(r.recoveries_s[0] < 120.0, "{s:?}: {:?}", r.recoveries_s);
            assert!(r.requests_failed < r.requests_total * 1e-4, "{s:?}: {}", r.requests_failed);
        }
    }

    /// EC2 sends an instance's state change whether or not its notice
    /// came, and the Node stays (NotReady) until the node controller
    /// deletes it: costop hears of the end of a drained node too, so what
    /// its budgets left on it can be replaced at once.
    #[test]
    fn every_reclaimed_instance_sends_its_state_change_and_lingers() {
        let mut cfg = SimConfig {
            days: 1.0,
            nodes: 6,
            pods_per_node: 10,
            rebalance_probability: 0.0,
            ..SimConfig::default()
        };
        cfg.world.missed_notice_rate = 0.0;
        cfg.world.late_notice_rate = 0.0;
        let mut w = World::new(Arc::new(cfg), Arc::new(small_market()), Strategy::Costop);
        let mut seen: Vec<Detection> = Vec::new();
        let mut listed_after_reclaim = Vec::new();
        for t in (0..=3_700_000).step_by(1000) {
            w.run_events_at(t);
            seen.extend(w.take_detections());
            if t == 3_600_000 + 30_000 {
                listed_after_reclaim = w.cluster_view().nodes.iter().map(|n| n.name.to_string()).collect();
            }
        }
        let warned: Vec<u32> =
            seen.iter().filter(|d| d.signal == Signal::Interruption).map(|d| d.node).collect();
        assert!(!warned.is_empty(), "{seen:?}");
        for n in &warned {
            let change = seen.iter().find(|d| d.node == *n && d.signal == Signal::ShuttingDown);
            let change = change.unwrap_or_else(|| panic!("no state change for node {n}: {seen:?}"));
            assert_eq!(change.deadline, 3_600_000, "{change:?}");
            assert!(listed_after_reclaim.contains(&node_name(*n).to_string()), "{listed_after_reclaim:?}");
            assert!(!w.cluster_view().nodes.iter().any(|x| x.name == node_name(*n)));
        }
    }

    /// A pool whose reclaim's notices are out cannot launch: a node started
    /// there inside the notice's 2 minutes used to outlive the reclaim (no
    /// notice, never hit), a shelter no real pool offers.
    #[test]
    fn a_launch_fails_in_a_pool_whose_reclaim_is_noticed() {
        let cfg = SimConfig { days: 1.0, nodes: 6, pods_per_node: 10, ..SimConfig::default() };
        let mut w = World::new(Arc::new(cfg), Arc::new(small_market()), Strategy::Costop);
        let reclaim = 3_600_000;
        w.run_events_at(reclaim - 3 * MINUTE);
        assert!(w.launch(0).is_some(), "open 3 minutes before the reclaim");
        w.run_events_at(reclaim - MINUTE);
        assert!(w.launch(0).is_none(), "closed inside the notice");
        assert!(w.launch(1).is_some(), "another pool stays open");
    }

    /// The node autoscaler removes a node empty for 10 minutes, but not
    /// one marked scale-down-disabled (costop's early replacements).
    #[test]
    fn a_held_node_outlives_the_node_autoscalers_scale_down() {
        let cfg = SimConfig {
            days: 1.0,
            nodes: 6,
            pods_per_node: 10,
            rebalance_probability: 0.0,
            ..SimConfig::default()
        };
        let mut w = World::new(Arc::new(cfg), Arc::new(small_market()), Strategy::Costop);
        w.run_events_at(SECOND);
        let pool = [(PoolId::new("m5.xlarge", "us-east-1b"), 1)];
        w.restore_capacity("restore:held", &pool);
        w.restore_capacity("restore:free", &pool);
        let (held, free) = (w.launched_under("restore:held"), w.launched_under("restore:free"));
        assert_eq!((held.len(), free.len()), (1, 1));
        assert!(w.launched_under("restore:none").is_empty());
        let name = |w: &World, id: &str| node_name(w.node_of_instance(id).unwrap()).to_string();
        let held_node = name(&w, &held[0]);
        w.run_events_at(MINUTE);
        w.hold_from_scale_down(&held_node, true).unwrap();
        for t in (MINUTE..=15 * MINUTE).step_by(10_000) {
            w.run_events_at(t);
        }
        assert_eq!(w.launched_under("restore:held"), held, "the held node is kept");
        assert!(w.launched_under("restore:free").is_empty(), "the other, empty for 10 minutes, is removed");
        w.hold_from_scale_down(&held_node, false).unwrap();
        for t in (15 * MINUTE..=27 * MINUTE).step_by(10_000) {
            w.run_events_at(t);
        }
        assert!(w.launched_under("restore:held").is_empty(), "unmarked, it goes like any empty node");
        assert!(w.hold_from_scale_down("no-such-node", true).is_err());
    }

    #[test]
    fn same_seed_same_result() {
        assert_eq!(run(Strategy::Costop), run(Strategy::Costop));
    }

    /// An on-demand world of 3 nodes over 6 hours whose market has a
    /// t3.large pool too (pool 3), for burstable nodes added by hand.
    fn on_demand_world_with_a_t3_large_pool() -> World {
        let mut market = small_market();
        market.duration = 6 * 3_600_000;
        market.pools.push(PoolMarket {
            id: PoolId::new("t3.large", "us-east-1a"),
            on_demand_usd_hr: 0.0832,
            prices: vec![(0, 0.03)],
            unavailable: vec![],
            reclaims: vec![],
            prior_interruptions_per_day: 0.5,
        });
        let cfg = SimConfig { nodes: 3, rebalance_probability: 0.0, ..SimConfig::default() };
        World::new(Arc::new(cfg), Arc::new(market), Strategy::OnDemand)
    }

    /// A burstable node is billed at its on-demand price plus the surplus
    /// credits EC2 charges: nothing while it runs under its baseline, and
    /// what it spent beyond its credits once it goes or the run ends.
    #[test]
    fn a_burstable_node_is_billed_the_surplus_it_spent() {
        let mut w = on_demand_world_with_a_t3_large_pool();
        w.advance_to(SECOND);
        let hour = 3_600_000;
        let idle = |w: &mut World, from: Millis| {
            let before = w.cost;
            w.advance_to(from + hour);
            w.cost - before
        };
        let base = idle(&mut w, SECOND);
        let n = w.add_node(3, CapacityType::Burstable, NodeState::Ready);
        assert_eq!(w.credits.len(), 1);
        // An idle hour: its on-demand price, no surplus (36 credits accrue).
        let with_node = idle(&mut w, SECOND + hour);
        assert!((with_node - base - 0.0832).abs() < 1e-9, "{with_node} vs {base}");
        // Two pods asking for a vCPU each for two hours: 240 credits spent,
        // 72 earned, 36 accrued before: 132 surplus, owed, not yet charged.
        let wl = w.workloads.iter().position(|w| !w.placeholder).unwrap();
        w.workloads[wl].requests = Resources::new(1000, 256);
        for _ in 0..2 {
            let p = w.new_pod(wl as u32);
            w.bind(p, n, 0);
        }
        let busy = idle(&mut w, SECOND + 2 * hour) + idle(&mut w, SECOND + 3 * hour);
        assert!((busy - 2.0 * (base + 0.0832)).abs() < 1e-9, "{busy}");
        assert!((w.credits[0].1.surplus() - 132.0).abs() < 1e-6, "{:?}", w.credits[0].1);
        // It goes: 132 credits are 2.2 vCPU-hours, 0.11 USD at 0.05.
        let before = w.cost;
        w.mark_gone(n);
        assert!((w.cost - before - 0.11).abs() < 1e-9, "{}", w.cost - before);
        assert!(w.credits.is_empty());
    }

    /// The issue's acceptance, in the simulator's world: pods on a
    /// burstable node in standard mode with no credits serve only the
    /// baseline's share of their requests (the rest fail), from the moment
    /// the credits run out; in unlimited mode they serve everything and
    /// the surplus is billed.
    #[test]
    fn a_burstable_node_out_of_credits_serves_its_baseline_or_bills_the_surplus() {
        use costop_facts::catalog::CreditMode;
        let hour = 3_600_000;
        // A t3.large (2 vCPUs, baseline 0.6, 36 credits an hour) with three
        // pods asking for 0.6 vCPU each: 1.8 vCPUs, three times the baseline.
        let world = |mode: CreditMode, balance: f64| {
            let mut w = on_demand_world_with_a_t3_large_pool();
            let n = w.add_node(3, CapacityType::Burstable, NodeState::Ready);
            let wl = w.workloads.iter().position(|w| !w.placeholder).unwrap();
            w.workloads[wl].requests = Resources::new(600, 256);
            for _ in 0..3 {
                let p = w.new_pod(wl as u32);
                w.bind(p, n, 0);
            }
            w.run_events_at(120 * SECOND);
            let on_node = w.nodes[n as usize].pods.len();
            assert_eq!(on_node, 3);
            assert!(w.nodes[n as usize].pods.iter().all(|&p| w.pods[p as usize].serve == Serve::Live));
            // Every Ready pod of the workload is needed at full speed.
            let c = w.workloads[wl].capacity_per_pod;
            w.workloads[wl].rate = f64::from(w.workloads[wl].live) * c;
            let facts = catalog::burstable("t3.large").unwrap();
            w.credits[0].1 = CreditAccount::with_balance(facts, mode, balance);
            w.refresh_burstable_traffic();
            (w, n, c)
        };

        // Standard, no credits: each pod serves a third, two pods' worth fail.
        let (mut w, _, c) = world(CreditMode::Standard, 0.0);
        assert!((w.fail_rate - 2.0 * c).abs() < 1e-6, "{} vs {}", w.fail_rate, 2.0 * c);
        let failed = w.requests_failed;
        w.advance_to(w.now + hour);
        assert!((w.requests_failed - failed - 2.0 * c * 3600.0).abs() < 1e-3);
        assert_eq!(w.credits[0].1.charged(), 0.0, "standard mode is never charged");

        // Standard with 12 credits: 0.02 a second drain (1.8 spent a
        // minute, 0.6 earned), so it serves everything for 600 s, then a third.
        let (mut w, _, c) = world(CreditMode::Standard, 12.0);
        assert_eq!(w.fail_rate, 0.0);
        let failed = w.requests_failed;
        w.advance_to(w.now + hour);
        let expected = 2.0 * c * 3000.0;
        assert!(
            (w.requests_failed - failed - expected).abs() < 2.0 * c,
            "{} vs {expected}",
            w.requests_failed - failed
        );

        // Unlimited, no credits: everything served; 72 surplus credits an
        // hour (108 spent, 36 earned), charged when the node goes: 1.2
        // vCPU-hours at 0.05 USD.
        let (mut w, n, _) = world(CreditMode::Unlimited, 0.0);
        assert_eq!(w.fail_rate, 0.0);
        let failed = w.requests_failed;
        w.advance_to(w.now + hour);
        assert_eq!(w.requests_failed, failed);
        assert!((w.credits[0].1.surplus() - 72.0).abs() < 1e-6, "{:?}", w.credits[0].1);
        let before = (w.cost, w.surplus_usd);
        w.mark_gone(n);
        assert!((w.cost - before.0 - 0.06).abs() < 1e-9, "{}", w.cost - before.0);
        assert!((w.surplus_usd - before.1 - 0.06).abs() < 1e-9);
    }
}

/// The fairness rules of the world, each against the behaviour it replaced.
#[cfg(test)]
mod fairness {
    use super::*;
    use crate::market::{PoolMarket, Reclaim};

    fn pool(ty: &str, zone: &str, price: f64, prior: f64) -> PoolMarket {
        PoolMarket {
            id: PoolId::new(ty, zone),
            on_demand_usd_hr: 0.192,
            prices: vec![(0, price)],
            reclaims: vec![],
            unavailable: vec![],
            prior_interruptions_per_day: prior,
        }
    }

    fn market(pools: Vec<PoolMarket>) -> Arc<Market> {
        Arc::new(Market { pools, duration: 6 * 3_600_000, source: "test".into() })
    }

    fn cfg(nodes: u32) -> Arc<SimConfig> {
        Arc::new(SimConfig {
            days: 1.0,
            nodes,
            pods_per_node: 10,
            rebalance_probability: 0.0,
            ..SimConfig::default()
        })
    }

    fn three_zones() -> Arc<Market> {
        market(vec![
            pool("m5.xlarge", "us-east-1a", 0.05, 2.0), // cheapest, but often reclaimed
            pool("m6i.xlarge", "us-east-1a", 0.07, 0.1),
            pool("m5.xlarge", "us-east-1b", 0.06, 0.1),
            pool("m5.xlarge", "us-east-1c", 0.06, 0.1),
        ])
    }

    #[test]
    fn karpenter_picks_price_capacity_optimized_pools_in_the_pods_zone_and_spreads_zones() {
        let w = World::new(cfg(9), three_zones(), Strategy::ReplaceOnNotice);
        // Zone a: the calm pool, not the cheapest (the old model took the cheapest).
        assert_eq!(w.karpenter_pick_pool(Some(0)), Some(1));
        // Its nodes start spread over the three zones (the old layout was round robin over pools).
        let mut per_zone = [0; 3];
        for n in &w.nodes {
            per_zone[n.zone] += 1;
        }
        assert_eq!(per_zone, [3, 3, 3]);
        assert_eq!(w.consolidate_every(), 10 * SECOND, "Karpenter's disruption loop, not every 5 min");
    }

    #[test]
    fn karpenter_avoids_an_interrupted_offering_for_three_minutes() {
        let mut w = World::new(cfg(3), three_zones(), Strategy::ReplaceOnNotice);
        w.karpenter_unavailable[1] = w.now + KARPENTER_UNAVAILABLE_TTL;
        assert_eq!(w.karpenter_pick_pool(Some(0)), Some(0), "the risky pool is the only one left in zone a");
    }

    /// A Ready pod of a workload (not a placeholder).
    fn a_ready_workload_pod(w: &World) -> usize {
        (0..w.pods.len())
            .find(|&i| {
                w.pods[i].state == PodState::Ready && !w.workloads[w.pods[i].workload as usize].placeholder
            })
            .expect("a Ready workload pod")
    }

    #[test]
    fn an_evicted_pod_keeps_serving_until_its_endpoint_is_removed() {
        let mut w = World::new(cfg(3), three_zones(), Strategy::Costop);
        let p = a_ready_workload_pod(&w);
        let name = w.pods[p].name.clone();
        assert_eq!(w.evict_request(&name), Evicted::Accepted);
        assert_eq!(w.pods[p].serve, Serve::Live, "the old world took it out of the load balancer at once");
        let removed = w.now + ms(w.cfg.world.endpoint_removal_s);
        w.run_events_at(removed);
        assert_eq!(w.pods[p].serve, Serve::No);
    }

    /// A pod turning Ready is a change costop's view shows (a watch
    /// delivers it) and that wakes what waits on the view, such as a wave
    /// waiting for its surge to be Ready.
    #[test]
    fn costops_view_shows_a_pod_turning_ready() {
        let mut w = World::new(cfg(3), three_zones(), Strategy::Costop);
        let p = a_ready_workload_pod(&w);
        let workload = w.pods[p].workload;
        assert_eq!(w.evict_request(&w.pods[p].name.clone()), Evicted::Accepted);
        let until = w.now + 120_000;
        let starting = loop {
            w.settle();
            let found = (0..w.pods.len() as u32).find(|&i| {
                let pod = &w.pods[i as usize];
                pod.workload == workload && pod.state == PodState::Starting
            });
            if let Some(i) = found {
                break i;
            }
            let next = w.next_event_at().filter(|t| *t <= until).expect("a replacement starts");
            w.run_events_at(next);
        };
        let ready_in_view = |w: &mut World| {
            let view = w.view();
            view.pods
                .iter()
                .filter(|p| p.ready && p.name.as_str() == pod_name(starting, w.pods[starting as usize].gen))
                .count()
        };
        w.advance_to(w.now + WATCH_LAG);
        assert_eq!(ready_in_view(&mut w), 0);
        let version = w.version();
        w.pod_ready(starting);
        assert!(w.version() > version, "turning Ready did not move the view's version");
        w.advance_to(w.now + WATCH_LAG);
        assert_eq!(ready_in_view(&mut w), 1, "the view does not show the pod Ready");
    }

    #[test]
    fn a_delete_takes_a_pod_whose_budget_refuses_its_eviction() {
        let mut w = World::new(cfg(3), three_zones(), Strategy::Costop);
        for wl in &mut w.workloads {
            wl.min_available = wl.replicas; // every eviction refused
        }
        w.settle();
        let p = a_ready_workload_pod(&w);
        let name = w.pods[p].name.clone();
        assert_eq!(w.evict_request(&name), Evicted::Refused);
        assert_eq!(w.pods[p].state, PodState::Ready);
        assert_eq!(w.delete_request(&name), Evicted::Accepted);
        assert_ne!(w.pods[p].state, PodState::Ready, "the delete did not take it");
        assert_eq!(w.delete_request(&name), Evicted::AlreadyGone);
    }

    #[test]
    fn a_drain_that_cannot_empty_gives_the_node_back_at_its_deadline() {
        let mut w = World::new(cfg(3), three_zones(), Strategy::ReplaceOnNotice);
        for wl in &mut w.workloads {
            wl.min_available = wl.replicas; // every eviction refused
        }
        w.drains.push(Drain { node: 0, replacement: None, next_at: 0, deadline: MINUTE });
        w.settle();
        assert!(w.nodes[0].unschedulable);
        w.run_events_at(2 * MINUTE);
        w.settle();
        assert!(w.drains.is_empty(), "the old drain waited for ever");
        assert!(!w.nodes[0].unschedulable);
        assert_eq!(w.nodes[0].state, NodeState::Ready);
    }

    #[test]
    fn on_demand_launches_and_standby_starts_can_fail_for_capacity() {
        let c = SimConfig {
            world: crate::config::WorldSettings { on_demand_ice_rate: 1.0, ..Default::default() },
            ..(*cfg(3)).clone()
        };
        let mut w = World::new(Arc::new(c), three_zones(), Strategy::Costop);
        let n = w.add_node(1, CapacityType::StandbyStopped, NodeState::Stopped);
        let name = w.nodes[n as usize].name.clone();
        assert!(w.wake_standby(&name, None).unwrap_err().contains("InsufficientInstanceCapacity"));
        let twin = w.cluster_view().nodes[0].clone();
        assert!(w.launch_standby(&twin, "us-east-1a", "m5.xlarge").is_err());
    }

    #[test]
    fn notices_can_be_missed_and_recommendations_can_be_false() {
        let mut pools = (*three_zones()).clone().pools;
        pools[2].reclaims = vec![Reclaim { at: 3_600_000, share: 1.0 }];
        let c = SimConfig {
            world: crate::config::WorldSettings {
                missed_notice_rate: 1.0,
                false_rebalance_per_pool_day: 24.0,
                ..Default::default()
            },
            ..(*cfg(6)).clone()
        };
        let mut w = World::new(Arc::new(c), market(pools), Strategy::Costop);
        let rebalances = w.queue.iter().filter(|Reverse((_, _, e))| matches!(e, Ev::Rebalance(_))).count();
        assert!(rebalances > 4 * 6 / 2, "about one per pool per hour over 6 h, saw {rebalances}");
        w.run_events_at(3_600_000 - SPOT_NOTICE_LEAD);
        let detected = w
            .queue
            .iter()
            .any(|Reverse((_, _, e))| matches!(e, Ev::Detected { signal: Signal::Interruption, .. }));
        assert!(!detected, "a missed notice reaches nobody");
        assert!(w.nodes.iter().any(|n| n.doomed), "the reclaim still comes");
    }

    #[test]
    fn workloads_request_the_configured_utilisation() {
        let w = World::new(cfg(20), three_zones(), Strategy::OnDemand);
        let alloc = World::allocatable(w.node_type());
        let requested: u64 = w
            .workloads
            .iter()
            .filter(|x| !x.placeholder)
            .map(|x| x.requests.cpu_millis * u64::from(x.replicas))
            .sum();
        let share = requested as f64 / (alloc.cpu_millis as f64 * 20.0);
        assert!((share - 0.85).abs() < 0.01, "requests fill {share:.2} of the nodes (the old world: 0.70)");
        assert!(w.pods.iter().all(|p| p.state != PodState::Pending), "every pod placed at the start");
        assert_eq!(w.cfg.pod_capacity_factor, 1.1, "no free 1.25× slack per pod");
    }

    #[test]
    fn the_function_concurrency_limit_is_the_accounts() {
        let mut w = World::new(cfg(3), three_zones(), Strategy::Costop);
        for i in 0..2 {
            let wl = &mut w.workloads[i];
            wl.rate = BRIDGE_MAX_RPS; // each alone could use all of it
            wl.live = 0;
            wl.dead = 0;
            wl.bridged = true;
            wl.bridge_live_at = 0;
        }
        w.refresh_traffic(0);
        w.refresh_traffic(1);
        assert!(
            w.bridge_rate <= BRIDGE_MAX_RPS + 1e-6,
            "bridged {} > the account's {}",
            w.bridge_rate,
            BRIDGE_MAX_RPS
        );
    }
}

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
use costop_core::effects::apply_step;
use costop_core::model::{INTERRUPTION_TAINT, STANDBY_TAINT};
use costop_core::notice::InstanceAction;
use costop_core::time::{Millis, DAY, MINUTE, SECOND, SPOT_NOTICE_LEAD};
use costop_core::{
    respond, CapacityType, ClusterView, NodeView, Notice, NoticeKind, NoticeSource, PodView, PoolId,
    PoolView, Resources, Step, Taint, VolumeView, WorkloadView,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};

/// Karpenter keeps an interrupted offering out of launches for 3 minutes
/// (`UnavailableOfferingsTTL`, karpenter-provider-aws pkg/cache/cache.go).
const KARPENTER_UNAVAILABLE_TTL: Millis = 3 * MINUTE;
/// The agent polls instance metadata every 500 ms by default.
const COSTOP_POLL: Millis = 500;
/// aws-node-termination-handler polls instance metadata every 2 s.
const NTH_POLL: Millis = 2 * SECOND;
/// How often Karpenter (consolidation) and costop look for on-demand
/// fallback nodes to move back to Spot. Estimate of Karpenter's cadence.
const CONSOLIDATE_EVERY: Millis = 5 * MINUTE;
/// Priority of costop's placeholder pods.
const PLACEHOLDER_PRIORITY: i32 = -10;
/// Memory of the bridge function (GB) and its run time per request (s). Estimates.
const BRIDGE_FUNCTION_GB: f64 = 0.5;
const BRIDGE_FUNCTION_S: f64 = 0.1;
/// Account-level concurrent executions of Lambda by default (1,000), so the
/// bridge serves at most 1,000 / 0.1 s requests per second.
const BRIDGE_MAX_RPS: f64 = 1000.0 / BRIDGE_FUNCTION_S;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Booting,
    Ready,
    Stopped,
    Gone,
}

#[derive(Debug, Clone)]
struct Node {
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
    /// On-demand capacity launched because no Spot pool could launch.
    fallback: bool,
    pods: Vec<u32>,
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
    name: String,
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
    bridge_live_at: Millis,
    fail_rate: f64,
    bridge_rate: f64,
    volumes: Vec<u32>,
}

impl Workload {
    /// A workload with no traffic, no budget and nothing running yet.
    fn idle(name: String, replicas: u32, requests: Resources) -> Self {
        Workload {
            name,
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
            bridge_live_at: 0,
            fail_rate: 0.0,
            bridge_rate: 0.0,
            volumes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Volume {
    zone: usize,
    holder: Option<u32>,
    available_at: Millis,
    move_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Price(usize),
    MarketNotice(usize),
    Reclaim(usize),
    Rebalance(usize),
    Detected { node: u32, interruption: bool, deadline: Millis },
    NodeReady(u32),
    PodReady(u32, u32),
    PodGone(u32, u32),
    LostRecreate(u32, u32),
    LbDetect(u32),
    Provision { zone: Option<usize>, exclude: Option<usize> },
    Wake,
    Sample,
    Consolidate,
}

struct Response {
    steps: Vec<Step>,
    next: usize,
    node: u32,
    deadline: Millis,
    wait_until: Millis,
    launched: Vec<u32>,
    evicted_workloads: Vec<u32>,
    retry: Vec<(u32, u32)>,
    stage: u8,
    claims: Vec<(usize, Step)>,
}

struct Incident {
    start: Millis,
    workloads: Vec<u32>,
    done_at: Option<Millis>,
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
    /// Recovery time (notice → every displaced workload Ready again) per reclaim event, seconds.
    pub recoveries_s: Vec<f64>,
    /// Samples (hours, cumulative USD, cumulative failed requests).
    pub series: Vec<(f64, f64, f64)>,
}

/// The world of one strategy.
pub struct World<'m> {
    cfg: &'m SimConfig,
    market: &'m Market,
    strategy: Strategy,
    zones: Vec<String>,
    now: Millis,
    end: Millis,
    rng: Rng,
    queue: BinaryHeap<Reverse<(Millis, u64, Ev)>>,
    seq: u64,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    free_pods: Vec<u32>,
    pending: Vec<u32>,
    new_pending: Vec<u32>,
    workloads: Vec<Workload>,
    volumes: Vec<Volume>,
    responses: Vec<Response>,
    incidents: Vec<Incident>,
    open_incidents: Vec<usize>,
    schedule_dirty: bool,
    doomed_batches: Vec<Vec<u32>>,
    pool_reclaims_seen: Vec<u32>,
    pool_last_reclaim: Vec<Option<Millis>>,
    karpenter_unavailable: Vec<Millis>,
    capacity_requests: std::collections::BTreeSet<String>,
    headroom_target: u32,
    cost_rate_dirty: bool,
    cost_per_s: f64,
    fail_rate: f64,
    bridge_rate: f64,
    total_rate: f64,
    cost: f64,
    requests_total: f64,
    requests_failed: f64,
    requests_bridged: f64,
    interruptions: u64,
    series: Vec<(f64, f64, f64)>,
}

impl<'m> World<'m> {
    /// Build the world for one strategy: the same workloads and market for
    /// every strategy; the node layout is the strategy's own.
    pub fn new(cfg: &'m SimConfig, market: &'m Market, strategy: Strategy) -> Self {
        let end = market.duration.min((cfg.days * DAY as f64) as Millis);
        let mut zones: Vec<String> = market.pools.iter().map(|p| p.id.zone.clone()).collect();
        zones.sort();
        zones.dedup();
        let mut world = World {
            cfg,
            market,
            strategy,
            zones,
            now: 0,
            end,
            rng: Rng::new(cfg.seed).fork(0xC0575),
            queue: BinaryHeap::new(),
            seq: 0,
            nodes: Vec::new(),
            pods: Vec::new(),
            free_pods: Vec::new(),
            pending: Vec::new(),
            new_pending: Vec::new(),
            workloads: Vec::new(),
            volumes: Vec::new(),
            responses: Vec::new(),
            incidents: Vec::new(),
            open_incidents: Vec::new(),
            schedule_dirty: true,
            doomed_batches: Vec::new(),
            pool_reclaims_seen: vec![0; market.pools.len()],
            pool_last_reclaim: vec![None; market.pools.len()],
            karpenter_unavailable: vec![0; market.pools.len()],
            capacity_requests: Default::default(),
            headroom_target: 0,
            cost_rate_dirty: true,
            cost_per_s: 0.0,
            fail_rate: 0.0,
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
        world.schedule_market();
        world
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
        let cfg = self.cfg;
        let mut rng = Rng::new(cfg.seed).fork(0x3012);
        let alloc = Self::allocatable(self.node_type());
        let total_pods = cfg.nodes * cfg.pods_per_node;
        let count = total_pods.div_ceil(100).max(1);
        let base_cpu = alloc.cpu_millis as f64 * 0.7 / f64::from(cfg.pods_per_node);
        let base_mem = alloc.memory_mib as f64 * 0.6 / f64::from(cfg.pods_per_node);
        for i in 0..count {
            let replicas = total_pods / count + u32::from(i < total_pods % count);
            let size = rng.range(0.6, 1.4);
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
            if stateful {
                for r in 0..replicas {
                    w.volumes.push(self.volumes.len() as u32);
                    let zone = (r as usize + i as usize) % self.zones.len().max(1);
                    self.volumes.push(Volume { zone, holder: None, available_at: 0, move_requested: false });
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
        let node = Node {
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
            fallback: false,
            pods: Vec::new(),
            images: vec![state == NodeState::Ready; self.workloads.len()],
        };
        self.nodes.push(node);
        self.cost_rate_dirty = true;
        (self.nodes.len() - 1) as u32
    }

    fn build_nodes(&mut self) {
        let n = self.cfg.nodes;
        let pools = self.market.pools.len();
        match self.strategy {
            Strategy::Costop => {
                let view_pools = self.pool_views();
                let policy = &self.cfg.policy;
                let layout =
                    costop_core::pools::choose_pools(&view_pools, &BTreeMap::new(), n, &[], policy, 0);
                let rate = |id: &PoolId| {
                    view_pools.iter().find(|p| &p.id == id).map_or(0.0, |p| p.interruptions_per_day)
                };
                let spare = costop_core::headroom::size_spare_capacity(&layout, rate, policy);
                let full = costop_core::pools::choose_pools(
                    &view_pools,
                    &BTreeMap::new(),
                    n + spare.headroom_nodes,
                    &[],
                    policy,
                    0,
                );
                for (pool_id, count) in &full {
                    let idx = self.pool_index(pool_id);
                    for _ in 0..*count {
                        self.add_node(idx, CapacityType::Spot, NodeState::Ready);
                    }
                }
                // Standbys in the zones of the largest pools, round robin.
                let mut by_size: Vec<(&PoolId, &u32)> = full.iter().collect();
                by_size.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
                let (mode, state) = match policy.standby_mode {
                    costop_core::StandbyMode::Running => (CapacityType::StandbyRunning, NodeState::Ready),
                    costop_core::StandbyMode::Stopped => (CapacityType::StandbyStopped, NodeState::Stopped),
                };
                for i in 0..spare.standby_nodes as usize {
                    if by_size.is_empty() {
                        break;
                    }
                    let idx = self.pool_index(by_size[i % by_size.len()].0);
                    let node = self.add_node(idx, mode, state);
                    self.nodes[node as usize].in_lb = false;
                }
                self.headroom_target = spare.headroom_nodes * 4;
                let ph = self.placeholder_workload() as usize;
                self.workloads[ph].replicas = self.headroom_target;
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
        if matches!(self.strategy, Strategy::Costop | Strategy::ReplaceOnNotice) {
            self.push(CONSOLIDATE_EVERY, Ev::Consolidate);
        }
        let mut rng = Rng::new(self.cfg.seed).fork(0x7EBA1);
        for (i, pool) in self.market.pools.iter().enumerate() {
            for (from, _) in pool.prices.iter().skip(1) {
                if *from < self.end {
                    self.queue.push(Reverse((*from, self.seq, Ev::Price(i))));
                    self.seq += 1;
                }
            }
            for &at in &pool.reclaims {
                if at >= self.end || at < SPOT_NOTICE_LEAD {
                    continue;
                }
                self.queue.push(Reverse((at - SPOT_NOTICE_LEAD, self.seq, Ev::MarketNotice(i))));
                self.seq += 1;
                let lead = ms(self.cfg.rebalance_lead_s);
                if rng.unit() < self.cfg.rebalance_probability && at > lead + SPOT_NOTICE_LEAD {
                    self.queue.push(Reverse((at - lead, self.seq, Ev::Rebalance(i))));
                    self.seq += 1;
                }
            }
        }
    }

    // ----- event loop ---------------------------------------------------

    fn push(&mut self, at: Millis, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at.max(self.now), self.seq, ev)));
    }

    /// Run to the end and report.
    pub fn run(mut self) -> StrategyResult {
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            if at > self.end {
                break;
            }
            self.advance_to(at);
            self.handle(ev);
            // Let every event of this instant land before the controllers act.
            if self.queue.peek().is_none_or(|Reverse((next, _, _))| *next > self.now) {
                self.settle();
            }
        }
        self.advance_to(self.end);
        let end = self.end;
        let recoveries_s =
            self.incidents.iter().map(|i| (i.done_at.unwrap_or(end) - i.start) as f64 / 1000.0).collect();
        StrategyResult {
            name: self.strategy.name().into(),
            cost_usd: self.cost,
            requests_total: self.requests_total,
            requests_failed: self.requests_failed,
            requests_bridged: self.requests_bridged,
            interruptions: self.interruptions,
            recoveries_s,
            series: self.series,
        }
    }

    fn settle(&mut self) {
        for _ in 0..8 {
            self.schedule();
            self.advance_responses();
            if !self.schedule_dirty && self.new_pending.is_empty() {
                break;
            }
        }
    }

    fn advance_to(&mut self, t: Millis) {
        if t <= self.now {
            return;
        }
        if self.cost_rate_dirty {
            self.recompute_cost_rate();
        }
        let dt = (t - self.now) as f64 / 1000.0;
        self.cost += self.cost_per_s * dt;
        self.requests_total += self.total_rate * dt;
        self.requests_failed += self.fail_rate * dt;
        self.requests_bridged += self.bridge_rate * dt;
        let per_request = catalog::LAMBDA_USD_PER_REQUEST
            + BRIDGE_FUNCTION_GB * BRIDGE_FUNCTION_S * catalog::LAMBDA_USD_PER_GB_SECOND;
        self.cost += self.bridge_rate * dt * per_request;
        self.now = t;
    }

    fn recompute_cost_rate(&mut self) {
        let mut per_hour = 0.0;
        for n in &self.nodes {
            per_hour += match (n.state, n.capacity) {
                (NodeState::Gone, _) => 0.0,
                (NodeState::Stopped, _) => catalog::stopped_standby_usd_hr(),
                (_, CapacityType::Spot) => n.pool.map_or(0.0, |p| self.market.pools[p].price_at(self.now)),
                (_, CapacityType::Burstable) => {
                    n.itype.on_demand_usd_hr + f64::from(n.itype.vcpu) * catalog::T_UNLIMITED_USD_PER_VCPU_HR
                }
                _ => n.itype.on_demand_usd_hr,
            };
        }
        self.cost_per_s = per_hour / 3600.0;
        self.cost_rate_dirty = false;
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Price(_) => self.cost_rate_dirty = true,
            Ev::Sample => {
                let (h, c, f) = (self.now as f64 / 3_600_000.0, self.cost, self.requests_failed);
                self.series.push((h, c, f));
            }
            Ev::MarketNotice(pool) => self.market_notice(pool),
            Ev::Reclaim(batch) => self.reclaim(batch),
            Ev::Rebalance(pool) => self.rebalance(pool),
            Ev::Detected { node, interruption, deadline } => self.detected(node, interruption, deadline),
            Ev::NodeReady(n) => self.node_ready(n),
            Ev::PodReady(p, gen) => {
                if self.pods[p as usize].gen == gen && self.pods[p as usize].state == PodState::Starting {
                    self.pod_ready(p);
                }
            }
            Ev::PodGone(p, gen) => {
                if self.pods[p as usize].gen == gen && self.pods[p as usize].state == PodState::Terminating {
                    self.release_pod(p);
                }
            }
            Ev::LostRecreate(p, gen) => {
                if self.pods[p as usize].gen == gen && self.pods[p as usize].state == PodState::Lost {
                    let w = self.pods[p as usize].workload;
                    self.set_serve(p, Serve::No);
                    self.workloads[w as usize].active -= 1;
                    self.release_pod(p);
                    self.reconcile(w);
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

    fn market_notice(&mut self, pool: usize) {
        self.pool_reclaims_seen[pool] += 1;
        self.pool_last_reclaim[pool] = Some(self.now);
        let mut hit: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&i| {
                let n = &self.nodes[i as usize];
                n.pool == Some(pool)
                    && n.capacity == CapacityType::Spot
                    && matches!(n.state, NodeState::Booting | NodeState::Ready)
                    && !n.doomed
            })
            .collect();
        let keep = match self.cfg.pool_hit {
            PoolHit::All => hit.len(),
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
        for &n in &hit {
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
            self.react_to_notice(n, deadline);
        }
        if !affected.is_empty() {
            self.open_incidents.push(self.incidents.len());
            self.incidents.push(Incident { start: self.now, workloads: affected, done_at: None });
        }
        self.doomed_batches.push(hit);
        let batch = self.doomed_batches.len() - 1;
        self.push(deadline, Ev::Reclaim(batch));
    }

    fn react_to_notice(&mut self, node: u32, deadline: Millis) {
        let delay = match self.strategy {
            Strategy::OnDemand | Strategy::SpotNaive => return,
            Strategy::DrainOnNotice => (self.rng.unit() * NTH_POLL as f64) as Millis,
            Strategy::ReplaceOnNotice => ms(self.cfg.timings.eventbridge_delay_s),
            // Agent poll, then the fast path to the server.
            Strategy::Costop => (self.rng.unit() * COSTOP_POLL as f64) as Millis + 20,
        };
        self.push(self.now + delay, Ev::Detected { node, interruption: true, deadline });
    }

    fn rebalance(&mut self, pool: usize) {
        if self.strategy != Strategy::Costop || !self.cfg.policy.act_on_rebalance {
            return;
        }
        let nodes: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&i| {
                let n = &self.nodes[i as usize];
                n.pool == Some(pool) && n.capacity == CapacityType::Spot && n.state == NodeState::Ready
            })
            .collect();
        for n in nodes {
            let delay = (self.rng.unit() * COSTOP_POLL as f64) as Millis + 20;
            self.push(self.now + delay, Ev::Detected { node: n, interruption: false, deadline: 0 });
        }
    }

    fn reclaim(&mut self, batch: usize) {
        let nodes = std::mem::take(&mut self.doomed_batches[batch]);
        for n in nodes {
            if self.nodes[n as usize].state == NodeState::Gone {
                continue;
            }
            self.node_gone(n);
            if matches!(self.strategy, Strategy::SpotNaive | Strategy::DrainOnNotice) {
                let zone = self.nodes[n as usize].zone;
                let exclude = self.nodes[n as usize].pool;
                self.push(
                    self.now + ms(self.cfg.timings.asg_replace_delay_s),
                    Ev::Provision { zone: Some(zone), exclude },
                );
            }
        }
    }

    fn node_gone(&mut self, n: u32) {
        let t = &self.cfg.timings;
        let (recreate, detect, force, moved) =
            (ms(t.lost_pod_recreate_s), ms(t.lb_failure_detect_s), ms(t.force_detach_s), ms(t.volume_move_s));
        self.nodes[n as usize].state = NodeState::Gone;
        self.nodes[n as usize].in_lb = false;
        self.cost_rate_dirty = true;
        for p in self.nodes[n as usize].pods.clone() {
            let pod = self.pods[p as usize].clone();
            match pod.state {
                PodState::Terminating => self.release_pod(p),
                PodState::Starting | PodState::Ready => {
                    if pod.state == PodState::Ready {
                        self.set_unready(p);
                    }
                    let serve = if pod.serve == Serve::Live { Serve::Dead } else { Serve::No };
                    self.set_serve(p, serve);
                    self.pods[p as usize].state = PodState::Lost;
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

    /// Move on-demand fallback nodes back to Spot: launch a Spot node, and
    /// once it is Ready drain the fallback node (budgets kept) and end it.
    fn consolidate(&mut self) {
        self.push(self.now + CONSOLIDATE_EVERY, Ev::Consolidate);
        let busy: Vec<u32> = self.responses.iter().map(|r| r.node).collect();
        let fallbacks: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|n| {
                let node = &self.nodes[*n as usize];
                node.fallback && node.state == NodeState::Ready && !busy.contains(n)
            })
            .collect();
        for n in fallbacks {
            let pool = match self.strategy {
                Strategy::Costop => self.costop_pick_pool(None),
                _ => self.pick_pool(Some(self.nodes[n as usize].zone), None),
            };
            let Some(launched) = pool.and_then(|p| self.launch(p)) else { return };
            let mut r = empty_response();
            r.steps = vec![Step::ReturnStandby { node: node_name(n) }];
            r.node = n;
            r.launched = vec![launched];
            r.wait_until = self.now;
            self.responses.push(r);
        }
    }

    /// Replace one lost node, the strategy's way, retrying until it works.
    /// Auto Scaling groups (naive, drain-on-notice) stay on Spot and retry;
    /// Karpenter and costop fall back to on-demand when no Spot pool can
    /// launch (Karpenter does so when a NodePool allows both capacity types).
    fn provision(&mut self, zone: Option<usize>, exclude: Option<usize>) {
        let pool = match self.strategy {
            Strategy::Costop => self.costop_pick_pool(exclude),
            _ => self.pick_pool(zone, exclude),
        };
        if let Some(pool) = pool {
            if self.launch(pool).is_some() {
                return;
            }
        }
        if matches!(self.strategy, Strategy::Costop | Strategy::ReplaceOnNotice) {
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
        for n in &self.nodes {
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
                self.pods[i as usize] = Pod { gen, ..pod };
                i
            }
            None => {
                self.pods.push(pod);
                (self.pods.len() - 1) as u32
            }
        };
        let volumes = self.workloads[w as usize].volumes.clone();
        if let Some(v) = volumes.into_iter().find(|v| self.volumes[*v as usize].holder.is_none()) {
            self.volumes[v as usize].holder = Some(idx);
            self.pods[idx as usize].volume = Some(v);
        }
        self.pending.push(idx);
        self.new_pending.push(idx);
        idx
    }

    /// The replica controller: keep `replicas` pods that are not terminating.
    fn reconcile(&mut self, w: u32) {
        loop {
            let wl = &self.workloads[w as usize];
            if wl.active >= wl.replicas {
                break;
            }
            self.workloads[w as usize].active += 1;
            self.new_pod(w);
        }
        // Scale-down (placeholders only): drop pending ones first.
        while self.workloads[w as usize].active > self.workloads[w as usize].replicas {
            let victim = self
                .pending
                .iter()
                .copied()
                .find(|&p| {
                    self.pods[p as usize].workload == w && self.pods[p as usize].state == PodState::Pending
                })
                .or_else(|| {
                    (0..self.pods.len() as u32).find(|&p| {
                        let pod = &self.pods[p as usize];
                        pod.workload == w && matches!(pod.state, PodState::Starting | PodState::Ready)
                    })
                });
            match victim {
                Some(p) => self.delete_now(p),
                None => break,
            }
        }
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
        let pod = self.pods[p as usize].clone();
        if let Some(n) = pod.node {
            let node = &mut self.nodes[n as usize];
            node.pods.retain(|&x| x != p);
            node.used = node.used.minus(&self.workloads[pod.workload as usize].requests);
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
        self.free_pods.push(p);
        self.schedule_dirty = true;
    }

    fn evict(&mut self, p: u32) {
        let pod = self.pods[p as usize].clone();
        let w = pod.workload;
        if pod.state == PodState::Ready {
            self.set_unready(p);
        }
        self.set_serve(p, Serve::No);
        self.pods[p as usize].state = PodState::Terminating;
        self.workloads[w as usize].active -= 1;
        if pod.state == PodState::Pending || pod.node.is_none() {
            self.release_pod(p);
        } else {
            self.push(self.now + ms(self.cfg.timings.pod_shutdown_s), Ev::PodGone(p, pod.gen));
        }
        self.reconcile(w);
    }

    fn pod_ready(&mut self, p: u32) {
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
    }

    /// Recompute one workload's failing and bridged request rates.
    fn refresh_traffic(&mut self, w: usize) {
        let now = self.now;
        let wl = &mut self.workloads[w];
        if wl.placeholder {
            return;
        }
        let targets = f64::from(wl.live + wl.dead);
        let deficit = if targets == 0.0 {
            wl.rate
        } else {
            let to_dead = wl.rate * f64::from(wl.dead) / targets;
            let to_live = wl.rate - to_dead;
            to_dead + (to_live - f64::from(wl.live) * wl.capacity_per_pod).max(0.0)
        };
        let bridged = if wl.bridged && now >= wl.bridge_live_at { deficit.min(BRIDGE_MAX_RPS) } else { 0.0 };
        let failed = deficit - bridged;
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
                    .all(|&x| self.workloads[x as usize].ready_safe >= self.workloads[x as usize].replicas)
            {
                inc.done_at = Some(now);
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

    fn find_node(&self, w: u32, zone: Option<usize>) -> Option<u32> {
        let req = self.workloads[w as usize].requests;
        let mut best: Option<(u64, u32)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.schedulable(n) || zone.is_some_and(|z| z != n.zone) {
                continue;
            }
            let free = n.alloc.minus(&n.used);
            if free.fits(&req) && best.is_none_or(|b| free.cpu_millis > b.0) {
                best = Some((free.cpu_millis, i as u32));
            }
        }
        best.map(|b| b.1)
    }

    /// A node where deleting placeholder pods makes room, fewest victims first.
    fn find_preemption(&self, w: u32, zone: Option<usize>) -> Option<(u32, Vec<u32>)> {
        let wl = &self.workloads[w as usize];
        if wl.priority <= PLACEHOLDER_PRIORITY {
            return None;
        }
        let req = wl.requests;
        let mut best: Option<(u32, Vec<u32>)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.schedulable(n) || zone.is_some_and(|z| z != n.zone) {
                continue;
            }
            let mut free = n.alloc.minus(&n.used);
            let mut victims = Vec::new();
            for &p in &n.pods {
                if free.fits(&req) {
                    break;
                }
                let pw = &self.workloads[self.pods[p as usize].workload as usize];
                if pw.priority < wl.priority && self.pods[p as usize].state != PodState::Terminating {
                    free = free.plus(&pw.requests);
                    victims.push(p);
                }
            }
            if free.fits(&req) && best.as_ref().is_none_or(|b| victims.len() < b.1.len()) {
                best = Some((i as u32, victims));
            }
        }
        best
    }

    fn bind(&mut self, p: u32, n: u32, extra: Millis) {
        let t = &self.cfg.timings;
        let pod = self.pods[p as usize].clone();
        let w = pod.workload as usize;
        let node = &mut self.nodes[n as usize];
        node.used = node.used.plus(&self.workloads[w].requests);
        node.pods.push(p);
        let mut start = self.now + extra;
        if let Some(v) = pod.volume {
            start = start.max(self.volumes[v as usize].available_at);
        }
        let ready_at = if self.workloads[w].placeholder {
            start + SECOND
        } else {
            let pull = if node.images[w] { 0 } else { ms(t.image_pull_s) };
            let raw = start + pull + ms(t.container_start_s) + ms(t.app_ready_s);
            let relist = ms(t.pleg_relist_s).max(1);
            raw.div_ceil(relist) * relist
        };
        node.images[w] = true;
        self.pods[p as usize].node = Some(n);
        self.pods[p as usize].state = PodState::Starting;
        self.push(ready_at, Ev::PodReady(p, pod.gen));
    }

    // ----- responses ----------------------------------------------------

    fn detected(&mut self, node: u32, interruption: bool, deadline: Millis) {
        if self.nodes[node as usize].state == NodeState::Gone {
            return;
        }
        let name = node_name(node);
        let steps = match self.strategy {
            Strategy::DrainOnNotice => {
                vec![Step::TaintAndCordon { node: name.clone() }, self.evict_all(node)]
            }
            Strategy::ReplaceOnNotice => {
                let pool = self.nodes[node as usize].pool;
                if let Some(p) = pool {
                    self.karpenter_unavailable[p] = self.now + KARPENTER_UNAVAILABLE_TTL;
                }
                let mut steps = vec![Step::TaintAndCordon { node: name.clone() }];
                // Karpenter provisions for the pending pods' constraints, so
                // the zone of their volumes first; then the cheapest offering.
                let zone = Some(self.nodes[node as usize].zone);
                match self.pick_pool(zone, pool) {
                    Some(p) => steps.push(Step::RestoreCapacity {
                        key: format!("karpenter:{name}"),
                        pools: vec![(self.market.pools[p].id.clone(), 1)],
                    }),
                    None => self.push(self.now, Ev::Provision { zone, exclude: pool }),
                }
                steps.push(self.evict_all(node));
                steps
            }
            Strategy::Costop => {
                let mut view = self.cluster_view();
                // Steps other responses have planned but not yet run are
                // claims on the same room and standbys: count them as done.
                for r in &self.responses {
                    for (i, s) in &r.claims {
                        if *i >= r.next {
                            apply_step(&mut view, s);
                        }
                    }
                }
                let kind = if interruption {
                    NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: deadline }
                } else {
                    NoticeKind::RebalanceRecommendation { notice_time: self.now }
                };
                let notice = Notice {
                    instance_id: instance_id(node),
                    kind,
                    received_at: self.now,
                    source: NoticeSource::Simulator,
                };
                match respond(&view, &notice, &self.cfg.policy, self.now) {
                    Ok(plan) => {
                        let restores = plan.steps.iter().any(|s| matches!(s, Step::RestoreCapacity { .. }));
                        let key = costop_core::respond::restore_key(&notice.instance_id);
                        let spot = self.nodes[node as usize].capacity == CapacityType::Spot;
                        if interruption && spot && !restores && !view.capacity_requests.contains(&key) {
                            // No Spot pool can launch now: the capacity loop retries (and falls back).
                            self.capacity_requests.insert(key);
                            let pool = self.nodes[node as usize].pool;
                            self.push(self.now, Ev::Provision { zone: None, exclude: pool });
                        }
                        plan.steps
                    }
                    Err(_) => return,
                }
            }
            Strategy::OnDemand | Strategy::SpotNaive => return,
        };
        let claims = steps
            .iter()
            .cloned()
            .enumerate()
            .filter(|(_, s)| {
                matches!(
                    s,
                    Step::TaintAndCordon { .. }
                        | Step::DeregisterTargets { .. }
                        | Step::ClaimHeadroom { .. }
                        | Step::WakeStandby { .. }
                        | Step::Evict { .. }
                        | Step::RestoreCapacity { .. }
                )
            })
            .collect();
        self.responses.push(Response {
            steps,
            next: 0,
            node,
            deadline: if interruption { deadline } else { self.now + 10 * MINUTE },
            wait_until: self.now,
            launched: Vec::new(),
            evicted_workloads: Vec::new(),
            retry: Vec::new(),
            stage: 0,
            claims,
        });
    }

    fn evict_all(&self, node: u32) -> Step {
        let pods = self.nodes[node as usize]
            .pods
            .iter()
            .filter(|&&p| matches!(self.pods[p as usize].state, PodState::Starting | PodState::Ready))
            .map(|&p| pod_name(p, self.pods[p as usize].gen))
            .collect();
        Step::Evict { pods, wave: 0 }
    }

    fn advance_responses(&mut self) {
        let mut i = 0;
        while i < self.responses.len() {
            let mut r = std::mem::replace(&mut self.responses[i], empty_response());
            let finished = self.advance(&mut r);
            if finished {
                self.responses.swap_remove(i);
            } else {
                self.responses[i] = r;
                i += 1;
            }
        }
    }

    /// Run the response's steps as far as their conditions allow. Returns
    /// whether it is finished.
    fn advance(&mut self, r: &mut Response) -> bool {
        let api = self.cfg.timings.api_call_ms.max(0.0).round() as Millis;
        while r.next < r.steps.len() {
            if self.now < r.wait_until {
                self.push(r.wait_until, Ev::Wake);
                return false;
            }
            let step = r.steps[r.next].clone();
            let done = match &step {
                Step::TaintAndCordon { .. } => {
                    self.nodes[r.node as usize].unschedulable = true;
                    self.schedule_dirty = true;
                    true
                }
                Step::DeregisterTargets { .. } => {
                    self.nodes[r.node as usize].in_lb = false;
                    for p in self.nodes[r.node as usize].pods.clone() {
                        self.set_serve(p, Serve::No);
                    }
                    true
                }
                Step::ClaimHeadroom { placeholders } => {
                    let ph = self.placeholder_workload();
                    for name in placeholders {
                        if let Some(p) = self.live_pod(name) {
                            if self.pods[p as usize].workload == ph {
                                self.workloads[ph as usize].replicas =
                                    self.workloads[ph as usize].replicas.saturating_sub(1);
                                self.delete_now(p);
                            }
                        }
                    }
                    true
                }
                Step::WakeStandby { node, retype_to } => {
                    self.wake_standby(node, retype_to.as_deref());
                    true
                }
                Step::MoveVolume { volume_id, .. } => {
                    if let Some(v) = volume_id.strip_prefix("vol-").and_then(|s| s.parse::<usize>().ok()) {
                        if let Some(vol) = self.volumes.get_mut(v) {
                            vol.move_requested = true;
                            if vol.holder.is_none() {
                                vol.available_at =
                                    vol.available_at.min(self.now + ms(self.cfg.timings.volume_move_s));
                            }
                        }
                    }
                    true
                }
                Step::BridgeTraffic { workloads } => {
                    let live_at = self.now + ms(self.cfg.timings.bridge_shift_s);
                    for w in self.workload_indices(workloads) {
                        self.workloads[w].bridged = true;
                        self.workloads[w].bridge_live_at = live_at;
                        self.refresh_traffic(w);
                    }
                    self.push(live_at, Ev::Wake);
                    true
                }
                Step::Evict { pods, wave } => self.run_evictions(r, pods, *wave),
                Step::RestoreCapacity { key, pools } => {
                    if self.capacity_requests.insert(key.clone()) {
                        for (pool, count) in pools {
                            let idx = self.pool_index(pool);
                            for _ in 0..*count {
                                match self.launch(idx) {
                                    Some(n) => r.launched.push(n),
                                    None => {
                                        let zone = Some(self.zone_index(&pool.zone));
                                        self.push(self.now, Ev::Provision { zone, exclude: Some(idx) });
                                    }
                                }
                            }
                        }
                    }
                    true
                }
                Step::ReturnStandby { node } => self.return_standby(r, node),
                Step::UnbridgeTraffic { workloads } => {
                    let ws = self.workload_indices(workloads);
                    let ready =
                        ws.iter().all(|&w| self.workloads[w].ready_safe >= self.workloads[w].replicas);
                    if ready || self.now > r.deadline + 30 * MINUTE {
                        for w in ws {
                            self.workloads[w].bridged = false;
                            self.refresh_traffic(w);
                        }
                        true
                    } else {
                        false
                    }
                }
                Step::RestoreHeadroom { placeholders } => {
                    if self.capacity_ready(r) {
                        let ph = self.placeholder_workload();
                        self.workloads[ph as usize].replicas = *placeholders;
                        self.headroom_target = *placeholders;
                        self.reconcile(ph);
                        true
                    } else {
                        false
                    }
                }
            };
            if !done {
                if r.wait_until > self.now {
                    self.push(r.wait_until, Ev::Wake);
                }
                return false;
            }
            r.next += 1;
            r.stage = 0;
            r.wait_until = self.now + api;
        }
        true
    }

    fn workload_indices(&self, names: &[String]) -> Vec<usize> {
        names.iter().filter_map(|n| self.workloads.iter().position(|w| &w.name == n)).collect()
    }

    fn fits_elsewhere(&self, n: u32) -> bool {
        let room = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, x)| *i != n as usize && self.schedulable(x))
            .fold(Resources::default(), |acc, (_, x)| acc.plus(&x.alloc.minus(&x.used)));
        room.fits(&self.nodes[n as usize].used)
    }

    fn capacity_ready(&self, r: &Response) -> bool {
        r.launched.iter().all(|&n| self.nodes[n as usize].state != NodeState::Booting)
    }

    fn live_pod(&self, name: &str) -> Option<u32> {
        let (p, gen) = parse_pod_name(name)?;
        let pod = self.pods.get(p as usize)?;
        (pod.gen == gen && pod.state != PodState::Free).then_some(p)
    }

    fn run_evictions(&mut self, r: &mut Response, pods: &[String], wave: u32) -> bool {
        if self.nodes[r.node as usize].state == NodeState::Gone {
            return true;
        }
        if r.stage == 0 {
            // Later waves wait until the earlier waves' replacements are Ready.
            if wave > 0
                && self.now < r.deadline
                && !r
                    .evicted_workloads
                    .iter()
                    .all(|&w| self.workloads[w as usize].ready >= self.workloads[w as usize].replicas)
            {
                return false;
            }
            r.retry = pods.iter().filter_map(|n| parse_pod_name(n)).collect();
            r.stage = 1;
        }
        let (refused, evicted) = self.evict_within_budgets(std::mem::take(&mut r.retry));
        for w in evicted {
            if !r.evicted_workloads.contains(&w) {
                r.evicted_workloads.push(w);
            }
        }
        if refused.is_empty() || self.now >= r.deadline {
            return true;
        }
        r.retry = refused;
        r.wait_until = self.now + ms(self.cfg.timings.eviction_retry_s);
        false
    }

    /// Evict each listed pod that still exists, as the API server allows:
    /// a Ready pod goes only if the rest of its workload still meet
    /// `minAvailable`. Returns the refused pods and the workloads evicted from.
    fn evict_within_budgets(&mut self, pods: Vec<(u32, u32)>) -> (Vec<(u32, u32)>, Vec<u32>) {
        let (mut refused, mut evicted) = (Vec::new(), Vec::new());
        for (p, gen) in pods {
            let pod = &self.pods[p as usize];
            if pod.gen != gen
                || !matches!(pod.state, PodState::Starting | PodState::Ready | PodState::Pending)
            {
                continue;
            }
            let w = pod.workload;
            let wl = &self.workloads[w as usize];
            if pod.state == PodState::Ready && wl.min_available > 0 && wl.ready <= wl.min_available {
                refused.push((p, gen));
                continue;
            }
            self.evict(p);
            evicted.push(w);
        }
        (refused, evicted)
    }

    fn wake_standby(&mut self, name: &str, retype: Option<&str>) {
        let Some(n) = parse_node_name(name) else { return };
        let node = &mut self.nodes[n as usize];
        match node.capacity {
            CapacityType::StandbyStopped if node.state == NodeState::Stopped => {
                if let Some(t) = retype.and_then(catalog::instance_type) {
                    node.itype = t;
                    node.alloc = Self::allocatable(t);
                }
                node.capacity = CapacityType::OnDemand;
                node.state = NodeState::Booting;
                let at = self.now + ms(self.cfg.timings.standby_start_s);
                self.push(at, Ev::NodeReady(n));
            }
            CapacityType::StandbyRunning => {
                node.capacity = CapacityType::OnDemand;
                node.standby_taint = false;
                node.in_lb = true;
                self.schedule_dirty = true;
            }
            _ => {}
        }
        self.cost_rate_dirty = true;
    }

    fn return_standby(&mut self, r: &mut Response, name: &str) -> bool {
        let Some(n) = parse_node_name(name) else { return true };
        if r.stage == 0 {
            if self.nodes[n as usize].state != NodeState::Ready {
                return true;
            }
            // Only once the new capacity is up and the standby's pods fit elsewhere.
            if !self.capacity_ready(r) || !self.fits_elsewhere(n) {
                r.wait_until = self.now + 30 * SECOND;
                return false;
            }
            self.nodes[n as usize].unschedulable = true;
            self.schedule_dirty = true;
            r.retry = self.nodes[n as usize].pods.iter().map(|&p| (p, self.pods[p as usize].gen)).collect();
            r.stage = 1;
            r.deadline = self.now + 15 * MINUTE;
        }
        if r.stage == 1 {
            let (refused, _) = self.evict_within_budgets(std::mem::take(&mut r.retry));
            if !refused.is_empty() && self.now < r.deadline {
                r.retry = refused;
                r.wait_until = self.now + ms(self.cfg.timings.eviction_retry_s);
                return false;
            }
            r.stage = 2;
        }
        if self.nodes[n as usize].pods.iter().any(|&p| self.pods[p as usize].state != PodState::Free) {
            // Wait for the evicted pods to finish shutting down.
            r.wait_until = self.now + SECOND;
            return false;
        }
        if self.nodes[n as usize].fallback {
            self.nodes[n as usize].state = NodeState::Gone;
            self.cost_rate_dirty = true;
            return true;
        }
        let running = self.cfg.policy.standby_mode == costop_core::StandbyMode::Running;
        let node = &mut self.nodes[n as usize];
        node.capacity = if running { CapacityType::StandbyRunning } else { CapacityType::StandbyStopped };
        node.state = if running { NodeState::Ready } else { NodeState::Stopped };
        node.standby_taint = true;
        node.unschedulable = false;
        node.in_lb = false;
        node.doomed = false;
        self.cost_rate_dirty = true;
        true
    }

    // ----- costop's view -------------------------------------------------

    fn pool_views(&self) -> Vec<PoolView> {
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

    fn cluster_view(&self) -> ClusterView {
        let mut view = ClusterView {
            pools: self.pool_views(),
            capacity_requests: self.capacity_requests.clone(),
            headroom_target: self.headroom_target,
            ..ClusterView::default()
        };
        for (i, n) in self.nodes.iter().enumerate() {
            if n.state == NodeState::Gone {
                continue;
            }
            let mut taints = Vec::new();
            if n.standby_taint {
                taints.push(Taint { key: STANDBY_TAINT.into(), effect: "NoSchedule".into() });
            }
            if n.unschedulable && n.capacity == CapacityType::Spot {
                taints.push(Taint { key: INTERRUPTION_TAINT.into(), effect: "NoSchedule".into() });
            }
            let pool = n.pool.map(|p| &self.market.pools[p]);
            view.nodes.push(NodeView {
                name: node_name(i as u32),
                instance_id: instance_id(i as u32),
                pool: PoolId::new(n.itype.name, self.zones[n.zone].clone()),
                capacity_type: n.capacity,
                allocatable: n.alloc,
                price_per_hour: match n.capacity {
                    CapacityType::Spot => pool.map_or(0.0, |p| p.price_at(self.now)),
                    _ => n.itype.on_demand_usd_hr,
                },
                unschedulable: n.unschedulable,
                taints,
                ready: n.state == NodeState::Ready,
                in_load_balancer: n.in_lb,
            });
        }
        for (i, p) in self.pods.iter().enumerate() {
            if !matches!(p.state, PodState::Starting | PodState::Ready | PodState::Pending) {
                continue;
            }
            let w = &self.workloads[p.workload as usize];
            view.pods.push(PodView {
                name: pod_name(i as u32, p.gen),
                workload: Some(w.name.clone()),
                node: p.node.map(node_name),
                requests: w.requests,
                priority: w.priority,
                ready: p.state == PodState::Ready,
                placeholder: w.placeholder,
                daemon: false,
                volumes: p
                    .volume
                    .map(|v| VolumeView {
                        volume_id: format!("vol-{v}"),
                        zone: self.zones[self.volumes[v as usize].zone].clone(),
                        attached_to: p.node.map(node_name),
                    })
                    .into_iter()
                    .collect(),
            });
        }
        view.workloads = self
            .workloads
            .iter()
            .filter(|w| !w.placeholder)
            .map(|w| WorkloadView {
                name: w.name.clone(),
                replicas: w.replicas,
                min_available: w.min_available,
                bridged: w.bridged,
            })
            .collect();
        view
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

fn empty_response() -> Response {
    Response {
        steps: Vec::new(),
        next: 0,
        node: 0,
        deadline: 0,
        wait_until: 0,
        launched: Vec::new(),
        evicted_workloads: Vec::new(),
        retry: Vec::new(),
        stage: 0,
        claims: Vec::new(),
    }
}

/// Used only if a pool names a type missing from the catalog (the trace
/// loader refuses those, so this is a guard, not a default).
static FALLBACK_TYPE: InstanceType =
    InstanceType { name: "m5.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.192 };

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
            reclaims,
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
        World::new(&cfg, &market, strategy).run()
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
        for s in [Strategy::DrainOnNotice, Strategy::ReplaceOnNotice, Strategy::Costop] {
            let r = run(s);
            assert!(r.interruptions >= 1, "{s:?}");
            assert_eq!(r.recoveries_s.len(), 1, "{s:?}");
            assert!(r.recoveries_s[0] < 120.0, "{s:?}: {:?}", r.recoveries_s);
            assert!(r.requests_failed < r.requests_total * 1e-4, "{s:?}: {}", r.requests_failed);
        }
    }

    #[test]
    fn same_seed_same_result() {
        assert_eq!(run(Strategy::Costop), run(Strategy::Costop));
    }
}

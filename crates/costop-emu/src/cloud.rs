//! The emulated cloud behind the cluster: Spot pools with prices, instances
//! (Spot, on-demand, standbys stopped or running) with their boot delays,
//! launches into a pool, EBS volumes with an attach/detach controller, a
//! load balancer over each workload's Ready pods, a function bridge with an
//! account-wide concurrency limit, and what all of it costs.
//!
//! Nodes the scenario creates are registered as running instances on the
//! next tick (a `standby-stopped` one as stopped once the cloud has pools:
//! load the cloud's part of a scenario first). Everything here runs in
//! the emulator's scaled real time: durations are the world's
//! (`costop_facts::timings`), scaled by the time factor.

use crate::kinds::idx;
use crate::EmuState;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

/// How long a target stays routed after it stops being eligible (its pod
/// terminating or unready, its node deregistered): the endpoints
/// controller and the load balancer controller's propagation. Estimate: 2 s
/// (world seconds; the pod still serves meanwhile, in its grace period).
pub const ENDPOINT_DELAY_S: f64 = 2.0;

/// How long one bridged request holds a function's concurrency slot
/// (world seconds). Estimate: 100 ms for a small handler.
pub const FUNCTION_DURATION_S: f64 = 0.1;

/// Memory of the bridge's function, GB (for its GB-second price).
pub const FUNCTION_MEMORY_GB: f64 = 0.5;

/// The account's default Lambda concurrency limit (AWS Lambda quotas: 1,000).
pub const DEFAULT_BRIDGE_CONCURRENCY: u32 = 1000;

/// Size of an emulated workload volume when the scenario does not say, GB.
pub const DEFAULT_VOLUME_GB: u32 = 20;

/// A Spot pool: one instance type in one zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolKey {
    /// EC2 instance type.
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
}

/// What is known of one pool.
#[derive(Debug, Clone)]
struct Pool {
    spot_price: f64,
    on_demand_price: f64,
    launchable: bool,
}

/// How an instance is bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purchase {
    Spot,
    OnDemand,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Power {
    /// Launched; its node joins at this instant.
    Pending(Instant),
    /// Started from stopped; its node turns Ready at this instant.
    Starting(Instant),
    Running,
    Stopped,
    Terminated,
}

#[derive(Debug, Clone)]
struct Instance {
    id: String,
    node: String,
    instance_type: String,
    zone: String,
    purchase: Purchase,
    power: Power,
    /// A burstable node's CPU credits ([`crate::burstable`]).
    credits: Option<crate::burstable::Credits>,
}

/// An EBS volume.
#[derive(Debug, Clone)]
struct Volume {
    zone: String,
    size_gb: u32,
    attached: Option<String>,
    /// A detach/attach under way: (target node, when it is attached there).
    moving: Option<(String, Instant)>,
    /// When the attach/detach controller may force the detach from a lost node.
    force_detach_at: Option<Instant>,
    /// Moves and snapshot copies done for this volume.
    moves: u32,
}

/// One routed target of the load balancer.
#[derive(Debug, Clone)]
struct Target {
    ns: String,
    pod: String,
    uid: String,
    /// Since when it is no longer eligible (it leaves after the endpoint delay).
    leaving: Option<Instant>,
}

/// Counters of requests through the load balancer.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RequestCounts {
    /// Requests answered by a pod.
    pub served_by_pods: u64,
    /// Requests answered by the workload's function.
    pub served_by_function: u64,
    /// Requests routed to a target that was gone.
    pub failed_dead_target: u64,
    /// Requests with no routed target and no bridge (or the bridge full).
    pub failed_no_target: u64,
    /// Requests that reached a pod on a burstable node held to its
    /// baseline (standard mode, no credits) beyond the share it serves.
    pub failed_throttled: u64,
}

/// Everything the emulated cloud holds.
#[derive(Debug, Default)]
pub struct CloudState {
    pools: BTreeMap<PoolKey, Pool>,
    instances: BTreeMap<String, Instance>,
    by_node: HashMap<String, String>,
    /// Nodes whose instance is stopped or still booting (their node is NotReady).
    down: HashSet<String>,
    volumes: BTreeMap<String, Volume>,
    /// Launch requests already made, by idempotency key, with what they launched.
    launches: BTreeMap<String, Vec<String>>,
    next_node: usize,
    next_volume: u64,
    routes: BTreeMap<String, Vec<Target>>,
    /// When the load balancer last served a request: its targets are kept
    /// up to date only while it is in use (a pass reads every pod).
    lb_used: Option<Instant>,
    cursor: HashMap<String, usize>,
    bridged: BTreeSet<String>,
    bridge_limit: u32,
    bridge_busy: VecDeque<Instant>,
    bridge_switches: u32,
    requests: RequestCounts,
    last_tick: Option<Instant>,
    cost_usd: f64,
    on_demand_usd: f64,
    /// Surplus CPU credits of burstable nodes charged, USD (in `cost_usd` too).
    surplus_usd: f64,
}

impl CloudState {
    fn bridge_limit(&self) -> u32 {
        if self.bridge_limit == 0 {
            DEFAULT_BRIDGE_CONCURRENCY
        } else {
            self.bridge_limit
        }
    }
}

fn lock(st: &EmuState) -> std::sync::MutexGuard<'_, CloudState> {
    st.cloud.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pool in a scenario: its Spot price (default: 65 % off on-demand, the
/// Spot Advisor's median saving) and whether a launch succeeds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Instance type (in the catalog).
    pub instance_type: String,
    /// Zone.
    pub zone: String,
    /// Spot price, USD per hour.
    #[serde(default)]
    pub spot_price: Option<f64>,
    /// Whether launches succeed (default true).
    #[serde(default)]
    pub launchable: Option<bool>,
}

/// Default Spot discount when no price is given: the Spot Advisor's median saving.
pub const DEFAULT_SPOT_DISCOUNT: f64 = 0.65;

/// Check a pool spec: known type, a zone, a positive price not above on-demand.
pub fn check_pool(p: &PoolSpec) -> Result<f64, String> {
    let t = costop_facts::catalog::instance_type(&p.instance_type).ok_or_else(|| {
        format!(
            "unknown instance type `{}` (known: {})",
            p.instance_type,
            costop_facts::catalog::known_type_names()
        )
    })?;
    if !crate::validate::valid_name(&p.zone) {
        return Err(format!("zone `{}` is not a zone name", p.zone));
    }
    match p.spot_price {
        None => Ok(t.on_demand_usd_hr * (1.0 - DEFAULT_SPOT_DISCOUNT)),
        Some(s) if s.is_finite() && s > 0.0 && s <= t.on_demand_usd_hr * 10.0 => Ok(s),
        Some(s) => Err(format!(
            "spot_price of {}@{} must be a positive USD/h no more than 10× on-demand, got {s}",
            p.instance_type, p.zone
        )),
    }
}

/// Add or update pools (a scenario's `pools`, or a price change).
pub fn set_pools(st: &EmuState, pools: &[PoolSpec]) -> Result<(), String> {
    let mut checked = Vec::new();
    for p in pools {
        checked.push((p, check_pool(p)?));
    }
    let mut c = lock(st);
    for (p, price) in checked {
        let on_demand =
            costop_facts::catalog::instance_type(&p.instance_type).map_or(0.0, |t| t.on_demand_usd_hr);
        let key = PoolKey { instance_type: p.instance_type.clone(), zone: p.zone.clone() };
        let pool = c.pools.entry(key).or_insert(Pool {
            spot_price: price,
            on_demand_price: on_demand,
            launchable: true,
        });
        pool.spot_price = price;
        if let Some(l) = p.launchable {
            pool.launchable = l;
        }
    }
    Ok(())
}

/// Set the account's function concurrency limit.
pub fn set_bridge_limit(st: &EmuState, limit: u32) {
    lock(st).bridge_limit = limit;
}

/// The pools, as `GET /admin/pools` answers.
pub fn pools_json(st: &EmuState) -> Value {
    let c = lock(st);
    json!(c
        .pools
        .iter()
        .map(|(k, p)| json!({"instance_type": k.instance_type, "zone": k.zone, "spot_price": p.spot_price,
                               "on_demand_price": p.on_demand_price, "launchable": p.launchable}))
        .collect::<Vec<_>>())
}

/// Whether the node's instance is stopped or still booting: its kubelet
/// posts no status, so the node is NotReady (read by the node lifecycle).
pub fn node_down(st: &EmuState, node: &str) -> bool {
    lock(st).down.contains(node)
}

/// Nodes whose instance is stopped or booting, all at once.
pub fn down_nodes(st: &EmuState) -> HashSet<String> {
    lock(st).down.clone()
}

fn label<'a>(node: &'a Value, key: &str) -> &'a str {
    node["metadata"]["labels"][key].as_str().unwrap_or("")
}

fn instance_id_of(node: &Value) -> String {
    node["spec"]["providerID"].as_str().and_then(|p| p.rsplit('/').next()).unwrap_or("").to_string()
}

/// Register instances for nodes the cloud does not know yet (scenario nodes).
fn register_nodes(st: &EmuState, c: &mut CloudState) {
    let mut seen = Vec::new();
    st.store.scan(idx::NODES, |_, name, n| {
        if !c.by_node.contains_key(name) {
            seen.push((name.to_string(), n.clone()));
        }
        if let Some(i) = name.strip_prefix("node-").and_then(|i| i.parse::<usize>().ok()) {
            c.next_node = c.next_node.max(i + 1);
        }
    });
    for (name, n) in seen {
        let id = instance_id_of(&n);
        if id.is_empty() {
            continue;
        }
        let capacity = label(&n, "costop.io/capacity-type");
        let purchase = if capacity == "spot" { Purchase::Spot } else { Purchase::OnDemand };
        // A standby is stopped where the emulator is the cloud (it has pools);
        // where another cloud (AWS in tests) runs the instances, the node stays as created.
        let stopped = capacity == "standby-stopped" && !c.pools.is_empty();
        let power = if stopped { Power::Stopped } else { Power::Running };
        if power == Power::Stopped {
            c.down.insert(name.clone());
        }
        let instance_type = label(&n, "node.kubernetes.io/instance-type");
        let credits = (capacity == "burstable")
            .then(|| costop_facts::catalog::burstable(instance_type))
            .flatten()
            .map(crate::burstable::Credits::launch);
        let inst = Instance {
            id: id.clone(),
            node: name.clone(),
            instance_type: instance_type.into(),
            zone: label(&n, "topology.kubernetes.io/zone").into(),
            purchase,
            power,
            credits,
        };
        c.by_node.insert(name, id.clone());
        c.instances.insert(id, inst);
    }
}

/// Launch `count` Spot instances into a pool; their nodes join after the
/// node boot delay. Idempotent by `key`: a key seen before launches nothing
/// and returns what it launched then.
pub fn launch(st: &EmuState, key: &str, pools: &[(PoolKey, u32)]) -> Result<Vec<String>, String> {
    let mut c = lock(st);
    register_nodes(st, &mut c);
    if let Some(done) = c.launches.get(key) {
        return Ok(done.clone());
    }
    for (k, n) in pools {
        let pool = c.pools.get(k).ok_or_else(|| format!("no pool {}@{}", k.instance_type, k.zone))?;
        if !pool.launchable {
            return Err(format!(
                "InsufficientInstanceCapacity: no Spot capacity in {}@{}",
                k.instance_type, k.zone
            ));
        }
        if *n > 100 {
            return Err(format!("{n} instances in one request: at most 100"));
        }
    }
    let join = Instant::now() + st.scaled(st.config.timings.node_ready_s);
    let mut launched = Vec::new();
    for (k, n) in pools {
        for _ in 0..*n {
            let i = c.next_node;
            c.next_node += 1;
            let id = format!("i-{i:017x}");
            let node = format!("node-{i}");
            c.by_node.insert(node.clone(), id.clone());
            c.instances.insert(
                id.clone(),
                Instance {
                    id: id.clone(),
                    node,
                    instance_type: k.instance_type.clone(),
                    zone: k.zone.clone(),
                    purchase: Purchase::Spot,
                    power: Power::Pending(join),
                    credits: None,
                },
            );
            launched.push(id);
        }
    }
    c.launches.insert(key.to_string(), launched.clone());
    Ok(launched)
}

/// Start a standby's instance (re-typed first when asked, which EC2 allows
/// only while it is stopped). A running one is left as it is.
pub fn start(st: &EmuState, node: &str, retype: Option<&str>) -> Result<String, String> {
    if let Some(t) = retype {
        if costop_facts::catalog::instance_type(t).is_none() {
            return Err(format!(
                "unknown instance type `{t}` (known: {})",
                costop_facts::catalog::known_type_names()
            ));
        }
    }
    let mut c = lock(st);
    register_nodes(st, &mut c);
    let id = c.by_node.get(node).cloned().ok_or_else(|| format!("no instance for node {node}"))?;
    let starting = Instant::now() + st.scaled(st.config.timings.standby_start_s);
    let inst = c.instances.get_mut(&id).ok_or_else(|| format!("no instance {id}"))?;
    match inst.power {
        Power::Stopped => {
            if let Some(t) = retype.filter(|t| *t != inst.instance_type) {
                inst.instance_type = t.to_string();
                retype_node(st, node, t)?;
            }
            inst.power = Power::Starting(starting);
            Ok(format!("{id} starting as {}", inst.instance_type))
        }
        Power::Terminated => Err(format!("{id} is terminated")),
        _ if retype.is_some_and(|t| t != inst.instance_type) => {
            Err(format!("{id} is not stopped: it cannot be re-typed (IncorrectInstanceState)"))
        }
        _ => Ok(format!("{id} already running")),
    }
}

fn retype_node(st: &EmuState, node: &str, instance_type: &str) -> Result<(), String> {
    let t = costop_facts::catalog::instance_type(instance_type).ok_or("unknown type")?;
    st.store
        .update(idx::NODES, "", node, |n| {
            n["metadata"]["labels"]["node.kubernetes.io/instance-type"] = json!(t.name);
            n["status"]["capacity"]["cpu"] = json!(t.vcpu.to_string());
            n["status"]["capacity"]["memory"] = json!(format!("{}Gi", t.memory_gib));
            n["status"]["allocatable"]["cpu"] = json!(format!("{}m", t.vcpu * 920));
            n["status"]["allocatable"]["memory"] =
                json!(format!("{}Mi", u64::from(t.memory_gib) * 1024 * 88 / 100));
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Mark a node's instance terminated (reclaimed or retired): it stops costing.
pub fn terminated(st: &EmuState, node: &str) {
    let mut c = lock(st);
    if let Some(id) = c.by_node.get(node).cloned() {
        if let Some(i) = c.instances.get_mut(&id) {
            i.power = Power::Terminated;
        }
    }
    c.down.remove(node);
}

/// Register an EBS volume (a scenario's workload volume). Returns its id.
pub fn create_volume(st: &EmuState, zone: &str, size_gb: u32) -> String {
    let mut c = lock(st);
    c.next_volume += 1;
    let id = format!("vol-{:017x}", 0xe0_0000_u64 + c.next_volume);
    c.volumes.insert(
        id.clone(),
        Volume { zone: zone.into(), size_gb, attached: None, moving: None, force_detach_at: None, moves: 0 },
    );
    id
}

/// A request to move a volume (`POST /admin/volumes/ID/move`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// Node to attach it to.
    pub to_node: String,
    /// Across zones: snapshot, then a new volume in the node's zone.
    #[serde(default)]
    pub via_snapshot: bool,
    /// Force the detach though a pod may still use it.
    #[serde(default)]
    pub force: bool,
}

/// Detach a volume and attach it to `to_node` (or, across zones, a copy
/// made from its snapshot). Done after the world's volume-move time (a
/// snapshot copy takes twice as long). Returns what it did.
pub fn move_volume(st: &EmuState, volume: &str, req: &MoveRequest) -> Result<String, (u16, String)> {
    let node = st.store.get(idx::NODES, "", &req.to_node).map_err(|e| (404, e.to_string()))?;
    let zone = label(&node, "topology.kubernetes.io/zone").to_string();
    let in_use = pods_using(st, volume);
    let mut c = lock(st);
    let v = c.volumes.get(volume).ok_or_else(|| (404, format!("volume {volume} not found")))?;
    if v.zone != zone && !req.via_snapshot {
        return Err((
            400,
            format!(
                "{volume} is in {} and {} in {zone}: a move across zones needs via_snapshot",
                v.zone, req.to_node
            ),
        ));
    }
    if let Some(from) = &v.attached {
        let busy = in_use.iter().any(|(n, running)| n == from && *running);
        if busy && !req.force {
            return Err((409, format!("{volume} is in use on {from} (VolumeInUse); force the detach")));
        }
    }
    let took = st.config.timings.volume_move_s * if v.zone != zone { 2.0 } else { 1.0 };
    let done = Instant::now() + st.scaled(took);
    if v.zone != zone {
        let (size, from) = (v.size_gb, v.attached.clone());
        c.next_volume += 1;
        let copy = format!("vol-{:017x}", 0xe0_0000_u64 + c.next_volume);
        c.volumes.insert(
            copy.clone(),
            Volume {
                zone: zone.clone(),
                size_gb: size,
                attached: None,
                moving: Some((req.to_node.clone(), done)),
                force_detach_at: None,
                moves: 1,
            },
        );
        if let Some(v) = c.volumes.get_mut(volume) {
            v.attached = None;
            v.moves += 1;
        }
        return Ok(format!(
            "{volume} snapshot → {copy} in {zone}, attaching to {}{}",
            req.to_node,
            from.map(|f| format!(" (detached from {f})")).unwrap_or_default()
        ));
    }
    let Some(v) = c.volumes.get_mut(volume) else { return Err((404, format!("volume {volume} not found"))) };
    if v.attached.as_deref() == Some(req.to_node.as_str()) {
        return Ok(format!("{volume} already attached to {}", req.to_node));
    }
    let from = v.attached.take();
    v.moving = Some((req.to_node.clone(), done));
    v.moves += 1;
    Ok(format!(
        "{volume} detached{}{}, attaching to {}",
        from.map(|f| format!(" from {f}")).unwrap_or_default(),
        if req.force { " (forced)" } else { "" },
        req.to_node
    ))
}

/// The nodes of pods that mount a volume (through their claim's
/// PersistentVolume), each with whether that pod is still running there.
fn pods_using(st: &EmuState, volume: &str) -> Vec<(String, bool)> {
    let claims = claims_of_volume(st, volume);
    if claims.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    st.store.scan(idx::PODS, |ns, _, p| {
        let Some(node) = p["spec"]["nodeName"].as_str() else { return };
        let mounts = p["spec"]["volumes"].as_array().into_iter().flatten().any(|v| {
            v["persistentVolumeClaim"]["claimName"]
                .as_str()
                .is_some_and(|c| claims.contains(&(ns.to_string(), c.to_string())))
        });
        if mounts {
            let phase = p["status"]["phase"].as_str().unwrap_or("Pending");
            out.push((node.to_string(), phase == "Running"));
        }
    });
    out
}

/// The claims (namespace, name) bound to a PersistentVolume of this EBS volume.
fn claims_of_volume(st: &EmuState, volume: &str) -> Vec<(String, String)> {
    let mut pvs = HashSet::new();
    st.store.scan(idx::PVS, |_, name, pv| {
        if ebs_id(pv).is_some_and(|id| id == volume) {
            pvs.insert(name.to_string());
        }
    });
    let mut out = Vec::new();
    st.store.scan(idx::PVCS, |ns, name, c| {
        if c["spec"]["volumeName"].as_str().is_some_and(|v| pvs.contains(v)) {
            out.push((ns.to_string(), name.to_string()));
        }
    });
    out
}

/// The EBS volume id of a PersistentVolume (CSI or in-tree form).
fn ebs_id(pv: &Value) -> Option<&str> {
    if pv["spec"]["csi"]["driver"] == "ebs.csi.aws.com" {
        return pv["spec"]["csi"]["volumeHandle"].as_str();
    }
    let raw = pv["spec"]["awsElasticBlockStore"]["volumeID"].as_str()?;
    Some(raw.rsplit('/').next().unwrap_or(raw))
}

/// The EBS volumes a pod mounts, by id.
fn volumes_of_pod(st: &EmuState, ns: &str, pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() else { continue };
        let Ok(pvc) = st.store.get(idx::PVCS, ns, claim) else { continue };
        let Some(pv) = pvc["spec"]["volumeName"].as_str().and_then(|n| st.store.get(idx::PVS, "", n).ok())
        else {
            continue;
        };
        if let Some(id) = ebs_id(&pv) {
            out.push(id.to_string());
        }
    }
    out
}

/// Whether the kubelet may start this pod: every EBS volume it mounts
/// that the cloud knows is attached to its node (else it waits, as in
/// ContainerCreating). Pods without claims never wait.
pub fn volumes_ready(st: &EmuState, ns: &str, pod: &Value) -> bool {
    let has_claim = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["persistentVolumeClaim"].is_object());
    if !has_claim {
        return true;
    }
    let Some(node) = pod["spec"]["nodeName"].as_str() else { return false };
    let ids = volumes_of_pod(st, ns, pod);
    let c = lock(st);
    ids.iter().all(|id| c.volumes.get(id).is_none_or(|v| v.attached.as_deref() == Some(node)))
}

/// Whether the kubelet may start pod `ns/name` now ([`volumes_ready`]);
/// quick when the cloud holds no volumes.
pub fn may_start(st: &EmuState, ns: &str, name: &str) -> bool {
    if lock(st).volumes.is_empty() {
        return true;
    }
    st.store.get(idx::PODS, ns, name).is_ok_and(|p| volumes_ready(st, ns, &p))
}

/// Turn the bridge on or off for these workloads (`ns/name`).
pub fn bridge(st: &EmuState, workloads: &[String], on: bool) -> String {
    let mut c = lock(st);
    let mut changed = 0;
    for w in workloads {
        let did = if on { c.bridged.insert(w.clone()) } else { c.bridged.remove(w) };
        changed += usize::from(did);
    }
    c.bridge_switches += u32::from(changed > 0);
    format!(
        "{changed} of {} workloads {}",
        workloads.len(),
        if on { "bridged to their function" } else { "back on their pods" }
    )
}

/// What came of one request through the load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// A pod answered.
    Pod(String),
    /// The workload's function answered.
    Function,
    /// It failed, and why.
    Failed(String),
}

/// Serve one request to workload `ns/name` through the load balancer:
/// when the workload is bridged every other request goes to its function
/// (while the account's concurrency allows); otherwise the next routed
/// target, round robin. A target whose pod is gone, or whose instance is
/// terminated, fails the request (the load balancer has not noticed yet).
pub fn serve(st: &EmuState, workload: &str) -> Served {
    serve_at(st, workload, Instant::now())
}

/// [`serve`] at `now` (the function's concurrency slots are held until
/// `now` plus the function's duration).
pub fn serve_at(st: &EmuState, workload: &str, now: Instant) -> Served {
    let idle = lock(st).lb_used.is_none_or(|t| now.saturating_duration_since(t) > LB_IDLE);
    if idle {
        routes(st, now);
    }
    let mut c = lock(st);
    c.lb_used = Some(now);
    let bridged = c.bridged.contains(workload);
    let slot = st.scaled(FUNCTION_DURATION_S);
    let function = |c: &mut CloudState| {
        while c.bridge_busy.front().is_some_and(|t| *t <= now) {
            c.bridge_busy.pop_front();
        }
        if (c.bridge_busy.len() as u32) < c.bridge_limit() {
            c.bridge_busy.push_back(now + slot);
            c.requests.served_by_function += 1;
            true
        } else {
            false
        }
    };
    let turn = {
        let k = c.cursor.entry(workload.to_string()).or_default();
        *k = k.wrapping_add(1);
        *k
    };
    if bridged && turn % 2 == 0 && function(&mut c) {
        return Served::Function;
    }
    let target = c.routes.get(workload).filter(|t| !t.is_empty()).map(|t| t[(turn / 2) % t.len()].clone());
    let Some(target) = target else {
        if bridged && function(&mut c) {
            return Served::Function;
        }
        c.requests.failed_no_target += 1;
        return Served::Failed(format!("no routed target for {workload}"));
    };
    drop(c);
    let alive = st.store.get(idx::PODS, &target.ns, &target.pod).ok().filter(|p| {
        p["metadata"]["uid"].as_str() == Some(target.uid.as_str())
            && p["status"]["phase"] == "Running"
            && p["spec"]["nodeName"].as_str().is_some_and(|n| !instance_gone(st, n))
    });
    let mut c = lock(st);
    match alive {
        Some(pod) => {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
            let id = c.by_node.get(node).cloned().unwrap_or_default();
            let credits = c.instances.get_mut(&id).and_then(|i| i.credits.as_mut());
            if credits.is_some_and(|cr| !cr.serves_request()) {
                c.requests.failed_throttled += 1;
                return Served::Failed(format!(
                    "target {}/{} is on {node}, held to its CPU baseline (standard mode, no credits)",
                    target.ns, target.pod
                ));
            }
            c.requests.served_by_pods += 1;
            Served::Pod(format!("{}/{}", target.ns, target.pod))
        }
        None => {
            c.requests.failed_dead_target += 1;
            Served::Failed(format!("target {}/{} is gone", target.ns, target.pod))
        }
    }
}

fn instance_gone(st: &EmuState, node: &str) -> bool {
    st.cluster.lock().unwrap_or_else(|e| e.into_inner()).terminated.contains_key(node)
}

/// One pass of the cloud: instances boot and join, stopped ones stay down,
/// volumes attach and detach, the load balancer's targets follow the Ready
/// pods, and the bill grows.
pub fn tick(st: &EmuState, now: Instant) {
    let gone: HashMap<String, Instant> =
        st.cluster.lock().unwrap_or_else(|e| e.into_inner()).terminated.clone();
    let mut joins = Vec::new();
    {
        let mut c = lock(st);
        register_nodes(st, &mut c);
        // Bill the time since the last pass (world hours).
        let dt_h = c.last_tick.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64())
            / st.config.time_scale.max(1e-9)
            / 3600.0;
        c.last_tick = Some(now);
        let (mut cost, mut on_demand) = (0.0, 0.0);
        let stopped = costop_facts::catalog::stopped_standby_usd_hr();
        let demand = burstable_demand(st, &c);
        let mut surplus_usd = 0.0;
        let mut down = HashSet::new();
        let ids: Vec<String> = c.instances.keys().cloned().collect();
        for id in ids {
            let Some(inst) = c.instances.get(&id).cloned() else { continue };
            let od =
                costop_facts::catalog::instance_type(&inst.instance_type).map_or(0.0, |t| t.on_demand_usd_hr);
            let spot = c
                .pools
                .get(&PoolKey { instance_type: inst.instance_type.clone(), zone: inst.zone.clone() })
                .map_or(od * (1.0 - DEFAULT_SPOT_DISCOUNT), |p| p.spot_price);
            let mut power = inst.power;
            if gone.contains_key(&inst.node) {
                power = Power::Terminated;
            }
            match power {
                Power::Pending(at) if now >= at => {
                    joins.push(inst.clone());
                    power = Power::Running;
                }
                Power::Starting(at) if now >= at => power = Power::Running,
                Power::Starting(_) | Power::Stopped => {
                    down.insert(inst.node.clone());
                }
                _ => {}
            }
            match power {
                Power::Terminated => {}
                Power::Stopped => cost += stopped,
                _ => {
                    cost += if inst.purchase == Purchase::Spot { spot } else { od };
                    on_demand += od;
                }
            }
            if let Some(i) = c.instances.get_mut(&id) {
                i.power = power;
                if let Some(credits) = i.credits.as_mut() {
                    surplus_usd += match power {
                        Power::Running => {
                            credits.advance(dt_h * 3600.0, demand.get(&i.node).copied().unwrap_or(0.0))
                        }
                        Power::Stopped | Power::Terminated => credits.end(),
                        Power::Pending(_) | Power::Starting(_) => 0.0,
                    };
                }
            }
        }
        c.down = down;
        c.surplus_usd += surplus_usd;
        c.cost_usd += cost * dt_h + surplus_usd;
        c.on_demand_usd += on_demand * dt_h;
    }
    for inst in joins {
        let group = crate::admin::NodeGroup {
            count: 1,
            instance_type: inst.instance_type.clone(),
            zone: inst.zone.clone(),
            capacity_type: "spot".into(),
        };
        match crate::admin::node_object(&inst.node, &inst.id, &group) {
            Ok(object) => {
                if let Err(e) = st.create(idx::NODES, "", object) {
                    tracing::warn!(node = inst.node, error = %e, "emulated cloud: the launched node cannot join");
                }
            }
            Err(e) => {
                tracing::warn!(node = inst.node, error = %e, "emulated cloud: launched an unknown type")
            }
        }
    }
    volumes(st, now, &gone);
    let in_use = lock(st).lb_used.is_some_and(|t| now.saturating_duration_since(t) <= LB_IDLE);
    if in_use {
        routes(st, now);
    }
}

/// vCPUs the running pods on each burstable node ask for (their containers'
/// CPU requests): what the node's credits pay for.
fn burstable_demand(st: &EmuState, c: &CloudState) -> HashMap<String, f64> {
    let burstable: HashSet<&str> =
        c.instances.values().filter(|i| i.credits.is_some()).map(|i| i.node.as_str()).collect();
    let mut demand = HashMap::new();
    if burstable.is_empty() {
        return demand;
    }
    st.store.scan(idx::PODS, |_, _, p| {
        let Some(node) = p["spec"]["nodeName"].as_str().filter(|n| burstable.contains(n)) else { return };
        if p["status"]["phase"] != "Running" {
            return;
        }
        let millis: u64 = p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| crate::cluster::parse_cpu(&k["resources"]["requests"]["cpu"]))
            .sum();
        *demand.entry(node.to_string()).or_insert(0.0) += millis as f64 / 1000.0;
    });
    demand
}

/// Switch a burstable node's credit option and/or set its balance
/// (`POST /admin/nodes/N/credits`); returns its credits as
/// [`summary`] shows them. Errors: (404, no such node), (409, not a
/// burstable node), (400, the request is junk).
pub fn set_credits(
    st: &EmuState,
    node: &str,
    req: &crate::burstable::CreditsRequest,
) -> Result<Value, (u16, String)> {
    let mut c = lock(st);
    register_nodes(st, &mut c);
    let id = c.by_node.get(node).cloned().ok_or_else(|| (404, format!("no instance for node {node}")))?;
    let inst = c.instances.get_mut(&id).ok_or_else(|| (404, format!("no instance {id}")))?;
    let facts = costop_facts::catalog::burstable(&inst.instance_type);
    let (Some(facts), Some(credits)) = (facts, inst.credits.as_mut()) else {
        return Err((409, format!("{node} ({}) is not a burstable node", inst.instance_type)));
    };
    let change = crate::burstable::check(req, facts).map_err(|e| (400, e))?;
    let usd = credits.apply(&change);
    let shown = credits.summary();
    c.surplus_usd += usd;
    c.cost_usd += usd;
    Ok(shown)
}

/// The load balancer stops following the pods this long after its last request.
const LB_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The attach/detach controller and the volume moves under way.
fn volumes(st: &EmuState, now: Instant, gone: &HashMap<String, Instant>) {
    if lock(st).volumes.is_empty() {
        return;
    }
    // Which node wants each volume: a bound pod that has not started yet.
    let mut wanted: HashMap<String, String> = HashMap::new();
    let mut held: HashMap<String, HashSet<String>> = HashMap::new();
    let mut pods = Vec::new();
    st.store.scan(idx::PODS, |ns, _, p| {
        if p["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["persistentVolumeClaim"].is_object())
        {
            pods.push((ns.to_string(), p.clone()));
        }
    });
    for (ns, p) in &pods {
        let Some(node) = p["spec"]["nodeName"].as_str() else { continue };
        let phase = p["status"]["phase"].as_str().unwrap_or("Pending");
        for id in volumes_of_pod(st, ns, p) {
            match phase {
                "Pending" if !p["metadata"]["deletionTimestamp"].is_string() => {
                    wanted.insert(id, node.to_string());
                }
                "Running" => {
                    held.entry(id).or_default().insert(node.to_string());
                }
                _ => {}
            }
        }
    }
    let force = st.scaled(st.config.timings.force_detach_s);
    let half = st.scaled(st.config.timings.volume_move_s / 2.0);
    let mut c = lock(st);
    for (id, v) in c.volumes.iter_mut() {
        if let Some((to, at)) = v.moving.clone() {
            if now >= at {
                v.attached = Some(to);
                v.moving = None;
            }
            continue;
        }
        let Some(want) = wanted.get(id) else { continue };
        if v.attached.as_deref() == Some(want.as_str()) {
            continue;
        }
        match v.attached.clone() {
            None => v.moving = Some((want.clone(), now + half)),
            Some(from) => {
                let mounted = held.get(id).is_some_and(|h| h.contains(&from));
                if gone.contains_key(&from) {
                    // Attached to a lost instance: forced only after maxWaitForUnmountDuration.
                    let at = *v.force_detach_at.get_or_insert(now + force);
                    if now >= at {
                        v.force_detach_at = None;
                        v.moving = Some((want.clone(), now + half + half));
                    }
                } else if !mounted {
                    v.moving = Some((want.clone(), now + half + half));
                }
            }
        }
    }
}

/// Rebuild the load balancer's targets: each workload's Ready, running
/// pods on nodes not excluded from load balancers; a target that stops
/// being one stays routed for the endpoint delay.
fn routes(st: &EmuState, now: Instant) {
    let delay = st.scaled(ENDPOINT_DELAY_S);
    let mut excluded = HashSet::new();
    st.store.scan(idx::NODES, |_, name, n| {
        if n["metadata"]["labels"]["node.kubernetes.io/exclude-from-external-load-balancers"].is_string() {
            excluded.insert(name.to_string());
        }
    });
    let mut eligible: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    st.store.scan(idx::PODS, |ns, name, p| {
        let owner = p["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|o| o.iter().find(|r| r["controller"] == true && r["kind"] == "Deployment"))
            .and_then(|r| r["name"].as_str());
        let Some(owner) = owner else { return };
        if p["spec"]["priorityClassName"] == crate::admin::PLACEHOLDER_CLASS {
            return;
        }
        let ok = p["status"]["phase"] == "Running"
            && crate::cluster::is_ready(p)
            && !p["metadata"]["deletionTimestamp"].is_string()
            && p["spec"]["nodeName"].as_str().is_some_and(|n| !excluded.contains(n));
        if ok {
            eligible.entry(format!("{ns}/{owner}")).or_default().push((
                ns.to_string(),
                name.to_string(),
                p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            ));
        }
    });
    let mut c = lock(st);
    let mut routes = std::mem::take(&mut c.routes);
    for (w, targets) in routes.iter_mut() {
        let now_eligible: HashSet<&str> =
            eligible.get(w).into_iter().flatten().map(|(_, _, uid)| uid.as_str()).collect();
        for t in targets.iter_mut() {
            if now_eligible.contains(t.uid.as_str()) {
                t.leaving = None;
            } else {
                t.leaving.get_or_insert(now);
            }
        }
        targets.retain(|t| t.leaving.is_none_or(|since| now < since + delay));
    }
    for (w, pods) in eligible {
        let targets = routes.entry(w).or_default();
        for (ns, pod, uid) in pods {
            if !targets.iter().any(|t| t.uid == uid) {
                targets.push(Target { ns, pod, uid, leaving: None });
            }
        }
    }
    c.routes = routes;
}

/// The cloud's state, as `GET /admin/cloud` answers: instances by state,
/// volumes, the bridge, requests and the bill (world time).
pub fn summary(st: &EmuState) -> Value {
    let c = lock(st);
    let mut by_state: BTreeMap<&str, u32> = BTreeMap::new();
    let instances: Vec<Value> = c
        .instances
        .values()
        .map(|i| {
            let state = match i.power {
                Power::Pending(_) => "pending",
                Power::Starting(_) => "starting",
                Power::Running => "running",
                Power::Stopped => "stopped",
                Power::Terminated => "terminated",
            };
            *by_state.entry(state).or_default() += 1;
            let mut shown = json!({"id": i.id, "node": i.node, "instance_type": i.instance_type, "zone": i.zone,
                   "spot": i.purchase == Purchase::Spot, "state": state});
            if let Some(credits) = &i.credits {
                shown["credits"] = credits.summary();
            }
            shown
        })
        .collect();
    let volumes: Vec<Value> = c
        .volumes
        .iter()
        .map(|(id, v)| {
            json!({"id": id, "zone": v.zone, "size_gb": v.size_gb, "attached_to": v.attached,
                              "moving_to": v.moving.as_ref().map(|m| m.0.clone()), "moves": v.moves})
        })
        .collect();
    let bridged_requests = c.requests.served_by_function as f64;
    let function_usd = bridged_requests
        * (costop_facts::catalog::LAMBDA_USD_PER_REQUEST
            + FUNCTION_DURATION_S * FUNCTION_MEMORY_GB * costop_facts::catalog::LAMBDA_USD_PER_GB_SECOND);
    let storage_gb: u32 = c.volumes.values().map(|v| v.size_gb).sum();
    let storage_usd_hr = f64::from(storage_gb) * costop_facts::catalog::EBS_GP3_USD_PER_GB_MONTH
        / costop_facts::catalog::HOURS_PER_MONTH;
    json!({
        "instances_by_state": by_state,
        "instances": instances,
        "volumes": volumes,
        "bridge": {"workloads": c.bridged, "switches": c.bridge_switches, "concurrency_limit": c.bridge_limit(),
                   "in_flight": c.bridge_busy.len()},
        "requests": c.requests,
        "routes": c.routes.iter().map(|(w, t)| (w.clone(), json!(t.len()))).collect::<BTreeMap<_, _>>(),
        "cost_usd": c.cost_usd + function_usd,
        "on_demand_usd": c.on_demand_usd,
        "surplus_credits_usd": c.surplus_usd,
        "volume_usd_per_hour": storage_usd_hr,
    })
}

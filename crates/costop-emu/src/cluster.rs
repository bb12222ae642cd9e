//! The cluster behind the API: node lifecycle, Deployment controller,
//! scheduler (resources, taints and tolerations, node selectors, priority
//! and preemption), kubelets (start-up and shutdown in scaled real time)
//! and disruption-budget status. One `reconcile` pass runs every tick.
//!
//! The decisions are `costop-world`'s, the same the simulator makes; this
//! file adapts the stored JSON objects to its typed inputs and applies the
//! answers to the store.

use crate::kinds::idx;
use crate::select::selector_object_matches;
use crate::store::{label_value, IndexBy, Store};
use crate::EmuState;
use costop_core::Resources;
use costop_world::budget::{self, Amount, BudgetSpec, BudgetStatus, EvictedPod};
use costop_world::kubelet::{self, PodStart};
use costop_world::replicas::{self, Controller, Phase, ReplicaDecision, ReplicaPod};
use costop_world::scheduler::{self, Effect, NodeFit, PodFit, Taint, Toleration, Victim};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// A node whose instance is gone turns NotReady after the node-monitor
/// grace period: 50 s since Kubernetes 1.32 (kubernetes#126287).
const NODE_MONITOR_GRACE_S: f64 = 50.0;

/// What the controllers remember between passes.
#[derive(Debug, Default)]
pub struct ClusterState {
    ready_at: HashMap<String, Instant>,
    gone_at: HashMap<String, Instant>,
    /// Nodes whose instance was terminated, and when.
    pub(crate) terminated: HashMap<String, Instant>,
    node_ready_at: HashMap<String, Instant>,
    /// IMDSv2 session tokens: token → (node, expiry).
    pub(crate) imds_tokens: HashMap<String, (String, Instant)>,
    /// Notices injected per node.
    pub(crate) notices: HashMap<String, crate::imds::InstanceNotices>,
    /// Each Deployment's uid → the resourceVersion its pods and status were
    /// last brought up to date at (a pass skips it until something changed).
    deployments_seen: HashMap<String, u64>,
    /// Each budget → the resourceVersion its status was last computed at.
    budgets_seen: HashMap<(String, String), u64>,
    /// The Deployments' scales at the last budget pass.
    scales_seen: HashMap<String, u32>,
    /// Each node → what its pods request, and the node index's version it
    /// was counted at.
    used: HashMap<String, (u64, Used)>,
    /// Where the scheduler's next search for feasible nodes starts
    /// (kube-scheduler's `nextStartNodeIndex`).
    next_start_node: usize,
}

/// kube-scheduler's `minFeasibleNodesToFind`: below this many nodes every
/// node is looked at.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;

/// How many feasible nodes the scheduler looks for before it scores
/// (kube-scheduler `numFeasibleNodesToFind` with the default adaptive
/// `percentageOfNodesToScore`: 50 % minus one point per 125 nodes, at least
/// 5 %, at least 100 nodes; pkg/scheduler/schedule_one.go).
pub fn feasible_nodes_to_find(all: usize) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let percentage = 50usize.saturating_sub(all / 125).max(5);
    (all * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// The pause image is baked into the EKS node image (amazon-eks-ami caches
/// it at build time), so pods of it never pull.
fn preloaded(image: &str) -> bool {
    image.rsplit('/').next().is_some_and(|i| i.starts_with("pause:") || i == "pause")
}

/// What decides a pod's start-up, as the emulator reads it. A pod of only
/// the pause image (placeholders) pulls nothing and is Ready once it runs.
/// Any other container stands for an application, as in the simulator: its
/// image is pulled (the emulator keeps no per-node image cache) and it is
/// Ready once the application is, as with a readiness probe.
fn pod_start(p: &Value) -> PodStart {
    let containers = p["spec"]["containers"].as_array().map_or(&[][..], Vec::as_slice);
    let apps = containers.iter().any(|c| !c["image"].as_str().is_some_and(preloaded));
    let probe = containers.iter().any(|c| c["readinessProbe"].is_object());
    PodStart { image_present: !apps, readiness_probe: apps || probe }
}

/// Whether a pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// CPU quantity (string or number) to millicores.
pub fn parse_cpu(q: &Value) -> u64 {
    match q {
        Value::String(s) => costop_core::quantity::cpu_millis(s),
        Value::Number(n) => costop_core::quantity::cpu_millis(&n.to_string()),
        _ => 0,
    }
}

/// Memory quantity (string or number) to MiB.
pub fn parse_memory_mib(q: &Value) -> u64 {
    match q {
        Value::String(s) => costop_core::quantity::memory_mib(s),
        Value::Number(n) => costop_core::quantity::memory_mib(&n.to_string()),
        _ => 0,
    }
}

/// A pod, as the controllers need it.
#[derive(Debug, Clone)]
struct PodInfo {
    ns: String,
    name: String,
    uid: String,
    node: Option<String>,
    phase: String,
    ready: bool,
    terminating: bool,
    priority: i32,
    requests: Resources,
    /// Requests as the scheduler's score counts them (`scheduler::nonzero`).
    score_requests: Resources,
    owner_uid: Option<String>,
    created: String,
    labels: Value,
    /// Seconds since the epoch it started (or was created).
    started: u64,
    ready_since: u64,
    restarts: u32,
    deletion_cost: i32,
}

/// A pod's requests, and its requests as the scheduler's score counts them.
fn pod_requests(p: &Value) -> (Resources, Resources) {
    let (mut requests, mut score_requests) = (Resources::default(), Resources::default());
    for c in p["spec"]["containers"].as_array().into_iter().flatten() {
        let r = Resources::new(
            parse_cpu(&c["resources"]["requests"]["cpu"]),
            parse_memory_mib(&c["resources"]["requests"]["memory"]),
        );
        requests = requests.plus(&r);
        score_requests = score_requests.plus(&scheduler::nonzero(r));
    }
    (requests, score_requests)
}

fn pod_info(ns: &str, name: &str, p: &Value) -> PodInfo {
    let (requests, score_requests) = pod_requests(p);
    let time = |v: &Value| v.as_str().and_then(crate::time::parse_rfc3339);
    let created = &p["metadata"]["creationTimestamp"];
    let ready_since = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| time(&c["lastTransitionTime"]));
    PodInfo {
        ns: ns.into(),
        name: name.into(),
        uid: p["metadata"]["uid"].as_str().unwrap_or("").into(),
        node: p["spec"]["nodeName"].as_str().map(str::to_string),
        phase: p["status"]["phase"].as_str().unwrap_or("Pending").into(),
        ready: is_ready(p),
        terminating: p["metadata"]["deletionTimestamp"].is_string(),
        priority: p["spec"]["priority"].as_i64().unwrap_or(0).clamp(i32::MIN.into(), i32::MAX.into()) as i32,
        requests,
        score_requests,
        owner_uid: p["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|o| o.iter().find(|r| r["controller"] == true))
            .and_then(|r| r["uid"].as_str().map(str::to_string)),
        created: created.as_str().unwrap_or("").into(),
        labels: p["metadata"]["labels"].clone(),
        started: time(&p["status"]["startTime"]).or_else(|| time(created)).unwrap_or(0),
        ready_since: ready_since.unwrap_or(0),
        restarts: p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["restartCount"].as_u64())
            .sum::<u64>()
            .min(u32::MAX.into()) as u32,
        deletion_cost: p["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
    }
}

/// A pod's tolerations as the scheduler reads them (unknown effects are
/// dropped: the API server would have refused them).
fn tolerations_of(spec: &Value) -> Vec<Toleration<'_>> {
    spec["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let effect = match t["effect"].as_str().unwrap_or("") {
                "" => None,
                e => Some(Effect::parse(e)?),
            };
            Some(Toleration {
                key: t["key"].as_str().unwrap_or(""),
                exists: t["operator"] == "Exists",
                value: t["value"].as_str().unwrap_or(""),
                effect,
            })
        })
        .collect()
}

/// A node's taints as the scheduler reads them.
fn taints_of(node: &Value) -> Vec<Taint<'_>> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(Taint {
                key: t["key"].as_str().unwrap_or(""),
                value: t["value"].as_str().unwrap_or(""),
                effect: Effect::parse(t["effect"].as_str()?)?,
            })
        })
        .collect()
}

/// String pairs of a JSON map (labels, `nodeSelector`).
fn pairs(map: &Value) -> Vec<(&str, &str)> {
    map.as_object().into_iter().flatten().filter_map(|(k, v)| Some((k.as_str(), v.as_str()?))).collect()
}

/// A budget's spec as the shared arithmetic reads it.
fn budget_spec(pdb: &Value) -> BudgetSpec {
    let amount = |v: &Value| -> Option<Amount> {
        match v {
            Value::Number(n) => n.as_u64().map(|n| Amount::Count(n.min(u32::MAX.into()) as u32)),
            Value::String(s) => s.strip_suffix('%').and_then(|p| p.trim().parse().ok()).map(Amount::Percent),
            _ => None,
        }
    };
    BudgetSpec {
        min_available: amount(&pdb["spec"]["minAvailable"]),
        max_unavailable: amount(&pdb["spec"]["maxUnavailable"]),
    }
}

/// The replicas of each Deployment, by uid: the scale a budget expects.
fn scales(store: &Store) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    store.scan(idx::DEPLOYMENTS, |_, _, d| {
        if let Some(uid) = d["metadata"]["uid"].as_str() {
            out.insert(
                uid.to_string(),
                d["spec"]["replicas"].as_u64().unwrap_or(1).min(u32::MAX.into()) as u32,
            );
        }
    });
    out
}

/// A budget's status from the pods it selects (each: ready, terminating,
/// controller uid). The expected count is the pods' controllers' scale
/// when the spec asks for it; a pod without a known controller counts as
/// one (kube-controller-manager would report an error for it instead).
fn budget_status<'a>(
    spec: &BudgetSpec,
    pods: impl IntoIterator<Item = (bool, bool, Option<&'a str>)>,
    scales: &HashMap<String, u32>,
) -> BudgetStatus {
    let (mut healthy, mut count, mut scale) = (0u32, 0u32, 0u32);
    let mut owners = HashSet::new();
    for (ready, terminating, owner) in pods {
        if terminating {
            continue;
        }
        count += 1;
        healthy += u32::from(ready);
        match owner.and_then(|o| scales.get(o).map(|s| (o, *s))) {
            Some((o, s)) => {
                if owners.insert(o) {
                    scale += s;
                }
            }
            None => scale += 1,
        }
    }
    budget::status(spec, if spec.counts_scale() { scale } else { count }, healthy)
}

/// The answer of `pdb` to evicting `pod`: `None` lets it through, else
/// (healthy, desired) for the 429 message (`budget::may_evict`).
pub fn eviction_refused(store: &Store, pod: &Value, pdb: &Value) -> Option<(u32, u32)> {
    let ns = pdb["metadata"]["namespace"].as_str().unwrap_or("");
    // In policy/v1 a budget without a selector selects no pod.
    let selector = &pdb["spec"]["selector"];
    let matches = |p: &Value| selector.is_object() && selector_object_matches(selector, p);
    // The pods carrying the budget's first label, from the label index.
    let (pods, _) = match selector["matchLabels"].as_object().and_then(|m| m.iter().next()) {
        Some((k, v)) => {
            store.list_by(IndexBy::Label, &label_value(ns, k, v.as_str().unwrap_or("")), Some(ns), matches)
        }
        None => store.list(idx::PODS, Some(ns), matches),
    };
    let infos: Vec<PodInfo> = pods.iter().map(|p| pod_info(ns, "", p)).collect();
    let status = budget_status(
        &budget_spec(pdb),
        infos.iter().map(|p| (p.ready, p.terminating, p.owner_uid.as_deref())),
        &scales(store),
    );
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let exempt = matches!(phase, "Pending" | "Succeeded" | "Failed");
    let evicted = if pod["metadata"]["deletionTimestamp"].is_string() || exempt {
        EvictedPod::Exempt
    } else if is_ready(pod) {
        EvictedPod::Ready
    } else {
        EvictedPod::Unready
    };
    (!budget::may_evict(evicted, &status)).then_some((status.current_healthy, status.desired_healthy))
}

fn set_condition(p: &mut Value, kind: &str, status: bool) {
    let now = crate::time::now_rfc3339();
    let conds = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != kind).collect();
    conds.push(
        json!({"type": kind, "status": if status { "True" } else { "False" }, "lastTransitionTime": now}),
    );
    p["status"]["conditions"] = json!(conds);
}

/// One pass of every controller.
pub fn reconcile(st: &EmuState, now: Instant) {
    let mut took = [0u128; 5];
    let mut timed = |i: usize, f: &dyn Fn()| {
        let t = Instant::now();
        f();
        took[i] = t.elapsed().as_millis();
    };
    timed(0, &|| nodes(st, now));
    timed(1, &|| deployments(st));
    timed(2, &|| schedule(st));
    timed(3, &|| kubelets(st, now));
    timed(4, &|| budgets(st));
    if took.iter().sum::<u128>() >= 200 {
        let [nodes, deployments, schedule, kubelets, budgets] = took;
        tracing::debug!(
            nodes,
            deployments,
            schedule,
            kubelets,
            budgets,
            "emulator: slow controller pass (ms)"
        );
    }
}

fn nodes(st: &EmuState, now: Instant) {
    // Interruptions whose time has come take the instance away.
    for node in crate::imds::due(st, crate::imds::unix_now()) {
        st.cluster.lock().unwrap_or_else(|e| e.into_inner()).terminated.insert(node, now);
    }
    // (name, has conditions, Ready now): only a node whose Ready changes is
    // written (writing all 5,000 every pass took ~100 ms of a 100 ms tick).
    let mut names = Vec::new();
    st.store.scan(idx::NODES, |_, name, n| {
        let ready = n["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"] == "True");
        names.push((name.to_string(), n["status"]["conditions"].is_array(), ready));
    });
    let grace = st.scaled(NODE_MONITOR_GRACE_S);
    let boot = st.scaled(st.config.timings.node_ready_s);
    // A stopped or booting instance's kubelet posts no status.
    let down = crate::cloud::down_nodes(st);
    let mut cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
    for (name, has_conditions, shown) in names {
        let gone = cs.terminated.get(&name).is_some_and(|t| now >= *t + grace);
        let ready_at =
            *cs.node_ready_at.entry(name.clone()).or_insert(if has_conditions { now } else { now + boot });
        let ready = !gone && now >= ready_at && !down.contains(&name);
        if shown == Some(ready) {
            continue;
        }
        let _ = st.store.update(idx::NODES, "", &name, |n| {
            let current = n["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"] == "True");
            if current != Some(ready) {
                set_condition(n, "Ready", ready);
            }
        });
    }
    let gone_nodes: HashSet<String> =
        cs.terminated.iter().filter(|(_, t)| now >= **t + grace).map(|(n, _)| n.clone()).collect();
    drop(cs);
    // Pods of a vanished instance fail; pods of a deleted node are collected.
    let mut existing = HashSet::new();
    st.store.scan(idx::NODES, |_, name, _| {
        existing.insert(name.to_string());
    });
    let mut failed = Vec::new();
    let mut orphans = Vec::new();
    for node in gone_nodes.iter().filter(|n| existing.contains(*n)) {
        st.store.scan_by(IndexBy::NodeName, node, |ns, name, p| {
            if p["status"]["phase"] != "Failed" {
                failed.push((ns.to_string(), name.to_string()));
            }
        });
    }
    for (node, _) in st.store.index_values(IndexBy::NodeName) {
        if !node.is_empty() && !existing.contains(&node) {
            st.store.scan_by(IndexBy::NodeName, &node, |ns, name, _| {
                orphans.push((ns.to_string(), name.to_string()));
            });
        }
    }
    for (ns, name) in failed {
        let _ = st.store.update(idx::PODS, &ns, &name, |p| {
            p["status"]["phase"] = json!("Failed");
            p["status"]["reason"] = json!("NodeLost");
            set_condition(p, "Ready", false);
        });
    }
    for (ns, name) in orphans {
        st.forget_pod(&ns, &name);
        let _ = st.store.delete(idx::PODS, &ns, &name);
    }
}

/// The Deployment controller. A Deployment is looked at again only when
/// it or one of its pods (the owner index) changed since its last pass.
fn deployments(st: &EmuState) {
    let pass_rv = st.store.resource_version();
    // Each Deployment's uid and version, read in place; only those to look
    // at are copied (copying all 3,000 every pass took ~100 ms).
    let mut heads: Vec<(String, String, String, u64)> = Vec::new();
    st.store.scan(idx::DEPLOYMENTS, |ns, name, d| {
        let uid = d["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let rv = d["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).unwrap_or(u64::MAX);
        heads.push((ns.to_string(), name.to_string(), uid, rv));
    });
    let seen = std::mem::take(&mut st.cluster.lock().unwrap_or_else(|e| e.into_inner()).deployments_seen);
    let mut now_seen = HashMap::new();
    for (d_ns, d_name, uid, rv) in heads {
        let last = seen.get(&uid).copied();
        now_seen.insert(uid.clone(), last.unwrap_or(0));
        if last.is_some_and(|l| rv <= l && st.store.changed_by(IndexBy::Owner, &uid) <= l) {
            continue;
        }
        let Ok(d) = st.store.get(idx::DEPLOYMENTS, &d_ns, &d_name) else { continue };
        now_seen.insert(uid.clone(), pass_rv);
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
        let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1).min(u32::MAX.into()) as u32;
        let counts = |terminating: bool, phase: &str| {
            (Controller::Deployment.counts_terminating() || !terminating)
                && phase != "Failed"
                && phase != "Succeeded"
        };
        // Counts first (cheap); every pod's details only to choose whom to delete.
        let (mut active, mut ready, mut total) = (0u32, 0, 0);
        st.store.scan_by(IndexBy::Owner, &uid, |_, _, p| {
            let terminating = p["metadata"]["deletionTimestamp"].is_string();
            let phase = p["status"]["phase"].as_str().unwrap_or("Pending");
            active += u32::from(counts(terminating, phase));
            ready += usize::from(!terminating && is_ready(p));
            total += usize::from(!terminating && phase != "Failed");
        });
        match replicas::decide(replicas, active) {
            ReplicaDecision::Create(n) => {
                for _ in 0..n {
                    let template = &d["spec"]["template"];
                    let pod = json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"generateName": format!("{name}-"), "name": format!("{name}-{}", crate::random_suffix()),
                            "labels": template["metadata"]["labels"].clone(),
                            "annotations": template["metadata"]["annotations"].clone(),
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                                                 "controller": true, "blockOwnerDeletion": true}]},
                        "spec": template["spec"].clone(),
                    });
                    let _ = st.create(idx::PODS, &ns, pod);
                }
            }
            ReplicaDecision::Delete(n) => {
                let mut owned = Vec::new();
                st.store.scan_by(IndexBy::Owner, &uid, |ns, name, p| owned.push(pod_info(ns, name, p)));
                let active: Vec<&PodInfo> =
                    owned.iter().filter(|p| counts(p.terminating, &p.phase)).collect();
                let mut on_node: HashMap<&str, u32> = HashMap::new();
                for p in &active {
                    if let Some(node) = &p.node {
                        *on_node.entry(node.as_str()).or_default() += 1;
                    }
                }
                let ranked: Vec<ReplicaPod> = active
                    .iter()
                    .map(|p| ReplicaPod {
                        assigned: p.node.is_some(),
                        phase: match p.phase.as_str() {
                            "Running" => Phase::Running,
                            "Unknown" => Phase::Unknown,
                            _ => Phase::Pending,
                        },
                        ready: p.ready,
                        deletion_cost: p.deletion_cost,
                        colocated: p.node.as_deref().and_then(|n| on_node.get(n)).copied().unwrap_or(0),
                        ready_since: p.ready_since,
                        restarts: p.restarts,
                        created: crate::time::parse_rfc3339(&p.created).unwrap_or(0),
                    })
                    .collect();
                for i in replicas::pick_for_deletion(&ranked, n as usize) {
                    let _ = st.delete(idx::PODS, &active[i].ns, &active[i].name, None);
                }
            }
            ReplicaDecision::Steady => {}
        }
        let _ = st.store.update(idx::DEPLOYMENTS, &ns, &name, |d| {
            d["status"]["replicas"] = json!(total);
            d["status"]["readyReplicas"] = json!(ready);
            d["status"]["availableReplicas"] = json!(ready);
            d["status"]["updatedReplicas"] = json!(total);
            d["status"]["observedGeneration"] = json!(1);
        });
    }
    st.cluster.lock().unwrap_or_else(|e| e.into_inner()).deployments_seen = now_seen;
}

/// A node as the scheduler reads it, borrowing its stored object.
struct NodeParts<'a> {
    name: &'a str,
    ready: bool,
    unschedulable: bool,
    taints: Vec<Taint<'a>>,
    labels: Vec<(&'a str, &'a str)>,
    zone: &'a str,
    allocatable: Resources,
    max_pods: u32,
}

fn node_parts<'a>(name: &'a str, n: &'a Value) -> NodeParts<'a> {
    let pods = &n["status"]["allocatable"]["pods"];
    NodeParts {
        name,
        ready: n["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")),
        unschedulable: n["spec"]["unschedulable"] == true,
        taints: taints_of(n),
        labels: pairs(&n["metadata"]["labels"]),
        zone: n["metadata"]["labels"]["topology.kubernetes.io/zone"].as_str().unwrap_or(""),
        allocatable: Resources::new(
            parse_cpu(&n["status"]["allocatable"]["cpu"]),
            parse_memory_mib(&n["status"]["allocatable"]["memory"]),
        ),
        max_pods: pods
            .as_str()
            .and_then(|p| p.parse().ok())
            .or_else(|| pods.as_u64().map(|p| p.min(u32::MAX.into()) as u32))
            .unwrap_or(scheduler::DEFAULT_MAX_PODS),
    }
}

/// What the pods bound to a node use: requests, score requests, count.
#[derive(Debug, Default, Clone, Copy)]
struct Used {
    requests: Resources,
    score: Resources,
    pods: u32,
}

impl Used {
    fn add(&mut self, p: &PodInfo) {
        self.requests = self.requests.plus(&p.requests);
        self.score = self.score.plus(&p.score_requests);
        self.pods += 1;
    }

    fn remove(&mut self, p: &PodInfo) {
        self.requests = self.requests.minus(&p.requests);
        self.score = self.score.minus(&p.score_requests);
        self.pods = self.pods.saturating_sub(1);
    }
}

fn node_fit<'a>(n: &'a NodeParts<'a>, used: Used) -> NodeFit<'a> {
    NodeFit {
        ready: n.ready,
        unschedulable: n.unschedulable,
        taints: &n.taints,
        labels: &n.labels,
        zone: n.zone,
        allocatable: n.allocatable,
        max_pods: n.max_pods,
        requested: used.requests,
        score_requested: used.score,
        pods: used.pods,
    }
}

/// Whether evicting the pod now would break a budget that selects it (the
/// budget's status allows no disruption), for preemption's choice.
fn breaks_budget(pdbs: &[Value], ns: &str, labels: &Value) -> bool {
    let pod = json!({"metadata": {"labels": labels}});
    pdbs.iter().any(|b| {
        b["metadata"]["namespace"] == ns
            && b["spec"]["selector"].is_object()
            && selector_object_matches(&b["spec"]["selector"], &pod)
            && b["status"]["disruptionsAllowed"].as_u64() == Some(0)
    })
}

/// The scheduler: binds the pods no node has yet (the node index's ""),
/// highest priority first. Like kube-scheduler it looks for
/// [`feasible_nodes_to_find`] feasible nodes, starting where the last
/// search stopped, and scores only those; a pod that fits nowhere may
/// preempt lower-priority pods. What each node's pods request is counted
/// again only for nodes whose pods changed.
fn schedule(st: &EmuState) {
    let mut pending: Vec<(PodInfo, Value)> = Vec::new();
    st.store.scan_by(IndexBy::NodeName, "", |ns, name, p| {
        let info = pod_info(ns, name, p);
        if !info.terminating {
            pending.push((info, p["spec"].clone()));
        }
    });
    if pending.is_empty() {
        return;
    }
    let mut stored: Vec<(String, Value)> = Vec::new();
    st.store.scan(idx::NODES, |_, name, n| stored.push((name.to_string(), n.clone())));
    // Candidates in name order: the first of equal scores wins.
    stored.sort_by(|a, b| a.0.cmp(&b.0));
    let nodes: Vec<NodeParts<'_>> = stored.iter().map(|(name, n)| node_parts(name, n)).collect();
    let versions: HashMap<String, u64> = st.store.index_values(IndexBy::NodeName).into_iter().collect();
    let (mut used, mut start) = {
        let mut cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut cs.used), cs.next_start_node)
    };
    used.retain(|name, _| versions.contains_key(name));
    for (name, version) in &versions {
        if name.is_empty() || used.get(name).is_some_and(|(v, _)| v == version) {
            continue;
        }
        let mut u = Used::default();
        st.store.scan_by(IndexBy::NodeName, name, |_, _, p| {
            if p["status"]["phase"] != "Failed" && p["status"]["phase"] != "Succeeded" {
                let (requests, score) = pod_requests(p);
                u.requests = u.requests.plus(&requests);
                u.score = u.score.plus(&score);
                u.pods += 1;
            }
        });
        used.insert(name.clone(), (*version, u));
    }
    // Bindings and preemptions of this pass change the counts here; as they
    // change the node index's versions, those nodes are counted again next pass.
    // The pods on each node, for preemption: read once, when first needed.
    let mut on_node: Option<HashMap<String, Vec<PodInfo>>> = None;
    // The scheduling queue: higher priority first, then older.
    pending.sort_by(|a, b| b.0.priority.cmp(&a.0.priority).then_with(|| a.0.created.cmp(&b.0.created)));
    let to_find = feasible_nodes_to_find(nodes.len());
    let mut pdbs: Option<Vec<Value>> = None;
    // What each node's pods request, by the node's position (no hashing in
    // the search below); written back to the cache after the pass.
    let mut usage: Vec<Used> =
        nodes.iter().map(|n| used.get(n.name).map(|(_, u)| *u).unwrap_or_default()).collect();
    for (pod, spec) in pending {
        let tolerations = tolerations_of(&spec);
        let selector = pairs(&spec["nodeSelector"]);
        let fit = PodFit {
            priority: pod.priority,
            requests: pod.requests,
            score_requests: pod.score_requests,
            tolerations: &tolerations,
            node_selector: &selector,
            zone: None,
            may_preempt: spec["preemptionPolicy"] != "Never",
        };
        // Feasible nodes from `start` on, until enough are found; the best
        // score wins, the first in name order of equals (`pick_node`).
        let (mut best, mut found, mut looked) = (None::<(u64, usize)>, 0, 0);
        while looked < nodes.len() && found < to_find {
            let i = (start + looked) % nodes.len();
            looked += 1;
            let node = node_fit(&nodes[i], usage[i]);
            if scheduler::feasible(&fit, &node) {
                found += 1;
                let score = scheduler::score(&fit, &node);
                if best.is_none_or(|(s, b)| score > s || (score == s && i < b)) {
                    best = Some((score, i));
                }
            }
        }
        if !nodes.is_empty() {
            start = (start + looked) % nodes.len();
        }
        let target = match best {
            Some((_, i)) => Some(nodes[i].name.to_string()),
            None => {
                let pdbs = pdbs.get_or_insert_with(|| st.store.list(idx::PDBS, None, |_| true).0);
                let on_node = on_node.get_or_insert_with(|| {
                    let mut all: HashMap<String, Vec<PodInfo>> = HashMap::new();
                    for n in &nodes {
                        st.store.scan_by(IndexBy::NodeName, n.name, |ns, name, p| {
                            let info = pod_info(ns, name, p);
                            if info.phase != "Failed" && info.phase != "Succeeded" {
                                all.entry(n.name.to_string()).or_default().push(info);
                            }
                        });
                    }
                    all
                });
                let candidates = nodes.iter().zip(&usage).map(|(n, u)| {
                    let victims = on_node
                        .get(n.name)
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .filter(|(_, p)| !p.terminating)
                        .map(|(i, p)| Victim {
                            key: i,
                            priority: p.priority,
                            requests: p.requests,
                            violates_budget: breaks_budget(pdbs, &p.ns, &p.labels),
                            started: p.started,
                        });
                    (n.name, node_fit(n, *u), victims)
                });
                scheduler::pick_preemption(&fit, candidates).map(|(node, victims)| {
                    let list = on_node.get(node).cloned().unwrap_or_default();
                    let gone: HashSet<&str> = victims.iter().map(|&i| list[i].uid.as_str()).collect();
                    for &i in &victims {
                        let v = &list[i];
                        st.forget_pod(&v.ns, &v.name);
                        let _ = st.store.delete(idx::PODS, &v.ns, &v.name);
                        if let Ok(i) = nodes.binary_search_by(|n| n.name.cmp(node)) {
                            usage[i].remove(v);
                        }
                    }
                    if let Some(list) = on_node.get_mut(node) {
                        list.retain(|p| !gone.contains(p.uid.as_str()));
                    }
                    node.to_string()
                })
            }
        };
        if let Some(node) = target {
            let bound = st.store.update(idx::PODS, &pod.ns, &pod.name, |p| {
                p["spec"]["nodeName"] = json!(node);
                set_condition(p, "PodScheduled", true);
            });
            if bound.is_ok() {
                if let Ok(i) = nodes.binary_search_by(|n| n.name.cmp(node.as_str())) {
                    usage[i].add(&pod);
                }
                if let Some(on_node) = on_node.as_mut() {
                    on_node.entry(node).or_default().push(pod);
                }
            }
        }
    }
    // A node whose pods changed in this pass has a new index version: it is
    // counted again next pass whatever is kept here.
    for (n, u) in nodes.iter().zip(usage) {
        let version = used.get(n.name).map_or(0, |(v, _)| *v);
        used.insert(n.name.to_string(), (version, u));
    }
    let mut cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
    cs.used = used;
    cs.next_start_node = start;
}

fn kubelets(st: &EmuState, now: Instant) {
    let t = &st.config.timings;
    // Durations in the world's seconds, then scaled to real time.
    let scaled_ms = |ms: u64| st.scaled(ms as f64 / 1000.0);
    // Only the pods with kubelet work, from the kubelet index.
    let mut starting = Vec::new();
    let mut stopping = Vec::new();
    st.store.scan_by(IndexBy::Kubelet, "stopping", |ns, name, p| {
        let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let grace = p["metadata"]["deletionGracePeriodSeconds"].as_f64();
        stopping.push((ns.to_string(), name.to_string(), uid, grace));
    });
    st.store.scan_by(IndexBy::Kubelet, "starting", |ns, name, p| {
        let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
        starting.push((ns.to_string(), name.to_string(), uid, pod_start(p)));
    });
    // A pod waits for its EBS volumes to be attached to its node.
    starting.retain(|(ns, name, _, _)| crate::cloud::may_start(st, ns, name));
    let mut cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
    let mut ready_now = Vec::new();
    for (ns, name, uid, start) in starting {
        let at = *cs
            .ready_at
            .entry(uid.clone())
            .or_insert_with(|| now + scaled_ms(kubelet::ready_at(t, start, 0, 0)));
        if now >= at {
            cs.ready_at.remove(&uid);
            ready_now.push((ns, name));
        }
    }
    let mut remove_now = Vec::new();
    for (ns, name, uid, grace) in stopping {
        let at =
            *cs.gone_at.entry(uid.clone()).or_insert_with(|| now + scaled_ms(kubelet::shutdown_ms(t, grace)));
        if now >= at {
            cs.gone_at.remove(&uid);
            remove_now.push((ns, name));
        }
    }
    drop(cs);
    for (ns, name) in ready_now {
        let _ = st.store.update(idx::PODS, &ns, &name, |p| {
            let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
            p["status"]["phase"] = json!("Running");
            p["status"]["startTime"] = json!(crate::time::now_rfc3339());
            p["status"]["hostIP"] = json!(format!("10.0.{}.1", node.len() % 250));
            p["status"]["podIP"] = json!(format!("10.1.{}.{}", name.len() % 250, (name.bytes().map(u64::from).sum::<u64>() % 250) + 1));
            set_condition(p, "Initialized", true);
            set_condition(p, "ContainersReady", true);
            set_condition(p, "Ready", true);
            let statuses: Vec<Value> = p["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| json!({"name": c["name"], "ready": true, "started": true, "restartCount": 0,
                                "image": c["image"], "state": {"running": {"startedAt": crate::time::now_rfc3339()}}}))
                .collect();
            p["status"]["containerStatuses"] = json!(statuses);
        });
    }
    for (ns, name) in remove_now {
        st.forget_pod(&ns, &name);
        let _ = st.store.delete(idx::PODS, &ns, &name);
    }
}

/// Budget status for every PodDisruptionBudget. A budget reads the pods
/// carrying its first `matchLabels` pair (the label index), and is counted
/// again only when one of those pods, the budget or the Deployments'
/// scales changed since its last count.
fn budgets(st: &EmuState) {
    // Each budget's name, version and first selector label, read in place;
    // only those to look at are copied.
    let mut heads: Vec<(String, String, u64, Option<String>)> = Vec::new();
    st.store.scan(idx::PDBS, |ns, name, pdb| {
        let rv = pdb["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).unwrap_or(u64::MAX);
        let first = pdb["spec"]["selector"]["matchLabels"]
            .as_object()
            .and_then(|m| m.iter().next())
            .map(|(k, v)| label_value(ns, k, v.as_str().unwrap_or("")));
        heads.push((ns.to_string(), name.to_string(), rv, first));
    });
    if heads.is_empty() {
        return;
    }
    let pass_rv = st.store.resource_version();
    let scales = scales(&st.store);
    let (seen, scales_changed) = {
        let mut cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
        let changed = cs.scales_seen != scales;
        cs.scales_seen = scales.clone();
        (std::mem::take(&mut cs.budgets_seen), changed)
    };
    let mut now_seen = HashMap::new();
    for (ns, name, rv, first) in heads {
        let pods_changed = match &first {
            Some(label) => st.store.changed_by(IndexBy::Label, label),
            None => st.store.kind_changed(idx::PODS),
        };
        let key = (ns.clone(), name.clone());
        let last = seen.get(&key).copied();
        if !scales_changed && last.is_some_and(|l| rv <= l && pods_changed <= l) {
            now_seen.insert(key, last.unwrap_or(0));
            continue;
        }
        let Ok(pdb) = st.store.get(idx::PDBS, &ns, &name) else { continue };
        let selector = &pdb["spec"]["selector"];
        now_seen.insert(key, pass_rv);
        // (ready, terminating, controller) of each selected pod.
        let mut matched: Vec<(bool, bool, Option<String>)> = Vec::new();
        let mut visit = |_: &str, _: &str, p: &Value| {
            if selector.is_object() && selector_object_matches(selector, p) {
                let owner = p["metadata"]["ownerReferences"]
                    .as_array()
                    .and_then(|o| o.iter().find(|r| r["controller"] == true))
                    .and_then(|r| r["uid"].as_str().map(str::to_string));
                matched.push((is_ready(p), p["metadata"]["deletionTimestamp"].is_string(), owner));
            }
        };
        match &first {
            _ if !selector.is_object() => {}
            Some(label) => {
                st.store.scan_by(IndexBy::Label, label, &mut visit);
            }
            None => st.store.scan(idx::PODS, |pns, pname, p| {
                if pns == ns {
                    visit(pns, pname, p);
                }
            }),
        }
        let status = budget_status(
            &budget_spec(&pdb),
            matched.iter().map(|(ready, terminating, owner)| (*ready, *terminating, owner.as_deref())),
            &scales,
        );
        let _ = st.store.update(idx::PDBS, &ns, &name, |b| {
            b["status"]["currentHealthy"] = json!(status.current_healthy);
            b["status"]["desiredHealthy"] = json!(status.desired_healthy);
            b["status"]["disruptionsAllowed"] = json!(status.disruptions_allowed);
            b["status"]["expectedPods"] = json!(status.expected_pods);
            b["status"]["observedGeneration"] = json!(1);
        });
    }
    st.cluster.lock().unwrap_or_else(|e| e.into_inner()).budgets_seen = now_seen;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_looks_at_as_many_nodes_as_kube_scheduler() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(100), 100);
        // 50 % - 500/125 = 46 %.
        assert_eq!(feasible_nodes_to_find(500), 230);
        // 50 % - 40 = 10 %.
        assert_eq!(feasible_nodes_to_find(5000), 500);
        // At least 5 %.
        assert_eq!(feasible_nodes_to_find(10_000), 500);
        assert_eq!(feasible_nodes_to_find(100_000), 5000);
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu(&json!("500m")), 500);
        assert_eq!(parse_cpu(&json!("2")), 2000);
        assert_eq!(parse_cpu(&json!(1.5)), 1500);
        assert_eq!(parse_memory_mib(&json!("2Gi")), 2048);
        assert_eq!(parse_memory_mib(&json!("512Mi")), 512);
        assert_eq!(parse_memory_mib(&json!("junk")), 0);
    }

    #[test]
    fn tolerations_and_taints_are_read_from_the_objects() {
        let node = json!({"spec": {"taints": [{"key": "costop.io/standby", "effect": "NoSchedule"},
                                               {"key": "odd", "effect": "Sometimes"}]}});
        let taints = taints_of(&node);
        assert_eq!(taints, vec![Taint { key: "costop.io/standby", value: "", effect: Effect::NoSchedule }]);
        let tolerates = |spec: Value| tolerations_of(&spec).iter().any(|t| t.tolerates(&taints[0]));
        assert!(tolerates(json!({"tolerations": [{"key": "costop.io/standby", "operator": "Exists"}]})));
        assert!(tolerates(json!({"tolerations": [{"operator": "Exists"}]})));
        assert!(!tolerates(json!({"tolerations": [{"key": "other", "operator": "Exists"}]})));
        assert!(!tolerates(json!({"tolerations": [{"operator": "Exists", "effect": "NoExecute"}]})));
        assert!(!tolerates(Value::Null));
    }

    #[test]
    fn budgets_are_read_and_counted() {
        let spec = budget_spec(&json!({"spec": {"minAvailable": "50%"}}));
        assert_eq!(spec.min_available, Some(Amount::Percent(50)));
        assert_eq!(
            budget_spec(&json!({"spec": {"maxUnavailable": 1}})).max_unavailable,
            Some(Amount::Count(1))
        );
        let scales = HashMap::from([("d".to_string(), 4)]);
        // Three pods of a Deployment of 4 (one being replaced), one bare pod.
        let pods = [
            (true, false, Some("d")),
            (true, false, Some("d")),
            (false, false, Some("d")),
            (true, false, None),
        ];
        let status = budget_status(&spec, pods, &scales);
        assert_eq!((status.expected_pods, status.current_healthy, status.desired_healthy), (5, 3, 3));
        assert_eq!(status.disruptions_allowed, 0);
        let count = budget_status(&budget_spec(&json!({"spec": {"minAvailable": 2}})), pods, &scales);
        assert_eq!((count.expected_pods, count.disruptions_allowed), (4, 1));
    }

    #[test]
    fn the_pause_image_is_preloaded_and_apps_start() {
        assert!(preloaded("registry.k8s.io/pause:3.10"));
        assert!(!preloaded("public.ecr.aws/costop/app:1"));
        let pause = json!({"spec": {"containers": [{"image": "registry.k8s.io/pause:3.10"}]}});
        assert_eq!(pod_start(&pause), PodStart { image_present: true, readiness_probe: false });
        let app = json!({"spec": {"containers": [{"image": "public.ecr.aws/costop/app:1"}]}});
        assert_eq!(pod_start(&app), PodStart { image_present: false, readiness_probe: true });
    }
}

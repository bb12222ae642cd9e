//! The cluster behind the API: node lifecycle, Deployment controller,
//! scheduler (resources, taints and tolerations, node selectors, priority
//! and preemption), kubelets (start-up and shutdown in scaled real time)
//! and disruption-budget status. One `reconcile` pass runs every tick.

use crate::kinds::idx;
use crate::select::selector_object_matches;
use crate::store::Store;
use crate::EmuState;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

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
    priority: i64,
    cpu: u64,
    mem: u64,
    owner_uid: Option<String>,
    created: String,
}

fn pod_info(ns: &str, name: &str, p: &Value) -> PodInfo {
    let (mut cpu, mut mem) = (0, 0);
    for c in p["spec"]["containers"].as_array().into_iter().flatten() {
        cpu += parse_cpu(&c["resources"]["requests"]["cpu"]);
        mem += parse_memory_mib(&c["resources"]["requests"]["memory"]);
    }
    PodInfo {
        ns: ns.into(),
        name: name.into(),
        uid: p["metadata"]["uid"].as_str().unwrap_or("").into(),
        node: p["spec"]["nodeName"].as_str().map(str::to_string),
        phase: p["status"]["phase"].as_str().unwrap_or("Pending").into(),
        ready: is_ready(p),
        terminating: p["metadata"]["deletionTimestamp"].is_string(),
        priority: p["spec"]["priority"].as_i64().unwrap_or(0),
        cpu,
        mem,
        owner_uid: p["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|o| o.iter().find(|r| r["controller"] == true))
            .and_then(|r| r["uid"].as_str().map(str::to_string)),
        created: p["metadata"]["creationTimestamp"].as_str().unwrap_or("").into(),
    }
}

#[derive(Debug, Clone)]
struct NodeInfo {
    name: String,
    ready: bool,
    schedulable: bool,
    taints: Vec<Value>,
    labels: Value,
    cpu: u64,
    mem: u64,
    pods: u64,
}

fn tolerates(tolerations: &Value, taint: &Value) -> bool {
    tolerations.as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            let key_ok = match t["key"].as_str() {
                None | Some("") => t["operator"] == "Exists",
                Some(k) => Some(k) == taint["key"].as_str(),
            };
            let effect_ok =
                t["effect"].as_str().is_none_or(|e| e.is_empty() || Some(e) == taint["effect"].as_str());
            let value_ok = t["operator"] == "Exists"
                || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
            key_ok && effect_ok && value_ok
        })
    })
}

/// Healthy pods a budget covers and how many it needs, as the API server's
/// eviction check counts them.
pub fn budget_numbers(store: &Store, pdb: &Value) -> (u64, u64) {
    let ns = pdb["metadata"]["namespace"].as_str().unwrap_or("");
    // In policy/v1 a budget without a selector selects no pod.
    let selector = &pdb["spec"]["selector"];
    let (pods, _) = store.list(idx::PODS, Some(ns), |p| {
        selector.is_object()
            && selector_object_matches(selector, p)
            && !p["metadata"]["deletionTimestamp"].is_string()
    });
    let expected = pods.len() as u64;
    let healthy = pods.iter().filter(|p| is_ready(p)).count() as u64;
    let desired = budget_desired(pdb, expected);
    (healthy, desired)
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

/// Healthy pods a budget requires of `expected` pods (minAvailable, or
/// expected minus maxUnavailable; percentages round up).
fn budget_desired(pdb: &Value, expected: u64) -> u64 {
    let amount = |v: &Value| -> Option<u64> {
        match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<f64>().ok())
                .map(|p| (p / 100.0 * expected as f64).ceil() as u64),
            _ => None,
        }
    };
    if let Some(min) = amount(&pdb["spec"]["minAvailable"]) {
        min
    } else if let Some(max) = amount(&pdb["spec"]["maxUnavailable"]) {
        expected.saturating_sub(max)
    } else {
        0
    }
}

/// One pass of every controller.
pub fn reconcile(st: &EmuState, now: Instant) {
    nodes(st, now);
    deployments(st);
    schedule(st);
    kubelets(st, now);
    budgets(st);
}

fn nodes(st: &EmuState, now: Instant) {
    // Interruptions whose time has come take the instance away.
    for node in crate::imds::due(st, crate::imds::unix_now()) {
        st.cluster.lock().unwrap_or_else(|e| e.into_inner()).terminated.insert(node, now);
    }
    let mut names = Vec::new();
    st.store
        .scan(idx::NODES, |_, name, n| names.push((name.to_string(), n["status"]["conditions"].is_array())));
    let grace = st.scaled(NODE_MONITOR_GRACE_S);
    let boot = st.scaled(st.config.timings.node_ready_s);
    let mut cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
    for (name, has_conditions) in names {
        let gone = cs.terminated.get(&name).is_some_and(|t| now >= *t + grace);
        let ready_at =
            *cs.node_ready_at.entry(name.clone()).or_insert(if has_conditions { now } else { now + boot });
        let ready = !gone && now >= ready_at;
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
    st.store.scan(idx::PODS, |ns, name, p| {
        if let Some(node) = p["spec"]["nodeName"].as_str() {
            if !existing.contains(node) {
                orphans.push((ns.to_string(), name.to_string()));
            } else if gone_nodes.contains(node) && p["status"]["phase"] != "Failed" {
                failed.push((ns.to_string(), name.to_string()));
            }
        }
    });
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

fn deployments(st: &EmuState) {
    let mut pods_by_owner: HashMap<String, Vec<PodInfo>> = HashMap::new();
    st.store.scan(idx::PODS, |ns, name, p| {
        let info = pod_info(ns, name, p);
        if let Some(owner) = info.owner_uid.clone() {
            pods_by_owner.entry(owner).or_default().push(info);
        }
    });
    let (deploys, _) = st.store.list(idx::DEPLOYMENTS, None, |_| true);
    for d in deploys {
        let uid = d["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
        let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let owned = pods_by_owner.remove(&uid).unwrap_or_default();
        let mut active: Vec<&PodInfo> =
            owned.iter().filter(|p| !p.terminating && p.phase != "Failed").collect();
        if active.len() < replicas {
            for _ in active.len()..replicas {
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
        } else if active.len() > replicas {
            // Scale down: unscheduled first, then not ready, then newest.
            active.sort_by(|a, b| {
                (a.node.is_some(), a.ready, &b.created).cmp(&(b.node.is_some(), b.ready, &a.created))
            });
            for p in active.iter().take(active.len() - replicas) {
                let _ = st.delete(idx::PODS, &p.ns, &p.name, None);
            }
        }
        let ready = owned.iter().filter(|p| p.ready && !p.terminating).count();
        let total = owned.iter().filter(|p| !p.terminating && p.phase != "Failed").count();
        let _ = st.store.update(idx::DEPLOYMENTS, &ns, &name, |d| {
            d["status"]["replicas"] = json!(total);
            d["status"]["readyReplicas"] = json!(ready);
            d["status"]["availableReplicas"] = json!(ready);
            d["status"]["updatedReplicas"] = json!(total);
            d["status"]["observedGeneration"] = json!(1);
        });
    }
}

fn schedule(st: &EmuState) {
    let mut nodes: Vec<NodeInfo> = Vec::new();
    st.store.scan(idx::NODES, |_, name, n| {
        let ready = n["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        nodes.push(NodeInfo {
            name: name.into(),
            ready,
            schedulable: n["spec"]["unschedulable"] != true,
            taints: n["spec"]["taints"].as_array().cloned().unwrap_or_default(),
            labels: n["metadata"]["labels"].clone(),
            cpu: parse_cpu(&n["status"]["allocatable"]["cpu"]),
            mem: parse_memory_mib(&n["status"]["allocatable"]["memory"]),
            pods: n["status"]["allocatable"]["pods"].as_str().and_then(|p| p.parse().ok()).unwrap_or(110),
        });
    });
    let mut used: HashMap<String, (u64, u64, u64)> = HashMap::new();
    let mut on_node: HashMap<String, Vec<PodInfo>> = HashMap::new();
    let mut pending: Vec<(PodInfo, Value)> = Vec::new();
    st.store.scan(idx::PODS, |ns, name, p| {
        let info = pod_info(ns, name, p);
        match &info.node {
            Some(n) if info.phase != "Failed" && info.phase != "Succeeded" => {
                let u = used.entry(n.clone()).or_default();
                *u = (u.0 + info.cpu, u.1 + info.mem, u.2 + 1);
                on_node.entry(n.clone()).or_default().push(info);
            }
            None if !info.terminating => pending.push((info, p["spec"].clone())),
            _ => {}
        }
    });
    if pending.is_empty() {
        return;
    }
    pending.sort_by(|a, b| b.0.priority.cmp(&a.0.priority).then_with(|| a.0.created.cmp(&b.0.created)));
    for (pod, spec) in pending {
        let fits_node = |n: &NodeInfo| {
            n.ready
                && n.schedulable
                && n.taints.iter().all(|t| {
                    !matches!(t["effect"].as_str(), Some("NoSchedule") | Some("NoExecute"))
                        || tolerates(&spec["tolerations"], t)
                })
                && spec["nodeSelector"]
                    .as_object()
                    .is_none_or(|sel| sel.iter().all(|(k, v)| &n.labels[k] == v))
        };
        let free = |n: &NodeInfo, used: &HashMap<String, (u64, u64, u64)>| {
            let u = used.get(&n.name).copied().unwrap_or_default();
            (n.cpu.saturating_sub(u.0), n.mem.saturating_sub(u.1), n.pods.saturating_sub(u.2))
        };
        let fits = |f: (u64, u64, u64)| f.0 >= pod.cpu && f.1 >= pod.mem && f.2 >= 1;
        // Least allocated first, as the default scheduler's scoring does.
        let best = nodes
            .iter()
            .filter(|n| fits_node(n) && fits(free(n, &used)))
            .max_by_key(|n| (free(n, &used).0, std::cmp::Reverse(n.name.clone())))
            .map(|n| n.name.clone());
        let target = match best {
            Some(n) => Some(n),
            None => {
                // Preemption: the node where the fewest lower-priority pods make room.
                let mut choice: Option<(String, Vec<PodInfo>)> = None;
                for n in nodes.iter().filter(|n| fits_node(n)) {
                    let mut f = free(n, &used);
                    let mut victims = Vec::new();
                    let mut candidates: Vec<&PodInfo> = on_node
                        .get(&n.name)
                        .map(|v| v.iter().filter(|p| p.priority < pod.priority && !p.terminating).collect())
                        .unwrap_or_default();
                    candidates.sort_by_key(|p| p.priority);
                    for v in candidates {
                        if fits(f) {
                            break;
                        }
                        f = (f.0 + v.cpu, f.1 + v.mem, f.2 + 1);
                        victims.push(v.clone());
                    }
                    if fits(f) && choice.as_ref().is_none_or(|c| victims.len() < c.1.len()) {
                        choice = Some((n.name.clone(), victims));
                    }
                }
                choice.map(|(node, victims)| {
                    for v in victims {
                        st.forget_pod(&v.ns, &v.name);
                        let _ = st.store.delete(idx::PODS, &v.ns, &v.name);
                        let u = used.entry(node.clone()).or_default();
                        *u = (u.0.saturating_sub(v.cpu), u.1.saturating_sub(v.mem), u.2.saturating_sub(1));
                        if let Some(list) = on_node.get_mut(&node) {
                            list.retain(|p| p.uid != v.uid);
                        }
                    }
                    node
                })
            }
        };
        if let Some(node) = target {
            let bound = st.store.update(idx::PODS, &pod.ns, &pod.name, |p| {
                p["spec"]["nodeName"] = json!(node);
                set_condition(p, "PodScheduled", true);
            });
            if bound.is_ok() {
                let u = used.entry(node.clone()).or_default();
                *u = (u.0 + pod.cpu, u.1 + pod.mem, u.2 + 1);
                on_node.entry(node).or_default().push(pod);
            }
        }
    }
}

fn kubelets(st: &EmuState, now: Instant) {
    let t = &st.config.timings;
    let start = st.scaled(t.image_pull_s + t.container_start_s + t.app_ready_s);
    let shutdown = st.scaled(t.pod_shutdown_s);
    let relist = st.scaled(t.pleg_relist_s).max(Duration::from_millis(1));
    let mut starting = Vec::new();
    let mut stopping = Vec::new();
    st.store.scan(idx::PODS, |ns, name, p| {
        if p["spec"]["nodeName"].is_string() {
            let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
            if p["metadata"]["deletionTimestamp"].is_string() {
                let grace = p["metadata"]["deletionGracePeriodSeconds"].as_f64().unwrap_or(30.0);
                stopping.push((ns.to_string(), name.to_string(), uid, grace));
            } else if p["status"]["phase"] == "Pending" {
                starting.push((ns.to_string(), name.to_string(), uid));
            }
        }
    });
    let mut cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
    let mut ready_now = Vec::new();
    for (ns, name, uid) in starting {
        let at = *cs.ready_at.entry(uid.clone()).or_insert_with(|| {
            // Readiness is seen on the PLEG relist after the container is up.
            let ticks = start.as_nanos().div_ceil(relist.as_nanos()).max(1);
            now + relist * ticks as u32
        });
        if now >= at {
            cs.ready_at.remove(&uid);
            ready_now.push((ns, name));
        }
    }
    let mut remove_now = Vec::new();
    for (ns, name, uid, grace) in stopping {
        let at = *cs.gone_at.entry(uid.clone()).or_insert_with(|| now + shutdown.min(st.scaled(grace)));
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

/// Budget status for every PodDisruptionBudget. Pods are indexed once by
/// namespace and label, so each budget looks only at pods that carry its
/// first `matchLabels` pair.
fn budgets(st: &EmuState) {
    let (pdbs, _) = st.store.list(idx::PDBS, None, |_| true);
    if pdbs.is_empty() {
        return;
    }
    // (namespace, key, value) -> (ready, terminating, labels) of each pod.
    type Summary = (bool, bool, Value);
    let mut by_label: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
    let mut by_ns: HashMap<String, Vec<usize>> = HashMap::new();
    let mut pods: Vec<Summary> = Vec::new();
    st.store.scan(idx::PODS, |ns, _, p| {
        let i = pods.len();
        let labels = p["metadata"]["labels"].clone();
        if let Some(m) = labels.as_object() {
            for (k, v) in m {
                by_label.entry((ns.into(), k.clone(), v.as_str().unwrap_or("").into())).or_default().push(i);
            }
        }
        by_ns.entry(ns.into()).or_default().push(i);
        pods.push((
            is_ready(p),
            p["metadata"]["deletionTimestamp"].is_string(),
            json!({"metadata": {"labels": labels}}),
        ));
    });
    for pdb in pdbs {
        let ns = pdb["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
        let selector = &pdb["spec"]["selector"];
        let first = selector["matchLabels"].as_object().and_then(|m| m.iter().next());
        let candidates: &[usize] = match first {
            _ if !selector.is_object() => &[],
            Some((k, v)) => by_label
                .get(&(ns.clone(), k.clone(), v.as_str().unwrap_or("").into()))
                .map_or(&[], Vec::as_slice),
            None => by_ns.get(&ns).map_or(&[], Vec::as_slice),
        };
        let matched: Vec<&Summary> = candidates
            .iter()
            .map(|&i| &pods[i])
            .filter(|(_, _, l)| selector_object_matches(selector, l))
            .collect();
        let expected = matched.iter().filter(|(_, terminating, _)| !terminating).count() as u64;
        let healthy = matched.iter().filter(|(ready, terminating, _)| *ready && !terminating).count() as u64;
        let desired = budget_desired(&pdb, expected);
        let _ = st.store.update(idx::PDBS, &ns, &name, |b| {
            b["status"]["currentHealthy"] = json!(healthy);
            b["status"]["desiredHealthy"] = json!(desired);
            b["status"]["disruptionsAllowed"] = json!(healthy.saturating_sub(desired));
            b["status"]["expectedPods"] = json!(matched.len());
            b["status"]["observedGeneration"] = json!(1);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tolerations() {
        let taint = json!({"key": "costop.io/standby", "effect": "NoSchedule"});
        assert!(tolerates(&json!([{"key": "costop.io/standby", "operator": "Exists"}]), &taint));
        assert!(tolerates(&json!([{"operator": "Exists"}]), &taint));
        assert!(!tolerates(&json!([{"key": "other", "operator": "Exists"}]), &taint));
        assert!(!tolerates(&Value::Null, &taint));
    }
}

//! The emulator's admin API: load a scenario, terminate an instance, read a
//! pod's service-account token. Same bearer token as the kubeconfig.

use crate::api::status;
use crate::kinds::{idx, KINDS};
use crate::EmuState;
use axum::body::Bytes;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// A scenario: nodes, deployments with budgets, placeholder pods.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Groups of nodes.
    #[serde(default)]
    pub nodes: Vec<NodeGroup>,
    /// Deployments.
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
    /// Placeholder pods holding headroom.
    #[serde(default)]
    pub placeholders: Option<Placeholders>,
}

/// `count` nodes of one type, zone and capacity type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    /// How many.
    pub count: u32,
    /// EC2 instance type (must be in the catalog).
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// `spot`, `on-demand`, `standby-running`, `standby-stopped`, `burstable`.
    #[serde(default = "default_capacity")]
    pub capacity_type: String,
}

fn default_capacity() -> String {
    "spot".into()
}

/// One Deployment and its budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Name.
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Replicas.
    pub replicas: u32,
    /// CPU request, e.g. `250m`.
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Memory request, e.g. `256Mi`.
    #[serde(default = "default_memory")]
    pub memory: String,
    /// PodDisruptionBudget minAvailable, if any.
    #[serde(default)]
    pub min_available: Option<u32>,
}

fn default_cpu() -> String {
    "250m".into()
}

fn default_memory() -> String {
    "256Mi".into()
}

/// Placeholder pods: a Deployment of pause pods at a negative priority.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placeholders {
    /// How many.
    pub count: u32,
    /// CPU each.
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Memory each.
    #[serde(default = "default_memory")]
    pub memory: String,
}

/// Namespace of costop's own objects.
pub const COSTOP_NAMESPACE: &str = "costop-system";
/// PriorityClass of placeholder pods.
pub const PLACEHOLDER_CLASS: &str = "costop-placeholder";

/// Kubernetes labels and spec of one node.
pub fn node_object(name: &str, instance_id: &str, group: &NodeGroup) -> Result<Value, String> {
    let t = costop_facts::catalog::instance_type(&group.instance_type).ok_or_else(|| {
        format!(
            "unknown instance type `{}` (known: {})",
            group.instance_type,
            costop_facts::catalog::known_type_names()
        )
    })?;
    let (eks, taints) = match group.capacity_type.as_str() {
        "spot" => ("SPOT", json!([])),
        "on-demand" | "burstable" => ("ON_DEMAND", json!([])),
        "standby-running" | "standby-stopped" => {
            ("ON_DEMAND", json!([{"key": "costop.io/standby", "effect": "NoSchedule"}]))
        }
        other => return Err(format!("unknown capacity type `{other}`")),
    };
    let region = costop_facts::region_of(&group.zone);
    let cpu = format!("{}m", t.vcpu * 920);
    let memory = format!("{}Mi", u64::from(t.memory_gib) * 1024 * 88 / 100);
    Ok(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": t.name,
            "topology.kubernetes.io/zone": group.zone, "topology.kubernetes.io/region": region,
            "eks.amazonaws.com/capacityType": eks, "costop.io/capacity-type": group.capacity_type}},
        "spec": {"providerID": format!("aws:///{}/{}", group.zone, instance_id), "taints": taints},
        "status": {
            "capacity": {"cpu": t.vcpu.to_string(), "memory": format!("{}Gi", t.memory_gib), "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.33.0-costop-emu", "architecture": "amd64", "operatingSystem": "linux"}}
    }))
}

fn deployment_object(name: &str, replicas: u32, cpu: &str, memory: &str, class: Option<&str>) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "public.ecr.aws/costop/app:1",
        "resources": {"requests": {"cpu": cpu, "memory": memory}}}], "terminationGracePeriodSeconds": 30});
    if let Some(c) = class {
        spec["priorityClassName"] = json!(c);
        spec["terminationGracePeriodSeconds"] = json!(0);
        spec["containers"][0]["image"] = json!("registry.k8s.io/pause:3.10");
    }
    json!({"metadata": {"name": name, "labels": {"app": name}},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}})
}

/// The most nodes one scenario may add (the emulator holds them in memory).
pub const MAX_SCENARIO_NODES: u64 = 100_000;

/// Check a scenario before anything of it is created: sizes within the
/// emulator's limits, known instance and capacity types, valid names and
/// quantities.
fn check(scenario: &Scenario) -> Result<(), String> {
    let nodes: u64 = scenario.nodes.iter().map(|g| u64::from(g.count)).sum();
    if nodes > MAX_SCENARIO_NODES {
        return Err(format!("{nodes} nodes: the emulator takes at most {MAX_SCENARIO_NODES} at once"));
    }
    for group in &scenario.nodes {
        node_object("node-0", "i-00000000000000000", group)?;
    }
    let deployments = &KINDS[idx::DEPLOYMENTS];
    let mut objects: Vec<Value> = scenario
        .deployments
        .iter()
        .map(|d| deployment_object(&d.name, d.replicas, &d.cpu, &d.memory, None))
        .collect();
    if let Some(p) = &scenario.placeholders {
        objects.push(deployment_object(
            "costop-headroom",
            p.count,
            &p.cpu,
            &p.memory,
            Some(PLACEHOLDER_CLASS),
        ));
    }
    for o in &objects {
        crate::validate::object(deployments, o).map_err(|e| e.message)?;
    }
    for d in &scenario.deployments {
        let ns = d.namespace.as_deref().unwrap_or("default");
        if !crate::validate::valid_name(ns) {
            return Err(format!("namespace `{ns}` is not a lowercase RFC 1123 name"));
        }
    }
    Ok(())
}

/// Create every object of a scenario (nothing when it is refused). Returns
/// (nodes, deployments) created.
pub fn load(st: &EmuState, scenario: &Scenario) -> Result<(usize, usize), String> {
    check(scenario)?;
    let mut nodes = 0;
    // Names never repeat, even after nodes were deleted: next after the highest `node-N`.
    let mut existing = 0;
    st.store.scan(idx::NODES, |_, name, _| {
        if let Some(n) = name.strip_prefix("node-").and_then(|n| n.parse::<usize>().ok()) {
            existing = existing.max(n.saturating_add(1));
        }
    });
    for group in &scenario.nodes {
        for _ in 0..group.count {
            let n = existing.saturating_add(nodes);
            let name = format!("node-{n}");
            let object = node_object(&name, &format!("i-{n:017x}"), group)?;
            st.create(idx::NODES, "", object).map_err(|e| e.to_string())?;
            nodes += 1;
        }
    }
    for d in &scenario.deployments {
        let ns = d.namespace.as_deref().unwrap_or("default");
        if st.store.get(idx::NAMESPACES, "", ns).is_err() {
            st.create(idx::NAMESPACES, "", json!({"metadata": {"name": ns}})).map_err(|e| e.to_string())?;
        }
        st.create(idx::DEPLOYMENTS, ns, deployment_object(&d.name, d.replicas, &d.cpu, &d.memory, None))
            .map_err(|e| e.to_string())?;
        if let Some(min) = d.min_available {
            let pdb = json!({"metadata": {"name": d.name}, "spec": {"minAvailable": min, "selector": {"matchLabels": {"app": d.name}}}});
            st.create(idx::PDBS, ns, pdb).map_err(|e| e.to_string())?;
        }
    }
    if let Some(p) = &scenario.placeholders {
        if st.store.get(idx::NAMESPACES, "", COSTOP_NAMESPACE).is_err() {
            st.create(idx::NAMESPACES, "", json!({"metadata": {"name": COSTOP_NAMESPACE}}))
                .map_err(|e| e.to_string())?;
        }
        if st.store.get(idx::PRIORITY_CLASSES, "", PLACEHOLDER_CLASS).is_err() {
            let class = json!({"metadata": {"name": PLACEHOLDER_CLASS}, "value": -10, "globalDefault": false,
                               "description": "costop placeholder pods: preempted first"});
            st.create(idx::PRIORITY_CLASSES, "", class).map_err(|e| e.to_string())?;
        }
        let d = deployment_object("costop-headroom", p.count, &p.cpu, &p.memory, Some(PLACEHOLDER_CLASS));
        st.create(idx::DEPLOYMENTS, COSTOP_NAMESPACE, d).map_err(|e| e.to_string())?;
    }
    Ok((nodes, scenario.deployments.len()))
}

/// A generated scenario: `nodes` Spot m5.xlarge nodes over three zones,
/// Deployments of 50 replicas (budget: 90 % available) filling
/// `pods_per_node` pods a node, and placeholders worth a fifth of the nodes.
pub fn generated_scenario(nodes: u32, pods_per_node: u32) -> Scenario {
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let groups = zones
        .iter()
        .enumerate()
        .map(|(i, z)| NodeGroup {
            count: nodes / 3 + u32::from((i as u32) < nodes % 3),
            instance_type: "m5.xlarge".into(),
            zone: (*z).into(),
            capacity_type: "spot".into(),
        })
        .filter(|g| g.count > 0)
        .collect();
    let pods = nodes.saturating_mul(pods_per_node);
    let deployments = (0..pods.div_ceil(50))
        .map(|i| {
            let replicas = (pods - i * 50).min(50);
            DeploymentSpec {
                name: format!("svc-{i:03}"),
                namespace: None,
                replicas,
                cpu: "200m".into(),
                memory: "256Mi".into(),
                min_available: Some(replicas * 9 / 10),
            }
        })
        .collect();
    let placeholders =
        (nodes >= 5).then(|| Placeholders { count: nodes / 5, cpu: "500m".into(), memory: "512Mi".into() });
    Scenario { nodes: groups, deployments, placeholders }
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Route an admin request.
pub fn handle(st: &Arc<EmuState>, method: &Method, rest: &[&str], body: &Bytes) -> Response {
    match (method.clone(), rest) {
        (Method::POST, ["scenario"]) => {
            let scenario: Scenario = match serde_json::from_slice(body) {
                Ok(s) => s,
                Err(e) => return status(400, "BadRequest", format!("invalid scenario: {e}")),
            };
            match load(st, &scenario) {
                Ok((nodes, deployments)) => ok(json!({"nodes": nodes, "deployments": deployments})),
                Err(e) => status(422, "Invalid", format!("scenario: {e}")),
            }
        }
        (Method::POST, ["nodes", name, "terminate"]) => {
            if st.store.get(idx::NODES, "", name).is_err() {
                return status(404, "NotFound", format!("nodes \"{name}\" not found"));
            }
            st.cluster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .terminated
                .insert((*name).to_string(), Instant::now());
            ok(json!({"terminated": name}))
        }
        (Method::POST, ["nodes", name, "notice"]) => crate::imds::inject(st, name, body),
        (Method::POST, ["nodes", name, "deregister"]) => {
            // The emulated load balancer follows the standard exclusion label.
            let label = "node.kubernetes.io/exclude-from-external-load-balancers";
            match st.store.update(idx::NODES, "", name, |n| n["metadata"]["labels"][label] = json!("true")) {
                Ok(_) => ok(json!({"deregistered": name})),
                Err(e) => status(404, "NotFound", e.to_string()),
            }
        }
        (Method::POST, ["nodes", name, "start"]) => match st.store.get(idx::NODES, "", name) {
            // Emulated standbys are joined already; starting one only re-types it when asked.
            Ok(_) => {
                let retype = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|b| b["instance_type"].as_str().map(str::to_string));
                if let Some(t) = retype.filter(|t| costop_facts::catalog::instance_type(t).is_some()) {
                    let _ = st.store.update(idx::NODES, "", name, |n| {
                        n["metadata"]["labels"]["node.kubernetes.io/instance-type"] = json!(t);
                    });
                }
                ok(json!({"started": name}))
            }
            Err(e) => status(404, "NotFound", e.to_string()),
        },
        (Method::GET, ["tokens", ns, pod]) => match st.pod_token(ns, pod) {
            Some(token) => ok(json!({"token": token})),
            None => status(404, "NotFound", format!("no token for pod {ns}/{pod}")),
        },
        _ => status(404, "NotFound", format!("no admin endpoint /admin/{}", rest.join("/"))),
    }
}

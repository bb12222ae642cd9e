//! The emulator's admin API: load a scenario, terminate an instance, inject
//! notices, read a pod's service-account token, and drive the emulated
//! cloud (`cloud`): pools, launches, standby starts, volume moves, the
//! function bridge, requests through the load balancer, the bill. Same
//! bearer token as the kubeconfig.

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
        "on-demand" => ("ON_DEMAND", json!([])),
        "burstable" if costop_facts::catalog::burstable(t.name).is_none() => {
            return Err(format!(
                "capacity type `burstable` needs a T-family type (t2, t3, t3a, t4g), not `{}`",
                t.name
            ))
        }
        "burstable" => ("ON_DEMAND", json!([])),
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

/// The cloud's part of a scenario: Spot pools, the function bridge's
/// concurrency, and stateful workloads with an EBS volume. Given in the
/// same JSON body as the [`Scenario`] (`POST /admin/scenario`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudScenario {
    /// Spot pools (instance type × zone, price).
    #[serde(default)]
    pub pools: Vec<crate::cloud::PoolSpec>,
    /// The account's function concurrency limit (default 1,000).
    #[serde(default)]
    pub bridge_concurrency: Option<u32>,
    /// One-replica workloads, each with an EBS volume.
    #[serde(default)]
    pub stateful: Vec<StatefulSpec>,
}

/// A one-replica workload whose pod mounts an EBS volume in one zone (a
/// claim bound to the volume's PersistentVolume; the pod kept in that zone).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatefulSpec {
    /// Name.
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// CPU request.
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Memory request.
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Size of the volume, GB.
    pub volume_gb: u32,
    /// Zone of the volume.
    pub zone: String,
}

/// The keys of a scenario body that belong to [`CloudScenario`].
const CLOUD_KEYS: &[&str] = &["pools", "bridge_concurrency", "stateful"];

/// Read a scenario body: the cluster's part and the cloud's part.
pub fn parse_scenario(body: &[u8]) -> Result<(Scenario, CloudScenario), String> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Some(all) = v.as_object_mut() else { return Err("a scenario is a JSON object".into()) };
    let mut cloud = serde_json::Map::new();
    for k in CLOUD_KEYS {
        if let Some(x) = all.remove(*k) {
            cloud.insert((*k).to_string(), x);
        }
    }
    let scenario = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let cloud = serde_json::from_value(Value::Object(cloud)).map_err(|e| e.to_string())?;
    Ok((scenario, cloud))
}

fn check_cloud(c: &CloudScenario) -> Result<(), String> {
    for p in &c.pools {
        crate::cloud::check_pool(p)?;
    }
    for s in &c.stateful {
        if !(1..=16_384).contains(&s.volume_gb) {
            return Err(format!("{}: volume_gb must be 1..16384 (gp3), got {}", s.name, s.volume_gb));
        }
        if !crate::validate::valid_name(&s.zone) {
            return Err(format!("{}: zone `{}` is not a zone name", s.name, s.zone));
        }
        let ns = s.namespace.as_deref().unwrap_or("default");
        if !crate::validate::valid_name(ns) {
            return Err(format!("namespace `{ns}` is not a lowercase RFC 1123 name"));
        }
        let d = deployment_object(&s.name, 1, &s.cpu, &s.memory, None);
        crate::validate::object(&KINDS[idx::DEPLOYMENTS], &d).map_err(|e| e.message)?;
    }
    Ok(())
}

/// Create the cloud's part of a scenario (nothing when it is refused):
/// pools, the bridge's limit, and each stateful workload with its volume.
/// Returns the volumes created.
pub fn load_cloud(st: &EmuState, c: &CloudScenario) -> Result<Vec<String>, String> {
    check_cloud(c)?;
    crate::cloud::set_pools(st, &c.pools)?;
    if let Some(limit) = c.bridge_concurrency {
        crate::cloud::set_bridge_limit(st, limit);
    }
    let mut volumes = Vec::new();
    for s in &c.stateful {
        let ns = s.namespace.as_deref().unwrap_or("default");
        if st.store.get(idx::NAMESPACES, "", ns).is_err() {
            st.create(idx::NAMESPACES, "", json!({"metadata": {"name": ns}})).map_err(|e| e.to_string())?;
        }
        let (claim, id) = stateful_volume(st, ns, &s.name, &s.zone, s.volume_gb)?;
        let mut object = deployment_object(&s.name, 1, &s.cpu, &s.memory, None);
        let spec = &mut object["spec"]["template"]["spec"];
        spec["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
        spec["nodeSelector"] = json!({"topology.kubernetes.io/zone": s.zone});
        spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        st.create(idx::DEPLOYMENTS, ns, object).map_err(|e| e.to_string())?;
        volumes.push(id);
    }
    Ok(volumes)
}

/// An EBS volume in `zone` for workload `name`: the volume in the cloud,
/// its PersistentVolume (in-tree form, zone affinity) and a claim bound to
/// it. Returns the claim's name.
fn stateful_volume(
    st: &EmuState,
    ns: &str,
    name: &str,
    zone: &str,
    gb: u32,
) -> Result<(String, String), String> {
    let id = crate::cloud::create_volume(st, zone, gb);
    let (pv, claim) = (format!("pv-{id}"), format!("data-{name}"));
    let affinity = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}]}]}});
    st.create(
        idx::PVS,
        "",
        json!({"metadata": {"name": pv, "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"capacity": {"storage": format!("{gb}Gi")}, "accessModes": ["ReadWriteOnce"],
                 "awsElasticBlockStore": {"volumeID": format!("aws://{zone}/{id}"), "fsType": "ext4"},
                 "claimRef": {"namespace": ns, "name": claim}, "nodeAffinity": affinity,
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "gp3"},
        "status": {"phase": "Bound"}}),
    )
    .map_err(|e| e.to_string())?;
    st.create(
        idx::PVCS,
        ns,
        json!({"metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": format!("{gb}Gi")}},
                 "volumeName": pv, "storageClassName": "gp3"},
        "status": {"phase": "Bound"}}),
    )
    .map_err(|e| e.to_string())?;
    Ok((claim, id))
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

/// `POST /admin/nodes/N/start`: re-type a stopped standby first when given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    instance_type: Option<String>,
}

/// `POST /admin/launch`: Spot instances into pools, once per key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchRequest {
    key: String,
    pools: Vec<LaunchPool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchPool {
    instance_type: String,
    zone: String,
    count: u32,
}

/// `POST /admin/bridge`: these workloads (`ns/name`) to their function, or back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BridgeRequest {
    workloads: Vec<String>,
    on: bool,
}

/// Read a JSON body (an empty one as `{}`), or the 400 that names what is wrong.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, Box<Response>> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| Box::new(status(400, "BadRequest", format!("invalid {what}: {e}"))))
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Route an admin request.
pub fn handle(st: &Arc<EmuState>, method: &Method, rest: &[&str], body: &Bytes) -> Response {
    match (method.clone(), rest) {
        (Method::POST, ["scenario"]) => {
            let (scenario, cloud) = match parse_scenario(body) {
                Ok(s) => s,
                Err(e) => return status(400, "BadRequest", format!("invalid scenario: {e}")),
            };
            if let Err(e) = check(&scenario).and_then(|()| check_cloud(&cloud)) {
                return status(422, "Invalid", format!("scenario: {e}"));
            }
            // The cloud first: its pools decide how the nodes' instances start.
            match load_cloud(st, &cloud).and_then(|v| load(st, &scenario).map(|(n, d)| (n, d, v))) {
                Ok((nodes, deployments, volumes)) => {
                    ok(json!({"nodes": nodes, "deployments": deployments, "volumes": volumes}))
                }
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
        (Method::POST, ["nodes", name, "credits"]) => {
            match parse::<crate::burstable::CreditsRequest>(body, "credits request") {
                Ok(req) => match crate::cloud::set_credits(st, name, &req) {
                    Ok(credits) => ok(json!({"node": name, "credits": credits})),
                    Err((404, e)) => status(404, "NotFound", e),
                    Err((409, e)) => status(409, "Conflict", e),
                    Err((_, e)) => status(400, "BadRequest", e),
                },
                Err(e) => *e,
            }
        }
        (Method::POST, ["nodes", name, "deregister"]) => {
            // The emulated load balancer follows the standard exclusion label.
            let label = "node.kubernetes.io/exclude-from-external-load-balancers";
            match st.store.update(idx::NODES, "", name, |n| n["metadata"]["labels"][label] = json!("true")) {
                Ok(_) => ok(json!({"deregistered": name})),
                Err(e) => status(404, "NotFound", e.to_string()),
            }
        }
        (Method::POST, ["nodes", name, "start"]) => {
            let retype = match parse::<StartRequest>(body, "start request") {
                Ok(r) => r.instance_type,
                Err(e) => return *e,
            };
            match crate::cloud::start(st, name, retype.as_deref()) {
                Ok(done) => ok(json!({"started": name, "instance": done})),
                Err(e) if e.starts_with("no instance") => status(404, "NotFound", e),
                Err(e) => status(409, "Conflict", e),
            }
        }
        (Method::GET, ["pools"]) => ok(crate::cloud::pools_json(st)),
        (Method::POST, ["pools"]) => match parse::<Vec<crate::cloud::PoolSpec>>(body, "pools") {
            Ok(pools) => match crate::cloud::set_pools(st, &pools) {
                Ok(()) => ok(crate::cloud::pools_json(st)),
                Err(e) => status(422, "Invalid", format!("pools: {e}")),
            },
            Err(e) => *e,
        },
        (Method::POST, ["launch"]) => {
            let req = match parse::<LaunchRequest>(body, "launch request") {
                Ok(r) => r,
                Err(e) => return *e,
            };
            let pools: Vec<(crate::cloud::PoolKey, u32)> = req
                .pools
                .into_iter()
                .map(|p| (crate::cloud::PoolKey { instance_type: p.instance_type, zone: p.zone }, p.count))
                .collect();
            match crate::cloud::launch(st, &req.key, &pools) {
                Ok(ids) => ok(json!({"key": req.key, "instances": ids})),
                Err(e) => status(409, "Conflict", e),
            }
        }
        (Method::POST, ["volumes", id, "move"]) => {
            match parse::<crate::cloud::MoveRequest>(body, "volume move") {
                Ok(req) => match crate::cloud::move_volume(st, id, &req) {
                    Ok(done) => ok(json!({"volume": id, "done": done})),
                    Err((404, e)) => status(404, "NotFound", e),
                    Err((409, e)) => status(409, "Conflict", e),
                    Err((_, e)) => status(400, "BadRequest", e),
                },
                Err(e) => *e,
            }
        }
        (Method::POST, ["bridge"]) => match parse::<BridgeRequest>(body, "bridge request") {
            Ok(req) => ok(json!({"done": crate::cloud::bridge(st, &req.workloads, req.on)})),
            Err(e) => *e,
        },
        (Method::GET | Method::POST, ["requests", ns, name]) => {
            match crate::cloud::serve(st, &format!("{ns}/{name}")) {
                crate::cloud::Served::Pod(pod) => ok(json!({"served_by": "pod", "pod": pod})),
                crate::cloud::Served::Function => ok(json!({"served_by": "function"})),
                crate::cloud::Served::Failed(why) => status(502, "BadGateway", why),
            }
        }
        (Method::GET, ["cloud"]) => ok(crate::cloud::summary(st)),
        (Method::GET, ["tokens", ns, pod]) => match st.pod_token(ns, pod) {
            Some(token) => ok(json!({"token": token})),
            None => status(404, "NotFound", format!("no token for pod {ns}/{pod}")),
        },
        _ => status(404, "NotFound", format!("no admin endpoint /admin/{}", rest.join("/"))),
    }
}

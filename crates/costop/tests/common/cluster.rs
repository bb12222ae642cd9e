//! One Kubernetes world for the end-to-end tests, on either backend:
//!
//! - `Backend::Emu`: `costop emu` (its API, IMDS and admin endpoints);
//! - `Backend::Real`: a real kube-apiserver, controller-manager, scheduler
//!   and etcd started by `scripts/real-apiserver` (built once, cached). The
//!   harness plays what a real cluster has besides those: it creates the
//!   nodes (capacity, allocatable, Ready, providerID), runs a fake kubelet
//!   (pods bound to its nodes turn Running and Ready, pods being deleted are
//!   finished off) and serves instance metadata for each node.
//!
//! The real backend never skips: if the control plane cannot be built or
//! started, the test fails saying why.
#![allow(dead_code)]

use crate::common::{bin, Proc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which API server the world runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `costop emu`.
    Emu,
    /// A real kube-apiserver (scripts/real-apiserver).
    Real,
}

/// What the world holds at start.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Spot nodes `node-0..`, m5.xlarge (4 CPU, 16 GiB), us-east-1a.
    pub nodes: u32,
    /// Deployment `default/web`: replicas, and its budget's minAvailable.
    pub web: Option<(u32, u32)>,
    /// StatefulSet `default/db` (real backend only): replicas and minAvailable.
    pub db: Option<(u32, u32)>,
    /// Placeholder pods (`costop-system/costop-headroom`).
    pub placeholders: u32,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario { nodes: 3, web: Some((6, 4)), db: None, placeholders: 2 }
    }
}

/// The instance id of `node-N`.
pub fn instance_id(node: &str) -> String {
    let n: u64 = node.trim_start_matches("node-").parse().unwrap_or(0);
    format!("i-{:017x}", 0xc05700 + n)
}

/// Instance metadata served by the harness (real backend): per node its
/// instance id and, once injected, its `spot/instance-action` body.
#[derive(Default)]
struct ImdsState {
    instance: HashMap<String, String>,
    action: HashMap<String, String>,
}

/// A minimal IMDSv2 on loopback: `PUT /imds/NODE/latest/api/token`, `GET
/// /imds/NODE/latest/meta-data/{instance-id,spot/instance-action,...}`.
fn serve_imds(state: Arc<Mutex<ImdsState>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = state.clone();
            std::thread::spawn(move || imds_connection(stream, &state));
        }
    });
    url
}

fn imds_connection(mut stream: std::net::TcpStream, state: &Mutex<ImdsState>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let rest = path.strip_prefix("/imds/").unwrap_or("");
        let (node, rest) = rest.split_once('/').unwrap_or(("", ""));
        let (code, text) = {
            let st = state.lock().unwrap();
            match (method, rest) {
                ("PUT", "latest/api/token") => (200, "imds-token".to_string()),
                ("GET", "latest/meta-data/instance-id") => match st.instance.get(node) {
                    Some(id) => (200, id.clone()),
                    None => (404, String::new()),
                },
                ("GET", "latest/meta-data/spot/instance-action") => match st.action.get(node) {
                    Some(a) => (200, a.clone()),
                    None => (404, String::new()),
                },
                _ => (404, String::new()),
            }
        };
        let reason = if code == 200 { "OK" } else { "Not Found" };
        let response = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{text}",
            text.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A running control plane from scripts/real-apiserver, stopped when dropped.
pub struct RealControlPlane {
    pub dir: PathBuf,
    pub url: String,
    pub token: String,
    pub ca: PathBuf,
    pub kubeconfig: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/real-apiserver")
}

impl RealControlPlane {
    /// Build (once, cached) and start; panics naming the reason when it cannot.
    pub fn start(dir: &Path) -> RealControlPlane {
        Self::start_with(dir, "")
    }

    /// The same, with extra kube-apiserver flags (space-separated).
    pub fn start_with(dir: &Path, apiserver_flags: &str) -> RealControlPlane {
        let dir = dir.join("control-plane");
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&dir)
            .env("KUBE_APISERVER_EXTRA_ARGS", apiserver_flags)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/real-apiserver: {e}"));
        assert!(
            out.status.success(),
            "the real control plane could not be built or started (scripts/real-apiserver start): {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let env = std::fs::read_to_string(dir.join("env")).expect("scripts/real-apiserver wrote no env file");
        let get = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} missing from {}", dir.join("env").display()))
                .trim_matches('"')
                .to_string()
        };
        eprintln!("real control plane up in {:?} at {}", started.elapsed(), get("KUBE_URL"));
        RealControlPlane {
            url: get("KUBE_URL"),
            token: get("KUBE_TOKEN"),
            ca: PathBuf::from(get("KUBE_CA")),
            kubeconfig: PathBuf::from(get("KUBECONFIG")),
            dir,
        }
    }

    /// Stop the apiserver, keep it down `down`, start it again; returns when
    /// it answers again (etcd, controller-manager and scheduler stay up).
    pub fn restart_apiserver(&self, down: Duration) -> Instant {
        let out = Command::new("bash")
            .arg(script())
            .arg("restart-apiserver")
            .arg(&self.dir)
            .arg(format!("{:.1}", down.as_secs_f64()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "apiserver restart failed: {}", String::from_utf8_lossy(&out.stderr));
        Instant::now()
    }
}

impl Drop for RealControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // etcd's data (~60 MB of preallocated log per test); the logs stay.
        let _ = std::fs::remove_dir_all(self.dir.join("etcd"));
    }
}

/// One world: an API server with nodes and workloads, instance metadata per node.
pub struct Cluster {
    pub backend: Backend,
    pub dir: PathBuf,
    /// The API server's base URL.
    pub api: String,
    /// Admin kubeconfig for costop server.
    pub kubeconfig: PathBuf,
    /// `costop emu`'s URL (its cloud endpoints), emulator only.
    pub emu_url: Option<String>,
    imds_url: String,
    imds: Arc<Mutex<ImdsState>>,
    http: reqwest::Client,
    pub real: Option<RealControlPlane>,
    kubelet: Option<tokio::task::JoinHandle<()>>,
    _emu: Option<Proc>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(k) = self.kubelet.take() {
            k.abort();
        }
    }
}

/// Whether a pod is Ready.
pub fn pod_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Whether a node carries costop's interruption taint and is cordoned.
pub fn cordoned(node: &Value) -> bool {
    node["spec"]["unschedulable"] == true
        && node["spec"]["taints"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["key"] == "costop.io/interruption"))
}

impl Cluster {
    /// Start a world on `backend` in `dir`.
    pub async fn start(backend: Backend, dir: &Path, scenario: &Scenario, time_scale: f64) -> Cluster {
        std::fs::create_dir_all(dir).unwrap();
        match backend {
            Backend::Emu => Self::start_emu(dir, scenario, time_scale).await,
            Backend::Real => Self::start_real(dir, scenario).await,
        }
    }

    async fn start_emu(dir: &Path, scenario: &Scenario, time_scale: f64) -> Cluster {
        assert!(scenario.db.is_none(), "the emulator has no StatefulSets");
        let mut sc = json!({
            "nodes": [{"count": scenario.nodes, "instance_type": "m5.xlarge", "zone": "us-east-1a", "capacity_type": "spot"}],
            "deployments": [],
        });
        if let Some((replicas, min)) = scenario.web {
            sc["deployments"] = json!([{"name": "web", "replicas": replicas, "cpu": "250m", "memory": "256Mi", "min_available": min}]);
        }
        if scenario.placeholders > 0 {
            sc["placeholders"] = json!({"count": scenario.placeholders, "cpu": "500m", "memory": "512Mi"});
        }
        std::fs::write(dir.join("scenario.json"), sc.to_string()).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        let mut emu = Command::new(bin())
            .args(["emu", "--scenario"])
            .arg(dir.join("scenario.json"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--time-scale", &time_scale.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(emu.stdout.take().unwrap());
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        let emu_url = line.split_whitespace().last().unwrap().to_string();
        std::thread::spawn(move || for _ in lines.lines() {});
        Cluster {
            backend: Backend::Emu,
            dir: dir.to_path_buf(),
            api: emu_url.clone(),
            kubeconfig,
            emu_url: Some(emu_url.clone()),
            imds_url: emu_url,
            imds: Default::default(),
            http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap(),
            real: None,
            kubelet: None,
            _emu: Some(Proc(emu)),
        }
    }

    async fn start_real(dir: &Path, scenario: &Scenario) -> Cluster {
        let real = tokio::task::block_in_place(|| RealControlPlane::start(dir));
        let ca = std::fs::read(&real.ca).unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", real.token)).unwrap(),
        );
        let http = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let imds: Arc<Mutex<ImdsState>> = Default::default();
        let imds_url = serve_imds(imds.clone());
        let mut c = Cluster {
            backend: Backend::Real,
            dir: dir.to_path_buf(),
            api: real.url.clone(),
            kubeconfig: real.kubeconfig.clone(),
            emu_url: None,
            imds_url,
            imds,
            http,
            real: Some(real),
            kubelet: None,
            _emu: None,
        };
        let nodes: Vec<String> = (0..scenario.nodes).map(|i| format!("node-{i}")).collect();
        for n in &nodes {
            c.create_node(n).await;
        }
        c.kubelet = Some(tokio::spawn(fake_kubelet(c.http.clone(), c.api.clone(), nodes)));
        c.ensure_namespace("costop-system").await;
        if let Some((replicas, min)) = scenario.web {
            c.create("/apis/apps/v1/namespaces/default/deployments", workload("Deployment", "web", replicas))
                .await;
            c.create_budget("web", min).await;
        }
        if let Some((replicas, min)) = scenario.db {
            c.create(
                "/apis/apps/v1/namespaces/default/statefulsets",
                workload("StatefulSet", "db", replicas),
            )
            .await;
            c.create_budget("db", min).await;
        }
        if scenario.placeholders > 0 {
            c.create(
                "/apis/scheduling.k8s.io/v1/priorityclasses",
                json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                       "metadata": {"name": "costop-placeholder"}, "value": -10, "globalDefault": false}),
            )
            .await;
            let mut d = workload("Deployment", "costop-headroom", scenario.placeholders);
            d["metadata"]["namespace"] = json!("costop-system");
            d["spec"]["template"]["spec"]["priorityClassName"] = json!("costop-placeholder");
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] =
                json!({"cpu": "500m", "memory": "512Mi"});
            c.create("/apis/apps/v1/namespaces/costop-system/deployments", d).await;
        }
        // The agents: a DaemonSet of the agent's service account, as deployed.
        c.create(
            "/api/v1/namespaces/costop-system/serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "costop-agent"}}),
        )
        .await;
        let mut ds = workload("DaemonSet", "costop-agent", 0);
        ds["spec"].as_object_mut().unwrap().remove("replicas");
        ds["spec"]["template"]["spec"]["serviceAccountName"] = json!("costop-agent");
        ds["spec"]["template"]["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        ds["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] =
            json!({"cpu": "10m", "memory": "32Mi"});
        c.create("/apis/apps/v1/namespaces/costop-system/daemonsets", ds).await;
        c
    }

    /// The HTTP client (authenticated as admin on the real backend).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The IMDS base URL for `node` (what the agent's `--imds-url` takes).
    pub fn imds_url(&self, node: &str) -> String {
        format!("{}/imds/{node}", self.imds_url)
    }

    /// GET a path of the API server (JSON; `Null` on failure).
    pub async fn get(&self, path: &str) -> Value {
        match self.http.get(format!("{}{path}", self.api)).send().await {
            Ok(r) => serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// POST JSON to a path of the API server: status code and body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.api)).json(&body).send().await.unwrap();
        let code = r.status().as_u16();
        (code, serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null))
    }

    async fn create(&self, path: &str, body: Value) -> Value {
        // Pods wait for their service account's token (made by the
        // controller-manager): retry a refused create for a while.
        let start = Instant::now();
        loop {
            let (code, reply) = self.post(path, body.clone()).await;
            if code == 201 || code == 200 || code == 409 {
                return reply;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "create {path}: {code} {reply}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn ensure_namespace(&self, ns: &str) {
        self.create(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }

    /// A workload of `kind` (Deployment, StatefulSet, ReplicaSet) `name` in
    /// `default` with `replicas` pods, and a budget of `min` available.
    pub async fn create_workload(&self, kind: &str, name: &str, replicas: u32, min: u32) {
        let plural = format!("{}s", kind.to_ascii_lowercase());
        self.create(&format!("/apis/apps/v1/namespaces/default/{plural}"), workload(kind, name, replicas))
            .await;
        self.create_budget(name, min).await;
    }

    /// A PodDisruptionBudget `app` in `default` selecting `app=<app>`.
    pub async fn create_budget(&self, app: &str, min: u32) {
        self.create(
            "/apis/policy/v1beta1/namespaces/default/poddisruptionbudgets",
            json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": app},
                   "spec": {"minAvailable": min, "selector": {"matchLabels": {"app": app}}}}),
        )
        .await;
    }

    /// A node as a kubelet would register it, and its status as it reports it.
    async fn create_node(&self, name: &str) {
        let id = instance_id(name);
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m5.xlarge", "topology.kubernetes.io/zone": "us-east-1a",
                "karpenter.sh/capacity-type": "spot"}},
            "spec": {"providerID": format!("aws:///us-east-1a/{id}")}});
        self.create("/api/v1/nodes", node).await;
        self.imds.lock().unwrap().instance.insert(name.to_string(), id);
        let now = now_rfc3339(0);
        let status = json!({"status": {
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "3920m", "memory": "15Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake kubelet",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                         "containerRuntimeVersion": "fake://1", "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                         "operatingSystem": "linux", "architecture": "amd64"}}});
        let r = self.merge_patch(&format!("/api/v1/nodes/{name}/status"), &status).await;
        assert_eq!(r.0, 200, "node status: {}", r.1);
        // The not-ready taint the API server puts on a new node is lifted
        // by the node lifecycle controller once Ready; that controller is
        // off here (no heartbeats), so the harness lifts it.
        let r = self.merge_patch(&format!("/api/v1/nodes/{name}"), &json!({"spec": {"taints": null}})).await;
        assert_eq!(r.0, 200, "node taints: {}", r.1);
    }

    /// PATCH with a JSON merge patch: status code and body.
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> (u16, Value) {
        let r = self
            .http
            .patch(format!("{}{path}", self.api))
            .header("Content-Type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null))
    }

    /// Ready pods in `ns` not being deleted.
    pub async fn ready_pods(&self, ns: &str) -> usize {
        let pods = self.get(&format!("/api/v1/namespaces/{ns}/pods")).await;
        pods["items"].as_array().map_or(0, |a| a.iter().filter(|p| pod_ready(p)).count())
    }

    /// Pods bound to `node`.
    pub async fn pods_on(&self, node: &str) -> Vec<Value> {
        let pods = self.get(&format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")).await;
        pods["items"].as_array().cloned().unwrap_or_default()
    }

    /// The node object.
    pub async fn node(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/nodes/{name}")).await
    }

    /// Events in a namespace.
    pub async fn events(&self, ns: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/namespaces/{ns}/events")).await["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A two-minute interruption notice in `node`'s instance metadata.
    pub async fn inject(&self, node: &str) {
        self.inject_in(node, 120).await
    }

    /// An interruption notice `secs` ahead in `node`'s instance metadata.
    pub async fn inject_in(&self, node: &str, secs: i64) {
        match self.backend {
            Backend::Emu => {
                let emu = self.emu_url.as_ref().unwrap();
                let r = self
                    .http
                    .post(format!("{emu}/admin/nodes/{node}/notice"))
                    .json(&json!({"interruption": {"action": "terminate", "in_seconds": secs}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
            Backend::Real => {
                let body = json!({"action": "terminate", "time": now_rfc3339(secs)}).to_string();
                self.imds.lock().unwrap().action.insert(node.to_string(), body);
            }
        }
    }

    /// Remove `node`'s notice (real backend), so the next one is new.
    pub fn clear_notice(&self, node: &str) {
        self.imds.lock().unwrap().action.remove(node);
    }

    /// The agent pod on `node` and a token bound to it (its projected token).
    pub async fn agent_token(&self, node: &str) -> (String, PathBuf) {
        self.agent_token_for(node, None).await
    }

    /// As [`Cluster::agent_token`], the token bound to `audience` (None: the
    /// API server's own); the emulator does not check audiences.
    pub async fn agent_token_for(&self, node: &str, audience: Option<&str>) -> (String, PathBuf) {
        let token = match self.backend {
            Backend::Emu => {
                let name = format!("costop-agent-{node}");
                let pod = json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                        "name": "costop-agent", "uid": "costop-agent-ds", "controller": true}]},
                    "spec": {"nodeName": node, "serviceAccountName": "costop-agent", "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "agent", "image": "costop:dev", "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}]}});
                let (code, body) = self.post("/api/v1/namespaces/costop-system/pods", pod).await;
                assert!(code == 201 || code == 409, "{body}");
                self.get(&format!("/admin/tokens/costop-system/{name}")).await["token"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
            Backend::Real => {
                let pod = self.wait_agent_pod(node).await;
                self.bound_token("costop-system", "costop-agent", &pod, audience).await
            }
        };
        let file = self.dir.join(format!("token-{node}"));
        std::fs::write(&file, &token).unwrap();
        (token, file)
    }

    /// The DaemonSet's agent pod on `node`, once it exists.
    async fn wait_agent_pod(&self, node: &str) -> Value {
        let start = Instant::now();
        loop {
            let pods = self.pods_on(node).await;
            if let Some(p) = pods.iter().find(|p| {
                p["metadata"]["namespace"] == "costop-system"
                    && p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("costop-agent-"))
            }) {
                return p.clone();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no agent pod on {node}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A token of `account` bound to `pod` (TokenRequest), as the kubelet
    /// projects into the pod.
    async fn bound_token(&self, ns: &str, account: &str, pod: &Value, audience: Option<&str>) -> String {
        let mut spec = json!({"expirationSeconds": 3600, "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                              "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}});
        if let Some(audience) = audience {
            spec["audiences"] = json!([audience]);
        }
        let (code, reply) = self
            .post(
                &format!("/api/v1/namespaces/{ns}/serviceaccounts/{account}/token"),
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
            )
            .await;
        assert_eq!(code, 201, "TokenRequest: {reply}");
        reply["status"]["token"].as_str().unwrap().to_string()
    }

    /// A pod with no controller (`app=<name>`) bound to `node` in `default`.
    pub async fn create_bare_pod(&self, name: &str, node: &str) -> Value {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}});
        self.create("/api/v1/namespaces/default/pods", pod).await
    }

    /// A workload pod of `account` on `node` and its bound token (what a
    /// compromised workload would hold).
    pub async fn workload_token(&self, ns: &str, account: &str, name: &str, node: &str) -> PathBuf {
        self.ensure_namespace(ns).await;
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "serviceAccountName": account, "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "c", "image": "costop:dev", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
        if self.backend == Backend::Real && account != "default" {
            self.create(
                &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}),
            )
            .await;
        }
        let created = self.create(&format!("/api/v1/namespaces/{ns}/pods"), pod).await;
        let token = match self.backend {
            Backend::Emu => {
                self.get(&format!("/admin/tokens/{ns}/{name}")).await["token"].as_str().unwrap().to_string()
            }
            Backend::Real => self.bound_token(ns, account, &created, None).await,
        };
        let file = self.dir.join(format!("token-{name}"));
        std::fs::write(&file, token).unwrap();
        file
    }
}

/// `now + secs` as RFC 3339 UTC, whole seconds.
pub fn now_rfc3339(secs: i64) -> String {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    k8s_openapi::jiff::Timestamp::from_second(now + secs).unwrap().to_string()
}

/// A workload of `kind` named `name`: pause containers of 250m / 256Mi.
fn workload(kind: &str, name: &str, replicas: u32) -> Value {
    let mut w = json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]}}}});
    if kind == "StatefulSet" {
        w["spec"]["serviceName"] = json!(name);
        w["spec"]["podManagementPolicy"] = json!("Parallel");
    }
    w
}

/// The kubelet's part, for pods bound to `nodes`: a new pod turns Running
/// and Ready; a pod being deleted (eviction, graceful delete) is finished
/// off as soon as the kubelet would have stopped its containers.
async fn fake_kubelet(http: reqwest::Client, api: String, nodes: Vec<String>) {
    let mut started: HashMap<String, Instant> = HashMap::new();
    loop {
        let list = match http.get(format!("{api}/api/v1/pods")).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        for p in list["items"].as_array().into_iter().flatten() {
            let Some(node) = p["spec"]["nodeName"].as_str() else { continue };
            if !nodes.iter().any(|n| n == node) {
                continue;
            }
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            let uid = p["metadata"]["uid"].as_str().unwrap_or("");
            if !p["metadata"]["deletionTimestamp"].is_null() {
                let _ = http
                    .delete(format!("{api}/api/v1/namespaces/{ns}/pods/{name}"))
                    .json(&json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                  "preconditions": {"uid": uid}}))
                    .send()
                    .await;
                continue;
            }
            if p["status"]["phase"] == "Running" {
                continue;
            }
            // Containers "start" 200 ms after the pod is first seen bound.
            let seen = *started.entry(uid.to_string()).or_insert_with(Instant::now);
            if seen.elapsed() < Duration::from_millis(200) {
                continue;
            }
            let now = now_rfc3339(0);
            let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
            let containers: Vec<Value> = p["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "restartCount": 0,
                               "started": true, "state": {"running": {"startedAt": now}}}))
                .collect();
            let status = json!({"status": {"phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                "startTime": now, "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
                "containerStatuses": containers}});
            let _ = http
                .patch(format!("{api}/api/v1/namespaces/{ns}/pods/{name}/status"))
                .header("Content-Type", "application/merge-patch+json")
                .body(status.to_string())
                .send()
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

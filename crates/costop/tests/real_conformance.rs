//! Conformance: one script of Kubernetes API requests sent to `costop emu`
//! and to a real kube-apiserver v1.20.2 (scripts/real-apiserver); for each
//! request the status code and the fields costop and kubectl read are
//! compared. The emulator must answer as the real server does.
//!
//! The script makes its own objects (namespace `conf`, nodes `conf-*`), so
//! what each world holds at start does not matter. Budgets and evictions use
//! the policy version each server serves (v1 on the emulator, v1beta1 on
//! 1.20), as costop does.

use serde_json::{json, Value};
use std::time::Duration;

#[path = "common/cluster.rs"]
mod cluster;
mod common;
use cluster::{Backend, Cluster, Scenario};

/// What one request got: the status code and the compared fields.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    code: u16,
    fields: Vec<(String, String)>,
}

struct Runner<'a> {
    c: &'a Cluster,
    policy: String,
    answers: Vec<(String, Answer)>,
    /// The last body, for requests that build on it.
    last: Value,
}

/// The fields compared besides the code: for a Status its reason and
/// whether it names the object (details) and says what is wrong (causes,
/// for 422); for a list, how many items and whether it continues.
fn fields_of(code: u16, body: &Value) -> Vec<(String, String)> {
    let mut f = Vec::new();
    if body["kind"] == "Status" && code >= 400 {
        f.push(("reason".into(), body["reason"].as_str().unwrap_or("").into()));
        if code == 404 || code == 409 || code == 422 {
            f.push(("details.name".into(), (!body["details"]["name"].is_null()).to_string()));
        }
        if code == 422 {
            let causes = body["details"]["causes"].as_array().is_some_and(|c| !c.is_empty());
            f.push(("details.causes".into(), causes.to_string()));
        }
    }
    // A watch event: the kind of object it carries (a Table when asked for one).
    if let Some(event) = body["type"].as_str() {
        f.push(("event".into(), format!("{event} {}", body["object"]["kind"].as_str().unwrap_or(""))));
    }
    if let Some(items) = body["items"].as_array() {
        f.push(("items".into(), items.len().to_string()));
        let more = body["metadata"]["continue"].as_str().is_some_and(|c| !c.is_empty());
        f.push(("continue".into(), more.to_string()));
    }
    f
}

impl Runner<'_> {
    async fn send(
        &mut self,
        label: &str,
        method: &str,
        path: &str,
        ctype: &str,
        body: Option<String>,
    ) -> Value {
        self.send_accepting(label, method, path, ctype, body, "application/json").await
    }

    async fn send_accepting(
        &mut self,
        label: &str,
        method: &str,
        path: &str,
        ctype: &str,
        body: Option<String>,
        accept: &str,
    ) -> Value {
        let path = path.replace("{policy}", &self.policy);
        let url = format!("{}{path}", self.c.api);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.c.http().request(m, url).timeout(Duration::from_secs(10)).header("Accept", accept);
        if let Some(b) = body {
            req = req.header("Content-Type", ctype).body(b.replace("{policy}", &self.policy));
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{:?} {label}: {e}", self.c.backend));
        let code = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        // A watch answers with a stream of events: the first is compared.
        let first = text.lines().next().unwrap_or("");
        let body: Value =
            serde_json::from_str(&text).or_else(|_| serde_json::from_str(first)).unwrap_or(Value::Null);
        self.answers.push((label.to_string(), Answer { code, fields: fields_of(code, &body) }));
        self.last = body.clone();
        body
    }

    async fn json(&mut self, label: &str, method: &str, path: &str, body: Value) -> Value {
        self.send(label, method, path, "application/json", Some(body.to_string())).await
    }

    async fn get(&mut self, label: &str, path: &str) -> Value {
        self.send(label, "GET", path, "", None).await
    }

    async fn patch(&mut self, label: &str, path: &str, kind: &str, body: Value) -> Value {
        let ctype = match kind {
            "merge" => "application/merge-patch+json",
            "strategic" => "application/strategic-merge-patch+json",
            _ => "application/json-patch+json",
        };
        self.send(label, "PATCH", path, ctype, Some(body.to_string())).await
    }
}

fn node(name: &str, id: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"node.kubernetes.io/instance-type": "m5.xlarge"}},
           "spec": {"providerID": format!("aws:///us-east-1a/{id}")}})
}

fn pod(name: &str, app: &str, node: Option<&str>) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
           "spec": {"nodeName": node, "automountServiceAccountToken": false,
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}})
}

/// The script. Every request is recorded under its label.
async fn script(r: &mut Runner<'_>) {
    const N: &str = "/api/v1/nodes";
    const P: &str = "/api/v1/namespaces/conf/pods";
    // Discovery and version.
    r.get("GET /version", "/version").await;
    r.get("GET /api", "/api").await;
    r.get("GET /apis", "/apis").await;
    r.get("GET /api/v1", "/api/v1").await;
    r.get("GET unknown resource", "/api/v1/frobs").await;
    r.get("GET unknown group", "/apis/nope.example.com/v1/things").await;
    // Nodes.
    r.get("GET missing node", &format!("{N}/conf-a")).await;
    r.json("POST node", "POST", N, node("conf-a", "i-0c0f000000000000a")).await;
    r.json("POST node again", "POST", N, node("conf-a", "i-0c0f000000000000a")).await;
    r.send("POST node, malformed JSON", "POST", N, "application/json", Some("{\"kind\": ".into())).await;
    r.send(
        "POST node as text/plain",
        "POST",
        N,
        "text/plain",
        Some(node("conf-b", "i-0c0f000000000000b").to_string()),
    )
    .await;
    r.json("POST node without name", "POST", N, json!({"apiVersion": "v1", "kind": "Node", "metadata": {}}))
        .await;
    r.get("GET node", &format!("{N}/conf-a")).await;
    r.patch(
        "PATCH node merge labels",
        &format!("{N}/conf-a"),
        "merge",
        json!({"metadata": {"labels": {"x": "1"}}}),
    )
    .await;
    r.patch(
        "PATCH node strategic: add taint",
        &format!("{N}/conf-a"),
        "strategic",
        json!({"spec": {"taints": [{"key": "k1", "effect": "NoSchedule"}]}}),
    )
    .await;
    r.patch(
        "PATCH node strategic: $patch delete in taints",
        &format!("{N}/conf-a"),
        "strategic",
        json!({"spec": {"taints": [{"key": "s1", "$patch": "delete"}]}}),
    )
    .await;
    r.patch(
        "PATCH node merge: taint effect Sometimes",
        &format!("{N}/conf-a"),
        "merge",
        json!({"spec": {"taints": [{"key": "k2", "effect": "Sometimes"}]}}),
    )
    .await;
    r.patch(
        "PATCH node json: unschedulable",
        &format!("{N}/conf-a"),
        "json",
        json!([{"op": "add", "path": "/spec/unschedulable", "value": true}]),
    )
    .await;
    r.patch(
        "PATCH node json: bad path",
        &format!("{N}/conf-a"),
        "json",
        json!([{"op": "replace", "path": "/spec/nope/deeper", "value": 1}]),
    )
    .await;
    r.send(
        "PATCH node as application/json",
        "PATCH",
        &format!("{N}/conf-a"),
        "application/json",
        Some("{}".into()),
    )
    .await;
    r.patch(
        "PATCH node status",
        &format!("{N}/conf-a/status"),
        "merge",
        json!({"status": {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                          "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"}}}),
    )
    .await;
    r.json(
        "PUT bare node (providerID dropped)",
        "PUT",
        &format!("{N}/conf-a"),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "conf-a"}}),
    )
    .await;
    let current = r.get("GET node for its resourceVersion", &format!("{N}/conf-a")).await;
    let mut stale = current.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    r.json("PUT node with a stale resourceVersion", "PUT", &format!("{N}/conf-a"), stale).await;
    r.json("POST node b", "POST", N, node("conf-b", "i-0c0f000000000000b")).await;
    r.json("POST node c", "POST", N, node("conf-c", "i-0c0f000000000000c")).await;
    // Lists, selectors, paging.
    r.get("LIST nodes by label", &format!("{N}?labelSelector=x%3D1")).await;
    r.get("LIST nodes by unknown field", &format!("{N}?fieldSelector=spec.nope%3Dx")).await;
    r.get("LIST nodes by bad label selector", &format!("{N}?labelSelector=%3D%3D%3D")).await;
    // Namespace and pods.
    r.json(
        "POST namespace",
        "POST",
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "conf"}}),
    )
    .await;
    r.json(
        "POST pod to a missing namespace",
        "POST",
        "/api/v1/namespaces/conf-nope/pods",
        pod("p", "a", None),
    )
    .await;
    let mut no_image = pod("no-image", "a", None);
    no_image["spec"]["containers"][0].as_object_mut().unwrap().remove("image");
    r.json("POST pod without image", "POST", P, no_image).await;
    r.json("POST pod p1", "POST", P, pod("p1", "guarded", Some("conf-a"))).await;
    r.json("POST pod p2", "POST", P, pod("p2", "free", Some("conf-a"))).await;
    r.json("POST pod p3", "POST", P, pod("p3", "free", Some("conf-b"))).await;
    r.get("GET pod", &format!("{P}/p1")).await;
    r.get("GET missing pod", &format!("{P}/nope")).await;
    r.get("LIST pods limit 2", &format!("{P}?limit=2")).await;
    let token = r.last["metadata"]["continue"].as_str().unwrap_or("").to_string();
    r.get("LIST pods continue", &format!("{P}?limit=2&continue={token}")).await;
    r.get("LIST pods by node", &format!("{P}?fieldSelector=spec.nodeName%3Dconf-a")).await;
    r.get("LIST pods by label", &format!("{P}?labelSelector=app%3Dfree")).await;
    r.get("LIST pods, all namespaces, by node", "/api/v1/pods?fieldSelector=spec.nodeName%3Dconf-b").await;
    // Budgets and evictions.
    r.json(
        "POST budget",
        "POST",
        "/apis/{policy}/namespaces/conf/poddisruptionbudgets",
        json!({"apiVersion": "{policy}", "kind": "PodDisruptionBudget", "metadata": {"name": "guarded"},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}),
    )
    .await;
    r.get("GET budget", "/apis/{policy}/namespaces/conf/poddisruptionbudgets/guarded").await;
    r.get("LIST budgets", "/apis/{policy}/poddisruptionbudgets").await;
    let eviction = |name: &str| json!({"apiVersion": "{policy}", "kind": "Eviction", "metadata": {"name": name, "namespace": "conf"}});
    r.json("EVICT pod its budget protects", "POST", &format!("{P}/p1/eviction"), eviction("p1")).await;
    r.json("EVICT pod without a budget", "POST", &format!("{P}/p2/eviction"), eviction("p2")).await;
    r.json("EVICT missing pod", "POST", &format!("{P}/nope/eviction"), eviction("nope")).await;
    // Deletes.
    r.json(
        "DELETE pod with a stale resourceVersion precondition",
        "DELETE",
        &format!("{P}/p3"),
        json!({"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"resourceVersion": "1"}}),
    )
    .await;
    r.json(
        "DELETE pod now",
        "DELETE",
        &format!("{P}/p3"),
        json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}),
    )
    .await;
    r.send("DELETE missing pod", "DELETE", &format!("{P}/nope"), "", None).await;
    // Leases.
    const L: &str = "/apis/coordination.k8s.io/v1/namespaces/conf/leases";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                       "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    r.json("POST lease", "POST", L, lease.clone()).await;
    r.json("POST lease again", "POST", L, lease).await;
    let mut held = r.get("GET lease", &format!("{L}/l")).await;
    let mut stale = held.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["spec"]["holderIdentity"] = json!("b");
    r.json("PUT lease with a stale resourceVersion", "PUT", &format!("{L}/l"), stale).await;
    held["spec"]["holderIdentity"] = json!("b");
    r.json("PUT lease", "PUT", &format!("{L}/l"), held).await;
    r.send("DELETE lease", "DELETE", &format!("{L}/l"), "", None).await;
    // Events.
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "conf-a."},
        "involvedObject": {"kind": "Node", "apiVersion": "v1", "name": "conf-a"},
        "reason": "Test", "message": "m", "type": "Normal", "source": {"component": "conf"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "count": 1});
    r.json("POST event on a node in default", "POST", "/api/v1/namespaces/default/events", event.clone())
        .await;
    r.json("POST event on a node outside default", "POST", "/api/v1/namespaces/conf/events", event).await;
    r.get("LIST events by reason", "/api/v1/namespaces/default/events?fieldSelector=reason%3DTest").await;
    // Token reviews.
    let review = |t: &str| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t}});
    r.json("TOKENREVIEW junk token", "POST", "/apis/authentication.k8s.io/v1/tokenreviews", review("junk"))
        .await;
    r.json(
        "TOKENREVIEW without spec",
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"}),
    )
    .await;
    // Priority classes and deployments.
    const PC: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";
    let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "conf-low"}, "value": -5});
    r.json("POST priority class", "POST", PC, class.clone()).await;
    r.json("POST priority class again", "POST", PC, class).await;
    // Watches: the first event, or the error.
    r.get("WATCH nodes", &format!("{N}?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dconf-a")).await;
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let watch = format!("{N}?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dconf-a");
    r.send_accepting("WATCH nodes as Table (kubectl get -w)", "GET", &watch, "", None, table).await;
    r.send_accepting("LIST nodes as Table (kubectl get)", "GET", N, "", None, table).await;
    r.get(
        "WATCH nodes from a bad resourceVersion",
        &format!("{N}?watch=1&timeoutSeconds=1&resourceVersion=notanumber"),
    )
    .await;
    // Node delete.
    r.send("DELETE node", "DELETE", &format!("{N}/conf-c"), "", None).await;
    r.send("DELETE node again", "DELETE", &format!("{N}/conf-c"), "", None).await;
}

async fn run(backend: Backend, dir: &std::path::Path) -> Vec<(String, Answer)> {
    let scenario = Scenario { nodes: 1, web: None, db: None, placeholders: 0 };
    let c = Cluster::start(backend, dir, &scenario, 1.0).await;
    let policy_v1 = c.get("/apis/policy/v1").await["resources"].as_array().is_some_and(|r| !r.is_empty());
    let mut r = Runner {
        c: &c,
        policy: if policy_v1 { "policy/v1" } else { "policy/v1beta1" }.into(),
        answers: Vec::new(),
        last: Value::Null,
    };
    script(&mut r).await;
    r.answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_answers_as_the_real_api_server() {
    let dir = std::env::temp_dir().join(format!(
        "costop-conformance-{}-{}",
        std::process::id(),
        common::free_port()
    ));
    let emu = run(Backend::Emu, &dir.join("emu")).await;
    let real = run(Backend::Real, &dir.join("real")).await;
    assert_eq!(emu.len(), real.len());
    let mut differ = Vec::new();
    for ((label, e), (_, r)) in emu.iter().zip(&real) {
        let mark = if e == r { "  " } else { "!!" };
        println!("{mark} {label:<55} real {} emu {}", r.code, e.code);
        if e != r {
            differ.push(format!("{label}: real {r:?}, emulator {e:?}"));
        }
    }
    println!("{} requests, {} differ", emu.len(), differ.len());
    assert!(emu.len() >= 40);
    assert!(differ.is_empty(), "the emulator differs from the real API server:\n{}", differ.join("\n"));
}

/// `kubectl apply` of the eks-managed overlay as `kubectl kustomize`
/// renders it, on one backend: each object's outcome, with
/// created/configured/unchanged as "ok" (the real world's harness made some
/// of them already). The real API server (1.20) takes the budget as
/// policy/v1beta1. The emulator serves no OpenAPI document, so kubectl's
/// client-side validation is off on both.
fn apply_manifest(kubeconfig: &std::path::Path, real: bool) -> Vec<String> {
    let rendered = common::render_overlay("eks-managed");
    let rendered = if real { common::with_policy_v1beta1(&rendered) } else { rendered };
    let manifest = kubeconfig.with_file_name("rendered-eks-managed.yaml");
    std::fs::write(&manifest, rendered).unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "--validate=false", "-f"])
        .arg(manifest)
        .output()
        .expect("kubectl (scripts/test installs kubernetes-client)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<String> = text
        .lines()
        // Warnings about objects the real world's harness made without kubectl.
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Warning: resource "))
        .map(|l| {
            for done in [" created", " configured", " unchanged"] {
                if let Some(object) = l.strip_suffix(done) {
                    return format!("{object} ok");
                }
            }
            l.to_string()
        })
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_of_the_manifest_maps_every_object_on_both() {
    let dir =
        std::env::temp_dir().join(format!("costop-apply-{}-{}", std::process::id(), common::free_port()));
    let scenario = Scenario { nodes: 2, web: None, db: None, placeholders: 0 };
    let emu = Cluster::start(Backend::Emu, &dir.join("emu"), &scenario, 1.0).await;
    let on_emu = tokio::task::block_in_place(|| apply_manifest(&emu.kubeconfig, false));
    let real = Cluster::start(Backend::Real, &dir.join("real"), &scenario, 1.0).await;
    let on_real = tokio::task::block_in_place(|| apply_manifest(&real.kubeconfig, true));
    println!("kubectl apply of deploy/overlays/eks-managed:\n  real: {on_real:#?}\n  emulator: {on_emu:#?}");
    assert!(on_real.iter().all(|l| l.ends_with(" ok")), "the real API server refused some: {on_real:#?}");
    assert!(on_real.len() >= 16, "{on_real:#?}");
    assert_eq!(on_emu, on_real, "the emulator does not take the manifest as the real API server does");
    // Applied again: nothing to change on either.
    let again = tokio::task::block_in_place(|| apply_manifest(&emu.kubeconfig, false));
    assert_eq!(again, on_real);
}

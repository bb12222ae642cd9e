//! The emulator's HTTP API with raw requests: Status errors for bad input,
//! watches, and real `kubectl` where it is installed.

use costop_emu::admin::{generated_scenario, load};
use costop_emu::{EmuConfig, Emulator};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

async fn emulator() -> Emulator {
    let dir = std::env::temp_dir().join(format!(
        "costop-emu-test-{}-{}",
        std::process::id(),
        costop_emu::random_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let emu = Emulator::start(EmuConfig {
        kubeconfig: dir.join("kubeconfig"),
        time_scale: 0.01,
        tick: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    load(&emu.state, &generated_scenario(3, 2)).unwrap();
    emu
}

/// One HTTP/1.1 request; returns (status, body).
fn request(emu: &Emulator, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(emu.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        emu.addr,
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn status_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_kubernetes_status_errors() {
    let emu = emulator().await;
    let json = "application/json";
    let pods = "/api/v1/namespaces/default/pods";
    let cases: Vec<(&str, String, &str, &str, u16, &str)> = vec![
        ("POST", pods.into(), json, "{not json", 400, "BadRequest"),
        ("POST", pods.into(), json, "[1,2]", 400, "BadRequest"),
        ("POST", pods.into(), json, r#"{"metadata": {"name": "x"}, "spec": {}}"#, 422, "Invalid"),
        (
            "POST",
            pods.into(),
            json,
            r#"{"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "a"}]}}"#,
            422,
            "Invalid",
        ),
        ("POST", pods.into(), json, r#"{"kind": "Node", "metadata": {"name": "x"}}"#, 400, "BadRequest"),
        (
            "POST",
            "/api/v1/namespaces/nope/pods".into(),
            json,
            r#"{"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "i"}]}}"#,
            404,
            "NotFound",
        ),
        ("GET", "/api/v1/widgets".into(), json, "", 404, "NotFound"),
        ("GET", "/api/v1/nodes/ghost".into(), json, "", 404, "NotFound"),
        (
            "PATCH",
            "/api/v1/nodes/node-0".into(),
            "application/apply-patch+yaml",
            "spec: {}",
            415,
            "UnsupportedMediaType",
        ),
        ("PATCH", "/api/v1/nodes/node-0".into(), "application/merge-patch+json", "{oops", 400, "BadRequest"),
        (
            "PATCH",
            "/api/v1/nodes/node-0".into(),
            "application/json-patch+json",
            r#"[{"op": "remove", "path": "/nope"}]"#,
            422,
            "Invalid",
        ),
        (
            "PATCH",
            "/api/v1/nodes/node-0".into(),
            "application/merge-patch+json",
            r#"{"metadata": {"name": "other"}}"#,
            422,
            "Invalid",
        ),
        (
            "PUT",
            "/api/v1/nodes/node-0".into(),
            json,
            r#"{"metadata": {"name": "node-9"}}"#,
            400,
            "BadRequest",
        ),
        ("POST", "/api/v1/nodes".into(), json, r#"{"metadata": {"name": "node-0"}}"#, 409, "AlreadyExists"),
        (
            "PUT",
            "/api/v1/nodes/node-0".into(),
            json,
            r#"{"metadata": {"name": "node-0", "resourceVersion": "1"}}"#,
            409,
            "Conflict",
        ),
        ("GET", "/api/v1/pods?labelSelector=a%20in%20b".into(), json, "", 400, "BadRequest"),
        ("GET", "/api/v1/pods?fieldSelector=bogus".into(), json, "", 400, "BadRequest"),
        ("DELETE", "/api/v1/namespaces/default/pods".into(), json, "", 405, "MethodNotAllowed"),
    ];
    for (method, path, ct, body, code, reason) in cases {
        let (got, text) = request(&emu, method, &path, ct, body);
        assert_eq!(got, code, "{method} {path} {body}: {text}");
        let st = status_of(&text);
        assert_eq!(st["kind"], "Status", "{method} {path}: {text}");
        assert_eq!(st["reason"], reason, "{method} {path}: {text}");
        assert_eq!(st["code"], code);
    }
    // A group the server does not serve: plain 404, as from the real API server.
    let (got, text) = request(&emu, "GET", "/apis/nope.io/v1/things", json, "");
    assert_eq!((got, text.trim()), (404, "404 page not found"));
    // A wrong bearer token is refused; none at all is the loopback admin.
    let mut s = TcpStream::connect(emu.addr).unwrap();
    write!(
        s,
        "GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    // Still serving after all that.
    let (code, body) = request(&emu, "GET", "/api/v1/nodes", json, "");
    assert_eq!(code, 200);
    assert_eq!(status_of(&body)["items"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes_from_a_resource_version() {
    let emu = emulator().await;
    let (_, list) = request(&emu, "GET", "/api/v1/nodes", "application/json", "");
    let rv = status_of(&list)["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let addr = emu.addr;
    let path = format!("/api/v1/nodes?watch=true&resourceVersion={rv}&timeoutSeconds=2");
    let reader = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, _) = request(
        &emu,
        "PATCH",
        "/api/v1/nodes/node-2",
        "application/strategic-merge-patch+json",
        r#"{"spec": {"unschedulable": true}}"#,
    );
    assert_eq!(code, 200);
    let out = tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
    assert!(out.contains("\"type\":\"MODIFIED\"") && out.contains("\"unschedulable\":true"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_review_to_their_pod() {
    let emu = emulator().await;
    let mut pod = None;
    for _ in 0..200 {
        let (_, pods) = request(&emu, "GET", "/api/v1/namespaces/default/pods", "application/json", "");
        pod = status_of(&pods)["items"][0]["metadata"]["name"].as_str().map(str::to_string);
        if pod.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pod = pod.expect("the Deployment controller made pods");
    let (_, t) = request(&emu, "GET", &format!("/admin/tokens/default/{pod}"), "application/json", "");
    let token = status_of(&t)["token"].as_str().unwrap().to_string();
    let review = format!(
        r#"{{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {{"token": "{token}"}}}}"#
    );
    let (code, body) =
        request(&emu, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", "application/json", &review);
    assert_eq!(code, 201);
    let r = status_of(&body);
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(r["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"][0], pod.as_str());
    let (_, body) = request(
        &emu,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "application/json",
        r#"{"spec": {"token": "forged"}}"#,
    );
    assert_eq!(status_of(&body)["status"]["authenticated"], false);
}

fn kubectl(emu: &Emulator, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &emu.kubeconfig)
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kubectl_gets_cordons_and_drains() {
    assert!(
        std::process::Command::new("kubectl").arg("version").arg("--client").output().is_ok(),
        "kubectl is not installed (Debian package kubernetes-client; scripts/test installs it)"
    );
    let emu = emulator().await;
    // Let the pods start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, nodes) = kubectl(&emu, &["get", "nodes"]);
    assert!(ok && nodes.contains("node-0") && nodes.contains("Ready"), "{nodes}");
    let (ok, out) = kubectl(&emu, &["cordon", "node-0"]);
    assert!(ok, "{out}");
    let (_, node) = kubectl(&emu, &["get", "node", "node-0"]);
    assert!(node.contains("SchedulingDisabled"), "{node}");
    let (ok, wide) = kubectl(&emu, &["get", "pods", "-o", "wide"]);
    assert!(ok && wide.contains("Running") && wide.contains("node-"), "{wide}");
    let (ok, out) =
        kubectl(&emu, &["drain", "node-0", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"]);
    assert!(ok && out.contains("drained"), "{out}");
    let (_, left) =
        kubectl(&emu, &["get", "pods", "-A", "--field-selector", "spec.nodeName=node-0", "-o", "name"]);
    assert!(left.trim().is_empty() || left.contains("No resources"), "{left}");
    // The world moved the pods: every Deployment is whole again elsewhere.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, deploys) =
        request(&emu, "GET", "/apis/apps/v1/namespaces/default/deployments", "application/json", "");
    for d in status_of(&deploys)["items"].as_array().unwrap() {
        assert_eq!(d["status"]["readyReplicas"], d["spec"]["replicas"], "{d}");
    }
}

fn imds(emu: &Emulator, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(emu.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_metadata_speaks_imdsv2_and_shows_injected_notices() {
    let emu = emulator().await;
    let base = "/imds/node-1/latest";
    // No token, bad TTL, forwarded request: refused as AWS does.
    assert_eq!(imds(&emu, "GET", &format!("{base}/meta-data/instance-id"), &[]).0, 401);
    assert_eq!(
        imds(&emu, "PUT", &format!("{base}/api/token"), &[("X-aws-ec2-metadata-token-ttl-seconds", "0")]).0,
        400
    );
    let fwd = [("X-aws-ec2-metadata-token-ttl-seconds", "60"), ("X-Forwarded-For", "10.0.0.1")];
    assert_eq!(imds(&emu, "PUT", &format!("{base}/api/token"), &fwd).0, 403);
    let (code, token) =
        imds(&emu, "PUT", &format!("{base}/api/token"), &[("X-aws-ec2-metadata-token-ttl-seconds", "60")]);
    assert_eq!(code, 200);
    let auth = [("X-aws-ec2-metadata-token", token.as_str())];
    let (_, id) = imds(&emu, "GET", &format!("{base}/meta-data/instance-id"), &auth);
    assert!(id.starts_with("i-"), "{id}");
    assert_eq!(imds(&emu, "GET", &format!("{base}/meta-data/instance-life-cycle"), &auth).1, "spot");
    assert_eq!(
        imds(&emu, "GET", &format!("{base}/meta-data/placement/availability-zone"), &auth).1,
        "us-east-1b"
    );
    // Another node's token does not open this node's metadata.
    let (_, other) =
        imds(&emu, "PUT", "/imds/node-2/latest/api/token", &[("X-aws-ec2-metadata-token-ttl-seconds", "60")]);
    assert_eq!(
        imds(&emu, "GET", &format!("{base}/meta-data/instance-id"), &[("X-aws-ec2-metadata-token", &other)])
            .0,
        401
    );
    // Nothing until a notice is injected; then AWS's bodies.
    assert_eq!(imds(&emu, "GET", &format!("{base}/meta-data/spot/instance-action"), &auth).0, 404);
    assert_eq!(
        imds(&emu, "GET", &format!("{base}/meta-data/events/recommendations/rebalance"), &auth).0,
        404
    );
    let (code, _) = request(
        &emu,
        "POST",
        "/admin/nodes/node-1/notice",
        "application/json",
        r#"{"rebalance": true, "interruption": {"action": "terminate", "in_seconds": 120}}"#,
    );
    assert_eq!(code, 200);
    let (code, body) = imds(&emu, "GET", &format!("{base}/meta-data/spot/instance-action"), &auth);
    assert_eq!(code, 200);
    let action: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(action["action"], "terminate");
    assert!(action["time"].as_str().unwrap().ends_with('Z'));
    let (code, body) =
        imds(&emu, "GET", &format!("{base}/meta-data/events/recommendations/rebalance"), &auth);
    assert_eq!(code, 200);
    assert!(body.contains("noticeTime"));
    let (code, _) = request(
        &emu,
        "POST",
        "/admin/nodes/node-1/notice",
        "application/json",
        r#"{"interruption": {"action": "explode"}}"#,
    );
    assert_eq!(code, 400);
    // Its time comes (120 s × 0.01 = 1.2 s): the node turns NotReady and its pods fail.
    let mut not_ready = false;
    for _ in 0..300 {
        let (_, node) = request(&emu, "GET", "/api/v1/nodes/node-1", "application/json", "");
        let node: Value = serde_json::from_str(&node).unwrap();
        if node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "False")
        {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(not_ready, "node-1 should be NotReady after its interruption");
}

//! Hostile input never makes the emulator panic: bytes that are not
//! percent-encoding or UTF-8, absurd numbers, objects of the wrong shape,
//! oversized scenarios, infinite timings. The admin API answers only to
//! the admin credential.

use costop_emu::admin::{generated_scenario, load};
use costop_emu::{EmuConfig, Emulator};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const JSON: &str = "application/json";

async fn emulator_with(timings: costop_facts::timings::Timings) -> Emulator {
    let dir = std::env::temp_dir().join(format!(
        "costop-emu-input-{}-{}",
        std::process::id(),
        costop_emu::random_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let emu = Emulator::start(EmuConfig {
        kubeconfig: dir.join("kubeconfig"),
        timings,
        time_scale: 0.01,
        tick: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    load(&emu.state, &generated_scenario(3, 2)).unwrap();
    emu
}

async fn emulator() -> Emulator {
    emulator_with(Default::default()).await
}

/// One raw HTTP/1.1 request (the request target is sent byte for byte);
/// returns (status, body), status 0 when no response came back.
fn raw(
    emu: &Emulator,
    method: &str,
    target: &[u8],
    content_type: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(emu.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    write!(
        req,
        " HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        emu.addr,
        body.len()
    )
    .unwrap();
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn request(emu: &Emulator, method: &str, path: &str, body: &str) -> (u16, String) {
    raw(emu, method, path.as_bytes(), JSON, "", body)
}

fn with_token(emu: &Emulator, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    raw(emu, method, path.as_bytes(), JSON, &format!("Authorization: Bearer {token}\r\n"), body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The emulator still answers and its controllers still run: a new pod is
/// scheduled and started.
async fn still_alive(emu: &Emulator, name: &str) {
    let (code, body) = request(emu, "GET", "/healthz", "");
    assert_eq!((code, body.as_str()), (200, "ok"));
    let pod = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "a", "image": "x",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
    let (code, body) = request(emu, "POST", "/api/v1/namespaces/default/pods", &pod.to_string());
    assert_eq!(code, 201, "{body}");
    let started = Instant::now();
    loop {
        let (_, body) = request(emu, "GET", &format!("/api/v1/namespaces/default/pods/{name}"), "");
        let p = json_of(&body);
        if p["spec"]["nodeName"].is_string() && p["status"]["phase"] == "Running" {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the controllers stopped: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn percent_decoding_is_bytewise() {
    use costop_emu::api::percent_decode;
    assert_eq!(percent_decode("a%3Db+c"), "a=b c");
    assert_eq!(percent_decode("%€"), "%€");
    assert_eq!(percent_decode("%"), "%");
    assert_eq!(percent_decode("%4"), "%4");
    assert_eq!(percent_decode("%zz"), "%zz");
    assert_eq!(percent_decode("€%"), "€%");
    assert_eq!(percent_decode("%E2%82%AC"), "€");
    assert_eq!(percent_decode("%E2%82"), "\u{FFFD}");
    assert_eq!(percent_decode("%ff%fe"), "\u{FFFD}\u{FFFD}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_that_are_not_percent_encoding_or_utf8_are_answered() {
    let emu = emulator().await;
    let targets: Vec<Vec<u8>> = vec![
        "/api/v1/pods?labelSelector=%€".into(),
        "/api/v1/pods?labelSelector=app%3D%€".into(),
        "/api/v1/pods?%€=%€".into(),
        "/api/v1/pods?fieldSelector=spec.nodeName%3D%E2%82".into(),
        "/api/v1/pods?labelSelector=%ff%fe".into(),
        "/api/v1/pods?labelSelector=%".into(),
        "/api/v1/pods?labelSelector=%%%".into(),
        "/api/v1/pods?watch=%€&timeoutSeconds=%€".into(),
        "/api/v1/nodes?labelSelector=€€€%".into(),
        b"/api/v1/pods?labelSelector=\xff\xfe%\xc3".to_vec(),
        "/api/v1/namespaces/default/pods/%€".into(),
        "/admin/tokens/default/%€".into(),
        "/imds/node-0/latest/meta-data/%€".into(),
    ];
    for target in targets {
        let (code, body) = raw(&emu, "GET", &target, JSON, "", "");
        let shown = String::from_utf8_lossy(&target);
        assert!(code != 0 && code < 500, "{shown}: {code} {body}");
    }
    still_alive(&emu, "after-queries").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_notice_times_are_refused_and_nothing_is_injected() {
    let emu = emulator().await;
    let path = "/admin/nodes/node-1/notice";
    for body in [
        r#"{"interruption": {"action": "terminate", "in_seconds": 1e300}}"#,
        r#"{"interruption": {"action": "terminate", "in_seconds": -1}}"#,
        r#"{"interruption": {"action": "terminate", "in_seconds": 1e999}}"#,
        r#"{"interruption": {"action": "terminate", "in_seconds": "soon"}}"#,
        r#"{"interruption": {"action": "terminate", "in_seconds": 31536001}}"#,
        r#"{"interruption": {"action": 5}}"#,
        r#"{"interruption": {"action": "melt"}}"#,
        r#"{"rebalance": true, "interruption": {"in_seconds": 1e300}}"#,
        "[1, 2]",
        r#"{"interruption": 5}"#,
        r#"{"rebalance": "yes"}"#,
        "{",
    ] {
        let (code, text) = request(&emu, "POST", path, body);
        assert_eq!(code, 400, "{body}: {text}");
        assert_eq!(json_of(&text)["kind"], "Status", "{body}: {text}");
    }
    assert!(costop_emu::imds::due(&emu.state, u64::MAX).is_empty(), "a refused notice injected nothing");
    // The largest accepted value, and a default, are fine.
    let (code, text) =
        request(&emu, "POST", path, r#"{"interruption": {"action": "stop", "in_seconds": 31536000}}"#);
    assert_eq!(code, 200, "{text}");
    let (code, text) = request(&emu, "POST", "/admin/nodes/node-2/notice", r#"{"interruption": {}}"#);
    assert_eq!(code, 200, "{text}");
    still_alive(&emu, "after-notices").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_and_nan_timings_never_panic() {
    let timings = costop_facts::timings::Timings {
        node_ready_s: f64::INFINITY,
        image_pull_s: -5.0,
        container_start_s: f64::NAN,
        pod_shutdown_s: f64::INFINITY,
        pleg_relist_s: 0.0,
        ..Default::default()
    };
    let emu = emulator_with(timings).await;
    // A node without conditions boots for "ever" (capped), never panics.
    let node = json!({"metadata": {"name": "node-new", "labels": {"kubernetes.io/hostname": "node-new"}},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}});
    let (code, body) = request(&emu, "POST", "/api/v1/nodes", &node.to_string());
    assert_eq!(code, 201, "{body}");
    // Huge grace periods on deletion, from the query and from a patch. The
    // controllers create the scenario's pods on their first pass: wait for it.
    let mut names: Vec<String> = Vec::new();
    for _ in 0..100 {
        let (_, pods) = request(&emu, "GET", "/api/v1/namespaces/default/pods", "");
        names = json_of(&pods)["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        if !names.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!names.is_empty(), "no pod within 5 s of the scenario");
    let (code, body) = request(
        &emu,
        "DELETE",
        &format!("/api/v1/namespaces/default/pods/{}?gracePeriodSeconds=9223372036854775807", names[0]),
        "",
    );
    assert!(code == 200 || code == 404, "{code} {body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_alive(&emu, "after-timings").await;
    let (_, node) = request(&emu, "GET", "/api/v1/nodes/node-new", "");
    assert_ne!(json_of(&node)["status"]["conditions"][0]["status"], "True", "still booting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_the_wrong_shape_are_refused() {
    let emu = emulator().await;
    let pods = "/api/v1/namespaces/default/pods";
    let c = r#"[{"name": "a"}]"#;
    let cases: Vec<(&str, String, String)> = vec![
        ("POST", pods.into(), r#"{"metadata": {"name": "p1"}, "spec": "x"}"#.into()),
        ("POST", pods.into(), format!(r#"{{"metadata": {{"name": "p2"}}, "spec": {{"containers": {c}}}, "status": "x"}}"#)),
        ("POST", pods.into(), format!(r#"{{"metadata": {{"name": "p3", "labels": "x"}}, "spec": {{"containers": {c}}}}}"#)),
        ("POST", pods.into(), format!(r#"{{"metadata": {{"name": "p4", "labels": {{"a": 1}}}}, "spec": {{"containers": {c}}}}}"#)),
        ("POST", pods.into(), r#"{"metadata": {"name": "p5"}, "spec": {"containers": [5]}}"#.into()),
        ("POST", pods.into(), r#"{"metadata": {"name": "p6"}, "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1e30"}}}]}}"#.into()),
        ("POST", pods.into(), r#"{"metadata": {"name": "p7"}, "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "18446744073709551615m"}}}]}}"#.into()),
        ("POST", pods.into(), r#"{"metadata": {"name": "p8"}, "spec": {"containers": [{"name": "a", "resources": {"limits": {"memory": "999999999Pi"}}}]}}"#.into()),
        ("POST", pods.into(), r#"{"metadata": {"name": "p9"}, "spec": {"containers": [{"name": "a", "resources": "lots"}]}}"#.into()),
        ("POST", pods.into(), format!(r#"{{"metadata": {{"name": "p10", "creationTimestamp": "2026-11-24T08:22:00+€ab"}}, "spec": {{"containers": {c}}}}}"#)),
        ("POST", pods.into(), format!(r#"{{"metadata": {{"name": "p11", "annotations": [1]}}, "spec": {{"containers": {c}}}}}"#)),
        ("POST", "/apis/apps/v1/namespaces/default/deployments".into(),
            r#"{"metadata": {"name": "d1"}, "spec": {"replicas": 1000000000000, "selector": {}, "template": {"spec": {"containers": [{"name": "a"}]}}}}"#.into()),
        ("POST", "/apis/apps/v1/namespaces/default/deployments".into(),
            r#"{"metadata": {"name": "d2"}, "spec": {"replicas": 1, "selector": {}, "template": {"spec": "x"}}}"#.into()),
        ("POST", "/apis/apps/v1/namespaces/default/deployments".into(),
            r#"{"metadata": {"name": "d3"}, "spec": {"replicas": 1, "selector": {}, "template": {"metadata": {"labels": 7}, "spec": {"containers": [{"name": "a"}]}}}}"#.into()),
        ("PATCH", "/api/v1/nodes/node-0".into(), r#"{"metadata": {"labels": "x"}}"#.into()),
        ("PATCH", "/api/v1/nodes/node-0".into(), r#"{"status": [1]}"#.into()),
        ("PATCH", "/api/v1/nodes/node-0".into(), r#"{"metadata": {"creationTimestamp": "yesterday"}}"#.into()),
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/svc-000/scale".into(), r#"{"spec": {"replicas": 1000000000000}}"#.into()),
    ];
    for (method, path, body) in cases {
        let ct = if method == "PATCH" { "application/merge-patch+json" } else { JSON };
        let (code, text) = raw(&emu, method, path.as_bytes(), ct, "", &body);
        assert!(code == 400 || code == 422, "{method} {path} {body}: {code} {text}");
        assert_eq!(json_of(&text)["kind"], "Status", "{text}");
    }
    // A JSON body nested deeper than any object: refused, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (code, _) = request(&emu, "POST", pods, &deep);
    assert_eq!(code, 400);
    // The admin API still writes into the node's labels.
    let (code, text) = request(&emu, "POST", "/admin/nodes/node-0/deregister", "");
    assert_eq!(code, 200, "{text}");
    still_alive(&emu, "after-shapes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_invalid_scenarios_create_nothing() {
    let emu = emulator().await;
    let (_, before) = request(&emu, "GET", "/api/v1/nodes", "");
    let nodes_before = json_of(&before)["items"].as_array().unwrap().len();
    let started = Instant::now();
    for body in [
        r#"{"nodes": [{"count": 4000000000, "instance_type": "m5.xlarge", "zone": "us-east-1a"}]}"#,
        r#"{"nodes": [{"count": 60000, "instance_type": "m5.xlarge", "zone": "us-east-1a"}, {"count": 60000, "instance_type": "m5.xlarge", "zone": "us-east-1b"}]}"#,
        r#"{"nodes": [{"count": 1, "instance_type": "m5.xlarge", "zone": "us-east-1a"}], "deployments": [{"name": "big", "replicas": 4000000000}]}"#,
        r#"{"nodes": [{"count": 1, "instance_type": "m5.xlarge", "zone": "us-east-1a"}], "deployments": [{"name": "Bad_Name", "replicas": 1}]}"#,
        r#"{"nodes": [{"count": 1, "instance_type": "m5.xlarge", "zone": "us-east-1a"}], "deployments": [{"name": "ok", "namespace": "Bad NS", "replicas": 1}]}"#,
        r#"{"nodes": [{"count": 1, "instance_type": "m5.xlarge", "zone": "us-east-1a"}], "deployments": [{"name": "cpu", "replicas": 1, "cpu": "1e30"}]}"#,
        r#"{"nodes": [{"count": 1, "instance_type": "m5.xlarge", "zone": "us-east-1a"}, {"count": 1, "instance_type": "z9.huge", "zone": "us-east-1a"}]}"#,
        r#"{"placeholders": {"count": 4000000000}}"#,
        r#"{"nodes": [{"count": -1, "instance_type": "m5.xlarge", "zone": "us-east-1a"}]}"#,
    ] {
        let (code, text) = request(&emu, "POST", "/admin/scenario", body);
        assert!(code == 400 || code == 422, "{body}: {code} {text}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "refused at once: {:?}", started.elapsed());
    let (_, after) = request(&emu, "GET", "/api/v1/nodes", "");
    assert_eq!(json_of(&after)["items"].as_array().unwrap().len(), nodes_before, "nothing created");
    still_alive(&emu, "after-scenarios").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_only_to_the_admin_credential() {
    let emu = emulator().await;
    let pod =
        json!({"metadata": {"name": "workload"}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
    let (code, body) = request(&emu, "POST", "/api/v1/namespaces/default/pods", &pod.to_string());
    assert_eq!(code, 201, "{body}");
    // No credentials: the loopback admin.
    let (code, body) = request(&emu, "GET", "/admin/tokens/default/workload", "");
    assert_eq!(code, 200, "{body}");
    let pod_token = json_of(&body)["token"].as_str().unwrap().to_string();
    let admin = emu.state.admin_token.clone();
    // A pod's token: 403 on every admin endpoint, and nothing done.
    for (method, path, body) in [
        ("GET", "/admin/tokens/default/workload", ""),
        ("GET", "/admin/tokens/kube-system/anything", ""),
        ("POST", "/admin/nodes/node-0/terminate", ""),
        ("POST", "/admin/nodes/node-0/notice", r#"{"interruption": {}}"#),
        ("POST", "/admin/nodes/node-0/deregister", ""),
        (
            "POST",
            "/admin/scenario",
            r#"{"nodes": [{"count": 1, "instance_type": "m5.xlarge", "zone": "us-east-1a"}]}"#,
        ),
        ("GET", "/admin/nope", ""),
    ] {
        let (code, text) = with_token(&emu, method, path, &pod_token, body);
        assert_eq!(code, 403, "{method} {path}: {text}");
        assert_eq!(json_of(&text)["reason"], "Forbidden");
    }
    assert!(costop_emu::imds::due(&emu.state, u64::MAX).is_empty(), "no notice injected by a pod");
    let (_, nodes) = request(&emu, "GET", "/api/v1/nodes", "");
    assert_eq!(json_of(&nodes)["items"].as_array().unwrap().len(), 3, "no node added by a pod");
    // The pod's token still reads the Kubernetes API.
    let (code, _) = with_token(&emu, "GET", "/api/v1/nodes", &pod_token, "");
    assert_eq!(code, 200);
    // The admin token and no token both reach the admin API; a wrong one is 401.
    let (code, text) = with_token(&emu, "GET", "/admin/tokens/default/workload", &admin, "");
    assert_eq!(code, 200, "{text}");
    let (code, _) = with_token(&emu, "GET", "/admin/tokens/default/workload", "wrong", "");
    assert_eq!(code, 401);
    let (code, text) =
        raw(&emu, "GET", b"/admin/tokens/default/workload", JSON, "Authorization: Basic YTpi\r\n", "");
    assert_eq!(code, 401, "{text}");
}

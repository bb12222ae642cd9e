//! The emulated cloud: pools and launches, standbys stopped and started,
//! EBS volumes attached to their pod's node and moved, the load balancer
//! over Ready pods, and the function bridge.

use costop_emu::admin::{self, CloudScenario, DeploymentSpec, NodeGroup, Scenario, StatefulSpec};
use costop_emu::cloud::{self, MoveRequest, PoolKey, PoolSpec, Served};
use costop_emu::kinds::idx;
use costop_emu::{EmuConfig, EmuState, Emulator};
use serde_json::Value;
use std::time::{Duration, Instant};

fn group(count: u32, zone: &str, capacity: &str) -> NodeGroup {
    NodeGroup { count, instance_type: "m5.xlarge".into(), zone: zone.into(), capacity_type: capacity.into() }
}

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(st: &EmuState, name: &str) -> Option<Value> {
    st.store.get(idx::NODES, "", name).ok()
}

fn ready(n: &Value) -> bool {
    n["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn pod_of(st: &EmuState, workload: &str) -> Option<Value> {
    let (pods, _) = st.store.list(idx::PODS, Some("default"), |p| {
        p["metadata"]["labels"]["app"] == workload && !p["metadata"]["deletionTimestamp"].is_string()
    });
    pods.into_iter().next()
}

fn volume(st: &EmuState) -> Value {
    cloud::summary(st)["volumes"][0].clone()
}

#[tokio::test]
async fn pools_standbys_volumes_load_balancer_and_bridge() {
    let dir = std::env::temp_dir().join(format!("costop-emu-cloud-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Every world duration 50× faster: a node boots in 0.6 s, a volume moves in 0.3 s.
    let emu = Emulator::start(EmuConfig {
        kubeconfig: dir.join("kubeconfig"),
        time_scale: 0.02,
        tick: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let st = emu.state.clone();
    let scenario = Scenario {
        nodes: vec![group(2, "us-east-1a", "spot"), group(1, "us-east-1a", "standby-stopped")],
        deployments: vec![DeploymentSpec {
            name: "web".into(),
            namespace: None,
            replicas: 2,
            cpu: "250m".into(),
            memory: "256Mi".into(),
            min_available: Some(1),
        }],
        placeholders: None,
    };
    let pools = vec![
        PoolSpec {
            instance_type: "m5.xlarge".into(),
            zone: "us-east-1a".into(),
            spot_price: Some(0.07),
            launchable: None,
        },
        PoolSpec {
            instance_type: "c5.xlarge".into(),
            zone: "us-east-1b".into(),
            spot_price: None,
            launchable: Some(false),
        },
    ];
    let stateful = vec![StatefulSpec {
        name: "db".into(),
        namespace: None,
        cpu: "250m".into(),
        memory: "256Mi".into(),
        volume_gb: 20,
        zone: "us-east-1a".into(),
    }];
    let volumes =
        admin::load_cloud(&st, &CloudScenario { pools, bridge_concurrency: Some(2), stateful }).unwrap();
    admin::load(&st, &scenario).unwrap();
    assert_eq!(volumes.len(), 1);

    // Pools: priced from the scenario, or 65 % off on-demand.
    let listed = cloud::pools_json(&st);
    let price = |t: &str| {
        listed.as_array().unwrap().iter().find(|p| p["instance_type"] == t).unwrap()["spot_price"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(price("m5.xlarge"), 0.07);
    assert!((price("c5.xlarge") - 0.17 * 0.35).abs() < 1e-9);

    // The stopped standby is NotReady; the Spot nodes are Ready.
    until("the stopped standby NotReady", Duration::from_secs(5), || {
        node(&st, "node-2").is_some_and(|n| !ready(&n))
    })
    .await;
    assert!(ready(&node(&st, "node-0").unwrap()));

    // The volume is attached where its pod was bound, and only then does the pod start.
    until("db Ready", Duration::from_secs(10), || {
        pod_of(&st, "db").is_some_and(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let db = pod_of(&st, "db").unwrap();
    let db_node = db["spec"]["nodeName"].as_str().unwrap().to_string();
    assert_eq!(volume(&st)["attached_to"], db_node.as_str());

    // Requests go to Ready pods through the load balancer.
    until("web routed", Duration::from_secs(10), || {
        matches!(cloud::serve(&st, "default/web"), Served::Pod(_))
    })
    .await;
    assert!(matches!(cloud::serve(&st, "default/nothing"), Served::Failed(_)));

    // A launch into a pool that cannot launch fails; one that can joins after the boot delay, once per key.
    let dead = PoolKey { instance_type: "c5.xlarge".into(), zone: "us-east-1b".into() };
    assert!(cloud::launch(&st, "k0", &[(dead, 1)]).unwrap_err().contains("InsufficientInstanceCapacity"));
    let pool = PoolKey { instance_type: "m5.xlarge".into(), zone: "us-east-1a".into() };
    let launched = cloud::launch(&st, "k1", &[(pool.clone(), 1)]).unwrap();
    assert_eq!(cloud::launch(&st, "k1", &[(pool, 1)]).unwrap(), launched, "the same key launches once");
    assert!(node(&st, "node-3").is_none(), "the node joins after it boots");
    until("the launched node Ready", Duration::from_secs(5), || {
        node(&st, "node-3").is_some_and(|n| ready(&n))
    })
    .await;

    // A running node cannot be re-typed; the stopped standby is, and boots.
    assert!(cloud::start(&st, "node-0", Some("c5.xlarge")).is_err());
    cloud::start(&st, "node-2", Some("m5.2xlarge")).unwrap();
    assert_eq!(
        node(&st, "node-2").unwrap()["metadata"]["labels"]["node.kubernetes.io/instance-type"],
        "m5.2xlarge"
    );
    until("the standby Ready", Duration::from_secs(5), || node(&st, "node-2").is_some_and(|n| ready(&n)))
        .await;

    // A volume in use is not moved unless forced; across zones only by snapshot.
    let id = volumes[0].clone();
    let to = if db_node == "node-0" { "node-1" } else { "node-0" };
    let req = |to: &str, force: bool| MoveRequest { to_node: to.into(), via_snapshot: false, force };
    assert_eq!(cloud::move_volume(&st, &id, &req(to, false)).unwrap_err().0, 409);
    let done = cloud::move_volume(&st, &id, &req(to, true)).unwrap();
    assert!(done.contains("forced"), "{done}");
    until("the volume attached to its new node", Duration::from_secs(5), || volume(&st)["attached_to"] == to)
        .await;
    assert_eq!(volume(&st)["moves"], 1);
    assert_eq!(cloud::move_volume(&st, "vol-0nothing", &req(to, false)).unwrap_err().0, 404);

    // The bridge takes every other request, within the account's concurrency (2 here).
    cloud::bridge(&st, &["default/web".into()], true);
    let t = Instant::now();
    let served: Vec<Served> = (0..8).map(|_| cloud::serve_at(&st, "default/web", t)).collect();
    let by_function = served.iter().filter(|s| **s == Served::Function).count();
    assert_eq!(by_function, 2, "{served:?}");
    assert!(served.iter().all(|s| !matches!(s, Served::Failed(_))), "{served:?}");
    // With no pod to fall back on, a full bridge fails the request; a slot frees after the function's duration.
    cloud::bridge(&st, &["default/nothing".into()], true);
    assert!(matches!(cloud::serve_at(&st, "default/nothing", t), Served::Failed(_)));
    assert_eq!(cloud::serve_at(&st, "default/nothing", t + Duration::from_secs(1)), Served::Function);
    cloud::bridge(&st, &["default/web".into()], false);

    // The bill: Spot nodes at the pool price, on-demand ones at theirs; all on-demand costs more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let summary = cloud::summary(&st);
    let (cost, od) = (summary["cost_usd"].as_f64().unwrap(), summary["on_demand_usd"].as_f64().unwrap());
    assert!(cost > 0.0 && cost < od, "cost {cost}, all on-demand {od}");
    emu.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cloud_requests_with_junk_bodies_are_refused_with_what_is_wrong() {
    use axum::body::Bytes;
    use axum::http::Method;
    let dir = std::env::temp_dir().join(format!("costop-emu-cloud-junk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let emu = Emulator::start(EmuConfig { kubeconfig: dir.join("kubeconfig"), ..Default::default() })
        .await
        .unwrap();
    let st = emu.state.clone();
    admin::load(&st, &Scenario { nodes: vec![group(1, "us-east-1a", "spot")], ..Default::default() })
        .unwrap();
    let cases: &[(&[&str], &str, u16, &str)] = &[
        (&["launch"], "{}", 400, "invalid launch request"),
        (
            &["launch"],
            r#"{"key": "k", "pools": [{"instance_type": "m5.xlarge", "zone": "z", "count": -1}]}"#,
            400,
            "expected u32",
        ),
        (
            &["launch"],
            r#"{"key": "k", "pools": [{"instance_type": "m5.xlarge", "zone": "nowhere-1a", "count": 1}]}"#,
            409,
            "no pool",
        ),
        (&["bridge"], r#"{"workloads": "web", "on": true}"#, 400, "invalid bridge request"),
        (&["bridge"], r#"{"workloads": [], "on": true, "extra": 1}"#, 400, "unknown field"),
        (&["volumes", "vol-1", "move"], "not json", 400, "invalid volume move"),
        (&["volumes", "vol-1", "move"], r#"{"to_node": "node-0"}"#, 404, "vol-1"),
        (&["volumes", "vol-1", "move"], r#"{"to_node": "nothing"}"#, 404, "nothing"),
        (&["pools"], r#"[{"instance_type": "x9.huge", "zone": "us-east-1a"}]"#, 422, "unknown instance type"),
        (
            &["pools"],
            r#"[{"instance_type": "m5.xlarge", "zone": "us-east-1a", "spot_price": -2}]"#,
            422,
            "spot_price",
        ),
        (&["nodes", "node-0", "start"], r#"{"instance_type": 7}"#, 400, "invalid start request"),
        (&["nodes", "node-0", "start"], r#"{"instance_type": "x9.huge"}"#, 409, "unknown instance type"),
        (&["nodes", "nothing", "start"], "", 404, "no instance"),
        (
            &["scenario"],
            r#"{"stateful": [{"name": "db", "volume_gb": 0, "zone": "us-east-1a"}]}"#,
            422,
            "volume_gb",
        ),
        (&["scenario"], r#"{"pools": {}}"#, 400, "invalid scenario"),
    ];
    for (path, body, code, says) in cases {
        let resp = admin::handle(&st, &Method::POST, path, &Bytes::from(body.to_string()));
        let got = resp.status().as_u16();
        let text = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&text);
        assert_eq!(got, *code, "{path:?} {body}: {text}");
        assert!(text.contains(says), "{path:?} {body}: {text} does not say {says}");
    }
    // Nothing was created by the refused requests.
    let summary = cloud::summary(&st);
    assert!(summary["volumes"].as_array().unwrap().is_empty(), "{summary}");
    assert_eq!(summary["instances_by_state"]["pending"], Value::Null, "{summary}");
    emu.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

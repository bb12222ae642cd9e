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
        (
            &["scenario"],
            r#"{"nodes": [{"count": 1, "instance_type": "m5.xlarge", "zone": "us-east-1a", "capacity_type": "burstable"}]}"#,
            422,
            "needs a T-family type",
        ),
        (&["nodes", "node-0", "credits"], r#"{"mode": "standard"}"#, 409, "not a burstable node"),
        (&["nodes", "nothing", "credits"], r#"{"mode": "standard"}"#, 404, "no instance"),
        (&["nodes", "node-0", "credits"], r#"{"mode": "standard", "speed": 1}"#, 400, "unknown field"),
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

fn burstable_cloud(st: &EmuState) -> Value {
    cloud::summary(st)["instances"].as_array().unwrap().iter().find(|i| i["node"] == "node-0").unwrap()
        ["credits"]
        .clone()
}

/// Issue 16's acceptance in the emulator: a t3.large in standard mode with
/// no credits serves its baseline only (0.6 of the 1.8 vCPUs its pods ask
/// for: a third of the requests routed to them, the rest fail as
/// throttled); in unlimited mode it serves every request and its surplus
/// credits are billed (at the switch back to standard here).
#[tokio::test]
async fn a_burstable_node_out_of_credits_serves_its_baseline_and_unlimited_bills_the_surplus() {
    use axum::body::Bytes;
    use axum::http::Method;
    let dir = std::env::temp_dir().join(format!("costop-emu-cloud-credits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 1,000× real time: a real second is 1,000 world seconds.
    let emu = Emulator::start(EmuConfig {
        kubeconfig: dir.join("kubeconfig"),
        time_scale: 0.001,
        tick: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let st = emu.state.clone();
    let scenario = Scenario {
        nodes: vec![NodeGroup { instance_type: "t3.large".into(), ..group(1, "us-east-1a", "burstable") }],
        deployments: vec![DeploymentSpec {
            name: "web".into(),
            namespace: None,
            replicas: 2,
            cpu: "900m".into(),
            memory: "256Mi".into(),
            min_available: None,
        }],
        placeholders: None,
    };
    admin::load(&st, &scenario).unwrap();
    until("web routed", Duration::from_secs(10), || {
        matches!(cloud::serve(&st, "default/web"), Served::Pod(_))
    })
    .await;
    until("both pods asking", Duration::from_secs(10), || {
        (burstable_cloud(&st)["demand_vcpu"].as_f64().unwrap() - 1.8).abs() < 1e-9
    })
    .await;
    // RunInstances' default for T3: unlimited.
    assert_eq!(burstable_cloud(&st)["mode"], "unlimited");

    // Standard, its credits spent (through the admin API).
    let post = |body: &str| {
        admin::handle(&st, &Method::POST, &["nodes", "node-0", "credits"], &Bytes::from(body.to_string()))
    };
    assert_eq!(post(r#"{"mode": "standard", "balance": 0}"#).status().as_u16(), 200);
    // It ran unlimited from launch with no credits earned: the surplus it
    // spent meanwhile is charged as its balance is set and it switches.
    let settled = cloud::summary(&st)["surplus_credits_usd"].as_f64().unwrap();
    assert!(settled > 0.0, "{settled}");
    until("throttled", Duration::from_secs(5), || {
        (burstable_cloud(&st)["served_share"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9
    })
    .await;
    let credits = burstable_cloud(&st);
    assert_eq!(credits["balance"], 0.0, "{credits}");
    assert!((credits["capacity_vcpu"].as_f64().unwrap() - 0.6).abs() < 1e-9, "{credits}");
    let before = cloud::summary(&st)["requests"].clone();
    let served: Vec<Served> = (0..300).map(|_| cloud::serve(&st, "default/web")).collect();
    let by_pods = served.iter().filter(|s| matches!(s, Served::Pod(_))).count();
    assert!((99..=101).contains(&by_pods), "{by_pods} of 300 served at a third");
    let throttled =
        served.iter().filter(|s| matches!(s, Served::Failed(w) if w.contains("CPU baseline"))).count();
    assert_eq!(by_pods + throttled, 300);
    let after = cloud::summary(&st)["requests"].clone();
    let counted = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(counted("failed_throttled"), throttled as u64);
    assert_eq!(counted("served_by_pods"), by_pods as u64);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        cloud::summary(&st)["surplus_credits_usd"].as_f64().unwrap(),
        settled,
        "standard mode is never billed surplus"
    );

    // Unlimited: everything is served, and surplus builds up.
    assert_eq!(post(r#"{"mode": "unlimited"}"#).status().as_u16(), 200);
    assert!((0..300).all(|_| matches!(cloud::serve(&st, "default/web"), Served::Pod(_))));
    let started = Instant::now();
    until("surplus spent", Duration::from_secs(10), || {
        burstable_cloud(&st)["surplus"].as_f64().unwrap() > 5.0
    })
    .await;
    let credits = burstable_cloud(&st);
    assert_eq!(credits["served_share"], 1.0, "{credits}");
    assert_eq!(credits["balance"], 0.0, "{credits}");
    // The switch back to standard charges it: 1.2 vCPUs above the
    // baseline, 0.02 credits a world second, at 0.05 USD per vCPU-hour.
    let resp = post(r#"{"mode": "standard"}"#);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let shown: Value = serde_json::from_slice(&body).unwrap();
    let charged = shown["credits"]["charged_credits"].as_f64().unwrap();
    let world_s = started.elapsed().as_secs_f64() * 1000.0;
    let since = charged - settled / 0.05 * 60.0;
    assert!(
        since > 5.0 && since <= 0.02 * (world_s + 200.0),
        "{since} credits in {world_s} world s: {shown}"
    );
    // Every surplus credit charged (at launch, and now), at 0.05 USD per vCPU-hour.
    let usd = cloud::summary(&st)["surplus_credits_usd"].as_f64().unwrap();
    assert!((usd - charged / 60.0 * 0.05).abs() < 1e-9, "{usd} USD for {charged} credits");
    assert!(usd - settled > 5.0 / 60.0 * 0.05, "{usd} after {settled}");
    assert_eq!(shown["credits"]["surplus"], 0.0, "{shown}");
    emu.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

//! End to end: real `costop emu`, `costop server` and `costop agent`
//! processes, a real redis-server, an interruption injected into instance
//! metadata.

use costop_core::ports::StorePort;
use costop_store::redis_server::RedisServer;
use costop_store::RedisStore;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, free_port, Proc};

struct World {
    dir: PathBuf,
    redis: RedisServer,
    _emu: Proc,
    emu_url: String,
    kubeconfig: PathBuf,
    server: Option<Proc>,
    server_url: String,
    agent: Option<Proc>,
    http: reqwest::Client,
    /// Extra environment of the server (policy overrides).
    server_env: Vec<(String, String)>,
}

impl World {
    async fn start(time_scale: f64) -> World {
        let scenario = json!({
            "nodes": [{"count": 3, "instance_type": "m5.xlarge", "zone": "us-east-1a", "capacity_type": "spot"}],
            "deployments": [{"name": "web", "replicas": 6, "cpu": "250m", "memory": "256Mi", "min_available": 4}],
            "placeholders": {"count": 2, "cpu": "500m", "memory": "512Mi"}
        });
        Self::start_with(time_scale, scenario, &[]).await
    }

    async fn start_with(time_scale: f64, scenario: Value, server_env: &[(&str, &str)]) -> World {
        let dir = std::env::temp_dir().join(format!("costop-e2e-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("scenario.json"), scenario.to_string()).unwrap();
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
        // Keep reading its output so it never writes into a closed pipe.
        std::thread::spawn(move || for _ in lines.lines() {});
        let redis = RedisServer::start().expect("redis-server (scripts/test installs it)");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut world = World {
            dir,
            redis,
            _emu: Proc(emu),
            emu_url,
            kubeconfig,
            server: None,
            server_url: format!("http://127.0.0.1:{}", free_port()),
            agent: None,
            http,
            server_env: server_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        world.start_server().await;
        world
            .wait("pods running", Duration::from_secs(30), async |w| w.ready_pods("default").await >= 6)
            .await;
        world
    }

    async fn start_server(&mut self) {
        let listen = self.server_url.trim_start_matches("http://").to_string();
        let server = Command::new(bin())
            .args([
                "server",
                "--listen",
                &listen,
                "--redis-url",
                &self.redis.url(),
                "--emu-url",
                &self.emu_url,
                "--identity",
                "e2e",
            ])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("COSTOP_LOG", "info")
            // Plans in Redis are signed; a restarted server checks them with the same key.
            .env("COSTOP_PLAN_KEY", "the e2e plan key from a Secret")
            .envs(self.server_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("server.log")).unwrap())
            .spawn()
            .unwrap();
        self.server = Some(Proc(server));
        self.wait("server leads", Duration::from_secs(30), async |w| {
            w.get_text(&format!("{}/readyz", w.server_url)).await.as_deref() == Some("leader")
        })
        .await;
    }

    fn start_agent(&mut self, node: &str, token_file: &std::path::Path) {
        let agent = Command::new(bin())
            .args([
                "agent",
                "--imds-url",
                &format!("{}/imds/{node}", self.emu_url),
                "--server-url",
                &self.server_url,
            ])
            .args(["--redis-url", &self.redis.url(), "--poll-ms", "100", "--token-path"])
            .arg(token_file)
            .env("COSTOP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(format!("agent-{node}.log"))).unwrap())
            .spawn()
            .unwrap();
        self.agent = Some(Proc(agent));
    }

    async fn get_text(&self, url: &str) -> Option<String> {
        self.http.get(url).send().await.ok()?.text().await.ok()
    }

    async fn get(&self, path: &str) -> Value {
        let text = self.get_text(&format!("{}{path}", self.emu_url)).await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn post(&self, url: &str, body: Value, token: Option<&str>) -> (u16, String) {
        let mut req = self.http.post(url).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    async fn ready_pods(&self, ns: &str) -> usize {
        let pods = self.get(&format!("/api/v1/namespaces/{ns}/pods")).await;
        pods["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .filter(|p| {
                        p["status"]["conditions"]
                            .as_array()
                            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    async fn pods_on(&self, node: &str) -> Vec<Value> {
        let pods = self.get(&format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")).await;
        pods["items"].as_array().cloned().unwrap_or_default()
    }

    /// Run an agent pod on `node` (owned by a DaemonSet, as deployed) and
    /// write its service-account token to a file (its projected token).
    async fn token_of_pod_on(&self, node: &str) -> (String, PathBuf) {
        let name = format!("costop-agent-{node}");
        let pod = json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                "name": "costop-agent", "uid": "costop-agent-ds", "controller": true}]},
            "spec": {"nodeName": node, "serviceAccountName": "costop-agent", "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "agent", "image": "costop:dev", "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}]}});
        let (code, body) =
            self.post(&format!("{}/api/v1/namespaces/costop-system/pods", self.emu_url), pod, None).await;
        assert!(code == 201 || code == 409, "{body}");
        let token = self.get(&format!("/admin/tokens/costop-system/{name}")).await["token"]
            .as_str()
            .unwrap()
            .to_string();
        let file = self.dir.join(format!("token-{node}"));
        std::fs::write(&file, &token).unwrap();
        (token, file)
    }

    async fn wait(&self, what: &str, timeout: Duration, check: impl AsyncFn(&World) -> bool) {
        let start = Instant::now();
        while !check(self).await {
            if start.elapsed() > timeout {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "timed out waiting for {what}; server log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn node(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/nodes/{name}")).await
    }

    async fn inject(&self, node: &str) {
        let (code, body) = self
            .post(
                &format!("{}/admin/nodes/{node}/notice", self.emu_url),
                json!({"interruption": {"action": "terminate", "in_seconds": 120}}),
                None,
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }

    async fn store(&self) -> RedisStore {
        RedisStore::connect(&self.redis.url()).await.unwrap()
    }

    /// The first response recorded in Redis, with its key (none yet: `None`).
    async fn first_response(&self) -> Option<(costop_core::NoticeKey, costop_core::ports::ResponseRecord)> {
        let keys = self.response_keys().await;
        let key =
            costop_store::parse_notice_key(keys.first()?.trim_start_matches("costop:response:")).unwrap();
        let record = self.store().await.response(&key).await.unwrap()?;
        Some((key, record))
    }

    async fn response_keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.redis.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS").arg("costop:response:*").query_async(&mut c).await.unwrap_or_default()
    }
}

fn cordoned(node: &Value) -> bool {
    node["spec"]["unschedulable"] == true
        && node["spec"]["taints"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["key"] == "costop.io/interruption"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_is_answered_end_to_end_and_recorded() {
    let mut w = World::start(0.05).await;
    let (token0, file0) = w.token_of_pod_on("node-0").await;
    w.start_agent("node-0", &file0);
    let displaced = w.pods_on("node-0").await.len();
    assert!(displaced > 0);
    w.inject("node-0").await;

    w.wait("node-0 tainted and cordoned", Duration::from_secs(10), async |w| {
        cordoned(&w.node("node-0").await)
    })
    .await;
    w.wait("pods evicted from node-0", Duration::from_secs(20), async |w| {
        w.pods_on("node-0").await.iter().all(|p| p["metadata"]["namespace"] != "default")
    })
    .await;
    w.wait("web whole again elsewhere", Duration::from_secs(30), async |w| {
        w.ready_pods("default").await >= 6
    })
    .await;
    w.wait("placeholders restored", Duration::from_secs(30), async |w| {
        w.ready_pods("costop-system").await >= 2
    })
    .await;

    // The record: one response, every step with timestamps.
    let store = w.store().await;
    w.wait("the response finished", Duration::from_secs(30), async |w| {
        // Saved responses first: a plan joins the open set as it is saved.
        !w.response_keys_sync().await.is_empty()
            && w.store().await.unfinished().await.is_ok_and(|u| u.is_empty())
    })
    .await;
    let keys = w.response_keys().await;
    assert_eq!(keys.len(), 1, "one response: {keys:?}");
    let key = costop_store::parse_notice_key(keys[0].trim_start_matches("costop:response:")).unwrap();
    let record = store.response(&key).await.unwrap().unwrap();
    let kinds: Vec<&str> = record.plan.steps.iter().map(|s| s.kind()).collect();
    assert_eq!(kinds[0], "taint-and-cordon");
    assert!(kinds.contains(&"evict") && kinds.contains(&"restore-headroom"), "{kinds:?}");
    for (step, rec) in record.plan.steps.iter().zip(&record.steps) {
        let (s, d) = (rec.started_at.unwrap(), rec.done_at.unwrap());
        assert!(s <= d, "{step:?}");
        assert!(
            rec.outcome.as_deref().is_some_and(|o| !o.starts_with("failed")),
            "{step:?}: {:?}",
            rec.outcome
        );
    }

    // The same notice again, by hand on the fast path: a duplicate, still one response.
    let notice: Value = serde_json::to_value(costop_core::Notice {
        instance_id: key.instance_id.clone(),
        kind: costop_core::NoticeKind::SpotInterruption {
            action: costop_core::notice::InstanceAction::Terminate,
            effective_at: key.stated_time,
        },
        received_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64,
        source: costop_core::NoticeSource::Agent,
    })
    .unwrap();
    let (code, body) = w.post(&format!("{}/v1/notices", w.server_url), notice.clone(), Some(&token0)).await;
    assert_eq!((code, body.contains("duplicate")), (200, true), "{body}");
    assert_eq!(w.response_keys().await.len(), 1);

    // A forged notice: a pod on node-1 reporting for node-0.
    let (token1, _) = w.token_of_pod_on("node-1").await;
    let mut forged = notice.clone();
    forged["kind"]["effective_at"] = json!(key.stated_time + 1000);
    let (code, body) = w.post(&format!("{}/v1/notices", w.server_url), forged, Some(&token1)).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(w.response_keys().await.len(), 1, "no action on a forged notice");
    // Junk bodies and missing tokens: clear errors.
    let (code, body) =
        w.post(&format!("{}/v1/notices", w.server_url), json!({"nope": 1}), Some(&token0)).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not a notice"));
    let (code, _) = w.post(&format!("{}/v1/notices", w.server_url), notice, None).await;
    assert_eq!(code, 401);
    let metrics = w.get_text(&format!("{}/metrics", w.server_url)).await.unwrap();
    assert!(metrics.contains("costop_notice_to_cordon_seconds_count 1"), "{metrics}");
    assert!(metrics.contains("costop_notices_refused_total 2"), "{metrics}");
    w.agent.take();
}

/// Three Spot nodes running web (6 replicas, at least 4 available) and
/// three Spot pools the emulated cloud launches replacements into.
fn three_nodes_and_pools() -> Value {
    json!({
        "nodes": [{"count": 3, "instance_type": "m5.xlarge", "zone": "us-east-1a", "capacity_type": "spot"}],
        "deployments": [{"name": "web", "replicas": 6, "cpu": "250m", "memory": "256Mi", "min_available": 4}],
        "pools": [
            {"instance_type": "m5.xlarge", "zone": "us-east-1a", "spot_price": 0.07},
            {"instance_type": "m5.xlarge", "zone": "us-east-1b", "spot_price": 0.07},
            {"instance_type": "m5a.xlarge", "zone": "us-east-1b", "spot_price": 0.06}
        ]
    })
}

/// Issue 10: a rebalance recommendation that no interruption follows
/// launches a replacement and retires the recommended node once the
/// others have room for its pods (here at once: the two others have),
/// its Deployment surged first, so web never has fewer Ready pods than
/// its budget's minimum; nothing is left cordoned and the cluster is back
/// to its size (the emulated cloud launches into its pools).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_recommendation_with_no_interruption_leaves_no_cordon_and_no_extra_capacity() {
    let scenario = three_nodes_and_pools();
    let mut w = World::start_with(0.05, scenario, &[("COSTOP_POLICY_REBALANCE_WINDOW_MINUTES", "1")]).await;
    let nodes = async |w: &World| -> Vec<Value> {
        w.get("/api/v1/nodes").await["items"].as_array().cloned().unwrap_or_default()
    };
    assert_eq!(nodes(&w).await.len(), 3);
    let (_, file0) = w.token_of_pod_on("node-0").await;
    w.start_agent("node-0", &file0);
    let (code, body) =
        w.post(&format!("{}/admin/nodes/node-0/notice", w.emu_url), json!({"rebalance": true}), None).await;
    assert_eq!(code, 200, "{body}");

    // node-0 goes, and its replacement stays: three nodes again.
    let mut fewest_ready = usize::MAX;
    let start = std::time::Instant::now();
    loop {
        fewest_ready = fewest_ready.min(w.ready_pods("default").await);
        let n = nodes(&w).await;
        if n.len() == 3 && n.iter().all(|n| n["metadata"]["name"] != "node-0") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(150), "node-0 not retired: {n:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fewest_ready >= 4, "web fell to {fewest_ready} Ready pods while node-0 drained");
    let left = nodes(&w).await;
    assert!(left.iter().all(|n| !cordoned(n) && n["spec"]["unschedulable"] != true), "{left:?}");
    w.wait("web whole on the nodes left", Duration::from_secs(30), async |w| {
        w.ready_pods("default").await >= 6
    })
    .await;
    w.agent.take();
}

/// Issue 10: while a Spot interruption is answered, the workload keeps at
/// least its budget's minimum of Ready pods routed by the load balancer
/// (looked at every 100 ms), its traffic is bridged to its function before
/// any target is deregistered, and no request sent meanwhile fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_response_the_budget_stays_routed_and_the_bridge_is_live_before_deregistration() {
    let scenario = three_nodes_and_pools();
    let mut w = World::start_with(1.0, scenario, &[]).await;
    let (_, file0) = w.token_of_pod_on("node-0").await;
    w.start_agent("node-0", &file0);
    assert!(!w.pods_on("node-0").await.is_empty());

    // Requests to web every 20 ms through the emulated load balancer.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (http, url, stop) =
            (w.http.clone(), format!("{}/admin/requests/default/web", w.emu_url), stop.clone());
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = http.get(&url).send().await.unwrap();
                sent += 1;
                if !r.status().is_success() {
                    failed.push(r.text().await.unwrap_or_default());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (sent, failed)
        })
    };
    let routed = async |w: &World| w.get("/admin/cloud").await["routes"]["default/web"].as_u64().unwrap_or(0);
    w.wait("web's six pods routed", Duration::from_secs(20), async |w| routed(w).await >= 6).await;

    w.inject("node-0").await;
    let started = Instant::now();
    let mut fewest = u64::MAX;
    loop {
        fewest = fewest.min(routed(&w).await);
        let done = w.first_response().await.is_some_and(|(_, r)| r.done_at.is_some())
            && w.ready_pods("default").await >= 6;
        if done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(240), "the response did not finish in 4 min");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, failed) = load.await.unwrap();
    assert!(fewest >= 4, "web had {fewest} routed Ready pods, its budget's minimum is 4");
    assert!(
        sent > 0 && failed.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failed.len(),
        failed.first()
    );

    // The record: the bridge was live before the first deregistration.
    let (_, record) = w.first_response().await.expect("a response record");
    let step = |kind: &str| {
        let i = record.plan.steps.iter().position(|s| s.kind() == kind);
        i.map(|i| &record.steps[i]).unwrap_or_else(|| panic!("no {kind} step: {:?}", record.plan.steps))
    };
    let (bridged, deregistered) = (step("bridge-traffic"), step("deregister-targets"));
    assert!(
        bridged.done_at.unwrap() <= deregistered.started_at.unwrap(),
        "bridged at {:?}, deregistration started at {:?}",
        bridged.done_at,
        deregistered.started_at
    );
    // And it stayed live until web was whole off node-0: its evicted pods'
    // replacements take seconds to start, and a view still showing the
    // evicted pods Ready must not end it at once.
    let (evicted, unbridged) = (step("evict"), step("unbridge-traffic"));
    assert!(
        unbridged.done_at.unwrap() > evicted.done_at.unwrap() + 1000,
        "traffic shifted back {} ms after the evictions",
        unbridged.done_at.unwrap() - evicted.done_at.unwrap()
    );
    assert!(w.get("/admin/cloud").await["bridge"]["switches"].as_u64().unwrap_or(0) >= 1);
    w.agent.take();
}

impl World {
    async fn response_keys_sync(&self) -> Vec<String> {
        self.response_keys().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_without_running_a_step_twice() {
    let mut w = World::start(0.05).await;
    let (_, file0) = w.token_of_pod_on("node-0").await;
    w.start_agent("node-0", &file0);
    w.inject("node-0").await;
    // Kill -9 the server as soon as the first step is recorded done.
    let store = w.store().await;
    let key = loop {
        if let Some((key, r)) = w.first_response().await {
            if r.steps[0].done_at.is_some() {
                break key;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut server = w.server.take().unwrap();
    server.0.kill().unwrap();
    let _ = server.0.wait();
    let killed_at = store.response(&key).await.unwrap().unwrap();
    w.start_server().await;
    w.wait("the resumed response finished", Duration::from_secs(40), async |w| {
        w.store().await.unfinished().await.map(|u| u.is_empty()).unwrap_or(false)
    })
    .await;
    let done = store.response(&key).await.unwrap().unwrap();
    for (i, (before, after)) in killed_at.steps.iter().zip(&done.steps).enumerate() {
        assert!(after.done_at.is_some(), "step {i} not done");
        if before.done_at.is_some() {
            assert_eq!(before, after, "step {i} ran again after the restart");
        }
    }
    assert!(cordoned(&w.node("node-0").await));
    assert_eq!(w.response_keys().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_during_a_redis_outage_is_not_lost() {
    // Slower world: the two-minute notice lasts 24 s here, longer than the outage.
    let mut w = World::start(0.2).await;
    let (_, file0) = w.token_of_pod_on("node-0").await;
    w.redis.stop();
    w.start_agent("node-0", &file0);
    w.inject("node-0").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!cordoned(&w.node("node-0").await), "nothing can be recorded while Redis is down");
    w.redis.restart().unwrap();
    w.wait("node-0 cordoned after Redis came back", Duration::from_secs(15), async |w| {
        cordoned(&w.node("node-0").await)
    })
    .await;
    w.wait("one recorded response", Duration::from_secs(15), async |w| w.response_keys().await.len() == 1)
        .await;
}

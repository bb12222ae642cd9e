//! The agent's credential on the durable path, with real processes: `costop
//! emu`, redis-server, `costop server` and `costop agent` given only Redis.
//! The agent's own token gets its node answered; an agent run with a
//! workload pod's token is refused (counted, never acted on).

use costop_store::redis_server::RedisServer;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, free_port, Proc};

struct World {
    dir: PathBuf,
    emu_url: String,
    server_url: String,
    redis: RedisServer,
    http: reqwest::Client,
    procs: Vec<Proc>,
}

impl World {
    async fn get(&self, url: &str) -> Value {
        let text = match self.http.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    async fn wait(&self, what: &str, timeout: Duration, check: impl AsyncFn(&World) -> bool) {
        let start = Instant::now();
        while !check(self).await {
            if start.elapsed() > timeout {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "timed out waiting for {what}; server log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A pod on `node` and its token in a file.
    async fn pod_token(&self, ns: &str, account: &str, name: &str, node: &str) -> PathBuf {
        let _ = self
            .http
            .post(format!("{}/api/v1/namespaces", self.emu_url))
            .json(&json!({"metadata": {"name": ns}}))
            .send()
            .await;
        let pod = json!({"metadata": {"name": name},
            "spec": {"nodeName": node, "serviceAccountName": account, "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "c", "image": "costop:dev", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
        let r = self
            .http
            .post(format!("{}/api/v1/namespaces/{ns}/pods", self.emu_url))
            .json(&pod)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
        let token = self.get(&format!("{}/admin/tokens/{ns}/{name}", self.emu_url)).await["token"]
            .as_str()
            .unwrap()
            .to_string();
        let file = self.dir.join(format!("token-{name}"));
        std::fs::write(&file, token).unwrap();
        file
    }

    fn agent(&mut self, node: &str, token: &Path) {
        let child = Command::new(bin())
            .args([
                "agent",
                "--imds-url",
                &format!("{}/imds/{node}", self.emu_url),
                "--redis-url",
                &self.redis.url(),
            ])
            .args(["--poll-ms", "100", "--token-path"])
            .arg(token)
            .env("COSTOP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(format!("agent-{node}.log"))).unwrap())
            .spawn()
            .unwrap();
        self.procs.push(Proc(child));
    }

    async fn inject(&self, node: &str) {
        let r = self
            .http
            .post(format!("{}/admin/nodes/{node}/notice", self.emu_url))
            .json(&json!({"interruption": {"action": "terminate", "in_seconds": 120}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }

    async fn cordoned(&self, node: &str) -> bool {
        let n = self.get(&format!("{}/api/v1/nodes/{node}", self.emu_url)).await;
        n["spec"]["unschedulable"] == true
    }

    async fn metric(&self, line: &str) -> u64 {
        let text =
            self.http.get(format!("{}/metrics", self.server_url)).send().await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix(line)).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_entries_are_acted_on_only_with_the_agents_own_token() {
    let dir = std::env::temp_dir().join(format!("costop-trust-agent-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = json!({"nodes": [{"count": 3, "instance_type": "m5.xlarge", "zone": "us-east-1a", "capacity_type": "spot"}],
        "deployments": [{"name": "web", "replicas": 6, "cpu": "250m", "memory": "256Mi", "min_available": 4}]});
    std::fs::write(dir.join("scenario.json"), scenario.to_string()).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let mut emu = Command::new(bin())
        .args(["emu", "--scenario"])
        .arg(dir.join("scenario.json"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--time-scale", "0.05"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(emu.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let emu_url = line.split_whitespace().last().unwrap().to_string();
    std::thread::spawn(move || for _ in lines.lines() {});
    let redis = RedisServer::start().expect("redis-server");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Command::new(bin())
        .args([
            "server",
            "--listen",
            &listen,
            "--redis-url",
            &redis.url(),
            "--emu-url",
            &emu_url,
            "--identity",
            "trust",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("COSTOP_LOG", "info")
        .env("COSTOP_PLAN_KEY", "a key from a Secret")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let mut w = World {
        dir,
        emu_url,
        server_url: format!("http://{listen}"),
        redis,
        http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap(),
        procs: vec![Proc(emu), Proc(server)],
    };
    w.wait("the server leads", Duration::from_secs(30), async |w| {
        w.get(&format!("{}/readyz", w.server_url)).await == Value::String("leader".into())
    })
    .await;

    // node-1: an agent running with a workload pod's token (default account).
    let workload = w.pod_token("default", "default", "workload-on-node-1", "node-1").await;
    w.agent("node-1", &workload);
    w.inject("node-1").await;
    w.wait("the entry refused", Duration::from_secs(15), async |w| {
        w.metric("costop_stream_entries_refused_total{reason=\"not-the-agent\"}").await == 1
    })
    .await;

    // node-0: the agent's own token (costop-agent in costop-system), Redis only.
    let agent = w.pod_token("costop-system", "costop-agent", "costop-agent-node-0", "node-0").await;
    w.agent("node-0", &agent);
    w.inject("node-0").await;
    w.wait("node-0 cordoned", Duration::from_secs(15), async |w| w.cordoned("node-0").await).await;
    assert!(!w.cordoned("node-1").await, "the workload token's notice was never acted on");
    assert_eq!(w.metric("costop_stream_entries_refused_total{reason=\"not-the-agent\"}").await, 1);
    assert_eq!(w.metric("costop_notices_total{kind=\"spot-interruption\",source=\"agent\"}").await, 1);
}

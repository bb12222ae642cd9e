//! Real processes for the trust tests (`trust_redis.rs`, `trust_forward.rs`):
//! `costop emu`, `costop server` replicas and `redis-cli`, driven over
//! their HTTP APIs only, as an operator or an attacker would. Included
//! with `mod common; #[path = "common/procs.rs"] mod procs;`.
#![allow(dead_code)]

use crate::common::{bin, free_port, strip_ansi, Proc};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The plan key the replicas share (as from the `costop-plan-key` Secret).
pub const PLAN_KEY: &str = "a plan key from a Secret, 32 b";

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A fresh directory for one test's files and logs.
pub fn test_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("costop-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

/// `costop emu` with `nodes` Spot nodes of one pod each.
pub struct Emu {
    pub url: String,
    pub kubeconfig: PathBuf,
    _proc: Proc,
}

pub fn emu(dir: &Path, nodes: u32) -> Emu {
    let (proc, kubeconfig) = crate::common::start_emu(dir, nodes, 1);
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    let url = kc.lines().find_map(|l| l.trim().strip_prefix("server:")).unwrap().trim().to_string();
    Emu { url, kubeconfig, _proc: proc }
}

impl Emu {
    pub async fn get(&self, path: &str) -> Value {
        let text = match http().get(format!("{}{path}", self.url)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    /// Whether the node is cordoned, as the emulated API server says.
    pub async fn cordoned(&self, node: &str) -> bool {
        self.get(&format!("/api/v1/nodes/{node}")).await["spec"]["unschedulable"] == true
    }

    /// The instance id of a node (from its providerID).
    pub async fn instance_of(&self, node: &str) -> String {
        let n = self.get(&format!("/api/v1/nodes/{node}")).await;
        let id = n["spec"]["providerID"].as_str().unwrap_or_else(|| panic!("{node} has a providerID: {n}"));
        id.rsplit('/').next().unwrap().to_string()
    }

    /// A pod of `account` in `ns` on `node`, and its bound token.
    pub async fn pod_token(&self, ns: &str, account: &str, name: &str, node: &str) -> String {
        let _ = http()
            .post(format!("{}/api/v1/namespaces", self.url))
            .json(&json!({"metadata": {"name": ns}}))
            .send()
            .await;
        let pod = json!({"metadata": {"name": name},
            "spec": {"nodeName": node, "serviceAccountName": account, "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "c", "image": "costop:dev",
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
        let r =
            http().post(format!("{}/api/v1/namespaces/{ns}/pods", self.url)).json(&pod).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
        self.get(&format!("/admin/tokens/{ns}/{name}")).await["token"].as_str().unwrap().to_string()
    }

    /// The token of the agent's pod on `node` (the deployed service account).
    pub async fn agent_token(&self, node: &str) -> String {
        self.pod_token("costop-system", "costop-agent", &format!("costop-agent-{node}"), node).await
    }
}

/// One `costop server` process.
pub struct Server {
    pub identity: String,
    pub url: String,
    pub log: PathBuf,
    pub proc: Proc,
}

/// `costop server` on a free loopback port with `emu` as cluster and cloud,
/// the shared [`PLAN_KEY`], and `env` added (`{port}` in a value: its port).
pub fn server(dir: &Path, emu: &Emu, redis_url: &str, identity: &str, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let log = dir.join(format!("server-{identity}-{port}.log"));
    let child = Command::new(bin())
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--redis-url", redis_url])
        .args(["--emu-url", &emu.url, "--identity", identity, "--kubeconfig"])
        .arg(&emu.kubeconfig)
        .env("COSTOP_LOG", "info")
        .env("COSTOP_PLAN_KEY", PLAN_KEY)
        .envs(env.iter().map(|(k, v)| (k, v.replace("{port}", &port.to_string()))))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Server { identity: identity.into(), url: format!("http://127.0.0.1:{port}"), log, proc: Proc(child) }
}

impl Server {
    pub async fn text(&self, path: &str) -> String {
        match http().get(format!("{}{path}", self.url)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// `leader`, `follower`, or empty when it does not answer.
    pub async fn role(&self) -> String {
        self.text("/readyz").await
    }

    /// The value of the metric line that starts with `line` (0 if absent).
    pub async fn metric(&self, line: &str) -> u64 {
        let text = self.text("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(line).filter(|rest| rest.starts_with(' ')))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Its log so far, without terminal colours.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGTERM, and wait for it to exit cleanly.
    pub fn terminate(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.proc.0.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exited = self.proc.0.wait().unwrap();
        assert!(exited.success(), "{} exits cleanly on SIGTERM: {exited:?}", self.identity);
    }

    /// POST a notice body with a bearer token: status and body.
    pub async fn post(&self, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = http()
            .post(format!("{}/v1/notices", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// Poll `check` every 50 ms; past `timeout`, fail with the tails of `logs`.
pub async fn wait(what: &str, timeout: Duration, logs: &[&Path], mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > timeout {
            let mut tails = String::new();
            for log in logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                tails += &format!(
                    "\n== {}\n{}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            panic!("timed out after {timeout:?} waiting for {what}{tails}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `redis-cli -p PORT ARGS…` (what anyone with access to Redis can run):
/// its output, or a failure naming why it could not run.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli ({e}); it comes with redis-server (scripts/test installs it)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && !stdout.starts_with("ERR") && !stdout.starts_with("(error)"),
        "redis-cli {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_string()
}

/// A Spot interruption notice for `instance`, taking effect at `at` (Unix ms).
pub fn interruption(instance: &str, at: u64) -> costop_core::Notice {
    costop_core::Notice {
        instance_id: instance.into(),
        kind: costop_core::NoticeKind::SpotInterruption {
            action: costop_core::notice::InstanceAction::Terminate,
            effective_at: at,
        },
        received_at: now_ms(),
        source: costop_core::NoticeSource::Agent,
    }
}

//! A world for the server's trust tests: the emulated cluster in this
//! process, a real `redis-server`, and the real server (`costop_server::run`)
//! listening on loopback.

#![allow(dead_code)]

use costop_emu::admin::{DeploymentSpec, NodeGroup, Scenario};
use costop_emu::kinds::idx;
use costop_emu::{EmuConfig, Emulator};
use costop_store::redis_server::RedisServer;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

pub async fn until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The emulated cluster at 20× speed: three Spot nodes with a Deployment.
pub async fn start_emu(name: &str) -> (Emulator, PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("costop-{name}-{}-{}", std::process::id(), free_addr().port()));
    std::fs::create_dir_all(&dir).unwrap();
    let emu = Emulator::start(EmuConfig {
        kubeconfig: dir.join("kubeconfig"),
        time_scale: 0.05,
        tick: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let scenario = Scenario {
        nodes: vec![NodeGroup {
            count: 3,
            instance_type: "m5.xlarge".into(),
            zone: "us-east-1a".into(),
            capacity_type: "spot".into(),
        }],
        deployments: vec![DeploymentSpec {
            name: "web".into(),
            namespace: None,
            replicas: 6,
            cpu: "250m".into(),
            memory: "256Mi".into(),
            min_available: Some(4),
        }],
        placeholders: None,
    };
    costop_emu::admin::load(&emu.state, &scenario).unwrap();
    (emu, dir)
}

/// The instance id of an emulated node.
pub fn instance_of(emu: &Emulator, node: &str) -> String {
    let n = emu.state.store.get(idx::NODES, "", node).unwrap();
    n["spec"]["providerID"].as_str().unwrap().rsplit('/').next().unwrap().to_string()
}

/// A pod on `node` in `namespace` with `service_account`, and its token.
pub fn pod_token(emu: &Emulator, namespace: &str, service_account: &str, name: &str, node: &str) -> String {
    if emu.state.store.get(idx::NAMESPACES, "", namespace).is_err() {
        let _ = emu.state.create(idx::NAMESPACES, "", json!({"metadata": {"name": namespace}}));
    }
    let pod = json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
        "name": "costop-agent", "uid": "ds", "controller": true}]},
        "spec": {"nodeName": node, "serviceAccountName": service_account, "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "agent", "image": "costop:dev"}]}});
    emu.state.create(idx::PODS, namespace, pod).unwrap();
    emu.state.pod_token(namespace, name).unwrap()
}

/// The agent's token on `node`: a pod of the `costop-agent` service
/// account in `costop-system`, as deployed.
pub fn agent_token(emu: &Emulator, node: &str) -> String {
    pod_token(emu, "costop-system", "costop-agent", &format!("costop-agent-{node}"), node)
}

pub struct Server {
    pub base: String,
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<Result<(), costop_server::ServerError>>,
}

/// The server on `redis_url`, with the emulated world as cluster and
/// cloud; returns once it answers (not necessarily leading).
pub async fn start_server(emu: &Emulator, redis_url: Option<String>, identity: &str) -> Server {
    start_server_with(emu, redis_url, identity, costop_core::Policy::default()).await
}

/// The plan key the test servers share (as replicas share a Secret).
pub const PLAN_KEY: &str = "the plan key from a Secret";

/// [`start_server`] with a policy.
pub async fn start_server_with(
    emu: &Emulator,
    redis_url: Option<String>,
    identity: &str,
    policy: costop_core::Policy,
) -> Server {
    let mut config = server_config(emu, redis_url, identity);
    config.policy = policy;
    start_configured(config).await
}

/// The server's configuration in these tests: the emulated world as
/// cluster and cloud, a free port, and [`PLAN_KEY`].
pub fn server_config(
    emu: &Emulator,
    redis_url: Option<String>,
    identity: &str,
) -> costop_server::ServerConfig {
    costop_server::ServerConfig {
        listen: free_addr(),
        redis_url,
        kubeconfig: Some(emu.kubeconfig.clone()),
        emu_url: Some(emu.url()),
        aws: None,
        policy: costop_core::Policy::default(),
        identity: identity.into(),
        plan_key: Some(PLAN_KEY.into()),
        allow_unsigned_plans: false,
        advertise_url: None,
        dry_run: false,
    }
}

/// Start the server on `config`; returns once it answers (or has ended).
pub async fn start_configured(config: costop_server::ServerConfig) -> Server {
    let listen = config.listen;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(costop_server::run(config, rx));
    let base = format!("http://{listen}");
    let http = http();
    until("the server answers", Duration::from_secs(20), async || {
        task.is_finished() || http.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    Server { base, stop, task }
}

impl Server {
    pub async fn role(&self) -> String {
        match http().get(format!("{}/readyz", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn wait_leading(&self) {
        until("the server leads", Duration::from_secs(30), async || self.role().await == "leader").await;
    }

    pub async fn post(&self, notice: &costop_core::Notice, token: &str) -> (u16, String) {
        let r = http()
            .post(format!("{}/v1/notices", self.base))
            .bearer_auth(token)
            .json(notice)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn metrics(&self) -> String {
        http().get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap()
    }
}

pub fn interruption(instance: &str, effective_at: u64) -> costop_core::Notice {
    costop_core::Notice {
        instance_id: instance.into(),
        kind: costop_core::NoticeKind::SpotInterruption {
            action: costop_core::notice::InstanceAction::Terminate,
            effective_at,
        },
        received_at: now_ms(),
        source: costop_core::NoticeSource::Agent,
    }
}

pub fn rebalance(instance: &str, notice_time: u64) -> costop_core::Notice {
    costop_core::Notice {
        instance_id: instance.into(),
        kind: costop_core::NoticeKind::RebalanceRecommendation { notice_time },
        received_at: now_ms(),
        source: costop_core::NoticeSource::Agent,
    }
}

pub async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

pub async fn response_keys(url: &str) -> Vec<String> {
    let mut c = redis_conn(url).await;
    let mut keys: Vec<String> =
        redis::cmd("KEYS").arg("costop:response:*").query_async(&mut c).await.unwrap_or_default();
    keys.sort();
    keys
}

pub fn cordoned(emu: &Emulator, node: &str) -> bool {
    let n = emu.state.store.get(idx::NODES, "", node).unwrap();
    n["spec"]["unschedulable"] == true
        && n["spec"]["taints"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["key"] == "costop.io/interruption"))
}

pub fn redis() -> RedisServer {
    RedisServer::start().expect("redis-server (scripts/test installs it)")
}

/// A TCP proxy in front of Redis that, once, holds back Redis's replies for
/// `delay` as soon as a client sends a command containing `marker` (the
/// command itself reaches Redis at once: it is the answer that is late).
pub struct DelayProxy {
    pub addr: SocketAddr,
    pub fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DelayProxy {
    pub async fn start(upstream: SocketAddr, marker: &'static [u8], delay: Duration) -> DelayProxy {
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let armed = fired.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let hold: Arc<Mutex<Option<Instant>>> = Arc::default();
                let (hold_in, armed) = (hold.clone(), armed.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if buf[..n].windows(marker.len()).any(|w| w == marker)
                            && !armed.swap(true, Ordering::SeqCst)
                        {
                            *hold_in.lock().unwrap() = Some(Instant::now() + delay);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let until = hold.lock().unwrap().take();
                        if let Some(until) = until {
                            tokio::time::sleep_until(until.into()).await;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        DelayProxy { addr, fired }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }
}

/// The credentials moto_server accepts, in the environment the AWS SDK
/// reads: set once for the whole test binary, whose tests run in parallel
/// threads (the aws_response and aws_restore files used to set them in
/// each test).
pub fn moto_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    });
}

//! The agent against fake instance metadata and a fake server intake (plain
//! HTTP over loopback), and a real `redis-server`.

use costop_agent::{Agent, AgentConfig, AgentError, Delivered, Sink};
use costop_core::notice::InstanceAction;
use costop_core::ports::{Clock, StorePort};
use costop_core::{Notice, NoticeKey, NoticeKind, NoticeSource};
use costop_store::{RedisStore, SystemClock};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// One request as the fake HTTP server saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: String,
    body: String,
}

type Handler = Arc<dyn Fn(&Request) -> (u16, String) + Send + Sync>;

/// A minimal HTTP/1.1 server: one request per connection.
struct FakeHttp {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeHttp {
    async fn start(handler: Handler) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let handler = handler.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let mut first = head.lines().next().unwrap_or("").split_whitespace();
                    let request = Request {
                        method: first.next().unwrap_or("").to_string(),
                        path: first.next().unwrap_or("").to_string(),
                        headers: head.clone(),
                        body: String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string(),
                    };
                    let (code, body) = handler(&request);
                    seen.lock().unwrap().push(request);
                    let response = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Self { url, requests }
    }

    fn requests(&self, method: &str, path: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .cloned()
            .collect()
    }
}

/// An intake answering with `codes` in turn, then the last one forever.
async fn intake(codes: &[u16]) -> FakeHttp {
    let codes = codes.to_vec();
    let calls = AtomicUsize::new(0);
    FakeHttp::start(Arc::new(move |r: &Request| {
        if r.path != "/v1/notices" {
            return (404, "{}".into());
        }
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let code = codes[n.min(codes.len() - 1)];
        (code, format!("{{\"status\": \"{code}\"}}"))
    }))
    .await
}

fn config(server: Option<&str>, redis: Option<&str>) -> AgentConfig {
    AgentConfig {
        imds_url: "http://127.0.0.1:9".into(),
        server_url: server.map(str::to_string),
        redis_url: redis.map(str::to_string),
        token_path: None,
        poll: Duration::from_millis(50),
    }
}

type Deliveries = mpsc::UnboundedReceiver<(NoticeKey, Delivered)>;

fn agent(config: AgentConfig) -> (Arc<Agent<SystemClock>>, Deliveries) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Agent::try_new(config, Arc::new(SystemClock), tx).expect("a valid configuration")), rx)
}

/// An interruption notice taking effect `in_ms` from now.
fn notice(in_ms: u64) -> Notice {
    let now = SystemClock.now_ms();
    Notice {
        instance_id: "i-0123456789abcdef0".into(),
        kind: NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: now + in_ms },
        received_at: now,
        source: NoticeSource::Agent,
    }
}

fn drain(rx: &mut Deliveries) -> Vec<Delivered> {
    let mut all = Vec::new();
    while let Ok((_, d)) = rx.try_recv() {
        all.push(d);
    }
    all
}

#[test]
fn an_agent_without_a_sink_refuses_to_start() {
    let (tx, _rx) = mpsc::unbounded_channel();
    for (server, redis) in [(None, None), (Some(""), None), (None, Some("  ")), (Some(""), Some(""))] {
        let err = Agent::try_new(config(server, redis), Arc::new(SystemClock), tx.clone()).err();
        assert_eq!(err, Some(AgentError::NoSink), "{server:?} {redis:?}");
    }
    let message = AgentError::NoSink.to_string();
    assert!(message.contains("COSTOP_SERVER_URL") && message.contains("COSTOP_REDIS_URL"), "{message}");
    // A URL that is not one is refused too, named and without its password.
    let err = config(None, Some("redis//agent:hunter2@redis:6379")).check().unwrap_err().to_string();
    assert!(err.contains("redis") && !err.contains("hunter2"), "{err}");
    let err = config(Some("costop-server:8480"), None).check().unwrap_err().to_string();
    assert!(err.contains("server URL `costop-server:8480`"), "{err}");
    assert!(config(Some("http://costop-server:8480"), None).check().is_ok());
    assert!(config(None, Some("redis://redis:6379/")).check().is_ok());
}

#[test]
fn passwords_never_reach_a_log_line() {
    let r = costop_agent::redacted("redis://agent:hunter2@redis.costop-system:6379/");
    assert!(!r.contains("hunter2") && r.contains("redis.costop-system:6379"), "{r}");
    assert_eq!(costop_agent::redacted("redis://redis:6379/"), "redis://redis:6379/");
}

#[tokio::test]
async fn an_imds_body_with_an_extra_field_is_delivered_once() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/imds/spot-instance-action.json");
    let body = std::fs::read_to_string(&fixture)
        .unwrap_or_else(|e| panic!("fixture {} (testdata/imds): {e}", fixture.display()));
    let mut body: serde_json::Value = serde_json::from_str(&body).unwrap();
    body["fieldAwsAddsLater"] = serde_json::json!({"anything": [1, "two"]});
    let body = body.to_string();
    let imds = FakeHttp::start(Arc::new(move |r: &Request| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", "/latest/api/token") => (200, "token-1".into()),
        ("GET", "/latest/meta-data/instance-id") => (200, "i-0123456789abcdef0".into()),
        ("GET", "/latest/meta-data/spot/instance-action") => (200, body.clone()),
        _ => (404, String::new()),
    }))
    .await;
    let server = intake(&[202, 200]).await;
    let mut cfg = config(Some(&server.url), None);
    cfg.imds_url = imds.url.clone();
    let (agent, mut rx) = agent(cfg);
    let (stop_tx, stop) = watch::channel(false);
    let running = tokio::spawn(agent.clone().run(stop));
    let (key, first) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(key.instance_id, "i-0123456789abcdef0");
    assert_eq!(key.stated_time, 1_795_508_520_000, "the fixture's time");
    assert_eq!(first, Delivered { server: Sink::Taken, redis: Sink::NotConfigured });
    // Many more polls of the same body: still one delivery.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let polls = imds.requests("GET", "/latest/meta-data/spot/instance-action").len();
    assert!(polls >= 5, "the agent kept polling: {polls} polls");
    assert_eq!(server.requests("POST", "/v1/notices").len(), 1, "delivered once");
    assert!(drain(&mut rx).is_empty());
    let posted: Notice = serde_json::from_str(&server.requests("POST", "/v1/notices")[0].body).unwrap();
    assert_eq!(posted.key(), key);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap();
    assert_eq!(agent.gave_up(), 0);
}

#[tokio::test]
async fn a_refusing_server_is_retried_until_it_takes_the_notice() {
    // 401 (a token not yet known), 503 (no leader), then accepted.
    let server = intake(&[401, 401, 503, 202]).await;
    let token = std::env::temp_dir().join(format!("costop-agent-token-{}", std::process::id()));
    std::fs::write(&token, "pod-token\n").unwrap();
    let mut cfg = config(Some(&server.url), None);
    cfg.token_path = Some(token.clone());
    let (agent, mut rx) = agent(cfg);
    let (_stop_tx, stop) = watch::channel(false);
    let done =
        tokio::time::timeout(Duration::from_secs(20), agent.deliver(notice(60_000), stop)).await.unwrap();
    assert_eq!(done, Delivered { server: Sink::Taken, redis: Sink::NotConfigured });
    let posts = server.requests("POST", "/v1/notices");
    assert_eq!(posts.len(), 4);
    assert!(posts.iter().all(|r| r.headers.contains("Bearer pod-token")), "{posts:?}");
    // One change reported: the one that happened.
    assert_eq!(drain(&mut rx), [done]);
    assert_eq!(agent.gave_up(), 0);
    let _ = std::fs::remove_file(token);
}

#[tokio::test]
async fn a_sink_that_never_takes_the_notice_is_given_up_at_its_deadline_and_counted() {
    let server = intake(&[401]).await;
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = format!("redis://127.0.0.1:{}/", closed.local_addr().unwrap().port());
    drop(closed);
    let (agent, mut rx) = agent(config(Some(&server.url), Some(&redis)));
    let (_stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    let done =
        tokio::time::timeout(Duration::from_secs(20), agent.deliver(notice(1_500), stop)).await.unwrap();
    assert_eq!(done, Delivered { server: Sink::GaveUp, redis: Sink::GaveUp });
    assert!(started.elapsed() >= Duration::from_millis(1_400), "retried up to the deadline");
    assert!(started.elapsed() < Duration::from_secs(8), "not much past it: {:?}", started.elapsed());
    assert!(server.requests("POST", "/v1/notices").len() >= 3, "retried in between");
    assert_eq!(agent.gave_up(), 2);
    for d in drain(&mut rx) {
        assert!(!d.taken(), "no delivery reported: {d:?}");
    }
    // A notice already past its deadline is tried once, then given up.
    let (_stop_tx, stop) = watch::channel(false);
    let (agent, _rx) = self::agent(config(Some(&server.url), None));
    let before = server.requests("POST", "/v1/notices").len();
    let done = agent.deliver(notice(0), stop).await;
    assert_eq!(done.server, Sink::GaveUp);
    assert_eq!(server.requests("POST", "/v1/notices").len(), before + 1);
    assert_eq!(agent.gave_up(), 1);
}

#[tokio::test]
async fn a_delivery_is_only_reported_where_it_happened() {
    // Server only: Redis is never said to have the notice.
    let server = intake(&[202]).await;
    let (agent, mut rx) = agent(config(Some(&server.url), None));
    let (_stop_tx, stop) = watch::channel(false);
    let done = agent.deliver(notice(60_000), stop).await;
    assert_eq!(done, Delivered { server: Sink::Taken, redis: Sink::NotConfigured });
    assert_eq!(drain(&mut rx), [done]);

    // A server that refuses, and a shutdown: nothing is reported as taken.
    let server = intake(&[401]).await;
    let (agent, mut rx) = self::agent(config(Some(&server.url), None));
    let (stop_tx, stop) = watch::channel(false);
    let delivering = tokio::spawn({
        let agent = agent.clone();
        async move { agent.deliver(notice(60_000), stop).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(5), delivering).await.unwrap().unwrap();
    assert_eq!(done, Delivered { server: Sink::GaveUp, redis: Sink::NotConfigured });
    assert!(drain(&mut rx).iter().all(|d| !d.taken()));
    assert_eq!(agent.gave_up(), 1);
}

#[tokio::test]
async fn redis_is_retried_until_it_comes_back() {
    let mut redis = costop_store::redis_server::RedisServer::start()
        .unwrap_or_else(|e| panic!("this test needs redis-server: {e}"));
    redis.stop();
    let (agent, mut rx) = agent(config(None, Some(&redis.url())));
    let (_stop_tx, stop) = watch::channel(false);
    let delivering = tokio::spawn({
        let agent = agent.clone();
        async move { agent.deliver(notice(60_000), stop).await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!delivering.is_finished(), "still retrying while Redis is down");
    assert!(drain(&mut rx).is_empty(), "nothing reported while Redis is down");
    redis.restart().unwrap();
    let done = tokio::time::timeout(Duration::from_secs(15), delivering).await.unwrap().unwrap();
    assert_eq!(done, Delivered { server: Sink::NotConfigured, redis: Sink::Taken });
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let entries = store.read_notices("test", 100).await.unwrap();
    assert_eq!(entries.len(), 1, "one stream entry");
    assert_eq!(agent.gave_up(), 0);
}

#[tokio::test]
async fn the_stream_entry_carries_the_agents_token() {
    let redis = costop_store::redis_server::RedisServer::start()
        .unwrap_or_else(|e| panic!("this test needs redis-server: {e}"));
    let dir = std::env::temp_dir().join(format!("costop-agent-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "the-agents-token\n").unwrap();
    let mut config = config(None, Some(&redis.url()));
    config.token_path = Some(token_file);
    let (agent, _rx) = agent(config);
    let (_stop_tx, stop) = watch::channel(false);
    let done = agent.deliver(notice(60_000), stop).await;
    assert_eq!(done.redis, Sink::Taken);
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let entries = store.read_signed("test", 100).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].token.as_deref(), Some("the-agents-token"), "trimmed, as on HTTP");
    assert!(entries[0].notice.is_ok());
}

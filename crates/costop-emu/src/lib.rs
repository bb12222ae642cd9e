//! `costop emu`: the simulated cluster in real time, served over HTTP as a
//! subset of the Kubernetes API, so the real kube-rs client and `kubectl`
//! run against it unchanged.
//!
//! The API server part (`api`, `store`, `patch`, `select`, `table`,
//! `validate`) keeps objects and serves them; the cluster part (`cluster`)
//! plays the scheduler, the kubelets, the Deployment and disruption-budget
//! controllers and the node lifecycle, with the world's timings
//! (`costop_facts::timings`), scaled by a time factor for tests; the cloud
//! part (`cloud`) plays the instances, Spot pools, EBS volumes, load
//! balancer and function bridge behind them (the admin API drives it),
//! with burstable nodes' CPU credits (`burstable`).

pub mod admin;
pub mod api;
pub mod burstable;
pub mod cloud;
pub mod cluster;
pub mod imds;
pub mod kinds;
pub mod patch;
pub mod select;
pub mod store;
pub mod table;
pub mod time;
pub mod validate;

use crate::kinds::{idx, KINDS};
use crate::select::selector_object_matches;
use crate::store::{meta_mut, Store, StoreError};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use costop_facts::timings::Timings;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Who a pod token belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct PodIdentity {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod uid.
    pub uid: String,
    /// Service account.
    pub service_account: String,
}

/// The pods' service-account tokens, both ways.
#[derive(Debug, Default)]
struct Tokens {
    by_token: HashMap<String, PodIdentity>,
    /// (namespace, pod) → its token.
    by_pod: HashMap<(String, String), String>,
}

/// How the emulator runs.
#[derive(Debug, Clone)]
pub struct EmuConfig {
    /// Address to listen on (port 0 = any free port).
    pub listen: SocketAddr,
    /// Where to write the kubeconfig.
    pub kubeconfig: PathBuf,
    /// World durations.
    pub timings: Timings,
    /// Multiplier on every duration (1.0 = real time; tests use less).
    pub time_scale: f64,
    /// Controller period.
    pub tick: Duration,
    /// The HTTP listener's limits.
    pub http: HttpLimits,
}

impl Default for EmuConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: PathBuf::from("costop-emu.kubeconfig"),
            timings: Timings::default(),
            time_scale: 1.0,
            tick: Duration::from_millis(100),
            http: HttpLimits::default(),
        }
    }
}

/// State shared by the API handlers and the cluster controllers.
pub struct EmuState {
    /// Objects.
    pub store: Arc<Store>,
    /// Bearer token of the kubeconfig's user.
    pub admin_token: String,
    tokens: Mutex<Tokens>,
    /// Scaled durations.
    pub config: EmuConfig,
    pub(crate) cluster: Mutex<cluster::ClusterState>,
    /// The emulated cloud (instances, pools, volumes, load balancer, bridge).
    pub(crate) cloud: Mutex<cloud::CloudState>,
    /// Evictions are checked and carried out one at a time, so two
    /// concurrent ones cannot both pass a budget that allows one.
    evictions: Mutex<()>,
}

/// The longest world duration the emulator waits (ten years): longer
/// requests, infinite ones included, are this.
pub const MAX_SCALED: Duration = Duration::from_secs(10 * 365 * 86_400);

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// Five random-looking lowercase characters, as Kubernetes appends to generated names.
pub fn random_suffix() -> String {
    let seed = COUNTER.fetch_add(1, Ordering::Relaxed)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = costop_facts::rng::Rng::new(seed);
    (0..5).map(|_| b"bcdfghjklmnpqrstvwxz2456789"[(rng.next_u64() % 27) as usize] as char).collect()
}

fn token() -> String {
    let seed = COUNTER.fetch_add(1, Ordering::Relaxed)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = costop_facts::rng::Rng::new(seed);
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

impl EmuState {
    /// A fresh state with the `default` and `kube-system` namespaces.
    pub fn new(config: EmuConfig) -> Arc<Self> {
        let st = Arc::new(Self {
            store: Arc::new(Store::new()),
            admin_token: token(),
            tokens: Mutex::new(Tokens::default()),
            config,
            cluster: Mutex::new(cluster::ClusterState::default()),
            cloud: Mutex::new(cloud::CloudState::default()),
            evictions: Mutex::new(()),
        });
        for ns in ["default", "kube-system"] {
            let _ = st.store.create(
                idx::NAMESPACES,
                "",
                json!({"metadata": {"name": ns}, "status": {"phase": "Active"}}),
            );
        }
        st
    }

    /// A duration of the world, scaled. Never panics: NaN and negative
    /// values are zero, and anything longer than [`MAX_SCALED`] (infinity
    /// included) is `MAX_SCALED`, so `Instant::now() + d` cannot overflow.
    pub fn scaled(&self, seconds: f64) -> Duration {
        let s = seconds * self.config.time_scale;
        if s.is_nan() || s <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(s.min(MAX_SCALED.as_secs_f64()))
    }

    /// Whether the request may proceed: no credentials (the emulator serves
    /// loopback only, and client-go sends no bearer token over plain HTTP),
    /// the admin token, or a token issued to a live pod. A wrong token is refused.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) else {
            return true;
        };
        let Some(token) = auth.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        token == self.admin_token
            || self.tokens.lock().unwrap_or_else(|e| e.into_inner()).by_token.contains_key(token)
    }

    /// Whether the request carries the admin credential: no credentials at
    /// all (loopback clients, as above) or the kubeconfig's token. A pod's
    /// token is not admin.
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        match headers.get(axum::http::header::AUTHORIZATION) {
            None => true,
            Some(auth) => {
                auth.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")) == Some(&self.admin_token)
            }
        }
    }

    /// The token issued to a pod (its projected service-account token).
    pub fn pod_token(&self, namespace: &str, pod: &str) -> Option<String> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_pod
            .get(&(namespace.to_string(), pod.to_string()))
            .cloned()
    }

    /// Create an object, with the defaults the real API server and
    /// admission would add.
    pub fn create(&self, kind: usize, namespace: &str, mut object: Value) -> Result<Value, StoreError> {
        if KINDS[kind].namespaced && self.store.get(idx::NAMESPACES, "", namespace).is_err() {
            return Err(StoreError::NotFound { kind: "namespaces".into(), name: namespace.into() });
        }
        if kind == idx::PODS {
            if !object["status"]["phase"].is_string() {
                object["status"] = json!({"phase": "Pending"});
            }
            if !object["spec"]["serviceAccountName"].is_string() {
                object["spec"]["serviceAccountName"] = json!("default");
            }
            if let Some(pc) = object["spec"]["priorityClassName"].as_str() {
                if let Ok(class) = self.store.get(idx::PRIORITY_CLASSES, "", pc) {
                    object["spec"]["priority"] = class["value"].clone();
                }
            }
        }
        let created = self.store.create(kind, namespace, object)?;
        if kind == idx::PODS {
            let id = PodIdentity {
                namespace: namespace.into(),
                pod: store::name_of(&created).into(),
                uid: created["metadata"]["uid"].as_str().unwrap_or("").into(),
                service_account: created["spec"]["serviceAccountName"].as_str().unwrap_or("default").into(),
            };
            let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            let t = token();
            tokens.by_pod.insert((id.namespace.clone(), id.pod.clone()), t.clone());
            tokens.by_token.insert(t, id);
        }
        Ok(created)
    }

    /// Delete an object. A bound pod with a grace period is marked
    /// terminating; its kubelet removes it once it has stopped.
    pub fn delete(
        &self,
        kind: usize,
        namespace: &str,
        name: &str,
        grace: Option<i64>,
    ) -> Result<Value, StoreError> {
        if kind != idx::PODS {
            return self.store.delete(kind, namespace, name);
        }
        let pod = self.store.get(kind, namespace, name)?;
        let bound = pod["spec"]["nodeName"].is_string();
        let grace = grace.or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30);
        if !bound || grace <= 0 {
            self.forget_pod(namespace, name);
            return self.store.delete(kind, namespace, name);
        }
        self.store.update(kind, namespace, name, |p| {
            if !p["metadata"]["deletionTimestamp"].is_string() {
                let meta = meta_mut(p);
                meta.insert("deletionTimestamp".into(), json!(time::now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
        })
    }

    pub(crate) fn forget_pod(&self, namespace: &str, name: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tokens.by_pod.remove(&(namespace.to_string(), name.to_string())) {
            tokens.by_token.remove(&t);
        }
    }

    /// The eviction subresource: allowed unless a disruption budget forbids.
    pub fn evict(&self, namespace: &str, name: &str) -> Response {
        let _one_at_a_time = self.evictions.lock().unwrap_or_else(|e| e.into_inner());
        let pod = match self.store.get(idx::PODS, namespace, name) {
            Ok(p) => p,
            Err(e) => {
                let details = serde_json::json!({"name": name, "kind": "pods"});
                return api::status_details(404, "NotFound", e.to_string(), details);
            }
        };
        if pod["metadata"]["deletionTimestamp"].is_string() {
            return success(201);
        }
        let (pdbs, _) = self.store.list(idx::PDBS, Some(namespace), |b| {
            b["spec"]["selector"].is_object() && selector_object_matches(&b["spec"]["selector"], &pod)
        });
        for pdb in &pdbs {
            if let Some((healthy, desired)) = cluster::eviction_refused(&self.store, &pod, pdb) {
                let budget = store::name_of(pdb);
                let message = "Cannot evict pod as it would violate the pod's disruption budget.";
                let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": "TooManyRequests", "code": 429,
                    "details": {"causes": [{"reason": "DisruptionBudget",
                        "message": format!("The disruption budget {budget} needs {desired} healthy pods and has {healthy} currently")}]}});
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response();
            }
        }
        match self.delete(idx::PODS, namespace, name, None) {
            Ok(_) => success(201),
            Err(e) => api::status(404, "NotFound", e.to_string()),
        }
    }

    /// Answer a TokenReview for a token the emulator issued to a pod.
    pub fn review_token(&self, review: &Value) -> Value {
        let token = review["spec"]["token"].as_str().unwrap_or("");
        let id = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).by_token.get(token).cloned();
        let pod = id.as_ref().and_then(|id| {
            self.store
                .get(idx::PODS, &id.namespace, &id.pod)
                .ok()
                .filter(|p| p["metadata"]["uid"].as_str() == Some(&id.uid))
        });
        let status = match (id, pod) {
            (Some(id), Some(pod)) => {
                let mut extra = json!({"authentication.kubernetes.io/pod-name": [id.pod], "authentication.kubernetes.io/pod-uid": [id.uid]});
                if let Some(node) = pod["spec"]["nodeName"].as_str() {
                    extra["authentication.kubernetes.io/node-name"] = json!([node]);
                }
                json!({"authenticated": true, "user": {
                    "username": format!("system:serviceaccount:{}:{}", id.namespace, id.service_account),
                    "uid": id.uid,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", id.namespace), "system:authenticated"],
                    "extra": extra}, "audiences": review["spec"]["audiences"].clone()})
            }
            _ => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"creationTimestamp": null}, "spec": review["spec"].clone(), "status": status})
    }
}

fn success(code: u16) -> Response {
    let body =
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code});
    (
        axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A running emulator.
pub struct Emulator {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// Shared state (for tests and the admin API).
    pub state: Arc<EmuState>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Emulator {
    /// Bind, start the controllers and the server, and write the kubeconfig.
    pub async fn start(config: EmuConfig) -> std::io::Result<Emulator> {
        let listen = config.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        let state = EmuState::new(config);
        write_kubeconfig(&state.config.kubeconfig, addr, &state.admin_token).map_err(|e| {
            let path = state.config.kubeconfig.display();
            std::io::Error::new(e.kind(), format!("cannot write the kubeconfig {path}: {e}"))
        })?;
        let (shutdown, mut stop) = tokio::sync::watch::channel(false);
        let app = axum::Router::new().fallback(api::handle).with_state(state.clone());
        tokio::spawn(serve(listener, app, state.config.http.clone(), stop.clone()));
        let cluster_state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(cluster_state.config.tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                // On a blocking thread: a long pass must not hold a runtime
                // worker that HTTP requests wait on.
                let st = cluster_state.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    cluster::reconcile(&st, Instant::now());
                    cloud::tick(&st, Instant::now());
                })
                .await;
            }
        });
        Ok(Emulator { addr, kubeconfig: state.config.kubeconfig.clone(), state, shutdown })
    }

    /// Base URL of the API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving and stop the controllers.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The HTTP listener's limits, as the server's (`costop-server`'s
/// `listener`): a connection that does not send a whole request head in
/// [`HttpLimits::header_read_timeout`] (idle keep-alive ones included) is
/// closed; a handler that has not answered in
/// [`HttpLimits::request_timeout`] gets 408; a body beyond
/// [`HttpLimits::max_body_bytes`] gets 413; at
/// [`HttpLimits::max_connections`] a new connection closes the oldest one
/// that is not serving a request (a watch streaming its events counts as
/// serving), and is itself closed when all are.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections held at once.
    pub max_connections: usize,
    /// Time to send a whole request head.
    pub header_read_timeout: Duration,
    /// Time for a handler to answer (a watch answers at once, then streams).
    pub request_timeout: Duration,
    /// Largest request body (the Kubernetes API server's limit: 3 MiB).
    pub max_body_bytes: usize,
    /// Largest request head.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 3 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// One connection: requests (and response bodies) in flight, and the
/// switch that closes it.
#[derive(Default)]
struct Conn {
    in_flight: AtomicUsize,
    close: tokio::sync::Notify,
}

/// Connections open now, oldest first.
#[derive(Default)]
struct Conns {
    next: AtomicU64,
    open: Mutex<std::collections::BTreeMap<u64, Arc<Conn>>>,
}

impl Conns {
    /// Room for a new connection, closing the oldest idle one at the limit;
    /// `None` when every held connection is serving.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Conn>)> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while open.len() >= max.max(1) {
            let idle =
                open.iter().find(|(_, c)| c.in_flight.load(Ordering::SeqCst) == 0).map(|(id, _)| *id)?;
            if let Some(c) = open.remove(&idle) {
                c.close.notify_one();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        open.insert(id, conn.clone());
        Some((id, conn))
    }

    fn gone(&self, id: u64) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// Counts a request in flight on its connection while alive.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(c: &Arc<Conn>) -> Self {
        c.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(c.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serve `app` on `listener` within `limits` until `stop` turns true.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use futures::StreamExt;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let app = app.layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes));
    let conns = Arc::new(Conns::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!(error = %e, "emulator: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some((id, conn)) = conns.admit(limits.max_connections) else {
            tracing::warn!(
                max = limits.max_connections,
                "emulator: every connection is busy; turned one away"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, conns, limits, mut stop) = (app.clone(), conns.clone(), limits.clone(), stop.clone());
        tokio::spawn(async move {
            let served = conn.clone();
            let timeout = limits.request_timeout;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let guard = InFlight::new(&served);
                let app = app.clone();
                async move {
                    let resp = match tokio::time::timeout(timeout, app.oneshot(req.map(Body::new))).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(never)) => match never {},
                        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out\n").into_response(),
                    };
                    // A request stays in flight while its body streams (watches).
                    let (parts, body) = resp.into_parts();
                    if axum::body::HttpBody::size_hint(&body).exact().is_some() {
                        drop(guard);
                        return Ok(axum::http::Response::from_parts(parts, body));
                    }
                    let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
                        let _ = &guard;
                        chunk
                    }));
                    Ok::<_, std::convert::Infallible>(axum::http::Response::from_parts(parts, body))
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(100);
            let http = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(http);
            let stopping = tokio::select! {
                _ = http.as_mut() => false,
                _ = conn.close.notified() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                http.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), http.as_mut()).await;
            }
            conns.gone(id);
        });
    }
}

/// Write a kubeconfig that points at the emulator with the admin token.
pub fn write_kubeconfig(path: &Path, addr: SocketAddr, token: &str) -> std::io::Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: costop-emu\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: costop-emu\n  context:\n    cluster: costop-emu\n    user: costop-emu\n    namespace: default\n\
         current-context: costop-emu\nusers:\n- name: costop-emu\n  user:\n    token: {token}\n"
    );
    std::fs::write(path, text)
}

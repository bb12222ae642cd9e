//! costop's Cluster port on kube-rs: watch-backed caches (reflectors) of
//! nodes, pods, Deployments and budgets; taint and cordon; evictions (one
//! request a call: a budget's refusal, HTTP 429, is `Evicted::Refused`, and
//! the executor decides when to ask again); placeholder pods; Kubernetes
//! Events.
//!
//! It deletes a pod around its budget only when asked to
//! (`delete_doomed_pod`: its node goes at a known deadline), and says so
//! on the pod.

pub mod apis;
pub mod batch;
pub mod cache;
pub mod view;

pub use apis::{Apis, DiscoveryError, PolicyVersion};

use cache::{NodeLite, NodeRec, PodLite, PodRec, Table};
use costop_core::model::{INTERRUPTION_TAINT, STANDBY_TAINT};
use costop_core::ports::{ClusterPort, Evicted};
use costop_core::time::Millis;
use costop_core::{ClusterView, Name, StandbyMode};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Namespace of costop's own objects (placeholder Deployment, events).
pub const COSTOP_NAMESPACE: &str = "costop-system";
/// The placeholder Deployment.
pub const PLACEHOLDER_DEPLOYMENT: &str = "costop-headroom";
/// The placeholders' PriorityClass (negative: preempted first).
pub const PLACEHOLDER_CLASS: &str = "costop-placeholder";
/// Priority of placeholders.
pub const PLACEHOLDER_PRIORITY: i32 = -10;

/// Node annotation that keeps Cluster Autoscaler from removing the node
/// (its FAQ: "How can I prevent Cluster Autoscaler from scaling down a
/// particular node?"). costop sets it on a rebalance recommendation's
/// early replacements for the recommendation's window.
pub const SCALE_DOWN_DISABLED: &str = "cluster-autoscaler.kubernetes.io/scale-down-disabled";
/// Node label recording how costop treats a node: `spot`, `on-demand`,
/// `standby-running`, `standby-stopped`, `burstable`.
pub const CAPACITY_LABEL: &str = "costop.io/capacity-type";
/// Node label (value `true`) of on-demand nodes launched because no Spot
/// pool could take the pods, put on the node group or NodePool that backs
/// Spot up: costop moves such nodes back to Spot once a pool can take
/// them (see `NodeView::fallback`).
pub const FALLBACK_LABEL: &str = "costop.io/fallback";

/// An adapter failure, naming the action and the object.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The API refused or the call failed.
    #[error("{action} {object}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// On what.
        object: String,
        /// The client's error.
        source: kube::Error,
    },
    /// Malformed input from the caller.
    #[error("{0}")]
    Invalid(String),
    /// A change sent in one request with others ([`batch`]) failed: the
    /// request's error.
    #[error("{0}")]
    Batched(String),
    /// The cluster lacks an API costop needs, or could not be asked.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

fn api_err(action: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeError {
    let object = object.into();
    move |source| KubeError::Api { action, object, source }
}

/// The kube-rs Cluster adapter.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    /// For cordons: a client of its own (see [`KubeCluster::with_urgent_client`]).
    urgent: Client,
    nodes: Arc<Table<NodeRec>>,
    pods: Arc<Table<PodRec>>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    replicasets: Store<ReplicaSet>,
    budgets: Store<PodDisruptionBudget>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    apis: Arc<tokio::sync::OnceCell<Result<Apis, DiscoveryError>>>,
    health: Arc<Vec<CacheHealth>>,
    tasks: std::sync::Arc<Vec<tokio::task::JoinHandle<()>>>,
    /// Bumped by every event any cache applies.
    changes: Arc<Changes>,
    /// The last view built, shared by every reader until the caches change
    /// (or, while they keep changing, for [`VIEW_MAX_AGE`]).
    memo: Arc<std::sync::Mutex<Option<Memo>>>,
    /// Held while a view is built.
    building: Arc<std::sync::Mutex<()>>,
    /// Turns to send an eviction or a delete before the deadline (see
    /// [`KubeCluster::evict`]).
    evicting: Arc<tokio::sync::Semaphore>,
    /// Events being recorded, and how many were dropped (see
    /// [`KubeCluster::record_event`]).
    events: Arc<EventLane>,
    /// Surges waiting for their Deployment's next patch.
    surges: Arc<batch::Batches<SurgeChange, Result<bool, KubeError>>>,
    /// Placeholder claims waiting for the placeholder Deployment's next
    /// scale-down (how many each claimed).
    headroom: Arc<batch::Batches<u32, Result<(), KubeError>>>,
}

/// Placeholder pods one claim deletes at once: every placeholder of a
/// full 16-vCPU node (32 of 500m) in one round, so a single notice's claim
/// is not slowed; in a burst each response claims one or two, and the
/// client's limits pace them.
const PLACEHOLDER_DELETES_AT_ONCE: usize = 32;

/// Events recorded at once; one more while all are being sent is dropped.
/// An Event is a note for people: in a burst a whole pool's pods each
/// earn one (a read for the pod's uid and a write, with the client's
/// requests per second shared with the evictions and deletes the Events
/// describe), and client-go's recorder likewise drops Events when its
/// queue is full rather than hold up the controller.
pub const EVENTS_IN_FLIGHT: usize = 16;

/// The Events lane: its turns and the count of Events dropped.
#[derive(Debug)]
struct EventLane {
    turns: tokio::sync::Semaphore,
    dropped: std::sync::atomic::AtomicU64,
}

impl Default for EventLane {
    fn default() -> Self {
        Self { turns: tokio::sync::Semaphore::new(EVENTS_IN_FLIGHT), dropped: Default::default() }
    }
}

/// How long a view is handed out again while the caches keep changing: a
/// burst of notices and the responses' waits read one view per this
/// period instead of each building its own from every pod (the caches are
/// themselves a watch behind the API server).
pub const VIEW_MAX_AGE: Duration = Duration::from_millis(250);

/// The caches' change counter, and a wake-up for those waiting on it.
#[derive(Default)]
struct Changes {
    generation: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Changes {
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// A view and the change counter it was built at.
struct Memo {
    generation: u64,
    built: std::time::Instant,
    view: std::sync::Arc<ClusterView>,
}

/// What one API client may ask of the API server: requests in flight at
/// once (the rest wait their turn, so a burst of responses never opens a
/// connection per request) and requests started per second (a burst may
/// start `qps` at once, then waits for the next second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Requests in flight at once ([`MAX_IN_FLIGHT_ENV`], default 64).
    pub max_in_flight: usize,
    /// Requests started per second ([`QPS_ENV`], default 500; client-go's
    /// default is 5, which a whole-pool reclaim of thousands of pods would
    /// wait minutes on).
    pub qps: u64,
}

/// Environment variable: the API client's requests in flight.
pub const MAX_IN_FLIGHT_ENV: &str = "COSTOP_KUBE_MAX_IN_FLIGHT";
/// Environment variable: the API client's requests per second.
pub const QPS_ENV: &str = "COSTOP_KUBE_QPS";

impl Default for ClientLimits {
    fn default() -> Self {
        Self { max_in_flight: 64, qps: 500 }
    }
}

impl ClientLimits {
    /// The limits from [`MAX_IN_FLIGHT_ENV`] and [`QPS_ENV`] (unset: the
    /// defaults); anything but a whole number from 1 to 100,000 is refused.
    pub fn from_env() -> Result<Self, KubeError> {
        Self::parse(std::env::var(MAX_IN_FLIGHT_ENV).ok().as_deref(), std::env::var(QPS_ENV).ok().as_deref())
    }

    /// The limits from the two settings' text (`None`: the default).
    pub fn parse(max_in_flight: Option<&str>, qps: Option<&str>) -> Result<Self, KubeError> {
        let number = |name: &str, text: Option<&str>, default: u64| -> Result<u64, KubeError> {
            match text.map(str::trim) {
                None | Some("") => Ok(default),
                Some(t) => t.parse::<u64>().ok().filter(|n| (1..=100_000).contains(n)).ok_or_else(|| {
                    KubeError::Invalid(format!("{name}={t:?}: want a whole number from 1 to 100000"))
                }),
            }
        };
        let d = Self::default();
        Ok(Self {
            max_in_flight: number(MAX_IN_FLIGHT_ENV, max_in_flight, d.max_in_flight as u64)? as usize,
            qps: number(QPS_ENV, qps, d.qps)?,
        })
    }
}

/// How long [`KubeCluster::ready`] waits for the caches' first lists: a
/// 150,000-pod cluster is listed in about 300 pages, which an emulator
/// sharing two cores with the server served in 16 to over 30 s.
pub const READY_LIMIT: Duration = Duration::from_secs(90);

/// How long discovery keeps retrying an API server it cannot reach.
const DISCOVERY_PATIENCE: Duration = Duration::from_secs(20);

/// One cache's list/watch state, as the reflector task sees it.
pub struct CacheHealth {
    /// The resource (`pods`).
    pub name: &'static str,
    /// When the last full list finished (ms since the epoch; 0: never).
    listed_at: AtomicU64,
    /// When the watch last failed with no full list since (0: healthy).
    broken_since: AtomicU64,
    /// Full lists done (the first one and every relist).
    lists: AtomicU64,
    /// The cluster's change counter this cache's events bump.
    changes: Arc<Changes>,
}

impl CacheHealth {
    fn new(name: &'static str, changes: Arc<Changes>) -> Self {
        Self {
            name,
            listed_at: AtomicU64::new(0),
            broken_since: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            changes,
        }
    }

    /// When the last full list finished (ms since the epoch), if ever.
    pub fn listed_at(&self) -> Option<Millis> {
        Some(self.listed_at.load(Ordering::SeqCst)).filter(|t| *t > 0)
    }

    /// Since when the cache has missed changes (a watch error with no
    /// relist since), if it has.
    pub fn broken_since(&self) -> Option<Millis> {
        Some(self.broken_since.load(Ordering::SeqCst)).filter(|t| *t > 0)
    }

    /// Full lists done so far.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    fn failed(&self) {
        let _ = self.broken_since.compare_exchange(0, now_ms(), Ordering::SeqCst, Ordering::SeqCst);
    }

    fn listed(&self) {
        let now = now_ms();
        self.listed_at.store(now, Ordering::SeqCst);
        self.lists.fetch_add(1, Ordering::SeqCst);
        let broken = self.broken_since.swap(0, Ordering::SeqCst);
        if broken > 0 {
            tracing::info!(
                cache = self.name,
                stale_ms = now.saturating_sub(broken),
                "cache relisted after a watch failure"
            );
        }
    }
}

/// The watchers' retry delay: 100 ms doubling up to 1 s, and back to
/// 100 ms after any success. kube-rs's default grows to 30 s and keeps that
/// for two minutes, so after an API outage the caches stayed stale for up to
/// a minute after the API was back; with a 1 s ceiling a relist starts
/// within about a second of the API answering again.
struct QuickBackoff {
    next: Duration,
}

impl QuickBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CEILING: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Self::CEILING);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// Drive a reflector's event stream: record lists and failures in `health`.
async fn drive<K>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    health: Arc<Vec<CacheHealth>>,
    index: usize,
) {
    futures::pin_mut!(stream);
    // One warning per outage: the retries that follow (every second at
    // most) are debug lines; the relist that ends it is logged by `listed`.
    let mut failing = false;
    while let Some(item) = stream.next().await {
        let h = &health[index];
        if item.is_ok() {
            h.changes.bump();
        }
        match item {
            Ok(watcher::Event::InitDone) => {
                failing = false;
                h.listed()
            }
            Ok(_) => {}
            Err(e) if failing => {
                h.failed();
                tracing::debug!(cache = h.name, error = %e, "watch failed again; retrying");
            }
            Err(e) => {
                failing = true;
                h.failed();
                tracing::warn!(cache = h.name, error = %e, "watch failed; retrying every second at most");
            }
        }
    }
}

fn reflect<K>(
    api: Api<K>,
    health: Arc<Vec<CacheHealth>>,
    index: usize,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).modify(slim))
        .backoff(QuickBackoff::new());
    (reader, tokio::spawn(drive(stream, health, index)))
}

/// What no decision reads of a cached object: its managed fields and
/// annotations (a `kubectl apply`'s last configuration among them).
fn slim<K: kube::Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
}

/// A lean cache (see [`cache`]): each object read off the watch into its record.
fn reflect_lean<K>(
    client: Client,
    table: Arc<Table<K::Rec>>,
    health: Arc<Vec<CacheHealth>>,
    index: usize,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + cache::Decoded
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(Api::<K>::all(client), watcher::Config::default())
        .map(move |event| {
            if let Ok(e) = &event {
                table.apply(e);
            }
            event
        })
        .backoff(QuickBackoff::new());
    tokio::spawn(drive(stream, health, index))
}

/// A `policy/v1beta1` budget as the `policy/v1` type (same fields costop reads).
fn budget_from_beta(o: DynamicObject) -> Option<PodDisruptionBudget> {
    let mut v = serde_json::to_value(o).ok()?;
    v["apiVersion"] = json!("policy/v1");
    v["kind"] = json!("PodDisruptionBudget");
    match serde_json::from_value(v) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "a policy/v1beta1 PodDisruptionBudget does not read as one; ignored");
            None
        }
    }
}

/// A cache of an optional kind (StatefulSets, ReplicaSets), when the
/// cluster serves it (the emulator may not) and costop may list it;
/// otherwise an empty cache that counts as listed.
fn reflect_optional<K>(
    client: Client,
    apis: Arc<tokio::sync::OnceCell<Result<Apis, DiscoveryError>>>,
    health: Arc<Vec<CacheHealth>>,
    index: usize,
    served: fn(&Apis) -> bool,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, mut writer) = reflector::store();
    let task = tokio::spawn(async move {
        let found = apis.get_or_init(|| apis::discover(&client, DISCOVERY_PATIENCE)).await.clone();
        let served = found.as_ref().is_ok_and(served);
        let plural = K::plural(&()).to_string();
        // A ClusterRole written before costop read this kind does not let
        // it list them: say how to fix it, and go on without (their pods are
        // then planned as pods without a workload), rather than never ready.
        let allowed = !served
            || match Api::<K>::all(client.clone()).list(&ListParams::default().limit(1)).await {
                Err(e) if status_code(&e) == Some(403) => {
                    tracing::warn!(
                        error = %e,
                        "cannot list {plural}: add {{apiGroups: [apps], resources: [{plural}], verbs: [get, list, watch]}} \
                         to costop-server's ClusterRole; until then their budgets do not shape the waves"
                    );
                    false
                }
                _ => true,
            };
        if served && allowed {
            let api = Api::<K>::all(client);
            let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).modify(slim))
                .backoff(QuickBackoff::new());
            drive(stream, health, index).await
        } else {
            writer.apply_watcher_event(&watcher::Event::Init);
            writer.apply_watcher_event(&watcher::Event::InitDone);
            health[index].listed();
        }
    });
    (reader, task)
}

/// The budgets cache: on the policy version discovery found.
fn reflect_budgets(
    client: Client,
    apis: Arc<tokio::sync::OnceCell<Result<Apis, DiscoveryError>>>,
    health: Arc<Vec<CacheHealth>>,
    index: usize,
) -> (Store<PodDisruptionBudget>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let found = apis.get_or_init(|| apis::discover(&client, DISCOVERY_PATIENCE)).await.clone();
        match found.map(|a| a.policy) {
            Ok(PolicyVersion::V1) => {
                let api = Api::<PodDisruptionBudget>::all(client);
                let stream =
                    reflector::reflector(writer, watcher(api, watcher::Config::default()).modify(slim))
                        .backoff(QuickBackoff::new());
                drive(stream, health, index).await
            }
            Ok(PolicyVersion::V1beta1) => {
                let ar = ApiResource {
                    group: "policy".into(),
                    version: "v1beta1".into(),
                    api_version: "policy/v1beta1".into(),
                    kind: "PodDisruptionBudget".into(),
                    plural: "poddisruptionbudgets".into(),
                };
                let api = Api::<DynamicObject>::all_with(client, &ar);
                let events = watcher(api, watcher::Config::default()).map(|item| {
                    item.map(|ev| match ev {
                        watcher::Event::Apply(o) => budget_from_beta(o).map(watcher::Event::Apply),
                        watcher::Event::Delete(o) => budget_from_beta(o).map(watcher::Event::Delete),
                        watcher::Event::InitApply(o) => budget_from_beta(o).map(watcher::Event::InitApply),
                        watcher::Event::Init => Some(watcher::Event::Init),
                        watcher::Event::InitDone => Some(watcher::Event::InitDone),
                    })
                });
                let events = events.filter_map(|item| async move { item.transpose() });
                let stream = reflector::reflector(writer, events).backoff(QuickBackoff::new());
                drive(stream, health, index).await
            }
            // `ready` reports it; there is nothing to watch.
            Err(e) => tracing::debug!(error = %e, "budgets are not watched"),
        }
    });
    (reader, task)
}

impl KubeCluster {
    /// Start the reflectors on a client (in-cluster, kubeconfig, or built by hand).
    ///
    /// Discovery runs first for the budgets (`policy/v1` or `policy/v1beta1`);
    /// [`KubeCluster::ready`] reports any API the cluster lacks.
    pub fn start(client: Client) -> Self {
        let changes = Arc::new(Changes::default());
        let health: Arc<Vec<CacheHealth>> = Arc::new(
            [
                "nodes",
                "pods",
                "deployments",
                "poddisruptionbudgets",
                "persistentvolumeclaims",
                "persistentvolumes",
                "statefulsets",
                "replicasets",
            ]
            .into_iter()
            .map(|name| CacheHealth::new(name, changes.clone()))
            .collect(),
        );
        let apis = Arc::new(tokio::sync::OnceCell::new());
        let (nodes, pods) = (Table::<NodeRec>::new(), Table::<PodRec>::new());
        let a = reflect_lean::<NodeLite>(client.clone(), nodes.clone(), health.clone(), 0);
        let b = reflect_lean::<PodLite>(client.clone(), pods.clone(), health.clone(), 1);
        let (deployments, c) = reflect(Api::<Deployment>::all(client.clone()), health.clone(), 2);
        let (budgets, d) = reflect_budgets(client.clone(), apis.clone(), health.clone(), 3);
        let (claims, e) = reflect(Api::<PersistentVolumeClaim>::all(client.clone()), health.clone(), 4);
        let (volumes, f) = reflect(Api::<PersistentVolume>::all(client.clone()), health.clone(), 5);
        let (statefulsets, g) =
            reflect_optional(client.clone(), apis.clone(), health.clone(), 6, |a: &Apis| a.statefulsets);
        let limits = ClientLimits::from_env().unwrap_or_default();
        let (replicasets, h) =
            reflect_optional(client.clone(), apis.clone(), health.clone(), 7, |a: &Apis| a.replicasets);
        Self {
            urgent: client.clone(),
            client,
            nodes,
            pods,
            deployments,
            statefulsets,
            replicasets,
            budgets,
            claims,
            volumes,
            apis,
            health,
            tasks: std::sync::Arc::new(vec![a, b, c, d, e, f, g, h]),
            changes,
            memo: Arc::default(),
            building: Arc::default(),
            evicting: Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight)),
            events: Arc::default(),
            surges: Arc::default(),
            headroom: Arc::default(),
        }
    }

    /// Cordon (taint and cordon) through `client`, a client of its own
    /// (its own requests in flight and per second): in a burst, every
    /// response's cordon, what stops new pods landing, goes out at once
    /// instead of waiting behind the evictions of the responses before it.
    pub fn with_urgent_client(mut self, client: Client) -> Self {
        self.urgent = client;
        self
    }

    /// What discovery found (it runs once, on first use).
    pub async fn apis(&self) -> Result<Apis, KubeError> {
        let client = self.client.clone();
        let found =
            self.apis.get_or_init(|| async move { apis::discover(&client, DISCOVERY_PATIENCE).await }).await;
        found.clone().map_err(KubeError::from)
    }

    /// Each cache's list/watch state.
    pub fn cache_health(&self) -> &[CacheHealth] {
        &self.health
    }

    /// Wait up to `limit` for every cache to be fresh (listed, and relisted
    /// since its last watch failure); the reason when they are not.
    pub async fn wait_fresh(&self, limit: Duration) -> Result<(), String> {
        let start = tokio::time::Instant::now();
        loop {
            match self.stale() {
                None => return Ok(()),
                Some(why) if start.elapsed() >= limit => return Err(why),
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Why the caches cannot be trusted now, if they cannot: a cache whose
    /// watch failed and that has not relisted since, or one never listed.
    pub fn stale(&self) -> Option<String> {
        let now = now_ms();
        let reasons: Vec<String> = self
            .health
            .iter()
            .filter_map(|h| match (h.listed_at(), h.broken_since()) {
                (None, _) => Some(format!("{} not listed yet", h.name)),
                (_, Some(t)) => Some(format!(
                    "{} watch failed {} ms ago, not relisted since",
                    h.name,
                    now.saturating_sub(t)
                )),
                _ => None,
            })
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// A client from the environment: in a pod its service account, else
    /// `$KUBECONFIG` or `~/.kube/config`.
    pub async fn infer_client() -> Result<Client, KubeError> {
        Self::client_from_config(Self::load_config(None).await?)
    }

    /// The client configuration from a kubeconfig file, or (None) from the
    /// environment as [`KubeCluster::infer_client`] finds it. Its
    /// `cluster_url` names the API server in messages.
    pub async fn load_config(kubeconfig: Option<&std::path::Path>) -> Result<kube::Config, KubeError> {
        match kubeconfig {
            Some(path) => {
                let invalid = |e: &dyn std::fmt::Display| {
                    KubeError::Invalid(format!("kubeconfig {}: {e}", path.display()))
                };
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| invalid(&e))?;
                kube::Config::from_custom_kubeconfig(file, &Default::default()).await.map_err(|e| invalid(&e))
            }
            None => kube::Config::infer().await.map_err(|e| KubeError::Invalid(format!("kube config: {e}"))),
        }
    }

    /// A client from a config, within [`ClientLimits::from_env`]'s limits.
    /// The client's own retry of 429/503/504 is turned off: costop retries
    /// evictions itself, bounded by the notice's deadline.
    pub fn client_from_config(mut config: kube::Config) -> Result<Client, KubeError> {
        config.default_retry = false;
        // With more than one rustls crypto backend linked (the AWS SDK brings
        // another), rustls cannot pick one itself: choose ring for the process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let limits = ClientLimits::from_env()?;
        let builder =
            kube::client::ClientBuilder::try_from(config).map_err(api_err("connect to", "the API server"))?;
        Ok(builder
            .with_layer(&tower::limit::ConcurrencyLimitLayer::new(limits.max_in_flight))
            .with_layer(&tower::limit::RateLimitLayer::new(limits.qps, Duration::from_secs(1)))
            .build())
    }

    /// A client from a kubeconfig file.
    pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<Client, KubeError> {
        Self::client_from_config(Self::load_config(Some(path)).await?)
    }

    /// Wait until every cache has its first full list.
    /// First checks the cluster serves every API costop needs: an error
    /// names each one missing.
    pub async fn ready(&self) -> Result<(), KubeError> {
        let apis = self.apis().await?;
        tracing::info!(
            server = apis.server_version,
            policy = apis.policy.api_version(),
            "API server discovered"
        );
        let wait = async {
            self.nodes.wait_until_listed().await;
            self.pods.wait_until_listed().await;
            self.deployments.wait_until_ready().await.ok();
            self.statefulsets.wait_until_ready().await.ok();
            self.replicasets.wait_until_ready().await.ok();
            self.budgets.wait_until_ready().await.ok();
            self.claims.wait_until_ready().await.ok();
            self.volumes.wait_until_ready().await.ok();
        };
        tokio::time::timeout(READY_LIMIT, wait)
            .await
            .map_err(|_| KubeError::Invalid(format!("caches not filled within {} s", READY_LIMIT.as_secs())))
    }

    /// The cached node's record, if any.
    pub fn node(&self, name: &str) -> Option<NodeRec> {
        self.nodes.rows().by_key.get(name).cloned()
    }

    /// The cached pods' records.
    pub fn pods(&self) -> Vec<PodRec> {
        self.pods.rows().by_key.values().cloned().collect()
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn patch_node(
        &self,
        client: &Client,
        node: &str,
        action: &'static str,
        f: impl Fn(&mut Node),
    ) -> Result<(), KubeError> {
        let api = Api::<Node>::all(client.clone());
        let mut attempt = 0;
        // No answer at all (a connection dropped under load, as one cordon
        // of a 1,700-notice burst was): asked again, a few times, soon.
        let unanswered = |e: &kube::Error, attempt: u32| {
            matches!(e, kube::Error::Service(_) | kube::Error::HyperError(_)) && attempt < 5
        };
        loop {
            attempt += 1;
            let mut current = match api.get(node).await {
                Ok(n) => n,
                Err(e) if unanswered(&e, attempt) => {
                    tracing::warn!(node, action, error = %e, "no answer reading the node; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    continue;
                }
                Err(e) => return Err(api_err(action, format!("node/{node}"))(e)),
            };
            let before = (current.spec.clone(), current.metadata.labels.clone());
            f(&mut current);
            if (&current.spec, &current.metadata.labels) == (&before.0, &before.1) {
                return Ok(());
            }
            let spec = current.spec.unwrap_or_default();
            // Merge patch on the spec with the version read: a concurrent change
            // makes it fail (409) instead of being overwritten; then read again.
            let patch = json!({"metadata": {"resourceVersion": current.metadata.resource_version,
                                            "labels": current.metadata.labels},
                               "spec": {"unschedulable": spec.unschedulable, "taints": spec.taints}});
            match api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(409) && attempt < 5 => continue,
                Err(e) if unanswered(&e, attempt) => {
                    tracing::warn!(node, action, error = %e, "no answer patching the node; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => return Err(api_err(action, format!("node/{node}"))(e)),
            }
        }
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        if std::sync::Arc::strong_count(&self.tasks) == 1 {
            for t in self.tasks.iter() {
                t.abort();
            }
        }
    }
}

fn set_taint(node: &mut Node, key: &str, on: bool) {
    let spec = node.spec.get_or_insert_with(Default::default);
    let mut taints = spec.taints.take().unwrap_or_default();
    taints.retain(|t| t.key != key);
    if on {
        taints.push(k8s_openapi::api::core::v1::Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    spec.taints = if taints.is_empty() { None } else { Some(taints) };
}

/// costop's own record of how a node is bought (see `view::node_view`).
/// Label the node's capacity type; a `burstable` node stays one whether
/// it is idle spare (tainted) or taking a response's pods.
fn set_capacity_label(node: &mut Node, value: &str) {
    let labels = node.metadata.labels.get_or_insert_with(Default::default);
    if labels.get(CAPACITY_LABEL).map(String::as_str) != Some("burstable") {
        labels.insert(CAPACITY_LABEL.into(), value.into());
    }
}

fn split_pod(pod: &str) -> Result<(&str, &str), KubeError> {
    pod.split_once('/').ok_or_else(|| KubeError::Invalid(format!("pod `{pod}` is not namespace/name")))
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The annotation that marks one response's surge on a Deployment (its
/// value: the replicas the surge added). The notice key is hashed: an
/// annotation's name allows neither `:` nor more than 63 characters.
pub fn surge_annotation(key: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let hash =
        key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("surge.costop.io/{hash:016x}")
}

impl KubeCluster {
    /// Add (`Some(by)`) or take back (`None`) the surge marked `key` on the
    /// Deployment `workload`, in the Deployment's next patch with the other
    /// responses' surges ([`apply_surges`]). Whether it changed anything.
    async fn change_surge(&self, workload: &str, key: &str, by: Option<u32>) -> Result<bool, KubeError> {
        let (ns, _) = workload
            .split_once('/')
            .ok_or_else(|| KubeError::Invalid(format!("deployment `{workload}` is not namespace/name")))?;
        let api = Api::<Deployment>::namespaced(self.client.clone(), ns);
        let object = workload.to_string();
        let apply = move |changes| apply_surges(api.clone(), object.clone(), changes);
        self.surges.submit(workload, (key.to_string(), by), apply).await.unwrap_or_else(|| {
            Err(KubeError::Batched(format!("deployment/{workload}: the surge got no answer")))
        })
    }

    /// Delete the placeholder pod `pod` at once (no grace): 1 if it was
    /// there, 0 if it was gone already.
    async fn delete_placeholder(&self, pod: &str) -> Result<u32, KubeError> {
        let (ns, name) = split_pod(pod)?;
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default().grace_period(0)).await {
            Ok(_) => Ok(1),
            Err(e) if status_code(&e) == Some(404) => Ok(0),
            Err(e) => Err(api_err("delete placeholder", format!("pod/{pod}"))(e)),
        }
    }
}

/// A surge to add or take back: the response's key, and the replicas to
/// add (`Some`) or `None` to take back what that key added.
type SurgeChange = (String, Option<u32>);

/// Times a batch (of surges, or of placeholder claims) reads and patches
/// its Deployment while others change it under the batch.
const PATCH_TRIES: usize = 10;

/// Apply `changes` to the Deployment `workload` (`namespace/name`) in one
/// patch: the replica count and each change's mark (an annotation per
/// key, so a change applied twice changes nothing), naming the version
/// read, so a change made meanwhile by someone else makes it read and
/// try again. Whether each change changed anything, in order.
async fn apply_surges(
    api: Api<Deployment>,
    workload: String,
    changes: Vec<SurgeChange>,
) -> Vec<Result<bool, KubeError>> {
    let object = format!("deployment/{workload}");
    let name = workload.split_once('/').map_or(workload.as_str(), |(_, n)| n);
    let failed = |message: String| changes.iter().map(|_| Err(KubeError::Batched(message.clone()))).collect();
    for _ in 0..PATCH_TRIES {
        let d = match api.get(name).await {
            Ok(d) => d,
            Err(e) => return failed(format!("get {object}: {e}")),
        };
        let mut annotations = d.metadata.annotations.clone().unwrap_or_default();
        let mut replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
        let mut marks = serde_json::Map::new();
        // Each answer, and whether it rests on this batch's patch (a change
        // it makes, or a no-op only because an earlier change here made it).
        let results: Vec<(Result<bool, KubeError>, bool)> = changes
            .iter()
            .map(|(key, by)| {
                let mark = surge_annotation(key);
                let rests_on_patch = marks.contains_key(&mark);
                let answer = match (by, annotations.get(&mark).map(|v| v.parse::<u32>())) {
                    (Some(_), Some(_)) | (None, None) => Ok(false),
                    (Some(by), None) => {
                        replicas += by;
                        annotations.insert(mark.clone(), by.to_string());
                        marks.insert(mark, json!(by.to_string()));
                        Ok(true)
                    }
                    (None, Some(Ok(added))) => {
                        replicas = replicas.saturating_sub(added);
                        annotations.remove(&mark);
                        marks.insert(mark, serde_json::Value::Null);
                        Ok(true)
                    }
                    (None, Some(Err(_))) => {
                        Err(KubeError::Invalid(format!("{object}: annotation {mark} is not a count")))
                    }
                };
                let rests_on_patch = rests_on_patch || matches!(answer, Ok(true));
                (answer, rests_on_patch)
            })
            .collect();
        if marks.is_empty() {
            return results.into_iter().map(|(r, _)| r).collect();
        }
        let patch = json!({
            "metadata": {"resourceVersion": d.metadata.resource_version, "annotations": marks},
            "spec": {"replicas": replicas}});
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return results.into_iter().map(|(r, _)| r).collect(),
            Err(kube::Error::Api(r)) if r.code == 409 => continue,
            Err(e) => {
                let message = format!("surge {object}: {e}");
                return results
                    .into_iter()
                    .map(|(r, rests_on_patch)| match r {
                        Ok(_) if rests_on_patch => Err(KubeError::Batched(message.clone())),
                        other => other,
                    })
                    .collect();
            }
        }
    }
    failed(format!("{object}: changed under every one of {PATCH_TRIES} tries to surge it"))
}

/// Scale the placeholder Deployment down by the placeholders each claim
/// in `claimed` took, in one patch naming the version read (tried again
/// while others change it). A Deployment that is gone needs nothing.
async fn scale_down_headroom(api: Api<Deployment>, claimed: Vec<u32>) -> Vec<Result<(), KubeError>> {
    let total: u32 = claimed.iter().sum();
    let answer =
        |r: Result<(), String>| claimed.iter().map(|_| r.clone().map_err(KubeError::Batched)).collect();
    for _ in 0..PATCH_TRIES {
        let d = match api.get_opt(PLACEHOLDER_DEPLOYMENT).await {
            Ok(Some(d)) => d,
            Ok(None) => return answer(Ok(())),
            Err(e) => return answer(Err(format!("get deployment/{PLACEHOLDER_DEPLOYMENT}: {e}"))),
        };
        let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(0).saturating_sub(total as i32).max(0);
        let patch = json!({"metadata": {"resourceVersion": d.metadata.resource_version}, "spec": {"replicas": replicas}});
        match api.patch(PLACEHOLDER_DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return answer(Ok(())),
            Err(kube::Error::Api(r)) if r.code == 409 => continue,
            Err(e) => return answer(Err(format!("scale deployment/{PLACEHOLDER_DEPLOYMENT}: {e}"))),
        }
    }
    answer(Err(format!(
        "deployment/{PLACEHOLDER_DEPLOYMENT}: changed under every one of {PATCH_TRIES} tries to scale it"
    )))
}

impl ClusterPort for KubeCluster {
    type Error = KubeError;

    const NOTIFIES_CHANGES: bool = true;

    /// The caches' view: built again only when a cache has applied an
    /// event since the last one, and no more often than every
    /// [`VIEW_MAX_AGE`]; readers in between share one (the same `Arc`).
    fn view(&self) -> std::sync::Arc<ClusterView> {
        let current = || {
            let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            let generation = self.changes.generation.load(Ordering::SeqCst);
            let view = memo.as_ref().map(|m| m.view.clone());
            let fresh =
                memo.as_ref().is_some_and(|m| m.generation == generation || m.built.elapsed() < VIEW_MAX_AGE);
            (view, fresh)
        };
        if let (Some(view), true) = current() {
            return view;
        }
        // One builder at a time. While it builds, the others take the last
        // view (no older than a build takes) rather than hold their
        // runtime threads waiting; only the first view is waited for.
        let _building = match self.building.try_lock() {
            Ok(guard) => guard,
            Err(_) => match current() {
                (Some(view), _) => return view,
                (None, _) => self.building.lock().unwrap_or_else(|e| e.into_inner()),
            },
        };
        // Built by the one before, while this one waited? If not, the last
        // view lends the new one its unchanged pods' rows.
        let last = match current() {
            (Some(view), true) => return view,
            (last, _) => last,
        };
        let generation = self.changes.generation.load(Ordering::SeqCst);
        let (nodes, pods) = (self.nodes.rows(), self.pods.rows());
        let built = view::build(
            &view::Objects {
                nodes: &nodes,
                pods: &pods,
                deployments: &self.deployments.state(),
                statefulsets: &self.statefulsets.state(),
                replicasets: &self.replicasets.state(),
                budgets: &self.budgets.state(),
                claims: &self.claims.state(),
                volumes: &self.volumes.state(),
            },
            last.as_ref().map(|v| &v.pods),
        );
        drop((nodes, pods, last));
        // Built here, once, for every reader of this snapshot.
        let view = std::sync::Arc::new(built.with_lookups());
        *self.memo.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Memo { generation, built: std::time::Instant::now(), view: view.clone() });
        view
    }

    fn changed_since(
        &self,
        seen: &std::sync::Arc<ClusterView>,
    ) -> impl std::future::Future<Output = ()> + Send {
        // Weakly: every waiting response asks this, and a strong copy kept
        // the snapshot it saw (150,000 pods) alive until it woke.
        let (changes, memo, seen) =
            (self.changes.clone(), self.memo.clone(), std::sync::Arc::downgrade(seen));
        async move {
            loop {
                let notified = changes.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let stale = match memo.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    Some(m) if std::ptr::eq(std::sync::Arc::as_ptr(&m.view), seen.as_ptr()) => {
                        changes.generation.load(Ordering::SeqCst) != m.generation
                    }
                    // A newer view exists already.
                    _ => true,
                };
                if stale {
                    return;
                }
                notified.await;
            }
        }
    }

    fn workload_pods_bound(&self, node: &str) -> usize {
        // Terminating pods count: they still hold the node.
        self.pods.rows().on_node(node).filter(|p| !p.finished && !p.daemon && !p.placeholder).count()
    }

    fn volume_in_use(&self, volume_id: &str, node: &str) -> bool {
        // Polled while a volume waits to move: only the claims of this
        // node's pods are looked up, in the caches.
        let claims: Vec<(String, Name)> = self
            .pods
            .rows()
            .on_node(node)
            .filter(|p| !p.finished)
            .flat_map(|p| p.claims.iter().map(|c| (p.namespace().to_string(), c.clone())))
            .collect();
        claims.iter().any(|(ns, claim)| {
            self.claims
                .get(&reflector::ObjectRef::new(claim).within(ns))
                .and_then(|claim| claim.spec.as_ref()?.volume_name.clone())
                .and_then(|pv| self.volumes.get(&reflector::ObjectRef::new(&pv)))
                .and_then(|pv| view::ebs_volume(&pv))
                .is_some_and(|(id, _)| id == volume_id)
        })
    }

    async fn taint_and_cordon(&self, node: &str) -> Result<(), KubeError> {
        self.patch_node(&self.urgent, node, "taint and cordon", |n| {
            set_taint(n, INTERRUPTION_TAINT, true);
            n.spec.get_or_insert_with(Default::default).unschedulable = Some(true);
        })
        .await
    }

    async fn untaint_and_uncordon(&self, node: &str) -> Result<(), KubeError> {
        self.patch_node(&self.client, node, "untaint and uncordon", |n| {
            set_taint(n, INTERRUPTION_TAINT, false);
            n.spec.get_or_insert_with(Default::default).unschedulable = None;
        })
        .await
    }

    async fn untaint_standby(&self, node: &str) -> Result<(), KubeError> {
        self.patch_node(&self.client, node, "untaint standby", |n| {
            set_taint(n, STANDBY_TAINT, false);
            n.spec.get_or_insert_with(Default::default).unschedulable = None;
            set_capacity_label(n, "on-demand");
        })
        .await
    }

    async fn taint_standby(&self, node: &str, mode: StandbyMode) -> Result<(), KubeError> {
        self.patch_node(&self.client, node, "taint standby", |n| {
            set_taint(n, STANDBY_TAINT, true);
            set_taint(n, INTERRUPTION_TAINT, false);
            n.spec.get_or_insert_with(Default::default).unschedulable = None;
            set_capacity_label(
                n,
                match mode {
                    StandbyMode::Running => "standby-running",
                    StandbyMode::Stopped => "standby-stopped",
                },
            );
        })
        .await
    }

    async fn evict(&self, pod: &str) -> Result<Evicted, KubeError> {
        let (ns, name) = split_pod(pod)?;
        let policy = Box::pin(self.apis()).await?.policy;
        // A whole pool's evictions (51,000 at full size) may be asked at
        // once. The request's own future (an eviction's future was 3.9 KB
        // with it inline, release build) exists only while it is sent,
        // and no more are sent at once than the client's requests in
        // flight: the others wait their turn, in order, whichever response
        // they belong to. The API handle (a client and its URL, 0.3 KB) too.
        let turn = self.evicting.acquire().await;
        let sent = Box::pin(async {
            let api = Api::<Pod>::namespaced(self.client.clone(), ns);
            match policy {
                PolicyVersion::V1 => api.evict(name, &EvictParams::default()).await.map(|_| ()),
                // kube-rs sends a policy/v1 Eviction; a 1.20 server wants v1beta1.
                PolicyVersion::V1beta1 => {
                    let body = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction",
                                  "metadata": {"name": name, "namespace": ns}});
                    api.create_subresource::<_, serde_json::Value>(
                        "eviction",
                        name,
                        &PostParams::default(),
                        &body,
                    )
                    .await
                    .map(|_| ())
                }
            }
        })
        .await;
        drop(turn);
        match sent {
            Ok(()) => Ok(Evicted::Accepted),
            Err(e) if status_code(&e) == Some(404) => Ok(Evicted::AlreadyGone),
            Err(e) if status_code(&e) == Some(429) => {
                tracing::debug!(pod, "eviction refused by a disruption budget");
                Ok(Evicted::Refused)
            }
            Err(e) => Err(api_err("evict", format!("pod/{pod}"))(e)),
        }
    }

    async fn delete_doomed_pod(&self, pod: &str) -> Result<Evicted, KubeError> {
        let (ns, name) = split_pod(pod)?;
        let node = self.node_of_pod(ns, name);
        // The pod's own grace period: its application shuts down as on an
        // eviction, only its budget is not asked. In turn with the
        // evictions (at a pod's give-up time the executor gives up its
        // eviction still waiting for a turn, so in a burst the turns then
        // go to the deletes): a whole pool's pods may be deleted at once
        // (51,000 at full size), and a request's state exists only while
        // it is sent. The rate the client allows is kept: the cordons'
        // own client stays free for the notices still coming.
        let turn = self.evicting.acquire().await;
        let deleted = Box::pin(async {
            // What the delete answers (the pod, 2 KB) is not kept.
            Api::<Pod>::namespaced(self.client.clone(), ns)
                .delete(name, &DeleteParams::default())
                .await
                .map(drop)
        })
        .await;
        drop(turn);
        match deleted {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => return Ok(Evicted::AlreadyGone),
            Err(e) => return Err(api_err("delete", format!("pod/{pod}"))(e)),
        }
        let on = node.as_deref().map(|n| format!(" from {n}")).unwrap_or_default();
        let message = format!(
            "costop deleted {ns}/{name}{on}: it was not evicted in time (its disruption budget refused, or its \
             workload's extra replicas were not Ready yet), and its node goes at the deadline; deleted now it \
             starts elsewhere before then"
        );
        tracing::warn!(pod, node = node.as_deref(), "pod deleted before the deadline: not evicted in time");
        // On the pod only: the step's Event on the node counts the pods
        // deleted. Boxed: inline, its requests made every waiting delete's
        // future 4 KB (81 MB for 20,000 pods deleted at once).
        let event =
            Box::pin(self.record_event("Pod", Some(ns), name, "Warning", "DoomedPodDeleted", &message));
        if let Err(e) = event.await {
            tracing::warn!(error = %e, "cannot record the Warning Event");
        }
        Ok(Evicted::Accepted)
    }

    async fn surge(&self, workload: &str, key: &str, by: u32) -> Result<bool, KubeError> {
        self.change_surge(workload, key, Some(by)).await
    }

    async fn end_surge(&self, workload: &str, key: &str) -> Result<bool, KubeError> {
        self.change_surge(workload, key, None).await
    }

    async fn scale_placeholders(&self, count: u32) -> Result<(), KubeError> {
        let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone());
        if namespaces.get_opt(COSTOP_NAMESPACE).await.map_err(api_err("get", "namespace"))?.is_none() {
            let ns = serde_json::from_value(json!({"metadata": {"name": COSTOP_NAMESPACE}}))
                .map_err(|e| KubeError::Invalid(e.to_string()))?;
            namespaces
                .create(&PostParams::default(), &ns)
                .await
                .map_err(api_err("create", "namespace/costop-system"))?;
        }
        let classes = Api::<PriorityClass>::all(self.client.clone());
        if classes.get_opt(PLACEHOLDER_CLASS).await.map_err(api_err("get", "priorityclass"))?.is_none() {
            let class: PriorityClass = serde_json::from_value(json!({
                "metadata": {"name": PLACEHOLDER_CLASS}, "value": PLACEHOLDER_PRIORITY, "globalDefault": false,
                "description": "costop placeholder pods: preempted first, they hold room for evicted pods"}))
            .map_err(|e| KubeError::Invalid(e.to_string()))?;
            classes
                .create(&PostParams::default(), &class)
                .await
                .map_err(api_err("create", "priorityclass"))?;
        }
        let deployments = Api::<Deployment>::namespaced(self.client.clone(), COSTOP_NAMESPACE);
        match deployments.get_opt(PLACEHOLDER_DEPLOYMENT).await.map_err(api_err("get", "deployment"))? {
            Some(_) => {
                let patch = json!({"spec": {"replicas": count}});
                deployments
                    .patch(PLACEHOLDER_DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(api_err("scale", "deployment/costop-headroom"))?;
            }
            None => {
                let d: Deployment = serde_json::from_value(json!({
                    "metadata": {"name": PLACEHOLDER_DEPLOYMENT, "labels": {"app": PLACEHOLDER_DEPLOYMENT}},
                    "spec": {"replicas": count, "selector": {"matchLabels": {"app": PLACEHOLDER_DEPLOYMENT}},
                        "template": {"metadata": {"labels": {"app": PLACEHOLDER_DEPLOYMENT}},
                            "spec": {"priorityClassName": PLACEHOLDER_CLASS, "terminationGracePeriodSeconds": 0,
                                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}]}}}}))
                .map_err(|e| KubeError::Invalid(e.to_string()))?;
                deployments
                    .create(&PostParams::default(), &d)
                    .await
                    .map_err(api_err("create", "deployment/costop-headroom"))?;
            }
        }
        Ok(())
    }

    async fn claim_placeholders(&self, pods: &[String]) -> Result<(), KubeError> {
        // Each delete boxed, and at most `PLACEHOLDER_DELETES_AT_ONCE`: in a
        // burst every response claims its placeholders at once (1,700 at
        // full size), and their deletes held inline took 6 KB a response
        // while they waited for the client's turns. The error reported, if
        // any, is the first to come back.
        // (By index: a closure taking `&String` is not general enough for
        // the trait's `Send` future.)
        let deleted: Vec<Result<u32, KubeError>> = futures::stream::iter(0..pods.len())
            .map(|i| Box::pin(self.delete_placeholder(&pods[i])))
            .buffer_unordered(PLACEHOLDER_DELETES_AT_ONCE)
            .collect()
            .await;
        // What was deleted is taken off the Deployment even if another
        // delete failed: else its controller makes those placeholders again.
        let claimed: u32 = deleted.iter().filter_map(|r| r.as_ref().ok()).sum();
        let failed = deleted.into_iter().find_map(Result::err);
        if claimed > 0 {
            let api = Api::<Deployment>::namespaced(self.client.clone(), COSTOP_NAMESPACE);
            let apply = move |claims| scale_down_headroom(api.clone(), claims);
            self.headroom.submit(PLACEHOLDER_DEPLOYMENT, claimed, apply).await.unwrap_or_else(|| {
                Err(KubeError::Batched(format!(
                    "deployment/{PLACEHOLDER_DEPLOYMENT}: the scale-down got no answer"
                )))
            })?;
        }
        failed.map_or(Ok(()), Err)
    }

    async fn forget_node(&self, node: &str) -> Result<usize, KubeError> {
        // The Node first: once it is gone no DaemonSet makes a pod for it
        // again. Then every pod bound to it, from the API (not the cache):
        // a pod the watch has not shown yet must not outlive the node.
        self.delete_node(node).await?;
        let pods = Api::<Pod>::all(self.client.clone());
        let bound = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(api_err("list", format!("pods on node/{node}")))?;
        let no_grace = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        let mut deleted = 0;
        for p in &bound.items {
            let (ns, name) = (
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or(""),
            );
            match Api::<Pod>::namespaced(self.client.clone(), ns).delete(name, &no_grace).await {
                Ok(_) => deleted += 1,
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(api_err("force-delete", format!("pod/{ns}/{name}"))(e)),
            }
        }
        Ok(deleted)
    }

    async fn delete_node(&self, node: &str) -> Result<(), KubeError> {
        match Api::<Node>::all(self.client.clone()).delete(node, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(api_err("delete", format!("node/{node}"))(e)),
        }
    }

    async fn node_event(&self, node: &str, reason: &str, message: &str) -> Result<(), KubeError> {
        self.record_event("Node", None, node, "Normal", reason, message).await
    }

    /// The annotation Cluster Autoscaler reads to leave a node alone
    /// ([`SCALE_DOWN_DISABLED`]), set to "true" or removed; unmarking a
    /// node that is gone is no error.
    async fn hold_from_scale_down(&self, node: &str, hold: bool) -> Result<(), KubeError> {
        let api = Api::<Node>::all(self.client.clone());
        let value = if hold { json!("true") } else { serde_json::Value::Null };
        let patch = json!({"metadata": {"annotations": {SCALE_DOWN_DISABLED: value}}});
        match api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(e) if !hold && status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(api_err("mark scale-down-disabled", format!("node/{node}"))(e)),
        }
    }

    async fn warn_pod_left(&self, pod: &str, why: &str) -> Result<(), KubeError> {
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
        let node = self.node_of_pod(ns, name);
        let on = node.as_deref().map(|n| format!(" on {n}")).unwrap_or_default();
        let message = format!("costop leaves {ns}/{name}{on} until the node goes: {why}");
        tracing::warn!(pod, node = node.as_deref(), why, "pod left on a doomed node");
        self.warn_on_pod_and_node(ns, name, node.as_deref(), "EvictionBlocked", &message).await
    }
}

impl KubeCluster {
    /// An Event on a node (`namespace` None; recorded in `default`) or a
    /// pod, best effort: dropped, as no error, while [`EVENTS_IN_FLIGHT`]
    /// others are being recorded (counted; logged at the first drop and
    /// every thousandth after).
    async fn record_event(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        let Ok(_turn) = self.events.turns.try_acquire() else {
            let dropped = self.events.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped % 1000 == 1 {
                tracing::warn!(dropped, reason, "Events dropped: too many being recorded at once");
            }
            return Ok(());
        };
        let uid = match namespace {
            None => self.node(name).and_then(|n| n.uid),
            // Pod records keep no uid: read it (Events are rare).
            Some(ns) => Api::<Pod>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|p| p.metadata.uid),
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        let event: Event = serde_json::from_value(json!({
            "metadata": {"generateName": format!("{name}.costop.")},
            "involvedObject": {"kind": kind, "apiVersion": "v1", "name": name, "namespace": namespace, "uid": uid},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": "costop"}, "reportingComponent": "costop", "reportingInstance": "costop",
            "firstTimestamp": now.to_string(), "lastTimestamp": now.to_string(), "count": 1}))
        .map_err(|e| KubeError::Invalid(e.to_string()))?;
        Api::<Event>::namespaced(self.client.clone(), namespace.unwrap_or("default"))
            .create(&PostParams::default(), &event)
            .await
            .map_err(api_err("record event on", format!("{}/{name}", kind.to_ascii_lowercase())))?;
        Ok(())
    }

    /// The node the cached pod `ns/name` is bound to.
    fn node_of_pod(&self, ns: &str, name: &str) -> Option<String> {
        self.pods
            .rows()
            .by_key
            .get(format!("{ns}/{name}").as_str())
            .and_then(|p| p.node.as_ref())
            .map(|n| n.to_string())
    }

    /// A Warning `EvictionBlocked` Event on the pod and on its node (if
    /// bound), as `kubectl describe` shows them. Both are tried; the first
    /// failure is returned.
    async fn warn_on_pod_and_node(
        &self,
        ns: &str,
        name: &str,
        node: Option<&str>,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        let on_pod = self.record_event("Pod", Some(ns), name, "Warning", reason, message).await;
        let on_node = match node {
            Some(node) => self.record_event("Node", None, node, "Warning", reason, message).await,
            None => Ok(()),
        };
        on_pod.and(on_node)
    }
}

/// List nodes through the API (no cache): used by benchmarks and tools.
pub async fn list_pods(client: &Client) -> Result<usize, KubeError> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api_err("list", "pods"))?;
    Ok(pods.items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_limits_are_read_and_junk_is_refused() {
        assert_eq!(ClientLimits::parse(None, None).unwrap(), ClientLimits::default());
        assert_eq!(
            ClientLimits::parse(Some(" 8 "), Some("")).unwrap(),
            ClientLimits { max_in_flight: 8, qps: 500 }
        );
        assert_eq!(ClientLimits::parse(None, Some("50")).unwrap().qps, 50);
        for junk in ["0", "-1", "1.5", "lots", "100001"] {
            let err = ClientLimits::parse(Some(junk), None).unwrap_err().to_string();
            assert!(err.contains(MAX_IN_FLIGHT_ENV) && err.contains("whole number"), "{err}");
            assert!(ClientLimits::parse(None, Some(junk)).is_err(), "{junk}");
        }
    }
}

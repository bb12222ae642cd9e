//! `costop server`: takes notices (HTTP from agents, the Redis stream),
//! de-duplicates them, plans the response with `costop_core::respond`, and
//! runs it step by step through the Cluster and Cloud ports, recording
//! every step in the store so a restarted server resumes. Two replicas are
//! safe: only the holder of the `costop-server` Lease acts; a follower
//! forwards the notices agents post to it to the leader (the URL the
//! leader publishes in the Lease), so the Service may route to any replica.

pub mod cloud;
pub mod leader;
pub mod listener;
pub mod metrics;
mod mirror;
mod mover;
pub mod pools;
pub use costop_executor::warm_pool;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloud::{AnyCloud, EmuCloud, NoCloud};
use costop_core::ports::{Clock, ClusterPort, StorePort};
use costop_core::{Notice, Policy};
use costop_executor::{Executor, OpenResponses};
use costop_kube::KubeCluster;
use costop_store::{AnyStore, SystemClock};
use k8s_openapi::api::authentication::v1::TokenReview;
use kube::api::{Api, PostParams};
use metrics::Metrics;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Redis URL; none = the in-memory store (one process).
    pub redis_url: Option<String>,
    /// Kubeconfig; none = in-cluster or `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// The emulated world's URL, used as the Cloud port; none = no cloud adapter.
    pub emu_url: Option<String>,
    /// Use AWS as the Cloud port (standard credential chain; region and an
    /// endpoint override for tests).
    pub aws: Option<AwsOptions>,
    /// Decision policy.
    pub policy: Policy,
    /// This replica's name (Lease holder, stream consumer).
    pub identity: String,
    /// The key plans in Redis are signed with and checked against
    /// ([`costop_store::redis_store::PLAN_KEY_ENV`], from a Secret every
    /// replica shares; at least [`MIN_PLAN_KEY_BYTES`] bytes). Required with
    /// `redis_url` unless `allow_unsigned_plans`; unused in memory.
    pub plan_key: Option<String>,
    /// Run on Redis without a plan key (`--allow-unsigned-plans`): plans
    /// there are then neither signed nor checked, so a plan planted in
    /// Redis would run. For trying costop out only.
    pub allow_unsigned_plans: bool,
    /// The URL the other replicas reach this one's intake at, published in
    /// the Lease while it leads (`--advertise-url`, `COSTOP_ADVERTISE_URL`;
    /// in a pod `http://$(POD_IP):PORT` from the downward API). None:
    /// `http://LISTEN` when the listen address names one address; when it
    /// listens on all of them, none is published and followers answer 503.
    pub advertise_url: Option<String>,
    /// Dry run (`--dry-run`, `COSTOP_DRY_RUN`): notices are taken, planned
    /// and recorded as usual, and each step is recorded, and put on its
    /// node as an Event, with the outcome `dry run: <what it would do>`
    /// without running it: no taint, cordon, eviction or placeholder
    /// change, no cloud call that changes anything, no lifecycle hook
    /// completed, and the warm-pool keeper does not run.
    pub dry_run: bool,
}

/// The shortest plan key accepted (128 bits).
pub const MIN_PLAN_KEY_BYTES: usize = 16;

/// How to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// Region (default: from the environment).
    pub region: Option<String>,
    /// Endpoint override (moto in tests).
    pub endpoint: Option<String>,
    /// EventBridge → SQS queue to consume (queue mode).
    pub queue_url: Option<String>,
    /// Where unreadable queue messages go.
    pub dead_letter_url: Option<String>,
    /// Pools, Auto Scaling groups, bridges, templates.
    pub settings: costop_aws::AwsSettings,
    /// Keep the warm pool of standbys (launch, park, return, terminate).
    pub keep_warm_pool: bool,
    /// Time between warm-pool rounds (default [`WARM_POOL_ROUND`]).
    pub warm_pool_every: Duration,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Store.
    #[error(transparent)]
    Store(#[from] costop_store::StoreError),
    /// Kubernetes.
    #[error(transparent)]
    Kube(#[from] costop_kube::KubeError),
    /// The API server at `url` is unreachable or lacks what costop needs.
    #[error("Kubernetes API at {url}: {source}")]
    KubeAt {
        /// The API server's URL.
        url: String,
        /// What went wrong.
        source: Box<costop_kube::KubeError>,
    },
    /// Another live server has this identity.
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    /// Listening.
    #[error("listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The Lease's thread or runtime could not start.
    #[error("cannot start the Lease thread: {0}")]
    LeaseThread(std::io::Error),
    /// A Redis store without a plan key, or with a short one.
    #[error("{0}")]
    PlanKey(String),
    /// An advertised URL that is not an http(s) URL.
    #[error("{0}")]
    AdvertiseUrl(String),
}

type Exec = Executor<AnyStore, KubeCluster, AnyCloud, SystemClock>;

/// How long a notice waits for caches to relist before it is refused as
/// unavailable (retried by the agent, left pending on the stream).
const FRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared by the HTTP handlers and the loops.
pub struct ServerState {
    exec: Exec,
    metrics: Arc<Metrics>,
    policy: Policy,
    /// For token reviews and the leader look-up: the cordons' client (see `run`).
    client: kube::Client,
    /// This replica leads until this Unix ms (its last renewal, plus the
    /// lease's duration, less a safety margin); 0 when it does not lead.
    leader_until: AtomicU64,
    /// Responses running in this process, so none runs twice at once; all
    /// are stopped when leadership is lost.
    running: Mutex<HashMap<costop_core::NoticeKey, Running>>,
    /// Notices being planned now (before their response is running).
    planning: AtomicU64,
    /// Keys of the notices being planned now, until their plan is saved.
    planning_keys: Mutex<std::collections::HashSet<costop_core::NoticeKey>>,
    /// Set once this leader has resumed what a previous one left unfinished.
    resumed: std::sync::atomic::AtomicBool,
    identity: String,
    /// Service accounts (usernames) whose pods may report notices.
    agent_accounts: Vec<String>,
    /// The audiences agents' tokens must be bound to (empty: the API server's).
    token_audiences: Vec<String>,
    /// Spot pools capacity may be restored into.
    pools: pools::PoolBook,
    /// The Lease's live holder, as the last leader round read it.
    leader_seen: Mutex<Option<leader::Holder>>,
    /// Forwards notices to the leader (short timeout, no redirects).
    forwarder: reqwest::Client,
    /// Dry run: responses are recorded, not run (see [`ServerConfig::dry_run`]).
    dry_run: bool,
}

/// A notice being planned in this process, until its plan is saved (or it fails).
struct Planning<'a>(&'a ServerState, costop_core::NoticeKey);

impl<'a> Planning<'a> {
    fn start(st: &'a ServerState, key: &costop_core::NoticeKey) -> Self {
        st.planning_keys.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone());
        Planning(st, key.clone())
    }
}

impl Drop for Planning<'_> {
    fn drop(&mut self) {
        self.0.planning_keys.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

/// Refuse times no real notice states: an interruption that took effect
/// longer ago than its notice lasts (2 min), or more than 15 min ahead;
/// other kinds more than a week from now; a reception time more than a day off.
pub fn check_times(notice: &Notice, now: costop_core::time::Millis) -> Result<(), IntakeError> {
    use costop_core::time::SPOT_NOTICE_LEAD;
    const DAY_MS: u64 = 24 * 3600 * 1000;
    const AHEAD_MS: u64 = 15 * 60 * 1000;
    let stated = notice.kind.stated_time();
    let key = notice.key();
    if let costop_core::NoticeKind::SpotInterruption { effective_at, .. } = notice.kind {
        if effective_at.saturating_add(SPOT_NOTICE_LEAD) < now {
            return Err(IntakeError::Invalid(format!(
                "notice {key}: the interruption took effect {} s ago, longer ago than its {} s notice lasts; refused",
                (now - effective_at) / 1000,
                SPOT_NOTICE_LEAD / 1000
            )));
        }
        if effective_at > now.saturating_add(AHEAD_MS) {
            return Err(IntakeError::Invalid(format!(
                "notice {key}: the interruption is {} s ahead; an interruption notice is given {} s ahead; refused",
                (effective_at - now) / 1000,
                SPOT_NOTICE_LEAD / 1000
            )));
        }
    }
    // A week either way covers scheduled events; anything further is not a real notice.
    let off = |t: u64| {
        let (h, side) = (t.abs_diff(now) / 3_600_000, if t < now { "ago" } else { "ahead" });
        format!("{h} h {side}")
    };
    if stated.abs_diff(now) > 7 * DAY_MS {
        return Err(IntakeError::Invalid(format!(
            "notice {key}: its time is {}, more than a week from now; refused",
            off(stated)
        )));
    }
    if notice.received_at.abs_diff(now) > DAY_MS {
        return Err(IntakeError::Invalid(format!(
            "notice {key}: it was received {}, more than a day from now; refused",
            off(notice.received_at)
        )));
    }
    Ok(())
}

/// A response running in this process.
struct Running {
    task: tokio::task::JoinHandle<()>,
    /// Its deadline (Unix ms), if the notice has one.
    deadline: Option<costop_core::time::Millis>,
}

/// A response counts as under way for the warm-pool keeper while its
/// deadline is this close (or past): a scheduled event days ahead does not
/// hold the pool still.
const URGENT_WITHIN_MS: costop_core::time::Millis = 30 * 60 * 1000;

/// Why a notice was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The notice itself is wrong (unknown instance, absurd times): never retry.
    #[error("{0}")]
    Invalid(String),
    /// The store or the cluster cannot take it now: retry.
    #[error("{0}")]
    Unavailable(String),
    /// The instance is not a node of this cluster (the queue's EventBridge
    /// rules see the whole region): never retry, nothing to worry about.
    #[error("{0}")]
    NotInCluster(String),
}

/// What happened to a notice handed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// New: a response is running.
    Accepted,
    /// Already known: nothing new done.
    Duplicate,
}

impl ServerState {
    /// Whether this replica holds the Lease, renewed recently enough that no
    /// other replica can have taken it over.
    pub fn is_leader(&self) -> bool {
        self.exec.clock.now_ms() < self.leader_until.load(Ordering::Relaxed)
    }

    /// Run a response unless it already runs here (`new`: its plan was
    /// just saved, no step of it is recorded).
    fn spawn_response(
        self: &Arc<Self>,
        plan: costop_core::Plan,
        received_at: costop_core::time::Millis,
        new: bool,
    ) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|_, r| !r.task.is_finished());
        if running.contains_key(&plan.notice) {
            return;
        }
        let key = plan.notice.clone();
        let exec = self.exec.clone();
        let deadline = plan.deadline;
        let task = if self.dry_run {
            tokio::spawn(async move { exec.rehearse(&plan).await })
        } else if new {
            tokio::spawn(async move { exec.execute_new(Arc::new(plan), received_at).await })
        } else {
            tokio::spawn(async move { exec.execute(Arc::new(plan), received_at).await })
        };
        running.insert(key, Running { task, deadline });
    }

    /// Whether a notice is being planned, or a response whose deadline is
    /// near runs in this process now.
    fn responding(&self) -> bool {
        let soon = self.exec.clock.now_ms() + URGENT_WITHIN_MS;
        self.planning.load(Ordering::SeqCst) > 0
            || self.exec.open.busy()
                && self
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .any(|r| !r.task.is_finished() && r.deadline.is_none_or(|d| d <= soon))
    }

    /// Stop every response of this process (leadership lost: the new leader resumes them).
    fn stop_responses(&self) {
        self.resumed.store(false, Ordering::SeqCst);
        for (_, r) in self.running.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            r.task.abort();
        }
    }

    /// Take a notice: record it, and the first time, plan and start the response.
    pub async fn accept(self: &Arc<Self>, notice: Notice) -> Result<Intake, IntakeError> {
        self.planning.fetch_add(1, Ordering::SeqCst);
        let taken = self.take(notice).await;
        self.planning.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    async fn take(self: &Arc<Self>, notice: Notice) -> Result<Intake, IntakeError> {
        let busy = |e: costop_store::StoreError| IntakeError::Unavailable(e.to_string());
        // Never plan on caches that missed changes (a watch failed and has
        // not relisted since): they relist within a second of the API's return.
        self.exec
            .cluster
            .wait_fresh(FRESH_WAIT)
            .await
            .map_err(|why| IntakeError::Unavailable(format!("stale caches: {why}")))?;
        let store = &self.exec.store;
        let now = self.exec.clock.now_ms();
        check_times(&notice, now)?;
        let key = notice.key();
        // One response per (instance, kind), whatever time the caller states.
        let mut replacing: Option<costop_core::NoticeKey> = None;
        loop {
            match store.claim(&key, replacing.as_ref()).await.map_err(busy)? {
                costop_store::Claim::Claimed => break,
                costop_store::Claim::Held(held) => {
                    if self.is_planning(&held) {
                        self.metrics.duplicate();
                        return Ok(Intake::Duplicate);
                    }
                    let record = match store.response(&held).await {
                        Err(e @ costop_store::StoreError::Forged { .. }) => {
                            self.metrics.plan_refused();
                            tracing::error!(notice = %held, error = %e, "the stored plan is not the server's: not run");
                            return Err(IntakeError::Unavailable(e.to_string()));
                        }
                        other => other.map_err(busy)?,
                    };
                    match record {
                        Some(record) => {
                            self.metrics.duplicate();
                            self.start_if_open(record, notice.received_at);
                            return Ok(Intake::Duplicate);
                        }
                        // Its claimer failed before saving a plan: take it over.
                        None if replacing.is_none() => replacing = Some(held),
                        None => {
                            return Err(IntakeError::Unavailable(format!(
                                "the response to {key} is being claimed; retry"
                            )))
                        }
                    }
                }
            }
        }
        let _planning = Planning::start(self, &key);
        store.record_notice(&notice).await.map_err(busy)?;
        let requested = self.capacity_requested(&key).await;
        // The snapshot is read, planned on and let go with no wait in
        // between: in a burst, notices waiting on the store would each
        // keep an older snapshot of every pod alive.
        let planned = {
            let mut view = (*self.exec.cluster.view()).clone();
            if let (costop_core::NoticeKind::SpotInterruption { .. }, Some(node)) =
                (&notice.kind, view.node_by_instance(&notice.instance_id))
            {
                self.pools.reclaimed(&node.pool, notice.kind.stated_time());
            }
            view.pools = self.pools.views(now);
            view.capacity_requests.extend(requested);
            view.headroom_target = view
                .workload(&format!(
                    "{}/{}",
                    costop_kube::COSTOP_NAMESPACE,
                    costop_kube::PLACEHOLDER_DEPLOYMENT
                ))
                .map_or(0, |w| w.replicas);
            self.exec.plan(&view, &notice, &self.policy, now)
        };
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => {
                // Nothing will answer this notice: free its (instance, kind).
                if let Err(e) = store.release_claim(&key).await {
                    tracing::warn!(notice = %key, error = %e, "cannot release the claim of a refused notice");
                }
                return Err(match e {
                    costop_core::respond::PlanError::UnknownInstance(_) => {
                        IntakeError::NotInCluster(e.to_string())
                    }
                });
            }
        };
        if !store.save_plan(&plan).await.map_err(busy)? {
            // Saved before (by an attempt that timed out after its write).
            self.metrics.duplicate();
            if let Some(record) = store.response(&key).await.map_err(busy)? {
                self.start_if_open(record, notice.received_at);
            }
            return Ok(Intake::Duplicate);
        }
        let source = match notice.source {
            costop_core::NoticeSource::Agent => "agent",
            costop_core::NoticeSource::Queue => "queue",
            costop_core::NoticeSource::Simulator => "simulator",
        };
        self.metrics.notice(notice.kind.label(), source);
        let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind()).collect();
        tracing::info!(notice = %key, node = plan.node, steps = ?kinds, "responding");
        self.spawn_response(plan, notice.received_at, true);
        Ok(Intake::Accepted)
    }

    /// A duplicate's response is open (saved) but runs nowhere: the save
    /// that opened it timed out after its write (the caller was told to
    /// retry), or it was left by a previous leader and not resumed yet.
    /// Only the leader takes notices, so start it here.
    fn start_if_open(
        self: &Arc<Self>,
        record: costop_core::ports::ResponseRecord,
        received_at: costop_core::time::Millis,
    ) {
        if record.done_at.is_some() || !self.is_leader() {
            return;
        }
        let started = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&record.plan.notice)
            .is_some_and(|r| !r.task.is_finished());
        if !started {
            tracing::warn!(notice = %record.plan.notice, "starting an open response that was not running");
        }
        let received = record.steps.first().and_then(|s| s.started_at).unwrap_or(received_at);
        self.spawn_response(record.plan, received, false);
    }

    /// Capacity already requested for this notice's instance by the
    /// responses to its other kinds (a rebalance recommendation's restore,
    /// before the interruption): the keys of their RestoreCapacity steps
    /// that ran without failing, so `respond` does not restore twice.
    async fn capacity_requested(&self, key: &costop_core::NoticeKey) -> Vec<String> {
        let mut keys = Vec::new();
        use costop_core::move_back::MOVE_BACK_KIND;
        let kinds = ["spot-interruption", "rebalance-recommendation", "scheduled-event", MOVE_BACK_KIND];
        for kind in kinds {
            if kind == key.kind {
                continue;
            }
            let other = costop_core::NoticeKey { kind: kind.into(), ..key.clone() };
            let Ok(Some(held)) = self.exec.store.claim_holder(&other).await else { continue };
            let Ok(Some(record)) = self.exec.store.response(&held).await else { continue };
            for (step, rec) in record.plan.steps.iter().zip(&record.steps) {
                if let costop_core::Step::RestoreCapacity { key, .. } = step {
                    let ok =
                        rec.done_at.is_some() && !rec.outcome.as_deref().unwrap_or("").starts_with("failed");
                    if ok {
                        keys.push(key.clone());
                    }
                }
            }
        }
        keys
    }

    fn is_planning(&self, key: &costop_core::NoticeKey) -> bool {
        self.planning_keys.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
    }

    /// Resume every response a previous server left unfinished.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, String> {
        let keys = self.exec.store.unfinished().await.map_err(|e| e.to_string())?;
        for key in &keys {
            match self.exec.store.response(key).await {
                Ok(Some(record)) => {
                    tracing::warn!(notice = %key, "resuming an unfinished response");
                    let received = record.steps.first().and_then(|s| s.started_at).unwrap_or(0);
                    self.spawn_response(record.plan, received, false);
                }
                Ok(None) => {}
                Err(e @ costop_store::StoreError::Forged { .. }) => {
                    self.metrics.plan_refused();
                    tracing::error!(notice = %key, error = %e, "an open response's plan is not the server's: not run");
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(keys.len())
    }

    /// Check a pod token with the API server (TokenReview): the service
    /// account it belongs to and the node its pod runs on (`None`: not a
    /// live pod's token).
    async fn review_token(&self, token: &str) -> Result<Option<(String, Option<String>)>, String> {
        let mut spec = json!({"token": token});
        if !self.token_audiences.is_empty() {
            spec["audiences"] = json!(self.token_audiences);
        }
        let review: TokenReview = serde_json::from_value(json!({"spec": spec})).map_err(|e| e.to_string())?;
        let api = Api::<TokenReview>::all(self.client.clone());
        let mut retries = 0;
        let reviewed = loop {
            match api.create(&PostParams::default(), &review).await {
                Ok(r) => break r,
                // A pooled connection the API server closed as idle fails
                // before the request reaches it (hyper's SendRequest); a
                // review changes nothing, so it is sent again.
                Err(e @ (kube::Error::Service(_) | kube::Error::HyperError(_)))
                    if retries < TOKEN_REVIEW_RETRIES =>
                {
                    retries += 1;
                    tracing::debug!(error = %e, retries, "token review failed to send; again");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(retries))).await;
                }
                Err(e) => return Err(format!("token review: {e}")),
            }
        };
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.clone().unwrap_or_default();
        let extra = user.extra.unwrap_or_default();
        if let Some(node) = extra.get("authentication.kubernetes.io/node-name").and_then(|v| v.first()) {
            return Ok(Some((username, Some(node.clone()))));
        }
        // Older API servers name only the pod: find its node.
        let pod = extra.get("authentication.kubernetes.io/pod-name").and_then(|v| v.first()).cloned();
        let ns = username.strip_prefix("system:serviceaccount:").and_then(|r| r.split(':').next());
        let node = match (pod, ns) {
            (Some(pod), Some(ns)) => {
                let name = format!("{ns}/{pod}");
                self.exec.cluster.view().pod(&name).and_then(|p| p.node.clone())
            }
            _ => None,
        };
        Ok(Some((username, node.map(String::from))))
    }

    /// Whether `token` may report `notice`, whatever path brought it
    /// (HTTP, the Redis stream): a live pod's token (TokenReview), of the
    /// agent's service account ([`AGENT_ACCOUNT_ENV`]), on the notice's node.
    pub async fn authorize(&self, token: &str, notice: &Notice) -> Result<(), Refusal> {
        // The token's pod is looked up in the caches: only fresh ones.
        self.exec
            .cluster
            .wait_fresh(FRESH_WAIT)
            .await
            .map_err(|why| Refusal::Unavailable(format!("stale caches: {why}")))?;
        let (username, token_node) = match self.review_token(token).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Refusal::Unauthenticated("the token is not a live pod's".into())),
            Err(e) => return Err(Refusal::Unavailable(e)),
        };
        if !self.agent_accounts.contains(&username) {
            return Err(Refusal::NotTheAgent(format!(
                "{username} may not report notices (only {})",
                self.agent_accounts.join(", ")
            )));
        }
        let Some(token_node) = token_node else {
            return Err(Refusal::Unauthenticated(format!("{username}: the token names no pod on a node")));
        };
        let view = self.exec.cluster.view();
        let Some(node) = view.node_by_instance(&notice.instance_id) else {
            return Err(Refusal::UnknownInstance(format!(
                "instance {} is not a node of this cluster",
                notice.instance_id
            )));
        };
        if node.name != token_node {
            return Err(Refusal::OtherNode(format!(
                "a pod on {token_node} may not report for {}",
                node.name
            )));
        }
        Ok(())
    }
}

/// The environment variable naming the service accounts whose pods may
/// report notices (`namespace:name`, comma-separated).
pub const AGENT_ACCOUNT_ENV: &str = "COSTOP_AGENT_SERVICE_ACCOUNT";
/// The agent's service account as deployed.
pub const DEFAULT_AGENT_ACCOUNT: &str = "costop-system:costop-agent";

/// How many times a TokenReview that could not be sent (a connection
/// error, not an answer) is sent again.
const TOKEN_REVIEW_RETRIES: u32 = 3;

/// The environment variable naming the audience agents' tokens are bound
/// to (the projected token's `audience`, `costop` in deploy/base):
/// TokenReviews ask the API server for it, so a token minted for the API
/// server itself, or for anything else, is refused. Unset: the API
/// server's own audience.
pub const TOKEN_AUDIENCE_ENV: &str = "COSTOP_TOKEN_AUDIENCE";

/// The audiences of [`TOKEN_AUDIENCE_ENV`] (comma-separated; none if unset).
pub fn token_audiences() -> Vec<String> {
    std::env::var(TOKEN_AUDIENCE_ENV)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// The usernames (`system:serviceaccount:NS:NAME`) allowed to report.
pub fn agent_accounts() -> Vec<String> {
    parse_accounts(&std::env::var(AGENT_ACCOUNT_ENV).unwrap_or_default())
}

/// `ns:name[,ns:name…]` (or full usernames) as usernames; empty: the default.
pub fn parse_accounts(configured: &str) -> Vec<String> {
    let mut accounts: Vec<String> = configured
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| format!("system:serviceaccount:{}", a.trim_start_matches("system:serviceaccount:")))
        .collect();
    if accounts.is_empty() {
        accounts.push(format!("system:serviceaccount:{DEFAULT_AGENT_ACCOUNT}"));
    }
    accounts
}

/// Why a notice's credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No credential at all.
    #[error("{0}")]
    NoCredential(String),
    /// Not a live pod's token.
    #[error("{0}")]
    Unauthenticated(String),
    /// A pod's token, not of the agent's service account.
    #[error("{0}")]
    NotTheAgent(String),
    /// The agent of another node.
    #[error("{0}")]
    OtherNode(String),
    /// The instance is no node of this cluster.
    #[error("{0}")]
    UnknownInstance(String),
    /// The check itself could not be made (API server): retry.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// A short stable label, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NoCredential(_) => "no-credential",
            Refusal::Unauthenticated(_) => "unauthenticated",
            Refusal::NotTheAgent(_) => "not-the-agent",
            Refusal::OtherNode(_) => "other-node",
            Refusal::UnknownInstance(_) => "unknown-instance",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Refusal::NoCredential(_) | Refusal::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Refusal::NotTheAgent(_) | Refusal::OtherNode(_) => StatusCode::FORBIDDEN,
            Refusal::UnknownInstance(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn reply(code: StatusCode, body: serde_json::Value) -> Response {
    (code, axum::Json(body)).into_response()
}

/// The header a follower marks a forwarded notice with (its identity): a
/// replica never forwards a request that carries it, so no request loops.
pub const FORWARDED_BY: &str = "x-costop-forwarded-by";
/// The header of a follower's answer naming the leader that gave it.
pub const FORWARDED_TO: &str = "x-costop-forwarded-to";
/// How long a follower waits for the leader's answer (under the agent's
/// 2 s, so the agent hears why rather than timing out).
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(1500);

/// The URL this replica publishes for the others: the configured one, or
/// `http://LISTEN` when the listen address names one address.
pub fn advertise_url(config: &ServerConfig) -> Result<Option<String>, ServerError> {
    let Some(url) = &config.advertise_url else {
        if config.listen.ip().is_unspecified() {
            tracing::warn!(
                listen = %config.listen,
                "no --advertise-url (COSTOP_ADVERTISE_URL): while this replica leads, followers cannot forward notices to it"
            );
            return Ok(None);
        }
        return Ok(Some(format!("http://{}", config.listen)));
    };
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ServerError::AdvertiseUrl(format!("--advertise-url `{url}`: {e}")))?;
    // A host name of letters, digits, dots and dashes (an unexpanded
    // `$(POD_IP)` would otherwise pass).
    let host_ok = parsed.host_str().is_some_and(|h| {
        h.starts_with('[')
            || !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    });
    if !matches!(parsed.scheme(), "http" | "https") || !host_ok {
        return Err(ServerError::AdvertiseUrl(format!(
            "--advertise-url `{url}`: give http://HOST:PORT (in a pod: http://$(POD_IP):PORT)"
        )));
    }
    Ok(Some(url.trim_end_matches('/').to_string()))
}

/// A follower hands an agent's notice to the leader: the original body and
/// `Authorization` header, to the URL the leader publishes in the Lease,
/// marked with [`FORWARDED_BY`]; the leader's status and answer come back
/// with `forwarded_to` (its identity). The leader checks the token, as for
/// any request. If no leader is known yet or it cannot be reached, the
/// Lease is read afresh and a new leader tried once, within
/// [`FORWARD_TIMEOUT`] in all.
async fn forward(st: &ServerState, authorization: &str, body: axum::body::Bytes) -> Response {
    let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut holder = st.leader_seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut tried: Option<String> = None;
    let mut failure = String::new();
    let mut reread = false;
    loop {
        match holder.as_ref().map(|h| (h.identity.clone(), h.url.clone())) {
            None => failure = "no replica holds the Lease now".into(),
            Some((leader, None)) => {
                failure = format!("the leader {leader} publishes no URL (--advertise-url)");
            }
            Some((_, Some(url))) if tried.as_deref() == Some(url.as_str()) => {}
            Some((leader, Some(url))) => {
                tried = Some(url.clone());
                let sent = st
                    .forwarder
                    .post(format!("{url}/v1/notices"))
                    .header(axum::http::header::AUTHORIZATION, authorization)
                    .header(axum::http::header::CONTENT_TYPE, "application/json")
                    .header(FORWARDED_BY, &st.identity)
                    .timeout(left())
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) => return forwarded_answer(st, &leader, r).await,
                    Err(e) => {
                        failure = format!("the leader {leader} at {url} did not answer: {e}");
                        tracing::warn!(leader, url, error = %e, "cannot forward a notice to the leader");
                    }
                }
            }
        }
        // No leader known yet, or it did not answer (it may have just
        // handed over): read the Lease afresh, once.
        if reread || left().is_zero() {
            break;
        }
        reread = true;
        holder = match tokio::time::timeout(left(), leader::holder(&st.client)).await {
            Ok(Ok(h)) => h,
            _ => break,
        };
        *st.leader_seen.lock().unwrap_or_else(|e| e.into_inner()) = holder.clone();
    }
    st.metrics.forwarded("failed");
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": format!("not the leader, and cannot forward to it: {failure}; retry, or use the Redis stream")}),
    )
}

/// The leader's answer to a forwarded notice, as the follower gives it:
/// its status and body, with `forwarded_to` (and [`FORWARDED_TO`]).
async fn forwarded_answer(st: &ServerState, leader: &str, r: reqwest::Response) -> Response {
    let code = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let text = r.bytes().await.unwrap_or_default();
    let mut answer = match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => json!({"error": String::from_utf8_lossy(&text).chars().take(300).collect::<String>()}),
    };
    answer["forwarded_to"] = json!(leader);
    st.metrics.forwarded(if code.is_success() { "answered" } else { "refused" });
    tracing::info!(leader, status = code.as_u16(), "forwarded a notice to the leader");
    let mut response = reply(code, answer);
    if let Ok(v) = axum::http::HeaderValue::from_str(leader) {
        response.headers_mut().insert(FORWARDED_TO, v);
    }
    response
}

async fn post_notice(
    State(st): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        st.metrics.refused();
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "a bearer token (the agent pod's service-account token) is required"}),
        );
    };
    let notice: Notice = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": format!("not a notice: {e}")})),
    };
    let forwarded_by = headers.get(FORWARDED_BY).map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    if !st.is_leader() {
        // A forwarded request is never forwarded again.
        if let Some(by) = forwarded_by {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("not the leader (forwarded by {by}, which took this replica for it); retry, or use the Redis stream")}),
            );
        }
        // The leader checks the token (it must anyway: anyone may reach it directly).
        let authorization = format!("Bearer {token}");
        return forward(&st, &authorization, body).await;
    }
    if let Some(by) = &forwarded_by {
        tracing::debug!(by, instance = notice.instance_id, "a notice forwarded by a follower");
    }
    if let Err(refusal) = st.authorize(token, &notice).await {
        if !matches!(refusal, Refusal::Unavailable(_) | Refusal::UnknownInstance(_)) {
            st.metrics.refused();
            tracing::warn!(instance = notice.instance_id, reason = refusal.label(), error = %refusal, "refused a notice (HTTP)");
        }
        return reply(refusal.status(), json!({"error": refusal.to_string()}));
    }
    match st.accept(notice).await {
        Ok(Intake::Accepted) => reply(StatusCode::ACCEPTED, json!({"status": "accepted"})),
        Ok(Intake::Duplicate) => reply(StatusCode::OK, json!({"status": "duplicate"})),
        Err(IntakeError::Invalid(e) | IntakeError::NotInCluster(e)) => {
            reply(StatusCode::UNPROCESSABLE_ENTITY, json!({"error": e}))
        }
        Err(IntakeError::Unavailable(e)) => reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": e})),
    }
}

async fn metrics_text(State(st): State<Arc<ServerState>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

async fn ready(State(st): State<Arc<ServerState>>) -> Response {
    if let Some(why) = st.exec.cluster.stale() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("stale caches: {why}")).into_response();
    }
    let role = if st.is_leader() { "leader" } else { "follower" };
    (StatusCode::OK, role).into_response()
}

/// Consume the Redis stream while leader: accept, then acknowledge once recorded.
async fn consume(st: Arc<ServerState>, mut shutdown: watch::Receiver<bool>) {
    let consumer = st.identity.clone();
    let mut was_leader = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !st.is_leader() {
            if was_leader {
                // The lease ran out without renewal: stop before another replica starts.
                tracing::warn!(
                    identity = st.identity,
                    "leadership lapsed (no renewal in time); stopping responses"
                );
                st.stop_responses();
            }
            was_leader = false;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            continue;
        }
        if !was_leader {
            match st.resume().await {
                Ok(n) => {
                    was_leader = true;
                    st.resumed.store(true, Ordering::SeqCst);
                    tracing::info!(resumed = n, "leading");
                }
                Err(e) => {
                    tracing::warn!(error = e, "cannot list unfinished responses; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let entries = tokio::select! {
            r = st.exec.store.read_signed(&consumer, 500) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match entries {
            Ok(entries) => {
                for entry in entries {
                    if take_entry(&st, &entry).await {
                        if let Err(e) = st.exec.store.ack_notice(&entry.id).await {
                            tracing::warn!(id = entry.id, error = %e, "cannot acknowledge");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the notice stream; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// Take one stream entry: verify its credential exactly as on HTTP, then
/// accept its notice. Whether to acknowledge it: yes once taken, and for
/// entries that can never be taken (malformed, no or a refused credential:
/// counted and logged with the reason, never acted on); no while the
/// check or the store cannot answer (it is read again).
async fn take_entry(st: &Arc<ServerState>, entry: &costop_store::redis_store::SignedEntry) -> bool {
    let id = entry.id.as_str();
    let notice = match &entry.notice {
        Ok(n) => n,
        Err(e) => {
            st.metrics.stream_refused("malformed");
            tracing::error!(
                id,
                reason = "malformed",
                error = e,
                "malformed entry in the notice stream; acknowledged, not acted on"
            );
            return true;
        }
    };
    let checked = match entry.token.as_deref() {
        Some(token) => st.authorize(token, notice).await,
        None => Err(Refusal::NoCredential("the entry carries no token".into())),
    };
    match checked {
        Ok(()) => {}
        Err(Refusal::Unavailable(e)) => {
            tracing::warn!(id, error = e, "cannot verify a stream entry's credential yet; it stays pending");
            return false;
        }
        Err(refusal) => {
            st.metrics.stream_refused(refusal.label());
            tracing::error!(
                id,
                instance = notice.instance_id,
                reason = refusal.label(),
                error = %refusal,
                "refused a stream entry; acknowledged, not acted on"
            );
            return true;
        }
    }
    match st.accept(notice.clone()).await {
        Ok(_) => true,
        Err(IntakeError::Invalid(e) | IntakeError::NotInCluster(e)) => {
            st.metrics.stream_refused("invalid");
            tracing::error!(
                id,
                reason = "invalid",
                error = e,
                "invalid notice in the stream; acknowledged, not acted on"
            );
            true
        }
        Err(IntakeError::Unavailable(e)) => {
            tracing::warn!(id, error = e, "cannot take a stream notice yet; it stays pending");
            false
        }
    }
}

/// Queue mode: EventBridge → SQS → intake, while leader. A message is
/// deleted only once its notices are recorded; lifecycle hooks are
/// completed once the notice is recorded (the response runs on).
async fn consume_queue(
    st: Arc<ServerState>,
    consumer: costop_aws::queue::QueueConsumer,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !st.is_leader() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let now = st.exec.clock.now_ms();
        let intake = |n: Notice| {
            let st = st.clone();
            async move {
                match st.accept(n).await {
                    Ok(_) => Ok(()),
                    // A notice that can never be taken is not retried.
                    Err(IntakeError::Invalid(e)) => {
                        tracing::error!(error = e, "invalid queued notice dropped");
                        Ok(())
                    }
                    Err(IntakeError::NotInCluster(e)) => {
                        tracing::debug!(error = e, "queued notice for another cluster's instance ignored");
                        Ok(())
                    }
                    Err(IntakeError::Unavailable(e)) => Err(e),
                }
            }
        };
        let polled = tokio::select! {
            r = consumer.poll_once(now, intake) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match polled {
            Ok(stats) => {
                for hook in stats.lifecycle {
                    tokio::spawn(complete_when_done(st.clone(), hook));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "queue poll failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Complete an Auto Scaling lifecycle hook once the response to its notice
/// is done (the node drained), or after 10 minutes at most.
async fn complete_when_done(st: Arc<ServerState>, hook: costop_aws::events::LifecycleAction) {
    let AnyCloud::Aws(cloud) = st.exec.cloud.as_ref() else { return };
    if st.dry_run {
        tracing::info!(notice = %hook.notice, "dry run: the lifecycle hook is not completed");
        return;
    }
    let give_up = st.exec.clock.now_ms() + 10 * 60 * 1000;
    while st.exec.clock.now_ms() < give_up {
        if let Ok(Some(r)) = st.exec.store.response(&hook.notice).await {
            if r.done_at.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Err(e) = cloud.complete_lifecycle(&hook).await {
        tracing::warn!(error = %e, "cannot complete the lifecycle hook");
    }
}

/// Refresh Spot prices of the configured pools (every 5 minutes).
async fn refresh_prices(
    st: Arc<ServerState>,
    cloud: costop_aws::AwsCloud,
    mut shutdown: watch::Receiver<bool>,
) {
    if st.pools.pools().is_empty() {
        return;
    }
    loop {
        match cloud.spot_prices(st.pools.pools()).await {
            Ok(prices) => st.pools.set_prices(&prices),
            Err(e) => tracing::warn!(error = %e, "cannot read Spot prices; keeping the last ones"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Keep the warm pool while leader: a round every `every`.
async fn keep_warm_pool(
    st: Arc<ServerState>,
    keeper: warm_pool::WarmPoolKeeper<KubeCluster, costop_aws::AwsCloud, SystemClock>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // Responses a previous leader left are resumed first (by the stream
        // consumer); until then the pool is left alone.
        if st.is_leader() && st.resumed.load(Ordering::SeqCst) {
            let report = keeper.round().await;
            for e in &report.errors {
                tracing::warn!(error = e, "warm pool");
            }
            if report != warm_pool::RoundReport::default() {
                tracing::info!(?report, "warm pool round");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Time between warm-pool rounds: launches and returns are minutes-scale
/// work, so 20 s adds little to them.
pub const WARM_POOL_ROUND: Duration = Duration::from_secs(20);

/// The key plans in the store are signed with: with Redis, one is required
/// (a plan planted there would run otherwise) unless the configuration
/// opts out explicitly; in memory none is needed.
pub fn plan_key(config: &ServerConfig) -> Result<Option<&[u8]>, ServerError> {
    use costop_store::redis_store::PLAN_KEY_ENV;
    if config.redis_url.is_none() {
        return Ok(None);
    }
    let key = config.plan_key.as_deref().filter(|k| !k.trim().is_empty());
    match key {
        Some(k) if k.len() < MIN_PLAN_KEY_BYTES => Err(ServerError::PlanKey(format!(
            "{PLAN_KEY_ENV} is {} bytes; use at least {MIN_PLAN_KEY_BYTES} (e.g. `openssl rand -hex 32`, kept in a Secret)",
            k.len()
        ))),
        Some(k) => Ok(Some(k.as_bytes())),
        None if config.allow_unsigned_plans => {
            tracing::warn!(
                "{PLAN_KEY_ENV} is not set and --allow-unsigned-plans is given: plans in Redis are neither signed nor checked, so a plan planted there would run"
            );
            Ok(None)
        }
        None => Err(ServerError::PlanKey(format!(
            "a Redis store needs {PLAN_KEY_ENV} (a secret every replica shares, e.g. `openssl rand -hex 32` in a Secret): \
             plans in Redis are signed with it and a plan planted there is refused; \
             --allow-unsigned-plans (COSTOP_ALLOW_UNSIGNED_PLANS=true) runs without it, and then any plan written to Redis runs"
        ))),
    }
}

/// `work`'s result, or None when `shutdown` turns true first.
async fn unless_shut_down<T>(
    shutdown: &watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut stop = shutdown.clone();
    tokio::select! {
        done = work => Some(done),
        _ = stop.wait_for(|s| *s) => {
            tracing::info!("shut down while starting");
            None
        }
    }
}

/// Run the server until `shutdown` turns true.
pub async fn run(config: ServerConfig, shutdown: watch::Receiver<bool>) -> Result<(), ServerError> {
    let plan_key = plan_key(&config)?;
    let advertise = advertise_url(&config)?;
    if config.dry_run {
        tracing::warn!(
            "dry run: responses are planned and recorded, and nothing is changed: no taint, cordon, \
             eviction or placeholder change, no cloud call that changes anything, no lifecycle hook \
             completed, no warm-pool keeper"
        );
    }
    // Startup waits on Redis, the API server and AWS: a SIGTERM meanwhile
    // ends it at once.
    let Some(store) = unless_shut_down(&shutdown, AnyStore::open(config.redis_url.as_deref())).await else {
        return Ok(());
    };
    let store = Arc::new(store?.with_plan_key(plan_key));
    let kube_config = KubeCluster::load_config(config.kubeconfig.as_deref()).await?;
    let api_url = kube_config.cluster_url.to_string();
    tracing::info!(url = api_url, "Kubernetes API");
    let lease_config = kube_config.clone();
    // Cordons through a client of their own: never behind evictions.
    // Token reviews too: they stand before every notice's cordon.
    let urgent = KubeCluster::client_from_config(kube_config.clone())?;
    let client = KubeCluster::client_from_config(kube_config)?;
    let me = leader::Candidate::new(&config.identity).advertising(advertise);
    let Some(unique) = unless_shut_down(&shutdown, leader::check_unique(&client, &me)).await else {
        return Ok(());
    };
    unique?;
    let cluster = KubeCluster::start(client.clone()).with_urgent_client(urgent.clone());
    let Some(synced) = unless_shut_down(&shutdown, cluster.ready()).await else { return Ok(()) };
    synced.map_err(|source| ServerError::KubeAt { url: api_url.clone(), source: Box::new(source) })?;
    let cloud = match (&config.aws, &config.emu_url) {
        (Some(aws), _) => {
            let Some(sdk) = unless_shut_down(
                &shutdown,
                costop_aws::sdk_config(aws.region.as_deref(), aws.endpoint.as_deref()),
            )
            .await
            else {
                return Ok(());
            };
            AnyCloud::Aws(
                costop_aws::AwsCloud::new(&sdk, aws.settings.clone())
                    .with_ledger(Arc::new(cloud::StoreLedger(store.clone()))),
            )
        }
        (None, Some(url)) => AnyCloud::Emu(EmuCloud::new(url)),
        (None, None) => AnyCloud::None(NoCloud),
    };
    // The emulated cloud names its Spot pools and their prices.
    let emu_pools = match &cloud {
        AnyCloud::Emu(emu) => emu.pools().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no Spot pools from the emulated cloud: capacity is not restored");
            Vec::new()
        }),
        _ => Vec::new(),
    };
    let metrics = Arc::new(Metrics::default());
    metrics.set_dry_run(config.dry_run);
    let state = Arc::new(ServerState {
        metrics: metrics.clone(),
        exec: Executor {
            store,
            cluster: Arc::new(cluster),
            cloud: Arc::new(cloud),
            clock: Arc::new(SystemClock),
            observer: metrics,
            returns_standbys: !config.dry_run && config.aws.as_ref().is_some_and(|a| a.keep_warm_pool),
            open: Arc::new(OpenResponses::default()),
            no_move: Default::default(),
            waits: costop_executor::Waits::from_policy(&config.policy),
        },
        policy: config.policy.clone(),
        client: urgent,
        leader_until: AtomicU64::new(0),
        running: Mutex::new(HashMap::new()),
        planning: AtomicU64::new(0),
        planning_keys: Mutex::new(Default::default()),
        resumed: std::sync::atomic::AtomicBool::new(false),
        identity: config.identity.clone(),
        agent_accounts: agent_accounts(),
        token_audiences: token_audiences(),
        pools: match config.aws.as_ref() {
            Some(a) => pools::PoolBook::new(a.settings.pools.clone()),
            None => pools::PoolBook::priced(&emu_pools),
        },
        leader_seen: Mutex::new(None),
        forwarder: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(FORWARD_TIMEOUT)
            .build()
            .map_err(|e| ServerError::AdvertiseUrl(format!("cannot build the forwarding client: {e}")))?,
        dry_run: config.dry_run,
    });
    let files = listener::raise_fd_limit();
    tracing::info!(open_files = files, "open-file limit");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Listen(config.listen, e))?;
    tracing::info!(addr = %listener.local_addr().map_err(|e| ServerError::Listen(config.listen, e))?, "costop server listening");
    // Lease renewal on a thread and runtime of its own: no response work delays it.
    let elect = leader::spawn_elect(lease_config, me, state.clone(), shutdown.clone())
        .map_err(ServerError::LeaseThread)?;
    tokio::spawn(consume(state.clone(), shutdown.clone()));
    tokio::spawn(mirror::run(state.clone(), shutdown.clone()));
    tokio::spawn(mover::move_back(state.clone(), shutdown.clone()));
    if let (Some(aws), AnyCloud::Aws(cloud)) = (&config.aws, state.exec.cloud.as_ref()) {
        if let Some(url) = &aws.queue_url {
            let consumer =
                costop_aws::queue::QueueConsumer::new(cloud.clone(), url, aws.dead_letter_url.as_deref(), 20);
            tokio::spawn(consume_queue(state.clone(), consumer, shutdown.clone()));
        }
        tokio::spawn(refresh_prices(state.clone(), cloud.clone(), shutdown.clone()));
        if aws.keep_warm_pool && config.dry_run {
            tracing::warn!(
                "dry run: the warm-pool keeper does not run (it would launch, stop and terminate standbys)"
            );
        } else if aws.keep_warm_pool {
            let st = state.clone();
            let keeper = warm_pool::WarmPoolKeeper {
                cluster: state.exec.cluster.clone(),
                cloud: Arc::new(cloud.clone()),
                clock: state.exec.clock.clone(),
                policy: config.policy.clone(),
                responding: Arc::new(move || st.responding()),
            };
            tokio::spawn(keep_warm_pool(state.clone(), keeper, aws.warm_pool_every, shutdown.clone()));
        }
    }
    if let AnyCloud::Emu(emu) = state.exec.cloud.as_ref() {
        let st = state.clone();
        tokio::spawn(pools::refresh_emu_prices(
            emu.clone(),
            move |p| st.pools.set_prices(&p),
            shutdown.clone(),
        ));
    }
    let app = axum::Router::new()
        .route("/v1/notices", post(post_notice))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state);
    listener::serve(listener, app, listener::Limits::default(), shutdown).await;
    // The Lease is released (responses stopped first) before the process ends.
    let _ = tokio::task::spawn_blocking(move || elect.join()).await;
    Ok(())
}

impl leader::Leadership for ServerState {
    fn renewed(&self, at: costop_core::time::Millis) {
        let until = at + leader::RENEW_DEADLINE_MS;
        if self.leader_until.swap(until, Ordering::Relaxed) == 0 {
            tracing::info!(identity = self.identity, "leading");
        }
    }

    fn lost(&self) {
        if self.leader_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::warn!(identity = self.identity, "leadership lost; stopping responses");
            self.stop_responses();
        }
    }

    fn seen(&self, holder: Option<leader::Holder>) {
        *self.leader_seen.lock().unwrap_or_else(|e| e.into_inner()) = holder;
    }
}

#[cfg(test)]
mod tests {
    use costop_core::notice::InstanceAction;
    use costop_core::{Notice, NoticeKind, NoticeSource};

    fn notice(kind: NoticeKind, received_at: u64) -> Notice {
        Notice { instance_id: "i-0abc".into(), kind, received_at, source: NoticeSource::Agent }
    }

    #[test]
    fn times_far_in_the_past_or_future_are_refused_saying_why() {
        const NOW: u64 = 1_795_000_000_000;
        const H: u64 = 3_600_000;
        let spot = |at| NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: at };
        let refused = |n: Notice| super::check_times(&n, NOW).unwrap_err().to_string();
        // Interruptions: within their 2-minute notice back, 15 minutes ahead.
        assert!(super::check_times(&notice(spot(NOW - 119_000), NOW), NOW).is_ok());
        assert!(super::check_times(&notice(spot(NOW + 15 * 60_000), NOW), NOW).is_ok());
        let e = refused(notice(spot(NOW - 6 * 24 * H), NOW));
        assert!(e.contains("took effect 518400 s ago, longer ago than its 120 s notice lasts"), "{e}");
        let e = refused(notice(spot(NOW + H), NOW));
        assert!(e.contains("is 3600 s ahead"), "{e}");
        let e = refused(notice(spot(u64::MAX), NOW));
        assert!(e.contains("ahead") && e.contains("refused"), "{e}");
        let e = refused(notice(spot(0), NOW));
        assert!(e.contains("ago"), "{e}");
        // Other kinds: a week either way.
        let rebalance = |t| NoticeKind::RebalanceRecommendation { notice_time: t };
        assert!(super::check_times(&notice(rebalance(NOW - 6 * 24 * H), NOW), NOW).is_ok());
        let e = refused(notice(rebalance(NOW - 8 * 24 * H), NOW));
        assert!(e.contains("192 h ago, more than a week from now"), "{e}");
        let e = refused(notice(rebalance(NOW + 30 * 24 * H), NOW));
        assert!(e.contains("720 h ahead, more than a week from now"), "{e}");
        let event = NoticeKind::ScheduledEvent { code: "instance-retirement".into(), not_before: u64::MAX };
        assert!(refused(notice(event, NOW)).contains("more than a week"));
        // The reception time: a day either way.
        let e = refused(notice(rebalance(NOW), NOW + 2 * 24 * H));
        assert!(e.contains("received 48 h ahead, more than a day from now"), "{e}");
    }

    #[test]
    fn the_advertised_url_is_given_or_the_listen_address() {
        let config = |listen: &str, url: Option<&str>| super::ServerConfig {
            listen: listen.parse().unwrap(),
            redis_url: None,
            kubeconfig: None,
            emu_url: None,
            aws: None,
            policy: Default::default(),
            identity: "x".into(),
            plan_key: None,
            allow_unsigned_plans: false,
            advertise_url: url.map(String::from),
            dry_run: false,
        };
        let url = |listen, given| super::advertise_url(&config(listen, given)).map_err(|e| e.to_string());
        assert_eq!(url("127.0.0.1:8480", None), Ok(Some("http://127.0.0.1:8480".into())));
        assert_eq!(url("0.0.0.0:8480", None), Ok(None), "all addresses: none to publish");
        assert_eq!(
            url("0.0.0.0:8480", Some("http://10.0.3.7:8480/")),
            Ok(Some("http://10.0.3.7:8480".into()))
        );
        let e = url("0.0.0.0:8480", Some("10.0.3.7:8480")).unwrap_err();
        assert!(e.contains("--advertise-url `10.0.3.7:8480`"), "{e}");
        let e = url("0.0.0.0:8480", Some("http://$(POD_IP):8480")).unwrap_err();
        assert!(e.contains("--advertise-url"), "an unexpanded variable is refused: {e}");
    }

    #[test]
    fn agent_accounts_are_service_account_usernames() {
        assert_eq!(super::parse_accounts(""), vec!["system:serviceaccount:costop-system:costop-agent"]);
        assert_eq!(
            super::parse_accounts(" ops:agent , system:serviceaccount:x:y"),
            vec!["system:serviceaccount:ops:agent", "system:serviceaccount:x:y"]
        );
    }
}

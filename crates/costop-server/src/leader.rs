//! Leader election with a coordination.k8s.io/v1 Lease: the holder renews
//! it every 2 s; another replica takes it over once it has not been renewed
//! for its duration, or at once when its holder released it (on shutdown).
//! Updates carry the resourceVersion read, so two replicas never both win.
//!
//! A holder is its identity *and* a nonce drawn when the process starts
//! (annotation [`NONCE_ANNOTATION`]): two processes given the same
//! identity are two holders, never one, and a server refuses to start while
//! another live process renews the Lease under its identity
//! ([`check_unique`]). `acquireTime` is the time of acquisition, kept on
//! renewals.
//!
//! Renewal never waits on response work: [`spawn_elect`] runs the rounds
//! on an OS thread of their own, with a single-threaded runtime and a
//! client (connections) of their own, so a burst of responses that keeps
//! the server's runtime busy cannot delay a renewal. A round has
//! [`ROUND_TIMEOUT`]; the leader acts only until [`RENEW_DEADLINE_MS`]
//! after its last renewal (well inside the lease's duration) and, after a
//! failed round, tries again every [`FOLLOW_EVERY`].
//!
//! The holder also publishes the URL the other replicas reach it at
//! (annotation [`URL_ANNOTATION`], from `--advertise-url`): a follower
//! forwards the notices agents send it there (see `post_notice`).

use costop_core::time::format_rfc3339;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Lease name.
pub const LEASE: &str = "costop-server";
/// Seconds a lease stays valid without renewal.
pub const LEASE_SECONDS: i64 = 15;
/// The annotation naming the holding process (its nonce).
pub const NONCE_ANNOTATION: &str = "costop.io/holder-nonce";
/// The annotation naming the URL the holder's intake is reached at (empty:
/// it advertises none).
pub const URL_ANNOTATION: &str = "costop.io/leader-url";

/// Margin under the lease's duration within which a leader stops acting
/// unless it renewed: another replica may take over only after the full duration.
pub const SAFETY_MARGIN_MS: u64 = 5_000;
/// How long after its last renewal a leader keeps acting (client-go's
/// `RenewDeadline`, 10 s of a 15 s lease).
pub const RENEW_DEADLINE_MS: u64 = LEASE_SECONDS as u64 * 1000 - SAFETY_MARGIN_MS;
/// A lease round that takes longer than this counts as failed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(4);
/// The leader renews this often.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A follower tries this often, so a released Lease is taken within about this.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Told how leadership goes.
pub trait Leadership: Send + Sync {
    /// The lease was renewed (or taken) at this Unix ms.
    fn renewed(&self, at: u64);
    /// The lease is another replica's, or could not be renewed.
    fn lost(&self);
    /// A round read the Lease: its live holder (none when it is free).
    fn seen(&self, _holder: Option<Holder>) {}
}

/// The live holder of the Lease, as a round read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its identity.
    pub identity: String,
    /// Its process's nonce.
    pub nonce: String,
    /// Where its intake is reached (`--advertise-url`), if it says.
    pub url: Option<String>,
}

/// Who tries to lead: the configured identity and this process's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The replica's identity (`--identity`).
    pub identity: String,
    /// Drawn once per process.
    pub nonce: String,
    /// The URL the other replicas reach this one's intake at, published
    /// in the Lease while it leads.
    pub url: Option<String>,
}

impl Candidate {
    /// A candidate with a fresh nonce.
    pub fn new(identity: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self { identity: identity.into(), nonce: format!("{}-{nanos:x}-{n}", std::process::id()), url: None }
    }

    /// This candidate, advertising `url` while it leads.
    pub fn advertising(mut self, url: Option<String>) -> Self {
        self.url = url;
        self
    }
}

/// Why a server may not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another live process holds the Lease under this identity.
    #[error(
        "another live server holds the `{LEASE}` Lease as `{0}` (it renewed it while this one watched); \
         give each replica its own --identity"
    )]
    IdentityTaken(String),
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn micro_time(ms: u64) -> String {
    format_rfc3339(ms).replace('Z', &format!(".{:06}Z", (ms % 1000) * 1000))
}

/// What a Lease says about its holder.
struct Held {
    holder: String,
    nonce: String,
    url: Option<String>,
    renewed_ms: u64,
    expired: bool,
    acquire_time: Option<String>,
    transitions: i32,
}

fn held(lease: &Lease) -> Held {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let renewed_ms = spec.renew_time.as_ref().map(|t| t.0.as_millisecond().max(0) as u64).unwrap_or(0);
    let duration_ms = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS as i32).max(1) as u64 * 1000;
    let annotation = |name: &str| lease.metadata.annotations.as_ref().and_then(|a| a.get(name)).cloned();
    Held {
        nonce: annotation(NONCE_ANNOTATION).unwrap_or_default(),
        url: annotation(URL_ANNOTATION).filter(|u| !u.is_empty()),
        // A released Lease (no holder) is free at once.
        expired: holder.is_empty() || now_ms() > renewed_ms + duration_ms,
        holder,
        renewed_ms,
        acquire_time: spec.acquire_time.map(|t| micro_time(t.0.as_millisecond().max(0) as u64)),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

fn lease_object(
    holder: Option<&Candidate>,
    resource_version: Option<String>,
    acquire_time: Option<String>,
    transitions: i32,
) -> Result<Lease, serde_json::Error> {
    let now = micro_time(now_ms());
    let (identity, nonce, url, duration) = match holder {
        Some(c) => {
            (Some(c.identity.as_str()), c.nonce.as_str(), c.url.as_deref().unwrap_or(""), LEASE_SECONDS)
        }
        None => (None, "", "", 1),
    };
    serde_json::from_value(json!({
        "metadata": {"name": LEASE, "namespace": costop_kube::COSTOP_NAMESPACE, "resourceVersion": resource_version,
                     "annotations": {NONCE_ANNOTATION: nonce, URL_ANNOTATION: url}},
        "spec": {"holderIdentity": identity, "leaseDurationSeconds": duration,
                 "acquireTime": acquire_time.unwrap_or_else(|| now.clone()), "renewTime": now,
                 "leaseTransitions": transitions}
    }))
}

fn leases(client: &kube::Client) -> Api<Lease> {
    Api::<Lease>::namespaced(client.clone(), costop_kube::COSTOP_NAMESPACE)
}

/// One round: try to hold the lease. Returns whether this candidate leads.
pub async fn try_lead(client: &kube::Client, me: &Candidate) -> Result<bool, kube::Error> {
    Ok(round(client, me).await?.0)
}

/// The Lease's live holder now (none when it is free or absent).
pub async fn holder(client: &kube::Client) -> Result<Option<Holder>, kube::Error> {
    Ok(leases(client).get_opt(LEASE).await?.map(|l| held(&l)).and_then(live))
}

/// The Lease's live holder as a reader outside the server sees it
/// (`costop status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The holder.
    pub holder: Holder,
    /// When it last renewed the Lease (Unix ms).
    pub renewed_at: u64,
}

/// The Lease's live holder and when it last renewed it (none when the
/// Lease is free, released, expired or absent).
pub async fn leader(client: &kube::Client) -> Result<Option<Leader>, kube::Error> {
    Ok(leases(client).get_opt(LEASE).await?.map(|l| held(&l)).and_then(|h| {
        let renewed_at = h.renewed_ms;
        live(h).map(|holder| Leader { holder, renewed_at })
    }))
}

fn live(h: Held) -> Option<Holder> {
    (!h.expired).then_some(Holder { identity: h.holder, nonce: h.nonce, url: h.url })
}

/// [`try_lead`], also returning the Lease's live holder after the round.
async fn round(client: &kube::Client, me: &Candidate) -> Result<(bool, Option<Holder>), kube::Error> {
    let mine = |won: bool| {
        let holder = Holder { identity: me.identity.clone(), nonce: me.nonce.clone(), url: me.url.clone() };
        (won, won.then_some(holder))
    };
    let leases = leases(client);
    let Some(lease) = leases.get_opt(LEASE).await? else {
        // The first Lease: its namespace may not exist yet.
        let ns_api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        if ns_api.get_opt(costop_kube::COSTOP_NAMESPACE).await?.is_none() {
            let ns = serde_json::from_value(json!({"metadata": {"name": costop_kube::COSTOP_NAMESPACE}}))
                .map_err(kube::Error::SerdeError)?;
            let _ = ns_api.create(&PostParams::default(), &ns).await;
        }
        let lease = lease_object(Some(me), None, None, 0).map_err(kube::Error::SerdeError)?;
        return Ok(mine(leases.create(&PostParams::default(), &lease).await.is_ok()));
    };
    let h = held(&lease);
    let is_mine = h.holder == me.identity && h.nonce == me.nonce;
    if !is_mine && !h.expired {
        return Ok((false, live(h)));
    }
    // Renewing keeps the acquisition time; taking over starts a new one.
    let (acquired, transitions) =
        if is_mine { (h.acquire_time, h.transitions) } else { (None, h.transitions + 1) };
    let next = lease_object(Some(me), lease.metadata.resource_version.clone(), acquired, transitions)
        .map_err(kube::Error::SerdeError)?;
    // Losing the race: the winner is known at the next round.
    Ok(mine(leases.replace(LEASE, &PostParams::default(), &next).await.is_ok()))
}

/// Give the Lease up if this candidate holds it: no holder, so the next
/// replica takes it at its next round instead of after the lease's duration.
pub async fn release(client: &kube::Client, me: &Candidate) -> Result<bool, kube::Error> {
    let leases = leases(client);
    let Some(lease) = leases.get_opt(LEASE).await? else { return Ok(false) };
    let h = held(&lease);
    if h.holder != me.identity || h.nonce != me.nonce {
        return Ok(false);
    }
    let next = lease_object(None, lease.metadata.resource_version.clone(), h.acquire_time, h.transitions)
        .map_err(kube::Error::SerdeError)?;
    Ok(leases.replace(LEASE, &PostParams::default(), &next).await.is_ok())
}

/// Refuse to start while another live process holds the Lease under this
/// identity: when the Lease names it and is fresh, watch it for two renewal
/// periods; a renewal in that time is another live process. A holder that
/// does not renew (a crashed predecessor) is left to expire.
pub async fn check_unique(client: &kube::Client, me: &Candidate) -> Result<(), LeaderError> {
    let leases = leases(client);
    let read = async || match leases.get_opt(LEASE).await {
        Ok(l) => l.map(|l| held(&l)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Lease to check the identity is unique");
            None
        }
    };
    let Some(first) = read().await else { return Ok(()) };
    if first.holder != me.identity || first.expired || first.nonce == me.nonce {
        return Ok(());
    }
    tracing::info!(identity = me.identity, "the Lease names this identity; checking its holder is gone");
    let watch_until = now_ms() + 2 * RENEW_EVERY.as_millis() as u64 + 500;
    while now_ms() < watch_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match read().await {
            Some(now) if now.holder == me.identity && now.nonce == first.nonce => {
                if now.renewed_ms != first.renewed_ms {
                    return Err(LeaderError::IdentityTaken(me.identity.clone()));
                }
            }
            // Released, expired into another's hands, or gone.
            _ => return Ok(()),
        }
    }
    tracing::warn!(
        identity = me.identity,
        "a previous holder with this identity stopped renewing; taking over once its Lease expires"
    );
    Ok(())
}

/// Keep trying to lead (renewing every [`RENEW_EVERY`], trying every
/// [`FOLLOW_EVERY`] while following or after a failed round) until
/// shutdown; then stop acting and release the Lease. Runs on the caller's
/// runtime: a server runs it with [`spawn_elect`].
pub async fn elect<L: Leadership + 'static>(
    client: kube::Client,
    me: Candidate,
    state: std::sync::Arc<L>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let started = now_ms();
        let renewed = match tokio::time::timeout(ROUND_TIMEOUT, round(&client, &me)).await {
            Ok(Ok((true, holder))) => {
                state.renewed(started);
                state.seen(holder);
                true
            }
            Ok(Ok((false, holder))) => {
                state.lost();
                state.seen(holder);
                false
            }
            // A failed round leaves the last renewal in force until it runs
            // out (the leader's own deadline stops it in time).
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lease round failed");
                false
            }
            Err(_) => {
                tracing::warn!("lease round timed out");
                false
            }
        };
        let wait = if renewed { RENEW_EVERY } else { FOLLOW_EVERY };
        let stopping = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if stopping {
            break;
        }
    }
    // Stop acting first, then hand over.
    state.lost();
    match tokio::time::timeout(ROUND_TIMEOUT, release(&client, &me)).await {
        Ok(Ok(true)) => tracing::info!(identity = me.identity, "Lease released"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the Lease; it expires on its own"),
        Err(_) => tracing::warn!("releasing the Lease timed out; it expires on its own"),
    }
}

/// Run [`elect`] on an OS thread of its own (`costop-lease`), with a
/// single-threaded runtime and a client built from `config` on it, so its
/// requests share no runtime, task queue or connection with response work.
/// Joining the thread waits until the Lease is released after shutdown.
pub fn spawn_elect<L: Leadership + 'static>(
    config: kube::Config,
    me: Candidate,
    state: std::sync::Arc<L>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("costop-lease".into()).spawn(move || {
        runtime.block_on(async move {
            match costop_kube::KubeCluster::client_from_config(config) {
                Ok(client) => elect(client, me, state, shutdown).await,
                Err(e) => {
                    // Never leads: every notice is forwarded or refused, and /readyz says follower.
                    tracing::error!(error = %e, "cannot build the Lease's client; this replica never leads");
                }
            }
        });
    })
}

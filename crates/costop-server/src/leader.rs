//! Leader election with a coordination.k8s.io/v1 Lease: the holder renews
//! it every 2 s; another replica takes it over once it has not been renewed
//! for its duration. Updates carry the resourceVersion read, so two replicas
//! never both win.

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

/// Margin under the lease's duration within which a leader stops acting
/// unless it renewed: another replica may take over only after the full duration.
pub const SAFETY_MARGIN_MS: u64 = 5_000;
/// A lease round that takes longer than this counts as failed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(4);

/// Told how leadership goes.
pub trait Leadership: Send + Sync {
    /// The lease was renewed (or taken) at this Unix ms.
    fn renewed(&self, at: u64);
    /// The lease is another replica's, or could not be renewed.
    fn lost(&self);
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn micro_time(ms: u64) -> String {
    format_rfc3339(ms).replace('Z', &format!(".{:06}Z", (ms % 1000) * 1000))
}

fn lease_object(
    identity: &str,
    resource_version: Option<String>,
    transitions: i32,
) -> Result<Lease, serde_json::Error> {
    let now = micro_time(now_ms());
    serde_json::from_value(json!({
        "metadata": {"name": LEASE, "namespace": costop_kube::COSTOP_NAMESPACE, "resourceVersion": resource_version},
        "spec": {"holderIdentity": identity, "leaseDurationSeconds": LEASE_SECONDS,
                 "acquireTime": now, "renewTime": now, "leaseTransitions": transitions}
    }))
}

/// One round: try to hold the lease. Returns whether this replica leads.
pub async fn try_lead(client: &kube::Client, identity: &str) -> Result<bool, kube::Error> {
    let ns_api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    if ns_api.get_opt(costop_kube::COSTOP_NAMESPACE).await?.is_none() {
        let ns = serde_json::from_value(json!({"metadata": {"name": costop_kube::COSTOP_NAMESPACE}}))
            .map_err(kube::Error::SerdeError)?;
        let _ = ns_api.create(&PostParams::default(), &ns).await;
    }
    let leases = Api::<Lease>::namespaced(client.clone(), costop_kube::COSTOP_NAMESPACE);
    let current = leases.get_opt(LEASE).await?;
    let Some(lease) = current else {
        let lease = lease_object(identity, None, 0).map_err(kube::Error::SerdeError)?;
        return Ok(leases.create(&PostParams::default(), &lease).await.is_ok());
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let renewed_ms = spec.renew_time.map(|t| t.0.as_millisecond().max(0) as u64).unwrap_or(0);
    let duration_ms = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS as i32).max(1) as u64 * 1000;
    let expired = now_ms() > renewed_ms + duration_ms;
    if holder != identity && !expired {
        return Ok(false);
    }
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != identity);
    let next = lease_object(identity, lease.metadata.resource_version.clone(), transitions)
        .map_err(kube::Error::SerdeError)?;
    Ok(leases.replace(LEASE, &PostParams::default(), &next).await.is_ok())
}

/// Keep trying to lead, every 2 s, until shutdown.
pub async fn elect<L: Leadership + 'static>(
    client: kube::Client,
    identity: String,
    state: std::sync::Arc<L>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let started = now_ms();
        match tokio::time::timeout(ROUND_TIMEOUT, try_lead(&client, &identity)).await {
            Ok(Ok(true)) => state.renewed(started),
            Ok(Ok(false)) => state.lost(),
            // A failed round leaves the last renewal in force until it runs
            // out (the leader's own deadline stops it in time).
            Ok(Err(e)) => tracing::warn!(error = %e, "lease round failed"),
            Err(_) => tracing::warn!("lease round timed out"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.wait_for(|s| *s) => {
                state.lost();
                return;
            }
        }
    }
}

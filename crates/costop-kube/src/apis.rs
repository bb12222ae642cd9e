//! Which API versions the cluster serves, found once at start (discovery).
//!
//! costop needs a fixed set of resources. Budgets and evictions are served
//! as `policy/v1` from Kubernetes 1.21 and only as `policy/v1beta1` before
//! (1.20 and older); costop uses whichever the cluster has, preferring v1.
//! Anything else missing stops the start with one line naming it.

use kube::Client;
use std::time::Duration;

/// The policy API group version used for budgets and evictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyVersion {
    /// `policy/v1` (Kubernetes ≥ 1.21).
    V1,
    /// `policy/v1beta1` (Kubernetes ≤ 1.24; the only one before 1.21).
    V1beta1,
}

impl PolicyVersion {
    /// `policy/v1` or `policy/v1beta1`.
    pub fn api_version(self) -> &'static str {
        match self {
            PolicyVersion::V1 => "policy/v1",
            PolicyVersion::V1beta1 => "policy/v1beta1",
        }
    }
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apis {
    /// The API server's `gitVersion` (`v1.20.2`), when it says.
    pub server_version: String,
    /// Budgets and evictions.
    pub policy: PolicyVersion,
    /// Whether `apps/v1 statefulsets` is served (their pods are workloads
    /// with budgets; a cluster without them has none to watch).
    pub statefulsets: bool,
    /// Whether `apps/v1 replicasets` is served (a ReplicaSet no Deployment
    /// owns is a workload of its own).
    pub replicasets: bool,
}

/// The resources costop reads or writes, by group version (`""` core):
/// (group version, plural, what costop uses it for).
const NEEDED: &[(&str, &str, &str)] = &[
    ("v1", "nodes", "taint, cordon, delete"),
    ("v1", "pods", "watch, evict"),
    ("v1", "pods/eviction", "evictions"),
    ("v1", "namespaces", "costop-system"),
    ("v1", "events", "Events on nodes"),
    ("v1", "persistentvolumeclaims", "volume moves"),
    ("v1", "persistentvolumes", "volume moves"),
    ("apps/v1", "deployments", "workloads, placeholders"),
    ("scheduling.k8s.io/v1", "priorityclasses", "placeholders"),
    ("coordination.k8s.io/v1", "leases", "leader election"),
    ("authentication.k8s.io/v1", "tokenreviews", "agent tokens"),
];

/// Group versions tried for budgets, in order of preference.
const POLICY: &[PolicyVersion] = &[PolicyVersion::V1, PolicyVersion::V1beta1];

/// The resources one group version serves: `Ok(None)` when the group
/// version is not served at all (404).
async fn resources(client: &Client, gv: &str) -> Result<Option<Vec<String>>, kube::Error> {
    let list = if gv == "v1" {
        client.list_core_api_resources("v1").await
    } else {
        client.list_api_group_resources(gv).await
    };
    match list {
        Ok(l) => Ok(Some(l.resources.into_iter().map(|r| r.name).collect())),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why discovery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The API server answers but lacks resources costop needs.
    #[error("the API server ({version}) does not serve what costop needs: {}", missing.join("; "))]
    Missing {
        /// Its version.
        version: String,
        /// Each missing resource with what it is for.
        missing: Vec<String>,
    },
    /// The API server could not be asked.
    #[error("cannot discover the API server's resources: {0}")]
    Unreachable(String),
}

/// Ask the API server which of the resources costop needs it serves.
/// Transport failures are retried for up to `patience`.
pub async fn discover(client: &Client, patience: Duration) -> Result<Apis, DiscoveryError> {
    let start = tokio::time::Instant::now();
    loop {
        match discover_once(client).await {
            Err(DiscoveryError::Unreachable(e)) if start.elapsed() < patience => {
                tracing::debug!(error = %e, "discovery failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

async fn discover_once(client: &Client) -> Result<Apis, DiscoveryError> {
    let unreachable = |e: kube::Error| DiscoveryError::Unreachable(e.to_string());
    let version =
        client.apiserver_version().await.map(|v| v.git_version).unwrap_or_else(|_| "unknown".into());
    let mut served: std::collections::BTreeMap<&str, Option<Vec<String>>> = Default::default();
    for (gv, _, _) in NEEDED {
        if !served.contains_key(gv) {
            served.insert(gv, resources(client, gv).await.map_err(unreachable)?);
        }
    }
    let has = |gv: &str, plural: &str| {
        served.get(gv).and_then(|r| r.as_ref()).is_some_and(|r| r.iter().any(|n| n == plural))
    };
    let mut missing = Vec::new();
    for (gv, plural, what) in NEEDED {
        if !has(gv, plural) {
            missing.push(format!("{gv} {plural} ({what})"));
        }
    }
    let mut policy = None;
    for p in POLICY {
        let list = resources(client, p.api_version()).await.map_err(unreachable)?;
        if list.is_some_and(|r| r.iter().any(|n| n == "poddisruptionbudgets")) {
            policy = Some(*p);
            break;
        }
    }
    if policy.is_none() {
        missing.push("policy/v1 or policy/v1beta1 poddisruptionbudgets (budgets)".into());
    }
    match policy {
        Some(policy) if missing.is_empty() => Ok(Apis {
            server_version: version,
            policy,
            statefulsets: has("apps/v1", "statefulsets"),
            replicasets: has("apps/v1", "replicasets"),
        }),
        _ => Err(DiscoveryError::Missing { version, missing }),
    }
}

//! Cloud ports for the server: the emulated world's (over its admin API),
//! or none. The AWS adapter is its own crate (a later issue).

use costop_core::ports::CloudPort;
use costop_core::{NodeView, PoolId};
use serde_json::json;

/// A cloud call that failed, naming the action and the resource.
#[derive(Debug, thiserror::Error)]
#[error("cloud {action} {resource}: {message}")]
pub struct CloudError {
    /// What was being done.
    pub action: &'static str,
    /// On what.
    pub resource: String,
    /// What went wrong.
    pub message: String,
}

/// The emulated world's cloud, through `costop emu`'s admin API.
#[derive(Clone)]
pub struct EmuCloud {
    base: String,
    http: reqwest::Client,
}

impl EmuCloud {
    /// The world at `base` (the emulator's URL).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { base: base.trim_end_matches('/').into(), http }
    }

    async fn post(
        &self,
        action: &'static str,
        resource: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Result<String, CloudError> {
        let err = |message: String| CloudError { action, resource: resource.into(), message };
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let code = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if code.is_success() {
            Ok(text)
        } else {
            Err(err(format!("HTTP {code}: {text}")))
        }
    }
}

impl CloudPort for EmuCloud {
    type Error = CloudError;

    async fn deregister_targets(&self, node: &NodeView) -> Result<String, CloudError> {
        self.post(
            "deregister targets of",
            &node.name,
            &format!("/admin/nodes/{}/deregister", node.name),
            json!({}),
        )
        .await?;
        Ok(format!("{} excluded from load balancers", node.name))
    }

    async fn wake_standby(&self, node: &NodeView, retype_to: Option<&str>) -> Result<String, CloudError> {
        let node = node.name.as_str();
        self.post(
            "start standby",
            node,
            &format!("/admin/nodes/{node}/start"),
            json!({"instance_type": retype_to}),
        )
        .await?;
        Ok(format!("{node} started{}", retype_to.map(|t| format!(" as {t}")).unwrap_or_default()))
    }

    async fn move_volume(
        &self,
        volume_id: &str,
        to: &NodeView,
        _: bool,
        _: bool,
    ) -> Result<String, CloudError> {
        Ok(format!("skipped: the emulated cloud has no volumes ({volume_id} → {})", to.name))
    }

    async fn bridge(&self, workloads: &[String], on: bool) -> Result<String, CloudError> {
        Ok(format!(
            "skipped: the emulated cloud has no functions ({} workloads, {})",
            workloads.len(),
            if on { "on" } else { "off" }
        ))
    }

    async fn restore_capacity(&self, key: &str, pools: &[(PoolId, u32)]) -> Result<String, CloudError> {
        let nodes: Vec<_> = pools
            .iter()
            .map(|(p, n)| json!({"count": n, "instance_type": p.instance_type, "zone": p.zone, "capacity_type": "spot"}))
            .collect();
        self.post("restore capacity", key, "/admin/scenario", json!({"nodes": nodes})).await?;
        Ok(format!(
            "launched {}",
            pools.iter().map(|(p, n)| format!("{n}×{p}")).collect::<Vec<_>>().join(", ")
        ))
    }

    async fn retire_node(&self, node: &NodeView) -> Result<String, CloudError> {
        let path = format!("/admin/nodes/{}/terminate", node.name);
        self.post("retire node", &node.name, &path, json!({})).await?;
        Ok(format!("{} terminated", node.name))
    }
}

/// No cloud adapter configured: cloud steps are recorded as skipped.
#[derive(Clone, Copy, Default)]
pub struct NoCloud;

impl CloudPort for NoCloud {
    type Error = CloudError;

    async fn deregister_targets(&self, node: &NodeView) -> Result<String, CloudError> {
        Ok(format!("skipped: no cloud adapter ({})", node.name))
    }
    async fn wake_standby(&self, node: &NodeView, _: Option<&str>) -> Result<String, CloudError> {
        Ok(format!("skipped: no cloud adapter ({})", node.name))
    }
    async fn move_volume(
        &self,
        volume_id: &str,
        _: &NodeView,
        _: bool,
        _: bool,
    ) -> Result<String, CloudError> {
        Ok(format!("skipped: no cloud adapter ({volume_id})"))
    }
    async fn bridge(&self, _: &[String], _: bool) -> Result<String, CloudError> {
        Ok("skipped: no cloud adapter".into())
    }
    async fn restore_capacity(&self, key: &str, _: &[(PoolId, u32)]) -> Result<String, CloudError> {
        Ok(format!("skipped: no cloud adapter ({key})"))
    }
    async fn retire_node(&self, node: &NodeView) -> Result<String, CloudError> {
        Ok(format!("skipped: no cloud adapter ({})", node.name))
    }
}

/// The AWS adapter's restore ledger in the store: the absolute target a
/// restore step chose survives a restart and is shared by every replica,
/// so a resumed step never raises a group twice.
pub struct StoreLedger(pub std::sync::Arc<costop_store::AnyStore>);

impl costop_aws::RestoreLedger for StoreLedger {
    fn target<'a>(&'a self, key: &'a str, group: &'a str, proposed: i32) -> costop_aws::LedgerFuture<'a> {
        Box::pin(async move { self.0.restore_target(key, group, proposed).await.map_err(|e| e.to_string()) })
    }
}

/// AWS, the emulated cloud, or none, chosen at run time.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per server, never moved in a hot path
pub enum AnyCloud {
    /// AWS (aws-sdk-rust).
    Aws(costop_aws::AwsCloud),
    /// `costop emu`'s world.
    Emu(EmuCloud),
    /// None.
    None(NoCloud),
}

macro_rules! both {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            AnyCloud::Aws($c) => {
                $e.map_err(|e| CloudError { action: e.action, resource: e.resource, message: e.message })
            }
            AnyCloud::Emu($c) => $e,
            AnyCloud::None($c) => $e,
        }
    };
}

impl CloudPort for AnyCloud {
    type Error = CloudError;

    async fn deregister_targets(&self, node: &NodeView) -> Result<String, CloudError> {
        both!(self, c => c.deregister_targets(node).await)
    }
    async fn wake_standby(&self, node: &NodeView, retype_to: Option<&str>) -> Result<String, CloudError> {
        both!(self, c => c.wake_standby(node, retype_to).await)
    }
    async fn move_volume(
        &self,
        volume_id: &str,
        to: &NodeView,
        via_snapshot: bool,
        force: bool,
    ) -> Result<String, CloudError> {
        both!(self, c => c.move_volume(volume_id, to, via_snapshot, force).await)
    }
    async fn bridge(&self, workloads: &[String], on: bool) -> Result<String, CloudError> {
        both!(self, c => c.bridge(workloads, on).await)
    }
    async fn restore_capacity(&self, key: &str, pools: &[(PoolId, u32)]) -> Result<String, CloudError> {
        both!(self, c => c.restore_capacity(key, pools).await)
    }
    async fn retire_node(&self, node: &NodeView) -> Result<String, CloudError> {
        both!(self, c => c.retire_node(node).await)
    }
}

//! Cloud ports for the server: the emulated cloud's (over `costop emu`'s
//! admin API: load balancer, standbys, volumes, function bridge, Spot
//! launches), AWS (its own crate), or none.

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

/// A string field of the emulator's JSON answer (the whole text when it has none).
fn answer_field(text: &str, field: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v[field].as_str().map(str::to_string))
        .unwrap_or_else(|| text.to_string())
}

impl EmuCloud {
    /// The emulated cloud's Spot pools with their prices (`GET /admin/pools`).
    /// Junk in the answer is an error naming what is wrong.
    pub async fn pools(&self) -> Result<Vec<(PoolId, f64)>, CloudError> {
        let err = |message: String| CloudError { action: "list pools", resource: self.base.clone(), message };
        let resp = self
            .http
            .get(format!("{}/admin/pools", self.base))
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let code = resp.status();
        let text = resp.text().await.map_err(|e| err(e.to_string()))?;
        if !code.is_success() {
            return Err(err(format!("HTTP {code}: {text}")));
        }
        parse_pools(&text).map_err(err)
    }
}

/// Read `GET /admin/pools`: `[{"instance_type", "zone", "spot_price", …}]`.
pub fn parse_pools(text: &str) -> Result<Vec<(PoolId, f64)>, String> {
    #[derive(serde::Deserialize)]
    struct Pool {
        instance_type: String,
        zone: String,
        spot_price: f64,
        #[serde(default = "yes")]
        launchable: bool,
    }
    fn yes() -> bool {
        true
    }
    let pools: Vec<Pool> = serde_json::from_str(text).map_err(|e| format!("not a list of pools: {e}"))?;
    pools
        .into_iter()
        .filter(|p| p.launchable)
        .map(|p| {
            if p.instance_type.is_empty() || p.zone.is_empty() {
                return Err("a pool without an instance type or zone".to_string());
            }
            if !(p.spot_price.is_finite() && p.spot_price > 0.0) {
                return Err(format!(
                    "pool {}@{}: spot_price {} is not a price",
                    p.instance_type, p.zone, p.spot_price
                ));
            }
            Ok((PoolId::new(&p.instance_type, &p.zone), p.spot_price))
        })
        .collect()
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
        Ok(format!("{node} starting{}", retype_to.map(|t| format!(" as {t}")).unwrap_or_default()))
    }

    async fn move_volume(
        &self,
        volume_id: &str,
        to: &NodeView,
        via_snapshot: bool,
        force: bool,
    ) -> Result<String, CloudError> {
        let body = json!({"to_node": to.name, "via_snapshot": via_snapshot, "force": force});
        let text =
            self.post("move volume", volume_id, &format!("/admin/volumes/{volume_id}/move"), body).await?;
        Ok(format!("ok: {}", answer_field(&text, "done")))
    }

    async fn bridge(&self, workloads: &[String], on: bool) -> Result<String, CloudError> {
        let resource = workloads.join(",");
        let text = self
            .post("bridge", &resource, "/admin/bridge", json!({"workloads": workloads, "on": on}))
            .await?;
        Ok(format!("ok: {}", answer_field(&text, "done")))
    }

    async fn restore_capacity(&self, key: &str, pools: &[(PoolId, u32)]) -> Result<String, CloudError> {
        let wanted: Vec<_> = pools
            .iter()
            .map(|(p, n)| json!({"count": n, "instance_type": p.instance_type, "zone": p.zone}))
            .collect();
        let text =
            self.post("restore capacity", key, "/admin/launch", json!({"key": key, "pools": wanted})).await?;
        let launched: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let ids = launched["instances"].as_array().map_or(0, Vec::len);
        Ok(format!(
            "ok: launched {} ({ids} instances)",
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
    async fn launched_under(&self, key: &str) -> Result<Vec<String>, CloudError> {
        both!(self, c => c.launched_under(key).await)
    }
    async fn retire_node(&self, node: &NodeView) -> Result<String, CloudError> {
        both!(self, c => c.retire_node(node).await)
    }
}

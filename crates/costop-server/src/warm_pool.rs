//! The warm-pool keeper: launches standbys as twins of Spot nodes, puts
//! them on standby once they join (tainted, and stopped in `stopped` mode),
//! replenishes the pool after a response wakes one, returns woken standbys
//! once restored capacity can hold their pods, and terminates surplus.
//!
//! Its state lives on the instances (tag `costop.io/standby` = `new` or
//! `kept`) and the nodes (taint and label), so a restarted server, or a new
//! leader, carries on. The decisions are `costop_core::warm_pool`'s.

use costop_core::ports::{Clock, ClusterPort, Evicted, StandbyInstance, StandbyStage, WarmPoolPort};
use costop_core::warm_pool::{can_return_standby, plan_warm_pool, PendingStandby};
use costop_core::{ClusterView, Millis, NodeView, Policy, StandbyMode};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A launched standby that has not joined within this long is given up
/// and terminated (a node joins in about a minute; 15 allows slow images).
pub const JOIN_TIMEOUT_MS: Millis = 15 * 60 * 1000;

/// How long a standby's pods get to move off it when it goes (back) on standby.
const CLEAR_DEADLINE_MS: Millis = 5 * 60 * 1000;

/// What one round did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    /// Joined standbys put on standby (instance ids).
    pub parked: Vec<String>,
    /// Woken standbys returned to the pool (node names).
    pub returned: Vec<String>,
    /// Standbys launched (instance ids).
    pub launched: Vec<String>,
    /// Standbys terminated (instance ids): surplus, or never joined.
    pub terminated: Vec<String>,
    /// What failed (the round carries on past a failure).
    pub errors: Vec<String>,
}

/// Keeps the warm pool.
pub struct WarmPoolKeeper<K, W, T> {
    /// Kubernetes.
    pub cluster: Arc<K>,
    /// The cloud's warm-pool side.
    pub cloud: Arc<W>,
    /// Time.
    pub clock: Arc<T>,
    /// Sizing and mode.
    pub policy: Policy,
}

impl<K, W, T> WarmPoolKeeper<K, W, T>
where
    K: ClusterPort + Send + Sync,
    W: WarmPoolPort,
    T: Clock,
{
    /// One round. `responding`: a response is under way, so nothing is
    /// returned or terminated (it may be about to wake a standby).
    pub async fn round(&self, responding: bool) -> RoundReport {
        let mut report = RoundReport::default();
        let instances = match self.cloud.standby_instances().await {
            Ok(i) => i,
            Err(e) => {
                report.errors.push(format!("list standbys: {e}"));
                return report;
            }
        };
        let now = self.clock.now_ms();
        let view = self.cluster.view();
        let stop = self.policy.standby_mode == StandbyMode::Stopped;
        let mut pending = Vec::new();

        // Newly launched: put on standby once joined; give up on ones that never join.
        for inst in instances.iter().filter(|i| i.stage == StandbyStage::New) {
            match view.node_by_instance(&inst.instance_id) {
                Some(node) if node.ready => {
                    pending.push(pending_of(inst));
                    match self.put_on_standby(&view, node, stop).await {
                        Ok(()) => report.parked.push(inst.instance_id.clone()),
                        Err(e) => report.errors.push(e),
                    }
                }
                _ if now.saturating_sub(inst.launched_at) > JOIN_TIMEOUT_MS => {
                    match self.cloud.terminate_standby(&inst.instance_id).await {
                        Ok(()) => report.terminated.push(inst.instance_id.clone()),
                        Err(e) => report.errors.push(format!("terminate {}: {e}", inst.instance_id)),
                    }
                }
                _ => pending.push(pending_of(inst)),
            }
        }

        // Woken standbys back in service: return them once their pods fit elsewhere.
        if !responding {
            for inst in instances.iter().filter(|i| i.stage == StandbyStage::Kept) {
                let Some(node) = view.node_by_instance(&inst.instance_id) else { continue };
                if node.capacity_type.is_standby() || !node.ready || node.unschedulable {
                    continue;
                }
                if !can_return_standby(&view, node) {
                    continue;
                }
                pending.push(pending_of(inst));
                match self.put_on_standby(&view, node, stop).await {
                    Ok(()) => report.returned.push(node.name.clone()),
                    Err(e) => report.errors.push(e),
                }
            }
        }

        // Launch what is short; terminate what is surplus.
        let mut sized = view.clone();
        let not_yet: BTreeSet<&str> = pending.iter().map(|p| p.instance_id.as_str()).collect();
        sized.nodes.retain(|n| !not_yet.contains(n.instance_id.as_str()));
        let plan = plan_warm_pool(&sized, &pending, &self.policy);
        for launch in &plan.launch {
            let Some(twin) = view.node(&launch.twin_of) else { continue };
            match self.cloud.launch_standby(twin, &launch.zone, &launch.instance_type).await {
                Ok(id) => {
                    tracing::info!(instance = id, zone = launch.zone, "standby launched");
                    report.launched.push(id);
                }
                Err(e) => report.errors.push(format!("launch a standby in {}: {e}", launch.zone)),
            }
        }
        if !responding {
            for name in &plan.surplus {
                let Some(node) = view.node(name) else { continue };
                match self.cloud.terminate_standby(&node.instance_id).await {
                    Ok(()) => {
                        report.terminated.push(node.instance_id.clone());
                        if let Err(e) = self.cluster.delete_node(name).await {
                            report.errors.push(format!("delete node {name}: {e}"));
                        }
                    }
                    Err(e) => report.errors.push(format!("terminate {}: {e}", node.instance_id)),
                }
            }
        }
        report
    }

    /// Taint the node as a standby, move workload pods off it (within their
    /// budgets), then stop its instance when the mode says so.
    async fn put_on_standby(&self, view: &ClusterView, node: &NodeView, stop: bool) -> Result<(), String> {
        let mode = if stop { StandbyMode::Stopped } else { StandbyMode::Running };
        // Labelled running until the instance is stopped, so a response in
        // between would not re-type a running instance.
        self.cluster
            .taint_standby(&node.name, StandbyMode::Running)
            .await
            .map_err(|e| format!("taint {} as standby: {e}", node.name))?;
        let deadline = self.clock.now_ms() + CLEAR_DEADLINE_MS;
        for pod in view.pods_on(&node.name).filter(|p| !p.daemon && !p.placeholder) {
            match self.cluster.evict(&pod.name, deadline).await {
                Ok(Evicted::Accepted { .. } | Evicted::AlreadyGone) => {}
                Err(e) => return Err(format!("move {} off standby {}: {e}", pod.name, node.name)),
            }
        }
        let parked = self
            .cloud
            .park_standby(&node.instance_id, stop)
            .await
            .map_err(|e| format!("park {}: {e}", node.instance_id))?;
        if mode == StandbyMode::Stopped {
            self.cluster
                .taint_standby(&node.name, mode)
                .await
                .map_err(|e| format!("label {} stopped: {e}", node.name))?;
        }
        let _ = self.cluster.node_event(&node.name, "CostopStandby", &parked).await;
        Ok(())
    }
}

fn pending_of(inst: &StandbyInstance) -> PendingStandby {
    PendingStandby { instance_id: inst.instance_id.clone(), zone: inst.zone.clone() }
}

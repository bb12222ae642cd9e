//! The warm-pool keeper: launches standbys as twins of Spot nodes, puts
//! them on standby once they join (tainted, and stopped in `stopped` mode),
//! replenishes the pool after a response wakes one, returns woken standbys
//! once restored capacity can hold their pods, and terminates surplus.
//!
//! Its state lives on the instances (tag `costop.io/standby` = `new` or
//! `kept`) and the nodes (taint and label), so a restarted server, or a new
//! leader, carries on. The decisions are `costop_core::warm_pool`'s.
//!
//! While a response runs, the keeper only launches: it does not park,
//! return or terminate, since the response may be using (or about to wake)
//! any standby. It checks again right before each stop or termination.

use costop_core::ports::{Clock, ClusterPort, Evicted, StandbyInstance, StandbyStage, WarmPoolPort};
use costop_core::warm_pool::{can_return_standby, plan_warm_pool, PendingStandby};
use costop_core::{CapacityType, ClusterView, Millis, NodeView, Policy, StandbyMode};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A launched standby that has not joined within this long is given up
/// and terminated (a node joins in about a minute; 15 allows slow images).
pub const JOIN_TIMEOUT_MS: Millis = 15 * 60 * 1000;

/// How long a standby's pods get to move off it when it goes (back) on standby.
const CLEAR_DEADLINE_MS: Millis = 2 * 60 * 1000;

/// What one round did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    /// Standbys put on standby: newly joined, or a stop retried (instance ids).
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
    /// Whether a response is running now.
    pub responding: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl<K, W, T> WarmPoolKeeper<K, W, T>
where
    K: ClusterPort + Send + Sync,
    W: WarmPoolPort,
    T: Clock,
{
    /// One round.
    pub async fn round(&self) -> RoundReport {
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
        let mut never_joined = Vec::new();
        // Nodes put on standby this round (the view does not show it yet).
        let mut now_standby = BTreeSet::new();

        for inst in &instances {
            let node = view.node_by_instance(&inst.instance_id);
            match (inst.stage, node) {
                // Joined: put on standby (not while a response may count it as room).
                (StandbyStage::New, Some(node)) if node.ready => {
                    if !(self.responding)() && self.park(&view, node, stop, &mut report).await {
                        now_standby.insert(node.name.clone());
                    } else {
                        pending.push(pending_of(inst));
                    }
                }
                (StandbyStage::New, node) => {
                    if now.saturating_sub(inst.launched_at) > JOIN_TIMEOUT_MS {
                        never_joined.push((inst.instance_id.clone(), node.map(|n| n.name.clone())));
                    } else {
                        pending.push(pending_of(inst));
                    }
                }
                // On standby but still running in stopped mode: a stop failed; retry it.
                (StandbyStage::Kept, Some(node))
                    if stop
                        && node.capacity_type == CapacityType::StandbyRunning
                        && node.ready
                        && !(self.responding)() =>
                {
                    self.park(&view, node, stop, &mut report).await;
                }
                _ => {}
            }
        }
        for (id, node) in never_joined {
            self.terminate(&id, node.as_deref(), "never joined", &mut report).await;
        }

        // Woken standbys back in service: return one per round (each return
        // uses up room the next check would count) once its pods fit elsewhere.
        if !(self.responding)() {
            let tagged: BTreeSet<&str> = instances
                .iter()
                .filter(|i| i.stage == StandbyStage::Kept)
                .map(|i| i.instance_id.as_str())
                .collect();
            let woken = view.nodes.iter().find(|n| {
                tagged.contains(n.instance_id.as_str())
                    && !n.capacity_type.is_standby()
                    && n.ready
                    && !n.unschedulable
                    && can_return_standby(&view, n)
            });
            if let Some(node) = woken {
                if self.park(&view, node, stop, &mut report).await {
                    report.returned.push(node.name.clone());
                    now_standby.insert(node.name.clone());
                }
            }
        }

        // Launch what is short; terminate what is surplus.
        let mut sized = view.clone();
        let not_yet: BTreeSet<&str> = pending.iter().map(|p| p.instance_id.as_str()).collect();
        sized.nodes.retain(|n| !not_yet.contains(n.instance_id.as_str()));
        for n in sized.nodes.iter_mut().filter(|n| now_standby.contains(&n.name)) {
            n.capacity_type = if stop { CapacityType::StandbyStopped } else { CapacityType::StandbyRunning };
        }
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
        for id in &plan.surplus_pending {
            let node = view.node_by_instance(id).map(|n| n.name.clone());
            self.terminate(id, node.as_deref(), "surplus", &mut report).await;
        }
        let ours: BTreeSet<&str> = instances.iter().map(|i| i.instance_id.as_str()).collect();
        for name in &plan.surplus {
            let Some(node) = view.node(name).filter(|n| ours.contains(n.instance_id.as_str())) else {
                continue;
            };
            // Still an idle standby now, with no response under way?
            let fresh = self.cluster.view();
            let idle = fresh.node(name).is_some_and(|n| n.capacity_type.is_standby())
                && fresh.pods_on(name).all(|p| p.daemon || p.placeholder);
            if idle {
                self.terminate(&node.instance_id, Some(name), "surplus", &mut report).await;
            }
        }
        report
    }

    /// Terminate a standby instance (unless a response runs) and delete its node.
    async fn terminate(&self, id: &str, node: Option<&str>, why: &str, report: &mut RoundReport) {
        if (self.responding)() {
            return;
        }
        match self.cloud.terminate_standby(id).await {
            Ok(()) => {
                tracing::info!(instance = id, why, "standby terminated");
                report.terminated.push(id.to_string());
                if let Some(name) = node {
                    if let Err(e) = self.cluster.delete_node(name).await {
                        report.errors.push(format!("delete node {name}: {e}"));
                    }
                }
            }
            Err(e) => report.errors.push(format!("terminate {id} ({why}): {e}")),
        }
    }

    /// Put a node on standby: taint it, move workload pods off it (within
    /// their budgets), then, unless a response has started or woken it
    /// meanwhile, stop its instance when the mode says so. Whether it is
    /// on standby now.
    async fn park(&self, view: &ClusterView, node: &NodeView, stop: bool, report: &mut RoundReport) -> bool {
        match self.put_on_standby(view, node, stop).await {
            Ok(()) => {
                report.parked.push(node.instance_id.clone());
                true
            }
            Err(e) => {
                report.errors.push(e);
                false
            }
        }
    }

    async fn put_on_standby(&self, view: &ClusterView, node: &NodeView, stop: bool) -> Result<(), String> {
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
        let woken = || !self.cluster.view().node(&node.name).is_some_and(|n| n.capacity_type.is_standby());
        if stop && ((self.responding)() || woken()) {
            return Err(format!("{} not stopped: a response started meanwhile", node.name));
        }
        let parked = self
            .cloud
            .park_standby(&node.instance_id, stop)
            .await
            .map_err(|e| format!("park {}: {e}", node.instance_id))?;
        if stop {
            self.cluster
                .taint_standby(&node.name, StandbyMode::Stopped)
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

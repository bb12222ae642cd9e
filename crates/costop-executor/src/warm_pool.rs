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

use costop_core::model::STANDBY_TAINT;
use costop_core::ports::{Clock, ClusterPort, Evicted, StandbyInstance, StandbyStage, WarmPoolPort};
use costop_core::warm_pool::{can_return_standby, plan_warm_pool, PendingStandby};
use costop_core::{CapacityType, Millis, NodeView, Policy, StandbyMode};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A launched standby that has not joined within this long is given up
/// and terminated (a node joins in about a minute; 15 allows slow images).
pub const JOIN_TIMEOUT_MS: Millis = 15 * 60 * 1000;

/// How long a standby's pods get to move off it when it goes (back) on standby.
const CLEAR_DEADLINE_MS: Millis = 2 * 60 * 1000;
/// Longest wait for a surge's pods before a burstable node's pods are
/// moved on anyway: a few pod starts (image pull, start, readiness).
const HAND_BACK_SURGE_WAIT_MS: Millis = 3 * 60 * 1000;

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
                    if !(self.responding)() && self.park(node, stop, &mut report).await {
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
                // On standby but not finished: its stop failed, or pods are still on it.
                (StandbyStage::Kept, Some(node))
                    if node.capacity_type.is_standby()
                        && node.ready
                        && ((stop && node.capacity_type == CapacityType::StandbyRunning)
                            || self.cluster.workload_pods_bound(&node.name) > 0)
                        && !(self.responding)() =>
                {
                    self.park(node, stop, &mut report).await;
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
                if self.park(node, stop, &mut report).await {
                    report.returned.push(node.name.to_string());
                    now_standby.insert(node.name.clone());
                }
            }
            // Burstable nodes a response took: tainted again and cleared
            // once the other nodes can hold their pods, so their credits
            // drain only until the replacement is Ready; they keep running.
            let burstable = view.nodes.iter().find(|n| {
                n.capacity_type == CapacityType::Burstable
                    && !n.has_taint(STANDBY_TAINT)
                    && n.ready
                    && !n.unschedulable
                    && can_return_standby(&view, n)
            });
            if let Some(node) = burstable {
                match self.rest_burstable(node).await {
                    Ok(()) => report.returned.push(node.name.to_string()),
                    Err(e) => report.errors.push(e),
                }
            }
        }

        // Launch what is short; terminate what is surplus.
        // Sized on the view as it will be: launches not joined yet left out,
        // nodes parked this round counted as standbys (a copy only then).
        let not_yet: BTreeSet<&str> = pending.iter().map(|p| p.instance_id.as_str()).collect();
        let adjusted = view
            .nodes
            .iter()
            .any(|n| not_yet.contains(n.instance_id.as_str()) || now_standby.contains(&n.name));
        let sized = if adjusted {
            let mut sized = (*view).clone();
            sized.nodes.retain(|n| !not_yet.contains(n.instance_id.as_str()));
            for n in sized.nodes.iter_mut().filter(|n| now_standby.contains(&n.name)) {
                n.capacity_type =
                    if stop { CapacityType::StandbyStopped } else { CapacityType::StandbyRunning };
            }
            std::borrow::Cow::Owned(sized)
        } else {
            std::borrow::Cow::Borrowed(&*view)
        };
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
            // Joined but not parked yet: it may be serving pods; parked first.
            if view.node_by_instance(id).is_some_and(|n| n.ready) {
                continue;
            }
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
                && self.cluster.workload_pods_bound(name) == 0;
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
    async fn park(&self, node: &NodeView, stop: bool, report: &mut RoundReport) -> bool {
        match self.put_on_standby(node, stop).await {
            Ok(()) => {
                report.parked.push(node.instance_id.to_string());
                true
            }
            Err(e) => {
                report.errors.push(e);
                false
            }
        }
    }

    /// Put a burstable node a response took back to idle spare: tainted,
    /// its workload pods moved off; it keeps running and earning credits.
    /// Surge, then evict, as a response does: each Deployment with pods on
    /// it is raised by as many (marked with the node's hand-back key) and
    /// its pods go once the extra ones are Ready (or after
    /// [`HAND_BACK_SURGE_WAIT_MS`]), so none serves with fewer Ready pods;
    /// the surge is taken back after.
    async fn rest_burstable(&self, node: &NodeView) -> Result<(), String> {
        self.cluster
            .taint_standby(&node.name, StandbyMode::Running)
            .await
            .map_err(|e| format!("taint burstable {} as spare: {e}", node.name))?;
        let key = format!("costop-hand-back-{}", node.name);
        let view = self.cluster.view();
        let mut on_node: BTreeMap<String, u32> = BTreeMap::new();
        for w in view.workload_pods_on(&node.name).filter_map(|p| p.workload.as_deref()) {
            if view.workload(w).is_some_and(|x| x.surgeable) {
                *on_node.entry(w.to_string()).or_default() += 1;
            }
        }
        let mut surged = Vec::new();
        for (w, by) in &on_node {
            let ready = view.ready_pods_of(w);
            match self.cluster.surge(w, &key, *by).await {
                Ok(_) => surged.push((w.as_str(), ready + *by as usize)),
                Err(e) => return Err(format!("surge {w} off burstable {}: {e}", node.name)),
            }
        }
        let give_up = self.clock.now_ms() + HAND_BACK_SURGE_WAIT_MS;
        while self.clock.now_ms() < give_up {
            let v = self.cluster.view();
            if surged.iter().all(|(w, wanted)| v.ready_pods_of(w) >= *wanted) {
                break;
            }
            self.clock.sleep(std::time::Duration::from_millis(250)).await;
        }
        let cleared = self.clear(node).await;
        for (w, _) in &surged {
            if let Err(e) = self.cluster.end_surge(w, &key).await {
                return Err(format!("end the surge of {w} off burstable {}: {e}", node.name));
            }
        }
        cleared
    }

    async fn put_on_standby(&self, node: &NodeView, stop: bool) -> Result<(), String> {
        // Labelled running until the instance is stopped, so a response in
        // between would not re-type a running instance.
        self.cluster
            .taint_standby(&node.name, StandbyMode::Running)
            .await
            .map_err(|e| format!("taint {} as standby: {e}", node.name))?;
        self.clear(node).await?;
        let on_standby =
            || self.cluster.view().node(&node.name).is_some_and(|n| n.capacity_type.is_standby());
        if stop && ((self.responding)() || !on_standby()) {
            return Err(format!("{} not stopped: a response started meanwhile", node.name));
        }
        let parked = self
            .cloud
            .park_standby(&node.instance_id, stop)
            .await
            .map_err(|e| format!("park {}: {e}", node.instance_id))?;
        // A response that woke it during the stop has started it again; its label is the response's.
        if stop && on_standby() {
            self.cluster
                .taint_standby(&node.name, StandbyMode::Stopped)
                .await
                .map_err(|e| format!("label {} stopped: {e}", node.name))?;
        }
        let _ = self.cluster.node_event(&node.name, "CostopStandby", &parked).await;
        Ok(())
    }

    /// Move every workload pod off `node` (including any scheduled since
    /// the round began), and wait until they have stopped.
    async fn clear(&self, node: &NodeView) -> Result<(), String> {
        let deadline = self.clock.now_ms() + CLEAR_DEADLINE_MS;
        while self.cluster.workload_pods_bound(&node.name) > 0 {
            if self.clock.now_ms() >= deadline {
                return Err(format!("{}: pods still on it after {} s", node.name, CLEAR_DEADLINE_MS / 1000));
            }
            let view = self.cluster.view();
            for pod in view.workload_pods_on(&node.name) {
                // Refused by its budget: asked again next round.
                match self.cluster.evict(&pod.name).await {
                    Ok(Evicted::Accepted | Evicted::Refused | Evicted::AlreadyGone) => {}
                    Err(e) => return Err(format!("move {} off standby {}: {e}", pod.name, node.name)),
                }
            }
            self.clock.sleep(std::time::Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

fn pending_of(inst: &StandbyInstance) -> PendingStandby {
    PendingStandby { instance_id: inst.instance_id.clone(), zone: inst.zone.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use costop_core::model::{PodView, PoolId, Resources, Taint};
    use costop_core::ClusterView;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    #[derive(Debug, thiserror::Error)]
    #[error("fake")]
    struct Never;

    /// A cluster whose evictions move pods away at once.
    struct FakeCluster(Mutex<ClusterView>);

    impl ClusterPort for FakeCluster {
        type Error = Never;
        fn view(&self) -> std::sync::Arc<ClusterView> {
            std::sync::Arc::new(self.0.lock().unwrap().clone())
        }
        async fn taint_and_cordon(&self, _: &str) -> Result<(), Never> {
            Ok(())
        }
        async fn untaint_and_uncordon(&self, node: &str) -> Result<(), Never> {
            panic!("uncordoned {node}: the warm-pool keeper retires nothing")
        }
        async fn untaint_standby(&self, _: &str) -> Result<(), Never> {
            Ok(())
        }
        async fn taint_standby(&self, node: &str, mode: StandbyMode) -> Result<(), Never> {
            let mut v = self.0.lock().unwrap();
            let n = v.nodes.iter_mut().find(|n| n.name == node).unwrap();
            n.taints = vec![Taint { key: STANDBY_TAINT.into(), effect: "NoSchedule".into() }];
            // As the kube adapter labels it: a burstable node stays one.
            if n.capacity_type != CapacityType::Burstable {
                n.capacity_type = match mode {
                    StandbyMode::Running => CapacityType::StandbyRunning,
                    StandbyMode::Stopped => CapacityType::StandbyStopped,
                };
            }
            Ok(())
        }
        async fn evict(&self, pod: &str) -> Result<Evicted, Never> {
            self.0.lock().unwrap().pods.retain(|p| p.name != pod);
            Ok(Evicted::Accepted)
        }
        async fn delete_doomed_pod(&self, pod: &str) -> Result<Evicted, Never> {
            panic!("the warm-pool keeper deleted {pod}")
        }
        async fn surge(&self, workload: &str, _: &str, _: u32) -> Result<bool, Never> {
            panic!("the warm-pool keeper surged {workload}")
        }
        async fn forget_node(&self, node: &str) -> Result<usize, Never> {
            panic!("the warm-pool keeper forgot {node}")
        }
        async fn end_surge(&self, workload: &str, _: &str) -> Result<bool, Never> {
            panic!("the warm-pool keeper ended the surge of {workload}")
        }
        async fn scale_placeholders(&self, _: u32) -> Result<(), Never> {
            Ok(())
        }
        async fn claim_placeholders(&self, _: &[String]) -> Result<(), Never> {
            Ok(())
        }
        fn volume_in_use(&self, _: &str, _: &str) -> bool {
            false
        }
        fn workload_pods_bound(&self, node: &str) -> usize {
            self.0.lock().unwrap().workload_pods_on(node).count()
        }
        async fn delete_node(&self, node: &str) -> Result<(), Never> {
            self.0.lock().unwrap().nodes.retain(|n| n.name != node);
            Ok(())
        }
        async fn node_event(&self, _: &str, _: &str, _: &str) -> Result<(), Never> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeCloud {
        standbys: Mutex<Vec<StandbyInstance>>,
        launched: Mutex<Vec<String>>,
        parked: Mutex<Vec<String>>,
        terminated: Mutex<Vec<String>>,
    }

    impl WarmPoolPort for FakeCloud {
        type Error = Never;
        async fn standby_instances(&self) -> Result<Vec<StandbyInstance>, Never> {
            Ok(self.standbys.lock().unwrap().clone())
        }
        async fn launch_standby(&self, _: &NodeView, zone: &str, _: &str) -> Result<String, Never> {
            let id = format!("i-launched{}", self.launched.lock().unwrap().len());
            self.launched.lock().unwrap().push(id.clone());
            self.standbys.lock().unwrap().push(StandbyInstance {
                instance_id: id.clone(),
                zone: zone.into(),
                stage: StandbyStage::New,
                launched_at: 1_000,
            });
            Ok(id)
        }
        async fn park_standby(&self, id: &str, _: bool) -> Result<String, Never> {
            self.parked.lock().unwrap().push(id.into());
            for s in self.standbys.lock().unwrap().iter_mut().filter(|s| s.instance_id == id) {
                s.stage = StandbyStage::Kept;
            }
            Ok(format!("{id} kept"))
        }
        async fn terminate_standby(&self, id: &str) -> Result<(), Never> {
            self.terminated.lock().unwrap().push(id.into());
            self.standbys.lock().unwrap().retain(|s| s.instance_id != id);
            Ok(())
        }
    }

    struct FixedClock;
    impl Clock for FixedClock {
        fn now_ms(&self) -> Millis {
            2_000
        }
        async fn sleep(&self, _: std::time::Duration) {
            tokio::task::yield_now().await;
        }
    }

    fn node(name: &str, zone: &str, capacity: CapacityType) -> NodeView {
        NodeView {
            name: name.into(),
            instance_id: format!("i-{name}").into(),
            pool: PoolId::new("m5.xlarge", zone),
            capacity_type: capacity,
            allocatable: Resources::new(4000, 16000),
            price_per_hour: 0.0,
            unschedulable: false,
            taints: Vec::new(),
            ready: true,
            in_load_balancer: true,
            fallback: false,
        }
    }

    fn pod(name: &str, on: &str) -> PodView {
        PodView {
            name: format!("default/{name}").into(),
            workload: Some("default/web".into()),
            node: Some(on.into()),
            requests: Resources::new(500, 500),
            priority: 0,
            ready: true,
            placeholder: false,
            daemon: false,
            volumes: Vec::new(),
        }
    }

    fn instance(name: &str, zone: &str, stage: StandbyStage) -> StandbyInstance {
        StandbyInstance { instance_id: format!("i-{name}"), zone: zone.into(), stage, launched_at: 1_000 }
    }

    fn keeper(
        view: ClusterView,
        standbys: Vec<StandbyInstance>,
        busy: Arc<AtomicBool>,
    ) -> WarmPoolKeeper<FakeCluster, FakeCloud, FixedClock> {
        WarmPoolKeeper {
            cluster: Arc::new(FakeCluster(Mutex::new(view))),
            cloud: Arc::new(FakeCloud { standbys: Mutex::new(standbys), ..Default::default() }),
            clock: Arc::new(FixedClock),
            policy: Policy::default(),
            responding: Arc::new(move || busy.load(Ordering::SeqCst)),
        }
    }

    #[tokio::test]
    async fn while_a_response_runs_it_only_launches() {
        // Zone a: one Spot node, so one standby is wanted. A launched standby
        // has joined (untainted, already serving a pod); another zone has a
        // surplus standby.
        let mut view = ClusterView::default();
        view.nodes.push(node("spot", "a", CapacityType::Spot));
        view.nodes.push(node("joined", "a", CapacityType::Spot));
        view.nodes.push(node("spare", "b", CapacityType::StandbyStopped));
        view.pods.push(pod("web-1", "joined").into());
        let standbys =
            vec![instance("joined", "a", StandbyStage::New), instance("spare", "b", StandbyStage::Kept)];
        let busy = Arc::new(AtomicBool::new(true));
        let k = keeper(view, standbys, busy.clone());
        let report = k.round().await;
        assert!(
            report.parked.is_empty() && report.terminated.is_empty() && report.returned.is_empty(),
            "{report:?}"
        );
        assert_eq!(k.cluster.view().pods.len(), 1, "the pod on the joined standby stays");
        // Once the response is done: parked (its pod moved off), surplus terminated.
        busy.store(false, Ordering::SeqCst);
        let report = k.round().await;
        assert_eq!(report.parked, ["i-joined"]);
        assert_eq!(report.terminated, ["i-spare"]);
        assert!(k.cluster.view().pods.is_empty());
        assert_eq!(k.cluster.view().node("joined").unwrap().capacity_type, CapacityType::StandbyStopped);
    }

    #[tokio::test]
    async fn a_joined_launch_is_never_terminated_as_surplus_before_it_is_parked() {
        // No Spot node in zone a any more: nothing is wanted there, but the
        // joined launch serves a pod and a response runs.
        let mut view = ClusterView::default();
        view.nodes.push(node("joined", "a", CapacityType::OnDemand));
        view.pods.push(pod("web-1", "joined").into());
        let k =
            keeper(view, vec![instance("joined", "a", StandbyStage::New)], Arc::new(AtomicBool::new(true)));
        let report = k.round().await;
        assert!(report.terminated.is_empty(), "{report:?}");
        assert_eq!(k.cluster.view().pods.len(), 1);
    }

    #[tokio::test]
    async fn woken_standbys_return_one_per_round_when_their_pods_fit() {
        let mut view = ClusterView::default();
        view.nodes.push(node("spot", "a", CapacityType::Spot));
        view.nodes.push(node("w1", "a", CapacityType::OnDemand));
        view.nodes.push(node("w2", "a", CapacityType::OnDemand));
        view.pods.push(pod("web-1", "w1").into());
        view.pods.push(pod("web-2", "w2").into());
        let standbys = vec![instance("w1", "a", StandbyStage::Kept), instance("w2", "a", StandbyStage::Kept)];
        let k = keeper(view, standbys, Arc::new(AtomicBool::new(false)));
        let report = k.round().await;
        assert_eq!(report.returned.len(), 1, "{report:?}");
        let report = k.round().await;
        assert_eq!(report.returned.len(), 1, "{report:?}");
        let view = k.cluster.view();
        assert!(view.nodes.iter().filter(|n| n.name.starts_with('w')).all(|n| n.capacity_type.is_standby()));
    }

    /// A burstable node a response took goes back to idle spare once the
    /// other nodes can hold its pods: tainted, its pods moved off, still
    /// running (never parked or stopped), not while a response runs.
    #[tokio::test]
    async fn a_taken_burstable_node_goes_back_to_idle_spare_when_its_pods_fit() {
        let mut view = ClusterView::default();
        view.nodes.push(node("spot", "a", CapacityType::Spot));
        view.nodes.push(node("t1", "a", CapacityType::Burstable));
        view.pods.push(pod("web-1", "t1").into());
        view.pods.push(pod("web-2", "t1").into());
        let busy = Arc::new(AtomicBool::new(true));
        let k = keeper(view.clone(), Vec::new(), busy.clone());
        assert!(k.round().await.returned.is_empty());
        assert_eq!(k.cluster.view().pods.len(), 2);
        busy.store(false, Ordering::SeqCst);
        let report = k.round().await;
        assert_eq!(report.returned, ["t1"], "{report:?}");
        assert!(report.parked.is_empty() && k.cloud.parked.lock().unwrap().is_empty(), "{report:?}");
        let after = k.cluster.view();
        let t1 = after.node("t1").unwrap();
        assert_eq!(t1.capacity_type, CapacityType::Burstable);
        assert!(t1.has_taint(STANDBY_TAINT) && no_pods_on(&after, "t1"));
        // With no room elsewhere its pods stay.
        let mut full = view;
        full.pods.extend((0..8).map(|i| Arc::new(pod(&format!("full-{i}"), "spot"))));
        let k = keeper(full, Vec::new(), Arc::new(AtomicBool::new(false)));
        assert!(k.round().await.returned.is_empty());
    }

    fn no_pods_on(view: &ClusterView, node: &str) -> bool {
        view.workload_pods_on(node).next().is_none()
    }
}

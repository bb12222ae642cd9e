//! costop's ports over the simulated world, so the server's executor and
//! warm-pool keeper run unchanged against it in virtual time.
//!
//! Every call costs one API round trip (`timings.api_call_ms`) of virtual
//! time before it acts, as a call to the API server or to AWS does.

use crate::runtime::VirtualClock;
use crate::world::World;
use costop_core::ports::{
    Clock, CloudPort, ClusterPort, Evicted, ResponseRecord, StandbyInstance, StepRecord, StorePort,
    StreamEntry, WarmPoolPort,
};
use costop_core::{ClusterView, Millis, NodeView, Notice, NoticeKey, Plan, PoolId, StandbyMode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What a simulated call refused, named like the real API's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SimError(pub String);

/// Resolves at the world's next change after its first poll.
struct WorldChange<'a> {
    world: &'a Mutex<World>,
    since: Option<u64>,
}

impl std::future::Future for WorldChange<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let version = w.version();
        if self.since.is_some_and(|v| v != version) {
            return std::task::Poll::Ready(());
        }
        w.on_change(cx.waker().clone());
        drop(w);
        self.since = Some(version);
        std::task::Poll::Pending
    }
}

/// The world behind costop's Cluster, Cloud and warm-pool ports.
#[derive(Clone)]
pub struct SimPorts {
    world: Arc<Mutex<World>>,
    clock: VirtualClock,
    api: Duration,
}

impl SimPorts {
    /// Ports over `world`, on `clock`; each call takes `api` of virtual time.
    pub fn new(world: Arc<Mutex<World>>, clock: VirtualClock, api: Duration) -> Self {
        Self { world, clock, api }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One round trip, then the call acts on the world.
    async fn call<R>(&self, act: impl FnOnce(&mut World) -> R) -> R {
        self.clock.sleep(self.api).await;
        act(&mut self.world())
    }
}

impl ClusterPort for SimPorts {
    type Error = SimError;

    fn view(&self) -> Arc<ClusterView> {
        self.world().view()
    }

    const NOTIFIES_CHANGES: bool = true;

    async fn changed_since(&self, seen: &Arc<ClusterView>) {
        loop {
            let lag_left = {
                let mut w = self.world();
                if !Arc::ptr_eq(&w.view(), seen) {
                    return;
                }
                w.view_lag_left()
            };
            match lag_left {
                Some(ms) => self.clock.sleep(Duration::from_millis(ms)).await,
                None => WorldChange { world: &self.world, since: None }.await,
            }
        }
    }

    async fn taint_and_cordon(&self, node: &str) -> Result<(), SimError> {
        self.call(|w| w.taint_and_cordon(node)).await.map_err(SimError)
    }

    async fn untaint_and_uncordon(&self, node: &str) -> Result<(), SimError> {
        self.call(|w| w.untaint_and_uncordon(node)).await.map_err(SimError)
    }

    async fn untaint_standby(&self, node: &str) -> Result<(), SimError> {
        self.call(|w| w.untaint_standby(node)).await.map_err(SimError)
    }

    async fn taint_standby(&self, node: &str, mode: StandbyMode) -> Result<(), SimError> {
        self.call(|w| w.taint_standby(node, mode)).await.map_err(SimError)
    }

    async fn evict(&self, pod: &str) -> Result<Evicted, SimError> {
        Ok(self.call(|w| w.evict_request(pod)).await)
    }

    async fn delete_doomed_pod(&self, pod: &str) -> Result<Evicted, SimError> {
        Ok(self.call(|w| w.delete_request(pod)).await)
    }

    async fn forget_node(&self, node: &str) -> Result<usize, SimError> {
        self.call(|w| w.forget_node(node)).await.map_err(SimError)
    }

    async fn surge(&self, workload: &str, key: &str, by: u32) -> Result<bool, SimError> {
        self.call(|w| w.surge(workload, key, by)).await.map_err(SimError)
    }

    async fn end_surge(&self, workload: &str, key: &str) -> Result<bool, SimError> {
        self.call(|w| w.end_surge(workload, key)).await.map_err(SimError)
    }

    async fn scale_placeholders(&self, count: u32) -> Result<(), SimError> {
        self.call(|w| w.scale_placeholders(count)).await;
        Ok(())
    }

    async fn claim_placeholders(&self, pods: &[String]) -> Result<(), SimError> {
        self.call(|w| w.claim_placeholders(pods)).await;
        Ok(())
    }

    fn volume_in_use(&self, volume_id: &str, node: &str) -> bool {
        self.world().volume_in_use(volume_id, node)
    }

    fn workload_pods_bound(&self, node: &str) -> usize {
        self.world().workload_pods_bound(node)
    }

    async fn delete_node(&self, node: &str) -> Result<(), SimError> {
        self.call(|w| w.delete_node(node)).await.map_err(SimError)
    }

    async fn node_event(&self, _node: &str, _reason: &str, _message: &str) -> Result<(), SimError> {
        Ok(())
    }

    async fn hold_from_scale_down(&self, node: &str, hold: bool) -> Result<(), SimError> {
        self.call(|w| w.hold_from_scale_down(node, hold)).await.map_err(SimError)
    }
}

impl CloudPort for SimPorts {
    type Error = SimError;

    async fn deregister_targets(&self, node: &NodeView) -> Result<String, SimError> {
        self.call(|w| w.deregister_targets(&node.name)).await.map_err(SimError)
    }

    async fn wake_standby(&self, node: &NodeView, retype_to: Option<&str>) -> Result<String, SimError> {
        self.call(|w| w.wake_standby(&node.name, retype_to)).await.map_err(SimError)
    }

    async fn move_volume(
        &self,
        volume_id: &str,
        _to: &NodeView,
        _via_snapshot: bool,
        _force: bool,
    ) -> Result<String, SimError> {
        self.call(|w| w.move_volume(volume_id)).await.map_err(SimError)
    }

    async fn bridge(&self, workloads: &[String], on: bool) -> Result<String, SimError> {
        Ok(self.call(|w| w.bridge(workloads, on)).await)
    }

    async fn restore_capacity(&self, key: &str, pools: &[(PoolId, u32)]) -> Result<String, SimError> {
        Ok(self.call(|w| w.restore_capacity(key, pools)).await)
    }

    async fn launched_under(&self, key: &str) -> Result<Vec<String>, SimError> {
        Ok(self.call(|w| w.launched_under(key)).await)
    }

    async fn retire_node(&self, node: &NodeView) -> Result<String, SimError> {
        self.call(|w| w.delete_node(&node.name)).await.map_err(SimError)?;
        Ok(format!("{} terminated", node.name))
    }
}

impl WarmPoolPort for SimPorts {
    type Error = SimError;

    async fn standby_instances(&self) -> Result<Vec<StandbyInstance>, SimError> {
        Ok(self.call(|w| w.standby_instances()).await)
    }

    async fn launch_standby(
        &self,
        twin: &NodeView,
        zone: &str,
        instance_type: &str,
    ) -> Result<String, SimError> {
        self.call(|w| w.launch_standby(twin, zone, instance_type)).await.map_err(SimError)
    }

    async fn park_standby(&self, instance_id: &str, stop: bool) -> Result<String, SimError> {
        self.call(|w| w.park_standby(instance_id, stop)).await.map_err(SimError)
    }

    async fn terminate_standby(&self, instance_id: &str) -> Result<(), SimError> {
        self.call(|w| w.terminate_standby(instance_id)).await.map_err(SimError)
    }
}

/// The store in memory: the records the executor keeps of each response.
#[derive(Default)]
pub struct SimStore(Mutex<BTreeMap<String, ResponseRecord>>);

impl SimStore {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ResponseRecord>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_step(&self, key: &NoticeKey, index: usize, f: impl FnOnce(&mut StepRecord)) {
        if let Some(step) = self.lock().get_mut(&key.to_string()).and_then(|r| r.steps.get_mut(index)) {
            f(step);
        }
    }

    /// Every response recorded.
    pub fn records(&self) -> Vec<ResponseRecord> {
        self.lock().values().cloned().collect()
    }
}

impl StorePort for SimStore {
    type Error = SimError;

    async fn record_notice(&self, _notice: &Notice) -> Result<bool, SimError> {
        Ok(true)
    }

    async fn publish_notice(&self, _notice: &Notice) -> Result<(), SimError> {
        Ok(())
    }

    async fn read_notices(&self, _consumer: &str, _block_ms: u64) -> Result<Vec<StreamEntry>, SimError> {
        Ok(Vec::new())
    }

    async fn ack_notice(&self, _id: &str) -> Result<(), SimError> {
        Ok(())
    }

    async fn save_plan(&self, plan: &Plan) -> Result<bool, SimError> {
        let mut records = self.lock();
        let key = plan.notice.to_string();
        if records.contains_key(&key) {
            return Ok(false);
        }
        let steps = vec![StepRecord::default(); plan.steps.len()];
        records.insert(key, ResponseRecord { plan: plan.clone(), steps, done_at: None });
        Ok(true)
    }

    async fn step_started(&self, key: &NoticeKey, index: usize, at: Millis) -> Result<(), SimError> {
        self.with_step(key, index, |s| s.started_at = Some(at));
        Ok(())
    }

    async fn step_done(
        &self,
        key: &NoticeKey,
        index: usize,
        at: Millis,
        outcome: &str,
    ) -> Result<(), SimError> {
        self.with_step(key, index, |s| {
            s.done_at = Some(at);
            s.outcome = Some(outcome.to_string());
        });
        Ok(())
    }

    async fn response_done(&self, key: &NoticeKey, at: Millis) -> Result<(), SimError> {
        if let Some(r) = self.lock().get_mut(&key.to_string()) {
            r.done_at = Some(at);
        }
        Ok(())
    }

    async fn response(&self, key: &NoticeKey) -> Result<Option<ResponseRecord>, SimError> {
        Ok(self.lock().get(&key.to_string()).cloned())
    }

    async fn unfinished(&self) -> Result<Vec<NoticeKey>, SimError> {
        Ok(self.lock().values().filter(|r| r.done_at.is_none()).map(|r| r.plan.notice.clone()).collect())
    }

    async fn mirror(&self, _kind: &str, _entries: &[(String, String)]) -> Result<(), SimError> {
        Ok(())
    }
}

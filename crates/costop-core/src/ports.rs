//! Ports: what the decisions need from the outside world, as traits. Each
//! has a real adapter (kube-rs, aws-sdk, Redis) and a simulated one.

use crate::model::ClusterView;
use crate::time::Millis;
use std::future::Future;

/// What the API server answered one request to evict (or delete) a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// It accepted: the pod goes, with its grace period.
    Accepted,
    /// A disruption budget refused it for now (HTTP 429): the pod stays
    /// until it is asked again. Never the answer to a delete.
    Refused,
    /// The pod was already gone.
    AlreadyGone,
}

/// The Kubernetes side: observe the cluster and change it, never bypassing
/// the scheduler or disruption budgets.
pub trait ClusterPort {
    /// The adapter's error; it names the action and the object.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The cluster as last observed (watch-backed). Shared: adapters may
    /// hand out one snapshot until the cluster changes.
    fn view(&self) -> std::sync::Arc<ClusterView>;

    /// Whether [`ClusterPort::changed_since`] resolves when the cluster
    /// changes. Without it, waits look at the view on a timer.
    const NOTIFIES_CHANGES: bool = false;

    /// Resolves once [`ClusterPort::view`] may return something other than
    /// `seen` (a watch delivered a change after it was taken), so a wait
    /// can sleep until the cluster moves instead of looking on a timer.
    /// The default never resolves (see [`ClusterPort::NOTIFIES_CHANGES`]).
    fn changed_since(&self, seen: &std::sync::Arc<ClusterView>) -> impl Future<Output = ()> + Send {
        let _ = seen;
        std::future::pending()
    }

    /// Cordon the node and add the `costop.io/interruption:NoSchedule` taint.
    fn taint_and_cordon(&self, node: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Take the `costop.io/interruption` taint off a node and uncordon it:
    /// a retirement that could not drain or end it gives it back to
    /// service rather than leave it cordoned for good.
    fn untaint_and_uncordon(&self, node: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Take the `costop.io/standby` taint off a node (and uncordon it): it
    /// serves as on-demand capacity (label `costop.io/capacity-type=on-demand`).
    fn untaint_standby(&self, node: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Put a node on standby: cordon off, standby taint on, labelled
    /// `costop.io/capacity-type=standby-running` or `standby-stopped`.
    fn taint_standby(
        &self,
        node: &str,
        mode: crate::StandbyMode,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Ask the eviction API once to evict a pod (`namespace/name`). A
    /// budget's refusal is an answer ([`Evicted::Refused`]), not an error:
    /// when to ask again is the caller's choice (the executor keeps every
    /// pod's next attempt as data, so a whole pool's pods waiting between
    /// attempts hold no request's state).
    fn evict(&self, pod: &str) -> impl Future<Output = Result<Evicted, Self::Error>> + Send;

    /// Delete a pod (`namespace/name`) with its grace period, whatever its
    /// disruption budget says, and say so where people look (a Warning
    /// Event on the pod, where one can be recorded). Only for a pod on a
    /// node that goes at a known deadline, not evicted (its budget refused,
    /// or its wave waited that long for its surge) by the time left to
    /// start elsewhere (`Waits::delete_doomed_before`). A pod already gone
    /// is no error.
    fn delete_doomed_pod(&self, pod: &str) -> impl Future<Output = Result<Evicted, Self::Error>> + Send;

    /// Raise the Deployment `workload` (`namespace/name`)'s replicas by
    /// `by`, marked with `key` on the Deployment (an annotation) so that
    /// doing it again adds nothing. Whether it added them now.
    fn surge(
        &self,
        workload: &str,
        key: &str,
        by: u32,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Take back the surge marked `key`: lower the replicas by what it
    /// added and drop the mark. Whether there was one to take back.
    fn end_surge(&self, workload: &str, key: &str) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Make the placeholder Deployment hold `count` pods (creating its
    /// negative PriorityClass and the Deployment when missing).
    fn scale_placeholders(&self, count: u32) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Delete these placeholder pods now and shrink the Deployment by as many.
    fn claim_placeholders(&self, pods: &[String]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether a pod bound to `node`, terminating ones included, still uses
    /// the EBS volume `volume_id` (from the cache).
    fn volume_in_use(&self, volume_id: &str, node: &str) -> bool;

    /// Workload pods (not DaemonSet pods, not placeholders, not finished)
    /// bound to `node`, terminating ones included (from the cache).
    fn workload_pods_bound(&self, node: &str) -> usize;

    /// The node's instance is gone: delete the Node, then force-delete
    /// (grace 0) the pods bound to it, DaemonSet pods too. How many pods
    /// were deleted. Deleting what is already gone is no error.
    fn forget_node(&self, node: &str) -> impl Future<Output = Result<usize, Self::Error>> + Send;

    /// Delete a node object.
    fn delete_node(&self, node: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Record a Kubernetes Event on the node.
    fn node_event(
        &self,
        node: &str,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Mark the node scale-down-disabled for the node autoscaler (`hold`),
    /// or take the mark off (the annotation
    /// `cluster-autoscaler.kubernetes.io/scale-down-disabled`). A world
    /// without a node autoscaler has nothing to mark.
    fn hold_from_scale_down(
        &self,
        node: &str,
        hold: bool,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (node, hold);
        async { Ok(()) }
    }

    /// Say, where people look (a Warning Event on the pod and on its node),
    /// that the response leaves `pod` on its doomed node, and why. A world
    /// with no such record keeps nothing.
    fn warn_pod_left(&self, pod: &str, why: &str) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (pod, why);
        async { Ok(()) }
    }
}

/// What is recorded of one step of a response.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// When it started (Unix ms).
    pub started_at: Option<Millis>,
    /// When it finished (Unix ms).
    pub done_at: Option<Millis>,
    /// How it ended: `ok`, or what went wrong.
    pub outcome: Option<String>,
}

/// A response as recorded: the plan and each step's progress.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResponseRecord {
    /// The plan.
    pub plan: crate::Plan,
    /// One record per step of the plan.
    pub steps: Vec<StepRecord>,
    /// When the whole response finished.
    pub done_at: Option<Millis>,
}

/// A notice read from the durable stream: its stream id and the notice (or
/// why its body could not be read).
pub type StreamEntry = (String, Result<crate::Notice, String>);

/// The database: notices, response progress, the cluster mirror. Every
/// write is idempotent.
pub trait StorePort: Send + Sync {
    /// The adapter's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Record a notice under its key. `true` the first time, `false` for a duplicate.
    fn record_notice(&self, notice: &crate::Notice)
        -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Append a notice to the durable stream (the agent's path).
    fn publish_notice(&self, notice: &crate::Notice) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Read new stream entries as `consumer` of the server group, waiting up to `block_ms`.
    fn read_notices(
        &self,
        consumer: &str,
        block_ms: u64,
    ) -> impl Future<Output = Result<Vec<StreamEntry>, Self::Error>> + Send;

    /// Acknowledge a stream entry once its notice is durably recorded.
    fn ack_notice(&self, id: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Save the plan of a response, once: `true` when this call saved it,
    /// `false` when a plan was already there (it is kept).
    fn save_plan(&self, plan: &crate::Plan) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Mark step `index` of a response started.
    fn step_started(
        &self,
        key: &crate::NoticeKey,
        index: usize,
        at: Millis,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Mark step `index` done with its outcome.
    fn step_done(
        &self,
        key: &crate::NoticeKey,
        index: usize,
        at: Millis,
        outcome: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Mark a response finished.
    fn response_done(
        &self,
        key: &crate::NoticeKey,
        at: Millis,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A response's record.
    fn response(
        &self,
        key: &crate::NoticeKey,
    ) -> impl Future<Output = Result<Option<ResponseRecord>, Self::Error>> + Send;

    /// Responses whose plan is saved but that are not finished.
    fn unfinished(&self) -> impl Future<Output = Result<Vec<crate::NoticeKey>, Self::Error>> + Send;

    /// Mirror cluster data for other tools: `kind` (`nodes`, `pods`, `pools`) → name → JSON.
    fn mirror(
        &self,
        kind: &str,
        entries: &[(String, String)],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Time for loops: the real clock in production, a virtual one in the
/// simulator and in tests.
pub trait Clock: Send + Sync {
    /// Now, Unix milliseconds.
    fn now_ms(&self) -> Millis;
    /// Wait this long.
    fn sleep(&self, d: std::time::Duration) -> impl Future<Output = ()> + Send;
}

/// The cloud side of a response (load balancers, instances, volumes,
/// functions, capacity). Each call is idempotent and returns what it did.
pub trait CloudPort: Send + Sync {
    /// The adapter's error; it names the action and the resource.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Deregister the node's instance from every target group.
    fn deregister_targets(
        &self,
        node: &crate::NodeView,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// Start a standby (re-typed first if asked).
    fn wake_standby(
        &self,
        node: &crate::NodeView,
        retype_to: Option<&str>,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// Move a volume (its pod has stopped) to the node `to`: detach
    /// (forced when `force`: the deadline is near) and attach there; across
    /// zones (`via_snapshot`) attach a copy made from a snapshot.
    fn move_volume(
        &self,
        volume_id: &str,
        to: &crate::NodeView,
        via_snapshot: bool,
        force: bool,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// Shift traffic of these workloads to (or back from) their function.
    fn bridge(
        &self,
        workloads: &[String],
        on: bool,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// Launch Spot capacity: pool → count.
    fn restore_capacity(
        &self,
        key: &str,
        pools: &[(crate::PoolId, u32)],
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// The instances launched under `key` by [`CloudPort::restore_capacity`]
    /// that are pending or running. A cloud that cannot tell answers none.
    fn launched_under(&self, key: &str) -> impl Future<Output = Result<Vec<String>, Self::Error>> + Send {
        let _ = key;
        async { Ok(Vec::new()) }
    }

    /// End a drained node's instance and shrink the capacity it belonged to
    /// by one (its Auto Scaling group's desired count), so it is not replaced.
    fn retire_node(&self, node: &crate::NodeView)
        -> impl Future<Output = Result<String, Self::Error>> + Send;
}

/// Where a standby instance is in its life, as recorded on the instance
/// (tag `costop.io/standby`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StandbyStage {
    /// Launched; not yet joined and put on standby.
    New,
    /// Joined and kept by the warm pool (on standby, or woken and serving).
    Kept,
}

/// A standby instance as the cloud sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyInstance {
    /// Instance id.
    pub instance_id: String,
    /// Availability zone.
    pub zone: String,
    /// Stage.
    pub stage: StandbyStage,
    /// Launch time (Unix ms).
    pub launched_at: Millis,
}

/// The cloud side of the warm pool: launch standbys as twins of Spot
/// nodes, park them (stopped or running), and terminate surplus ones.
pub trait WarmPoolPort: Send + Sync {
    /// The adapter's error; it names the action and the resource.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Every standby instance that is not terminated.
    fn standby_instances(&self) -> impl Future<Output = Result<Vec<StandbyInstance>, Self::Error>> + Send;

    /// Launch an on-demand standby of `instance_type` in `zone`, a twin of
    /// the node `twin` (same image, profile, security groups, user data).
    fn launch_standby(
        &self,
        twin: &crate::NodeView,
        zone: &str,
        instance_type: &str,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// Keep a joined standby: stop it when `stop`, and record it as kept.
    fn park_standby(
        &self,
        instance_id: &str,
        stop: bool,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// Terminate a standby instance.
    fn terminate_standby(&self, instance_id: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

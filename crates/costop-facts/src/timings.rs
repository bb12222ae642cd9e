//! How long things take in the world. Defaults come from public
//! measurements and documented defaults; where none was found the value is
//! marked as an estimate.

use serde::{Deserialize, Serialize};

/// Durations of the world's phases, in seconds unless named otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timings {
    /// Launch → node Ready. 30 s: awslabs/node-latency-for-k8s README example
    /// (EKS AMI: VM initialised at 11–13 s, kubelet registered at 19–20 s,
    /// "Node Ready … 24s"/"30s"); a Karpenter maintainer quotes "about 30-40s"
    /// (karpenter-provider-aws#6165). Only Ready matters to pods, so the
    /// earlier phases are not modeled separately.
    pub node_ready_s: f64,
    /// Start of a stopped standby → Ready. It boots like a new node: 30 s.
    pub standby_start_s: f64,
    /// Image pull on a node that lacks the image. Estimate (no public figure
    /// for a medium image): 10 s for a few hundred MB from ECR in-region.
    pub image_pull_s: f64,
    /// Container create + start. Estimate: 1 s.
    pub container_start_s: f64,
    /// Application start until its readiness probe passes. Estimate: 5 s.
    pub app_ready_s: f64,
    /// The kubelet notices container state changes on its PLEG relist,
    /// every 1 s (`plegRelistPeriod`, kubernetes pkg/kubelet/kubelet.go):
    /// readiness is rounded up to this period.
    pub pleg_relist_s: f64,
    /// An evicted pod's shutdown until its resources are free. Estimate: 5 s
    /// (the grace period, 30 s by default, is an upper bound).
    pub pod_shutdown_s: f64,
    /// A load balancer keeps routing to a vanished target until health
    /// checks fail: ALB defaults, 30 s interval × 2 unhealthy checks = 60 s.
    pub lb_failure_detect_s: f64,
    /// From an unannounced node loss until its pods are recreated: node
    /// NotReady after `node-monitor-grace-period` (50 s since v1.32), the
    /// cloud controller deletes the node (5 s), the pod GC's 40 s quarantine
    /// and half its 20 s period (10 s): 105 s.
    pub lost_pod_recreate_s: f64,
    /// From a Node's deletion until the pod garbage collector deletes the
    /// pods still bound to it: its 40 s quarantine of orphaned pods and
    /// half its 20 s period (the last 50 s of `lost_pod_recreate_s`).
    pub orphan_pod_gc_s: f64,
    /// An Auto Scaling group replaces a terminated instance after this. Estimate: 30 s.
    pub asg_replace_delay_s: f64,
    /// Retry of a pool launch that failed for lack of capacity.
    pub launch_retry_s: f64,
    /// A volume left attached to a vanished node is force-detached after the
    /// attach/detach controller's 6-minute `maxWaitForUnmountDuration`.
    pub force_detach_s: f64,
    /// Detach + attach of an EBS volume when asked for. Estimate: 15 s.
    pub volume_move_s: f64,
    /// One API call (Kubernetes or AWS), milliseconds. Estimate: 50 ms.
    pub api_call_ms: f64,
    /// A refused eviction (budget) is retried after this by the simulated
    /// world's own drains (nodes it takes back out of service); costop's
    /// executor keeps its own schedule (`costop-executor` evictions.rs).
    pub eviction_retry_s: f64,
    /// A weighted route change reaches the load balancer, plus a function
    /// cold start (100 ms–1 s reported): 2 s.
    pub bridge_shift_s: f64,
    /// A preemption of placeholders until the pod is bound. Estimate: 1 s.
    pub preemption_s: f64,
    /// Spot notice delivery through EventBridge → SQS (best effort, no
    /// documented figure). Estimate: 3 s.
    pub eventbridge_delay_s: f64,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            node_ready_s: 30.0,
            standby_start_s: 30.0,
            image_pull_s: 10.0,
            container_start_s: 1.0,
            app_ready_s: 5.0,
            pleg_relist_s: 1.0,
            pod_shutdown_s: 5.0,
            lb_failure_detect_s: 60.0,
            lost_pod_recreate_s: 105.0,
            orphan_pod_gc_s: 50.0,
            asg_replace_delay_s: 30.0,
            launch_retry_s: 60.0,
            force_detach_s: 360.0,
            volume_move_s: 15.0,
            api_call_ms: 50.0,
            eviction_retry_s: 5.0,
            bridge_shift_s: 2.0,
            preemption_s: 1.0,
            eventbridge_delay_s: 3.0,
        }
    }
}

/// Seconds to milliseconds.
pub fn ms(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0).round() as u64
}
